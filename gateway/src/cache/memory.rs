//! A memory zone's storage: whole entries (serialized meta, body, primary key) in one
//! map keyed by the entry's combined hash. Bounded by the zone's eviction manager
//! (Pingora's sharded LRU, weighed in bytes): each fill is admitted there and what it
//! evicts is purged here. Entries are visible only once complete (no partial reads),
//! so concurrent misses wait on the cache lock for the writer to finish.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use pingora::Result;
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
    Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};

use super::hit::BodyHit;
use crate::metrics_cache::ZoneCounters;

/// Bytes counted per entry besides its meta, body and key (map slot, `Arc`, lengths):
/// keeps a zone of many tiny entries within its size too.
const ENTRY_OVERHEAD: usize = 128;

struct Entry {
    key: CompactCacheKey,
    primary: Box<str>,
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
    weight: usize,
}

pub struct MemoryStorage {
    entries: RwLock<HashMap<HashBinary, Arc<Entry>>>,
    bytes: AtomicUsize,
    counters: ZoneCounters,
}

impl MemoryStorage {
    pub fn new(counters: ZoneCounters) -> MemoryStorage {
        MemoryStorage {
            entries: RwLock::new(HashMap::new()),
            bytes: AtomicUsize::new(0),
            counters,
        }
    }

    /// Bytes held (the eviction manager's weights of the entries stored).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn insert(&self, hash: HashBinary, entry: Entry) {
        let weight = entry.weight;
        let old = self.entries.write().insert(hash, Arc::new(entry));
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        if let Some(old) = old {
            self.bytes.fetch_sub(old.weight, Ordering::Relaxed);
        }
    }

    fn remove(&self, hash: &HashBinary) -> Option<Arc<Entry>> {
        let removed = self.entries.write().remove(hash);
        if let Some(e) = &removed {
            self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every entry whose primary key starts with `prefix` (all of them for an
    /// empty prefix); returns their keys, for the eviction manager.
    pub fn purge_prefix(&self, prefix: &str) -> Vec<CompactCacheKey> {
        let hashes: Vec<HashBinary> = self
            .entries
            .read()
            .iter()
            .filter(|(_, e)| e.primary.starts_with(prefix))
            .map(|(h, _)| *h)
            .collect();
        hashes
            .iter()
            .filter_map(|h| self.remove(h).map(|e| e.key.clone()))
            .collect()
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let entry = self.entries.read().get(&key.combined_bin()).cloned();
        let Some(entry) = entry else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
        Ok(Some((meta, Box::new(BodyHit::new(entry.body.clone())))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(MemoryMiss {
            storage: self,
            key: key.to_compact(),
            hash: key.combined_bin(),
            primary: String::from_utf8_lossy(key.primary_key()).into(),
            meta: meta.serialize()?,
            body: BytesMut::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        match self.remove(&target.key().combined_bin()) {
            Some(_) => {
                if matches!(purge_type, PurgeType::Eviction) {
                    self.counters.count_eviction();
                }
                Ok(PurgeOutcome::Purged(None))
            }
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let Some(old) = self.entries.read().get(&hash).cloned() else {
            return Ok(false);
        };
        let meta = meta.serialize()?;
        let weight = weight_of(&old.primary, &meta, old.body.len());
        self.insert(
            hash,
            Entry {
                key: old.key.clone(),
                primary: old.primary.clone(),
                meta,
                body: old.body.clone(),
                weight,
            },
        );
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// What an entry weighs, here and in the eviction manager.
pub fn weight_of(primary: &str, meta: &(Vec<u8>, Vec<u8>), body: usize) -> usize {
    ENTRY_OVERHEAD + primary.len() + meta.0.len() + meta.1.len() + body
}

struct MemoryMiss {
    storage: &'static MemoryStorage,
    key: CompactCacheKey,
    hash: HashBinary,
    primary: Box<str>,
    meta: (Vec<u8>, Vec<u8>),
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let weight = weight_of(&self.primary, &self.meta, self.body.len());
        self.storage.insert(
            self.hash,
            Entry {
                key: self.key,
                primary: self.primary,
                meta: self.meta,
                body: self.body.freeze(),
                weight,
            },
        );
        Ok(MissFinishType::Created(weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn storage() -> &'static MemoryStorage {
        Box::leak(Box::new(MemoryStorage::new(
            ZoneCounters::detached().unwrap(),
        )))
    }

    fn meta() -> CacheMeta {
        let now = SystemTime::now();
        let resp = ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, resp)
    }

    async fn fill(s: &'static MemoryStorage, key: &CacheKey, body: &'static [u8]) -> usize {
        let span = pingora_cache::trace::Span::inactive().handle();
        let mut miss = s.get_miss_handler(key, &meta(), &span).await.unwrap();
        miss.write_body(Bytes::from_static(body), true)
            .await
            .unwrap();
        match miss.finish().await.unwrap() {
            MissFinishType::Created(n) => n,
            MissFinishType::Appended(..) => panic!("appended"),
        }
    }

    #[tokio::test]
    async fn fills_looks_up_purges_and_counts_bytes() {
        let s = storage();
        let span = pingora_cache::trace::Span::inactive().handle();
        let key = CacheKey::new("host/a", "");
        assert!(s.lookup(&key, &span).await.unwrap().is_none());
        let weight = fill(s, &key, b"hello").await;
        assert_eq!(s.bytes(), weight);
        let (_, mut hit) = s.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "hello");
        let compact = key.to_compact();
        let target = PurgeTarget::Active(&compact);
        let out = s
            .purge(target, PurgeType::Invalidation, &span)
            .await
            .unwrap();
        assert_eq!(out, PurgeOutcome::Purged(None));
        let out = s
            .purge(target, PurgeType::Invalidation, &span)
            .await
            .unwrap();
        assert_eq!(out, PurgeOutcome::NotFound);
        assert_eq!(s.bytes(), 0);
    }

    #[tokio::test]
    async fn purges_by_prefix() {
        let s = storage();
        fill(s, &CacheKey::new("h/img/1", ""), b"1").await;
        fill(s, &CacheKey::new("h/img/2", ""), b"2").await;
        fill(s, &CacheKey::new("h/css/1", ""), b"3").await;
        assert_eq!(s.purge_prefix("h/img/").len(), 2);
        assert_eq!(s.purge_prefix("").len(), 1);
        assert_eq!(s.bytes(), 0);
    }
}
