//! `ngx.shared.DICT` storage: key-value dictionaries shared by every worker's VM, with
//! lua-nginx-module's semantics. Keys are byte strings (OpenResty code keys on
//! `ngx.var.binary_remote_addr`). Each dictionary has a byte capacity; when full,
//! `set`/`add`/`incr` evict the least recently used entries (and say so: `forcible`),
//! `safe_set`/`safe_add` fail with "no memory" instead. Every operation, including the
//! read-modify-write of `incr` and [`SharedDict::update`], runs under the dictionary's
//! lock, so workers never interleave inside one.
//!
//! The Lua methods are in `shared_dict_lua.rs`, the set of dictionaries in
//! `shared_dict_registry.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

/// Bytes an entry is charged beyond its key and value (bookkeeping, as nginx's slab does).
const ENTRY_OVERHEAD: usize = 64;

/// A stored value: what lua-nginx-module accepts.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stored {
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
}

#[derive(Debug)]
struct Entry {
    value: Stored,
    flags: u32,
    expires: Option<Instant>,
    size: usize,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// One dictionary.
pub struct SharedDict {
    pub(super) name: String,
    /// Bytes; grows (or shrinks, evicting on the next write) when a Lua plugin module
    /// declares the dictionary with another size.
    capacity: AtomicUsize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: LruCache<Vec<u8>, Entry>,
    used: usize,
}

/// How a write that needs room behaves when the dictionary is full.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Room {
    Evict,
    Fail,
}

