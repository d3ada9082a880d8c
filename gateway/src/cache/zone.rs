//! Cache zones: process-wide and long-lived, opened once at startup from `cache.zones`
//! and looked up by name when a configuration is applied. Pingora's cache API takes
//! `&'static` storages, eviction managers and locks, so each zone's are leaked once
//! (zones come from the static settings, so this is bounded); a configuration swap never
//! touches them, and entries outlive every snapshot.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use pingora_cache::eviction::{lru, CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora_cache::key::CompactCacheKey;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::storage::Storage;
use portico_plugins::native::proxy_cache::CacheStrategy;

use super::disk::DiskStorage;
use super::memory::MemoryStorage;
use crate::metrics_cache::{CacheMetrics, ZoneCounters};
use crate::settings_cache::{parse_levels, CacheSettings, ZoneSettings};

/// How long a fill may hold a key's lock before waiting requests give up on it.
const LOCK_AGE_TIMEOUT: Duration = Duration::from_secs(10);
/// LRU shards of an eviction manager.
const SHARDS: usize = 16;
/// The largest body stored (it is held in memory while it is filled; also never more
/// than the zone's size): a larger response is proxied, not stored.
const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

/// The storage of one strategy of a zone, with its eviction manager.
pub struct Tier {
    pub storage: &'static (dyn Storage + Sync),
    pub eviction: &'static (dyn EvictionManager + Sync),
    /// The largest body this tier stores.
    pub max_entry: usize,
    kind: TierKind,
}

#[derive(Clone, Copy)]
enum TierKind {
    Memory(&'static MemoryStorage),
    Disk(&'static DiskStorage),
}

pub struct Zone {
    pub name: String,
    pub memory: Option<Tier>,
    pub disk: Option<Tier>,
    /// One lock table per zone: concurrent misses of a key wait for one fill.
    pub lock: &'static CacheKeyLockImpl,
    pub counters: ZoneCounters,
}

/// Every zone, by name, and the status header's name.
pub struct Zones {
    by_name: HashMap<String, &'static Zone>,
    pub status_header: http::HeaderName,
}

static ZONES: OnceLock<Zones> = OnceLock::new();

/// Makes `zones` the process's zones (once; a second call is ignored).
pub fn install(zones: Zones) {
    let _ = ZONES.set(zones);
}

/// The process's zones (`None` before [`install`]: no zone exists).
pub fn installed() -> Option<&'static Zones> {
    ZONES.get()
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

fn manager(limit: usize) -> &'static lru::Manager<SHARDS> {
    leak(lru::Manager::<SHARDS>::with_capacity(limit, 128))
}

impl Zones {
    /// Opens every zone of `settings`. `load`: index the disk zones' existing files
    /// (startup); `portico -t` only checks names and does not touch the disk.
    pub fn open(
        settings: &CacheSettings,
        data_dir: &Path,
        metrics: &CacheMetrics,
        load: bool,
    ) -> Result<Zones, String> {
        let status_header = http::HeaderName::from_bytes(settings.status_header.as_bytes())
            .map_err(|_| format!("cache.status_header: `{}`", settings.status_header))?;
        let mut by_name = HashMap::new();
        for z in &settings.zones {
            let zone = open_zone(z, data_dir, metrics.zone(&z.name), load)?;
            by_name.insert(z.name.clone(), leak(zone));
        }
        Ok(Zones {
            by_name,
            status_header,
        })
    }

    pub fn get(&self, name: &str) -> Option<&'static Zone> {
        self.by_name.get(name).copied()
    }

    /// The tier a route with `strategy` on zone `name` uses; the error says why there
    /// is none (for `cache_zone`).
    pub fn tier(
        &self,
        name: &str,
        strategy: CacheStrategy,
    ) -> Result<(&'static Zone, &'static Tier), String> {
        let zone = self
            .get(name)
            .ok_or_else(|| format!("unknown cache zone `{name}` (see cache.zones)"))?;
        let tier = match strategy {
            CacheStrategy::Memory => zone.memory.as_ref(),
            CacheStrategy::Disk => zone.disk.as_ref(),
        };
        tier.map(|t| (zone, t)).ok_or_else(|| match strategy {
            CacheStrategy::Memory => format!("cache zone `{name}` has no memory_size"),
            CacheStrategy::Disk => {
                format!("cache zone `{name}` has no disk_path (cache_strategy disk)")
            }
        })
    }
}

