//! The etcd provider's metrics (`config_provider: etcd`, docs/cluster.md).

use std::collections::BTreeSet;

use parking_lot::Mutex;
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry};

pub struct EtcdMetrics {
    connected: IntGauge,
    local_copy: IntGauge,
    revision: IntGauge,
    resyncs: IntCounter,
    skipped: IntGaugeVec,
    /// Keys that have a `skipped` series, to drop the ones repaired.
    skipped_keys: Mutex<BTreeSet<String>>,
}

impl EtcdMetrics {
    pub fn register(registry: &Registry) -> Result<EtcdMetrics, prometheus::Error> {
        let connected = IntGauge::new(
            "portico_etcd_connected",
            "1 while the etcd watch is established, 0 while etcd is unreachable",
        )?;
        let local_copy = IntGauge::new(
            "portico_etcd_serving_local_copy",
            "1 while the configuration served is the local copy in data_dir (etcd unreachable since startup)",
        )?;
        let revision = IntGauge::new(
            "portico_etcd_revision",
            "The etcd revision of the running configuration",
        )?;
        let resyncs = IntCounter::new(
            "portico_etcd_full_reads_total",
            "Full reads of the etcd prefix (startup, reconnection, compaction, etcd restart)",
        )?;
        let skipped = IntGaugeVec::new(
            Opts::new(
                "portico_etcd_skipped_objects",
                "1 for each object in etcd left out because it does not load, by etcd key",
            ),
            &["key"],
        )?;
        for m in [&connected, &local_copy, &revision] {
            registry.register(Box::new(m.clone()))?;
        }
        registry.register(Box::new(resyncs.clone()))?;
        registry.register(Box::new(skipped.clone()))?;
        Ok(EtcdMetrics {
            connected,
            local_copy,
            revision,
            resyncs,
            skipped,
            skipped_keys: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub fn set_serving_local_copy(&self, yes: bool) {
        self.local_copy.set(i64::from(yes));
    }

    pub fn set_revision(&self, revision: u64) {
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    pub fn count_full_read(&self) {
        self.resyncs.inc();
    }

    /// The objects left out now (one series each; the repaired ones' series go).
    pub fn set_skipped(&self, keys: &BTreeSet<String>) {
        let mut held = self.skipped_keys.lock();
        for gone in held.difference(keys) {
            let _ = self.skipped.remove_label_values(&[gone]);
        }
        for key in keys {
            self.skipped.with_label_values(&[key]).set(1);
        }
        *held = keys.clone();
    }
}
