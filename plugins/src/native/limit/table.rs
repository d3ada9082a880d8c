//! The counters of one limit plugin configuration: a sharded LRU map from a key
//! (`remote_addr`, a header...) to that key's state. It lives outside the snapshot (see
//! [`super::registry`]) so a swap keeps the counts.
//!
//! Memory is bounded: each table holds at most `capacity` keys; inserting beyond that
//! evicts the least recently used key and, when that key's window was still open,
//! counts an eviction (a client may then get a fresh window early). Expired keys are
//! dropped lazily: two are checked at the cold end of the shard on every insert, so a
//! table whose clients went away shrinks as new clients arrive.

use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

/// Shards: enough that two workers rarely wait on one lock, few enough that a small
/// table does not waste memory.
const SHARDS: usize = 16;

/// How many keys one table holds by default (1,000,000 IPv4 keys measured 167 MB
/// resident for `limit-count`; see docs/plugins.md).
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// What a key's state must tell the table.
pub trait Expiring {
    /// Whether the state no longer matters at `now_ms` (its window is over).
    fn expired(&self, now_ms: u64) -> bool;
}

/// Evictions of still-open keys, over all tables (a metric).
pub static EVICTIONS: AtomicU64 = AtomicU64::new(0);

pub struct CounterTable<E> {
    shards: Box<[Mutex<LruCache<String, E>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl<E: Expiring> CounterTable<E> {
    pub fn new(capacity: usize) -> CounterTable<E> {
        let per_shard =
            NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        CounterTable {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Runs `f` on `key`'s state under its shard's lock: `None` when the key is new or
    /// its state expired. What `f` leaves in the option is stored (`None` removes it).
    pub fn update<R>(&self, key: &str, now_ms: u64, f: impl FnOnce(&mut Option<E>) -> R) -> R {
        let shard = &self.shards[self.shard_of(key)];
        let mut map = shard.lock();
        let mut state = match map.pop(key) {
            Some(e) if !e.expired(now_ms) => Some(e),
            _ => None,
        };
        let out = f(&mut state);
        if let Some(e) = state {
            if map.len() == map.cap().get() {
                sweep(&mut map, now_ms);
            }
            if let Some((_, evicted)) = map.push(key.to_owned(), e) {
                if !evicted.expired(now_ms) {
                    EVICTIONS.fetch_add(1, Ordering::Relaxed);
                }
            }
            sweep(&mut map, now_ms);
        }
        out
    }

    /// Keys held (expired ones not yet dropped included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }
}

/// Drops up to two expired keys from the cold end.
fn sweep<E: Expiring>(map: &mut LruCache<String, E>, now_ms: u64) {
    for _ in 0..2 {
        match map.peek_lru() {
            Some((_, e)) if e.expired(now_ms) => {
                map.pop_lru();
            }
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Until(u64);
    impl Expiring for Until {
        fn expired(&self, now_ms: u64) -> bool {
            now_ms >= self.0
        }
    }

    #[test]
    fn state_is_kept_until_it_expires() {
        let t: CounterTable<Until> = CounterTable::new(100);
        t.update("a", 0, |s| *s = Some(Until(10)));
        assert!(t.update("a", 5, |s| s.is_some()));
        assert!(t.update("a", 10, |s| s.is_none()));
    }

    #[test]
    fn a_full_table_evicts_the_least_recent_and_counts_open_windows() {
        let t: CounterTable<Until> = CounterTable::new(SHARDS); // one key per shard
        let before = EVICTIONS.load(Ordering::Relaxed);
        for i in 0..200 {
            t.update(&format!("k{i}"), 0, |s| *s = Some(Until(1_000)));
        }
        assert!(t.len() <= SHARDS);
        assert!(EVICTIONS.load(Ordering::Relaxed) - before >= 200 - SHARDS as u64);
    }

    #[test]
    fn expired_keys_are_swept_as_new_ones_arrive() {
        let t: CounterTable<Until> = CounterTable::new(10_000);
        for i in 0..1000 {
            t.update(&format!("old{i}"), 0, |s| *s = Some(Until(10)));
        }
        for i in 0..1000 {
            t.update(&format!("new{i}"), 20, |s| *s = Some(Until(100)));
        }
        assert!(t.len() < 1100, "old keys linger: {}", t.len());
    }
}