fn open_zone(
    z: &ZoneSettings,
    data_dir: &Path,
    counters: ZoneCounters,
    load: bool,
) -> Result<Zone, String> {
    let at = format!("cache.zones[name={}]", z.name);
    let memory = match z.memory_size.as_ref().and_then(|s| s.bytes()) {
        Some(limit) => {
            let storage = leak(MemoryStorage::new(counters.clone()));
            Some(Tier {
                storage,
                eviction: manager(limit),
                max_entry: limit.min(MAX_ENTRY_BYTES),
                kind: TierKind::Memory(storage),
            })
        }
        None => None,
    };
    let disk = match (
        z.disk_dir(data_dir),
        z.disk_size.as_ref().and_then(|s| s.bytes()),
    ) {
        (Some(dir), Some(limit)) => {
            let levels = parse_levels(z.cache_levels.as_deref().unwrap_or("1:2"))
                .map_err(|e| format!("{at}.cache_levels: {e}"))?;
            let storage = leak(DiskStorage::new(dir, levels, counters.clone()));
            let eviction = manager(limit);
            if load {
                admit_existing(storage, eviction);
            }
            Some(Tier {
                storage,
                eviction,
                max_entry: limit.min(MAX_ENTRY_BYTES),
                kind: TierKind::Disk(storage),
            })
        }
        _ => None,
    };
    Ok(Zone {
        name: z.name.clone(),
        memory,
        disk,
        lock: leak(CacheLock::new(LOCK_AGE_TIMEOUT)),
        counters,
    })
}

/// Indexes a disk zone's files into its eviction manager (evicting what no longer fits,
/// e.g. after `disk_size` shrank).
fn admit_existing(storage: &'static DiskStorage, eviction: &'static lru::Manager<SHARDS>) {
    let now = SystemTime::now();
    let mut evicted = Vec::new();
    for (key, size) in storage.load_existing() {
        evicted.extend(eviction.admit(CacheEntryKey::key_only(key), size, now));
    }
    let keys: Vec<CompactCacheKey> = evicted.into_iter().map(CacheEntryKey::into_key).collect();
    storage.remove_blocking(&keys);
}

impl Tier {
    /// Removes every entry whose primary key (the rendered `cache_key`) starts with
    /// `prefix`, all of them for an empty one (blocking: the disk is walked). Returns how
    /// many were removed.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let removed = match self.kind {
            TierKind::Memory(m) => m.purge_prefix(prefix),
            TierKind::Disk(d) => d.purge_prefix(prefix),
        };
        for key in &removed {
            self.eviction
                .remove(CacheEntryKeyRef::from_entry_id(key, None));
        }
        removed.len()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self.kind {
            TierKind::Memory(m) => m.bytes(),
            TierKind::Disk(d) => d.bytes(),
        }
    }
}

impl Zone {
    /// Both tiers, for purging a whole zone.
    pub fn tiers(&self) -> impl Iterator<Item = &Tier> {
        self.memory.iter().chain(self.disk.iter())
    }
}

/// Copies each zone's byte count into its gauge (before a scrape).
pub fn refresh_metrics() {
    if let Some(zones) = installed() {
        for zone in zones.by_name.values() {
            zone.counters.set_bytes(zone.tiers().map(Tier::bytes).sum());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_zone_s_storages() {
        let settings: CacheSettings = serde_yaml::from_str(
            "zones:\n - {name: mem, memory_size: 4m}\n - {name: disk, disk_path: /nonexistent/portico, disk_size: 1m}\n",
        )
        .unwrap();
        let metrics = CacheMetrics::register(&prometheus::Registry::new()).unwrap();
        let zones = Zones::open(&settings, Path::new("/data"), &metrics, false).unwrap();
        assert!(zones.tier("mem", CacheStrategy::Memory).is_ok());
        let err = |name, s| zones.tier(name, s).err().unwrap();
        assert!(err("mem", CacheStrategy::Disk).contains("has no disk_path"));
        assert!(err("disk", CacheStrategy::Memory).contains("has no memory_size"));
        assert!(err("nope", CacheStrategy::Memory).contains("unknown cache zone `nope`"));
        let (_, tier) = zones.tier("disk", CacheStrategy::Disk).unwrap();
        assert_eq!(tier.max_entry, 1024 * 1024);
        assert_eq!(zones.status_header.as_str(), "apisix-cache-status");
    }
}
