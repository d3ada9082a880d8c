//! A disk zone's storage: one file per entry under `disk_path`, in nginx-style hashed
//! directories (`cache_levels` `1:2`: `<last hex char>/<two before it>/<hash>`), written
//! to a temporary name and renamed, so a reader sees a whole file or none. Entries
//! survive a restart (and a binary upgrade: the new process reads the same files); at
//! startup the zone's files are indexed (header only) into the eviction manager, which
//! keeps the zone under `disk_size`. A corrupt or truncated file is a miss and is
//! removed.

use std::any::Any;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use pingora::{Error, ErrorType, OrErr, Result};
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget, PurgeType,
    Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};

use super::disk_file;
use super::hit::BodyHit;
use crate::metrics_cache::ZoneCounters;

/// Temporary files end with this (left-overs of a crash are removed at startup).
const TMP_SUFFIX: &str = ".tmp";

pub struct DiskStorage {
    root: PathBuf,
    /// Directory name lengths, outermost first (`1:2` → `[1, 2]`).
    levels: Vec<usize>,
    /// File size by entry, to keep `bytes` right when an entry goes.
    sizes: Mutex<HashMap<HashBinary, usize>>,
    bytes: AtomicUsize,
    tmp_seq: AtomicU64,
    counters: ZoneCounters,
}

fn hex(hash: &HashBinary) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl DiskStorage {
    pub fn new(root: PathBuf, levels: Vec<usize>, counters: ZoneCounters) -> DiskStorage {
        DiskStorage {
            root,
            levels,
            sizes: Mutex::new(HashMap::new()),
            bytes: AtomicUsize::new(0),
            tmp_seq: AtomicU64::new(0),
            counters,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// `root/<levels...>/<hex>`: the levels are taken from the end of the hex name.
    fn path_for(&self, hash: &HashBinary) -> PathBuf {
        let name = hex(hash);
        let mut path = self.root.clone();
        let mut end = name.len();
        for &len in &self.levels {
            let start = end.saturating_sub(len);
            path.push(&name[start..end]);
            end = start;
        }
        path.push(name);
        path
    }

    fn track(&self, hash: HashBinary, size: Option<usize>) {
        let old = {
            let mut sizes = self.sizes.lock();
            match size {
                Some(s) => sizes.insert(hash, s),
                None => sizes.remove(&hash),
            }
        };
        if let Some(s) = size {
            self.bytes.fetch_add(s, Ordering::Relaxed);
        }
        if let Some(o) = old {
            self.bytes.fetch_sub(o, Ordering::Relaxed);
        }
    }

    async fn write_file(&self, hash: &HashBinary, data: Vec<u8>) -> Result<usize> {
        let path = self.path_for(hash);
        let size = data.len();
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}.{seq}{TMP_SUFFIX}", std::process::id()));
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .or_err(ErrorType::InternalError, "creating a cache directory")?;
        }
        tokio::fs::write(&tmp, data)
            .await
            .or_err(ErrorType::InternalError, "writing a cache file")?;
        if let Err(e) = tokio::fs::rename(&tmp, &path).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Error::e_explain(
                ErrorType::InternalError,
                format!("renaming a cache file: {e}"),
            );
        }
        self.track(*hash, Some(size));
        Ok(size)
    }

    async fn remove_file(&self, hash: &HashBinary) -> bool {
        let removed = tokio::fs::remove_file(self.path_for(hash)).await.is_ok();
        self.track(*hash, None);
        removed
    }

    /// Every entry file under the root (blocking): its key and primary key string, and
    /// its size. Temporary left-overs are removed; unreadable files are removed too.
    pub fn scan(&self) -> Vec<(PathBuf, disk_file::EntryHeader, usize)> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for item in read.flatten() {
                let path = item.path();
                let Ok(kind) = item.file_type() else { continue };
                if kind.is_dir() {
                    dirs.push(path);
                } else if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                    let _ = std::fs::remove_file(&path);
                } else if kind.is_file() {
                    match read_header(&path) {
                        Some((header, size)) => out.push((path, header, size)),
                        None => {
                            tracing::warn!("cache: removing unreadable file {}", path.display());
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
            }
        }
        out
    }

    /// Indexes the files already on disk (startup): returns their keys and sizes for
    /// the eviction manager.
    pub fn load_existing(&self) -> Vec<(CompactCacheKey, usize)> {
        let mut keys = Vec::new();
        for (_, header, size) in self.scan() {
            self.track(header.key.combined_bin(), Some(size));
            keys.push((header.key, size));
        }
        keys
    }

    /// Removes these entries' files (blocking; startup eviction).
    pub fn remove_blocking(&self, keys: &[CompactCacheKey]) {
        for key in keys {
            let hash = key.combined_bin();
            let _ = std::fs::remove_file(self.path_for(&hash));
            self.track(hash, None);
        }
    }

    /// Removes every entry whose primary key starts with `prefix` (blocking); returns
    /// their keys.
    pub fn purge_prefix(&self, prefix: &str) -> Vec<CompactCacheKey> {
        let mut removed = Vec::new();
        for (path, header, _) in self.scan() {
            if header.primary.starts_with(prefix) && std::fs::remove_file(&path).is_ok() {
                self.track(header.key.combined_bin(), None);
                removed.push(header.key);
            }
        }
        removed
    }
}