/// `set`-family outcome: (ok, err, forcible).
pub(super) type SetResult = (bool, Option<&'static str>, bool);

/// What [`SharedDict::update`] writes back: the new string value and its exptime.
pub(super) type Update = Option<(Vec<u8>, f64)>;

impl SharedDict {
    pub fn new(name: &str, capacity: usize) -> SharedDict {
        SharedDict {
            name: name.to_string(),
            capacity: AtomicUsize::new(capacity),
            inner: Mutex::new(Inner {
                entries: LruCache::unbounded(),
                used: 0,
            }),
        }
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    pub(super) fn set_capacity(&self, bytes: usize) {
        self.capacity.store(bytes, Ordering::Relaxed);
    }

    /// When an entry set now with `exptime` seconds expires; `None` never. An exptime too
    /// large to represent (1e300) never expires rather than panicking.
    fn expiry(exptime: f64) -> Option<Instant> {
        if exptime <= 0.0 || exptime.is_nan() {
            return None;
        }
        Duration::try_from_secs_f64(exptime)
            .ok()
            .and_then(|d| Instant::now().checked_add(d))
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<(Stored, u32)> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let expired = inner.entries.peek(key).is_some_and(|e| e.expired(now));
        if expired {
            inner.remove(key);
            return None;
        }
        inner.entries.get(key).map(|e| (e.value.clone(), e.flags))
    }

    /// Stores `value` (`None` deletes). `only_if`: `Some(true)` = must exist (replace),
    /// `Some(false)` = must not exist (add).
    pub(super) fn store(
        &self,
        key: &[u8],
        value: Option<Stored>,
        exptime: f64,
        flags: u32,
        only_if: Option<bool>,
        room: Room,
    ) -> SetResult {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let exists = inner.entries.peek(key).is_some_and(|e| !e.expired(now));
        match only_if {
            Some(false) if exists => return (false, Some("exists"), false),
            Some(true) if !exists => return (false, Some("not found"), false),
            _ => {}
        }
        self.store_locked(&mut inner, key, value, exptime, flags, room)
    }

    /// `store` once the lock is held and the conditions checked.
    fn store_locked(
        &self,
        inner: &mut Inner,
        key: &[u8],
        value: Option<Stored>,
        exptime: f64,
        flags: u32,
        room: Room,
    ) -> SetResult {
        let now = Instant::now();
        inner.remove(key);
        let Some(value) = value else {
            return (true, None, false);
        };
        let size = key.len()
            + ENTRY_OVERHEAD
            + match &value {
                Stored::Str(s) => s.len(),
                _ => 8,
            };
        let capacity = self.capacity();
        if size > capacity {
            return (false, Some("no memory"), false);
        }
        let mut forcible = false;
        while inner.used + size > capacity {
            if room == Room::Fail && !inner.drop_expired(now) {
                return (false, Some("no memory"), false);
            }
            if !inner.drop_expired(now) {
                if let Some((_, e)) = inner.entries.pop_lru() {
                    inner.used -= e.size;
                    forcible = true;
                }
            }
        }
        inner.used += size;
        inner.entries.put(
            key.to_vec(),
            Entry {
                value,
                flags,
                expires: SharedDict::expiry(exptime),
                size,
            },
        );
        (true, None, forcible)
    }

    /// `incr`: one locked step, so two workers initialising the same missing key both
    /// count (`init + by`, then `+ by`).
    pub(super) fn incr(
        &self,
        key: &[u8],
        by: f64,
        init: Option<f64>,
        init_ttl: f64,
    ) -> Result<(f64, bool), &'static str> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        if let Some(e) = inner.entries.get_mut(key).filter(|e| !e.expired(now)) {
            return match &mut e.value {
                Stored::Num(n) => {
                    *n += by;
                    Ok((*n, false))
                }
                _ => Err("not a number"),
            };
        }
        let Some(init) = init else {
            return Err("not found");
        };
        let value = init + by;
        match self.store_locked(
            &mut inner,
            key,
            Some(Stored::Num(value)),
            init_ttl,
            0,
            Room::Evict,
        ) {
            (true, _, forcible) => Ok((value, forcible)),
            (false, err, _) => Err(err.unwrap_or("no memory")),
        }
    }

    /// Reads the string value of `key` (`None` when missing, expired or not a string)
    /// and writes back what `f` decides, all under the lock: the atomic read-modify-write
    /// `resty.limit.req` needs. `Err` when the write fails (no memory).
    pub(super) fn update<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> (Update, R),
    ) -> Result<R, &'static str> {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let current = match inner.entries.get(key) {
            Some(e) if !e.expired(now) => match &e.value {
                Stored::Str(s) => Some(s.as_slice()),
                _ => None,
            },
            _ => None,
        };
        let (write, result) = f(current);
        if let Some((value, exptime)) = write {
            let (ok, err, _) = self.store_locked(
                &mut inner,
                key,
                Some(Stored::Str(value)),
                exptime,
                0,
                Room::Evict,
            );
            if !ok {
                return Err(err.unwrap_or("no memory"));
            }
        }
        Ok(result)
    }

    pub(super) fn keys(&self, max: usize) -> Vec<Vec<u8>> {
        let inner = self.inner.lock();
        let now = Instant::now();
        inner
            .entries
            .iter()
            .filter(|(_, e)| !e.expired(now))
            .map(|(k, _)| k.clone())
            .take(if max == 0 { usize::MAX } else { max })
            .collect()
    }

    pub(super) fn ttl(&self, key: &[u8]) -> Option<f64> {
        let inner = self.inner.lock();
        let now = Instant::now();
        let e = inner.entries.peek(key).filter(|e| !e.expired(now))?;
        Some(e.expires.map(|x| (x - now).as_secs_f64()).unwrap_or(0.0))
    }

    pub(super) fn expire(&self, key: &[u8], exptime: f64) -> bool {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        match inner.entries.peek_mut(key).filter(|e| !e.expired(now)) {
            Some(e) => {
                e.expires = SharedDict::expiry(exptime);
                true
            }
            None => false,
        }
    }

    pub(super) fn flush_all(&self) {
        let mut inner = self.inner.lock();
        inner.entries.clear();
        inner.used = 0;
    }

    pub(super) fn free_space(&self) -> usize {
        self.capacity().saturating_sub(self.inner.lock().used)
    }
}

impl Inner {
    fn remove(&mut self, key: &[u8]) {
        if let Some(e) = self.entries.pop(key) {
            self.used -= e.size;
        }
    }

