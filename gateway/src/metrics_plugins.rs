//! Metrics of native plugins: requests they answered themselves (a limit refusing,
//! an auth failing) by plugin and route, and the limit plugins' own counts (keys
//! evicted from full tables, Redis errors, `limit-conn` slots held), which live in
//! `portico-plugins` as atomics and are copied in at scrape time.

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct PluginMetrics {
    rejected: IntCounterVec,
    evictions: IntCounter,
    redis_errors: IntCounter,
    conn_in_flight: IntGauge,
    /// The plugin crate's counts at the last scrape (counters only go up by the delta).
    seen: Mutex<(u64, u64)>,
}

impl PluginMetrics {
    pub fn register(registry: &Registry) -> Result<PluginMetrics, prometheus::Error> {
        let rejected = IntCounterVec::new(
            Opts::new(
                "portico_plugin_rejected_total",
                "Requests a native plugin answered itself (e.g. limit-count refusing), by plugin and route id",
            ),
            &["plugin", "route"],
        )?;
        let evictions = IntCounter::new(
            "portico_limit_evictions_total",
            "Rate-limit keys evicted from a full table while their window was still open",
        )?;
        let redis_errors = IntCounter::new(
            "portico_limit_redis_errors_total",
            "Failed Redis calls of rate-limit plugins with policy redis",
        )?;
        let conn_in_flight = IntGauge::new(
            "portico_limit_conn_in_flight",
            "Requests holding a limit-conn slot",
        )?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(redis_errors.clone()))?;
        registry.register(Box::new(conn_in_flight.clone()))?;
        Ok(PluginMetrics {
            rejected,
            evictions,
            redis_errors,
            conn_in_flight,
            seen: Mutex::new((0, 0)),
        })
    }

    /// A native plugin answered a request on `route` (empty: no route matched).
    pub fn count_rejected(&self, plugin: &str, route: &str) {
        self.rejected.with_label_values(&[plugin, route]).inc();
    }

    /// Copies the plugin crate's counts in; called before each scrape.
    pub fn refresh(&self) {
        let now = portico_plugins::native::limit::stats();
        let mut seen = self.seen.lock();
        self.evictions.inc_by(now.evictions.saturating_sub(seen.0));
        self.redis_errors
            .inc_by(now.redis_errors.saturating_sub(seen.1));
        *seen = (now.evictions, now.redis_errors);
        self.conn_in_flight.set(now.conn_in_flight);
    }
}