fn read_header(path: &Path) -> Option<(disk_file::EntryHeader, usize)> {
    let file = std::fs::File::open(path).ok()?;
    let size = usize::try_from(file.metadata().ok()?.len()).ok()?;
    let mut head = Vec::new();
    file.take((disk_file::HEADER_LEN + disk_file::MAX_KEY_LEN) as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some((disk_file::decode_header(&head)?, size))
}

#[async_trait]
impl Storage for DiskStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.combined_bin();
        let path = self.path_for(&hash);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                tracing::warn!("cache: cannot read {}: {e}", path.display());
                return Ok(None);
            }
        };
        let decoded = disk_file::decode(Bytes::from(data))
            .filter(|e| e.primary.as_bytes() == key.primary_key());
        let meta = decoded
            .as_ref()
            .and_then(|e| CacheMeta::deserialize(&e.meta.0, &e.meta.1).ok());
        match (decoded, meta) {
            (Some(entry), Some(meta)) => Ok(Some((meta, Box::new(BodyHit::new(entry.body))))),
            _ => {
                tracing::warn!("cache: corrupt entry {} removed (a miss)", path.display());
                self.remove_file(&hash).await;
                Ok(None)
            }
        }
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let primary = String::from_utf8_lossy(key.primary_key()).into_owned();
        if primary.len() > disk_file::MAX_KEY_LEN {
            return Error::e_explain(ErrorType::InternalError, "cache key too long");
        }
        Ok(Box::new(DiskMiss {
            storage: self,
            key: key.to_compact(),
            primary,
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
        if self.remove_file(&target.key().combined_bin()).await {
            if matches!(purge_type, PurgeType::Eviction) {
                self.counters.count_eviction();
            }
            Ok(PurgeOutcome::Purged(None))
        } else {
            Ok(PurgeOutcome::NotFound)
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let Ok(data) = tokio::fs::read(self.path_for(&hash)).await else {
            return Ok(false);
        };
        let Some(old) = disk_file::decode(Bytes::from(data)) else {
            return Ok(false);
        };
        let data = disk_file::encode(&old.key, &old.primary, &meta.serialize()?, &old.body);
        self.write_file(&hash, data).await?;
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

struct DiskMiss {
    storage: &'static DiskStorage,
    key: CompactCacheKey,
    primary: String,
    meta: (Vec<u8>, Vec<u8>),
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for DiskMiss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let data = disk_file::encode(&self.key, &self.primary, &self.meta, &self.body);
        let size = self
            .storage
            .write_file(&self.key.combined_bin(), data)
            .await?;
        Ok(MissFinishType::Created(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;
    use std::time::{Duration, SystemTime};

    fn storage(root: &Path) -> &'static DiskStorage {
        Box::leak(Box::new(DiskStorage::new(
            root.to_path_buf(),
            vec![1, 2],
            ZoneCounters::detached().unwrap(),
        )))
    }

    fn span() -> SpanHandle {
        pingora_cache::trace::Span::inactive().handle()
    }

    async fn fill(s: &'static DiskStorage, key: &CacheKey, body: &'static [u8]) {
        let now = SystemTime::now();
        let resp = ResponseHeader::build(200, None).unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, resp);
        let mut miss = s.get_miss_handler(key, &meta, &span()).await.unwrap();
        miss.write_body(Bytes::from_static(body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    fn tmpdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portico-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn entries_survive_a_new_storage_and_corruption_is_a_miss() {
        let dir = tmpdir("survive");
        let key = CacheKey::new("host/a", "");
        fill(storage(&dir), &key, b"hello").await;

        let again = storage(&dir);
        let keys = again.load_existing();
        assert_eq!(keys.len(), 1);
        assert!(again.bytes() > 5);
        let (_, mut hit) = again.lookup(&key, &span()).await.unwrap().unwrap();
        assert_eq!(hit.read_body().await.unwrap().unwrap(), "hello");

        let path = again.path_for(&key.combined_bin());
        let name = hex(&key.combined_bin());
        assert!(path.ends_with(format!("{}/{}/{name}", &name[31..], &name[29..31])));
        let mut data = std::fs::read(&path).unwrap();
        let n = data.len();
        data[n - 3] ^= 0xff;
        std::fs::write(&path, data).unwrap();
        assert!(again.lookup(&key, &span()).await.unwrap().is_none());
        assert!(!path.exists());
        assert_eq!(again.bytes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn purges_one_and_by_prefix() {
        let dir = tmpdir("purge");
        let s = storage(&dir);
        fill(s, &CacheKey::new("h/img/1", ""), b"1").await;
        fill(s, &CacheKey::new("h/img/2", ""), b"2").await;
        fill(s, &CacheKey::new("h/css/1", ""), b"3").await;
        let k = CacheKey::new("h/css/1", "").to_compact();
        let t = PurgeTarget::Active(&k);
        assert_eq!(
            s.purge(t, PurgeType::Invalidation, &span()).await.unwrap(),
            PurgeOutcome::Purged(None)
        );
        assert_eq!(
            s.purge(t, PurgeType::Invalidation, &span()).await.unwrap(),
            PurgeOutcome::NotFound
        );
        assert_eq!(s.purge_prefix("h/img/").len(), 2);
        assert_eq!(s.bytes(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
