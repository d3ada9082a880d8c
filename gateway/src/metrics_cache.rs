//! Metrics of the response cache (`proxy-cache`), per zone (the zone names of the static
//! settings: a bounded label set): lookups that hit and missed, entries evicted to keep
//! the zone within its size, and the bytes the zone holds.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

pub struct CacheMetrics {
    hits: IntCounterVec,
    misses: IntCounterVec,
    evictions: IntCounterVec,
    bytes: IntGaugeVec,
}

impl CacheMetrics {
    pub fn register(registry: &Registry) -> Result<CacheMetrics, prometheus::Error> {
        let hits = IntCounterVec::new(
            Opts::new(
                "portico_cache_hits_total",
                "Responses served from the cache (HIT and STALE), by zone",
            ),
            &["zone"],
        )?;
        let misses = IntCounterVec::new(
            Opts::new(
                "portico_cache_misses_total",
                "Cacheable requests that went upstream (MISS and EXPIRED), by zone",
            ),
            &["zone"],
        )?;
        let evictions = IntCounterVec::new(
            Opts::new(
                "portico_cache_evictions_total",
                "Entries evicted to keep a zone within its size, by zone",
            ),
            &["zone"],
        )?;
        let bytes = IntGaugeVec::new(
            Opts::new(
                "portico_cache_bytes",
                "Bytes held by a zone's storage (entries, headers and keys), by zone",
            ),
            &["zone"],
        )?;
        registry.register(Box::new(hits.clone()))?;
        registry.register(Box::new(misses.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        Ok(CacheMetrics {
            hits,
            misses,
            evictions,
            bytes,
        })
    }

    /// The series of one zone, resolved once (at startup).
    pub fn zone(&self, zone: &str) -> ZoneCounters {
        ZoneCounters {
            hits: self.hits.with_label_values(&[zone]),
            misses: self.misses.with_label_values(&[zone]),
            evictions: self.evictions.with_label_values(&[zone]),
            bytes: self.bytes.with_label_values(&[zone]),
        }
    }
}

/// One zone's series.
#[derive(Clone)]
pub struct ZoneCounters {
    hits: IntCounter,
    misses: IntCounter,
    evictions: IntCounter,
    bytes: IntGauge,
}

impl ZoneCounters {
    /// Series registered nowhere (unit tests, `portico -t`).
    pub fn detached() -> Result<ZoneCounters, prometheus::Error> {
        Ok(CacheMetrics::register(&Registry::new())?.zone(""))
    }

    pub fn count_hit(&self) {
        self.hits.inc();
    }

    pub fn count_miss(&self) {
        self.misses.inc();
    }

    pub fn count_eviction(&self) {
        self.evictions.inc();
    }

    pub fn set_bytes(&self, bytes: usize) {
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}