    /// Drops one expired entry; false when there is none.
    fn drop_expired(&mut self, now: Instant) -> bool {
        let key = self
            .entries
            .iter()
            .rev()
            .find(|(_, e)| e.expired(now))
            .map(|(k, _)| k.clone());
        match key {
            Some(k) => {
                self.remove(&k);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replace_incr_ttl_and_eviction() {
        let d = SharedDict::new("t", 16 * 1024);
        assert_eq!(
            d.store(
                b"a",
                Some(Stored::Num(1.0)),
                0.0,
                0,
                Some(false),
                Room::Evict
            ),
            (true, None, false)
        );
        assert_eq!(
            d.store(
                b"a",
                Some(Stored::Num(2.0)),
                0.0,
                0,
                Some(false),
                Room::Evict
            ),
            (false, Some("exists"), false)
        );
        assert_eq!(
            d.store(
                b"b",
                Some(Stored::Num(2.0)),
                0.0,
                0,
                Some(true),
                Room::Evict
            ),
            (false, Some("not found"), false)
        );
        assert_eq!(d.incr(b"a", 5.0, None, 0.0), Ok((6.0, false)));
        assert_eq!(d.incr(b"n", 1.0, None, 0.0), Err("not found"));
        assert_eq!(d.incr(b"n", 1.0, Some(10.0), 0.0), Ok((11.0, false)));
        d.store(
            b"s",
            Some(Stored::Str(b"x".to_vec())),
            0.0,
            0,
            None,
            Room::Evict,
        );
        assert_eq!(d.incr(b"s", 1.0, None, 0.0), Err("not a number"));
        assert_eq!(d.ttl(b"a"), Some(0.0));
        assert!(d.expire(b"a", 100.0));
        assert!(d.ttl(b"a").is_some_and(|t| t > 99.0 && t <= 100.0));
        assert_eq!(d.ttl(b"zz"), None);
        // Fill past capacity: set evicts (forcible), safe_set refuses.
        let big = vec![b'x'; 4000];
        let mut forcible = false;
        for i in 0..10 {
            forcible |= d
                .store(
                    format!("k{i}").as_bytes(),
                    Some(Stored::Str(big.clone())),
                    0.0,
                    0,
                    None,
                    Room::Evict,
                )
                .2;
        }
        assert!(forcible);
        assert!(d.inner.lock().used <= 16 * 1024);
        assert_eq!(
            d.store(b"k-safe", Some(Stored::Str(big)), 0.0, 0, None, Room::Fail),
            (false, Some("no memory"), false)
        );
        d.flush_all();
        assert!(d.keys(0).is_empty());
    }

    #[test]
    fn expired_entries_disappear() {
        let d = SharedDict::new("t", 16 * 1024);
        d.store(b"a", Some(Stored::Bool(true)), 0.001, 3, None, Room::Evict);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(d.get(b"a"), None);
        assert!(d.keys(0).is_empty());
    }

    #[test]
    fn huge_exptimes_never_expire_instead_of_panicking() {
        let d = SharedDict::new("t", 16 * 1024);
        for exptime in [1e300, 1.9e19, f64::INFINITY, f64::MAX] {
            d.store(
                b"a",
                Some(Stored::Bool(true)),
                exptime,
                0,
                None,
                Room::Evict,
            );
            assert_eq!(d.get(b"a").map(|(v, _)| v), Some(Stored::Bool(true)));
        }
        assert_eq!(SharedDict::expiry(f64::NAN), None);
        assert_eq!(SharedDict::expiry(-1.0), None);
    }

    #[test]
    fn incr_with_init_and_update_are_atomic_across_threads() {
        let d = std::sync::Arc::new(SharedDict::new("t", 1024 * 1024));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let d = std::sync::Arc::clone(&d);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let key = format!("k{}", i % 50);
                        d.incr(key.as_bytes(), 1.0, Some(0.0), 0.0).unwrap();
                        d.update(b"bytes", |cur| {
                            let n = cur.map(|b| b.len()).unwrap_or(0);
                            (Some((vec![b'x'; n + 1], 0.0)), ())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: f64 = (0..50)
            .map(|i| match d.get(format!("k{i}").as_bytes()) {
                Some((Stored::Num(n), _)) => n,
                other => panic!("{other:?}"),
            })
            .sum();
        assert_eq!(total, 4000.0);
        assert_eq!(
            d.get(b"bytes").map(|(v, _)| v),
            Some(Stored::Str(vec![b'x'; 4000]))
        );
    }

    #[test]
    fn binary_keys_are_distinct() {
        let d = SharedDict::new("t", 16 * 1024);
        d.store(
            &[127, 0, 0, 1],
            Some(Stored::Num(1.0)),
            0.0,
            0,
            None,
            Room::Evict,
        );
        d.store(
            &[0xff, 0xfe],
            Some(Stored::Num(2.0)),
            0.0,
            0,
            None,
            Room::Evict,
        );
        assert_eq!(
            d.get(&[127, 0, 0, 1]).map(|(v, _)| v),
            Some(Stored::Num(1.0))
        );
        assert_eq!(d.get(&[0xff, 0xfe]).map(|(v, _)| v), Some(Stored::Num(2.0)));
    }
}
