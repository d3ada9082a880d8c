//! Prometheus metrics, registered explicitly in one [`Registry`] owned by the gateway.
//!
//! Label sets are bounded: route id, upstream id, status code, a fixed `type`. Raw paths
//! never become labels. The request path never looks a label set up in a shared map: each
//! compiled route carries [`RouteMetrics`] with its series already resolved at apply
//! time, and status codes resolve through a per-route lock-free table.

use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use std::collections::{BTreeMap, BTreeSet};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 1 ms to 60 s (APISIX's default shape).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
];

/// Every metric family the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    bandwidth: IntCounterVec,
    config_version: IntGauge,
    config_applies: IntCounterVec,
    /// Stored objects left out at startup because they no longer load, by kind.
    store_skipped: IntCounterVec,
    /// Series for requests that matched no route (`route=""`).
    unmatched: Arc<RouteMetrics>,
    node_healthy: IntGaugeVec,
    health_transitions: IntCounterVec,
    all_unhealthy: IntCounterVec,
    /// (upstream, node) pairs that have a `node_healthy` series, to drop removed nodes.
    health_series: Mutex<BTreeSet<(String, String)>>,
    lua_errors: IntCounterVec,
    dynacode_polls: IntCounterVec,
    dynacode_snippets: IntGaugeVec,
    dynacode_last_success: IntGauge,
    /// `portico_lua_duration_seconds{phase}`, one resolved series per phase.
    lua_duration: Vec<Histogram>,
    /// `portico_ssl_expiry_seconds{ssl}`, computed at each scrape from `ssl_not_after`.
    ssl_expiry: IntGaugeVec,
    /// The earliest `notAfter` (Unix seconds) of each SSL of the running snapshot.
    ssl_not_after: Mutex<BTreeMap<String, i64>>,
    /// Native plugins' answers and the limit plugins' counts.
    pub plugins: crate::metrics_plugins::PluginMetrics,
    /// The response cache's zones.
    pub cache: crate::metrics_cache::CacheMetrics,
    node: crate::metrics_node::NodeMetrics,
    /// `config_provider: etcd`: connection, local copy, revision, skipped objects.
    pub etcd: crate::metrics_etcd::EtcdMetrics,
    /// APISIX's families, with `metrics.naming: apisix`.
    apisix: Option<crate::metrics_apisix::ApisixMetrics>,
    /// Access log lines dropped because the writer was behind.
    access_log_dropped: IntCounter,
}

/// Errors registering metrics; only possible with a programming error (duplicate names).
pub type MetricsError = prometheus::Error;

impl Metrics {
    /// Portico's naming.
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
        Metrics::with_naming(MetricsNaming::Portico)
    }

    pub fn with_naming(naming: MetricsNaming) -> Result<Arc<Metrics>, MetricsError> {
        let apisix = match naming {
            MetricsNaming::Portico => None,
            MetricsNaming::Apisix => Some(crate::metrics_apisix::ApisixMetrics::new(
                &crate::metrics_node::hostname(),
                env!("CARGO_PKG_VERSION"),
            )?),
        };
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portico_http_requests_total",
                "HTTP requests by route, upstream and response status code",
            ),
            &["route", "upstream", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "portico_http_request_duration_seconds",
                "Request latency: type=request is the whole request, type=upstream the upstream's response time",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "type"],
        )?;
        let bandwidth = IntCounterVec::new(
            Opts::new(
                "portico_bandwidth_bytes_total",
                "Bytes by route: type=ingress is received from clients, type=egress sent to them",
            ),
            &["route", "type"],
        )?;
        let config_version = IntGauge::new(
            "portico_config_version",
            "Version of the running configuration snapshot",
        )?;
        let config_applies = IntCounterVec::new(
            Opts::new(
                "portico_config_applies_total",
                "Configuration changes by source (startup, admin, yaml) and result (ok, rejected)",
            ),
            &["source", "result"],
        )?;
        let store_skipped = IntCounterVec::new(
            Opts::new(
                "portico_store_skipped_objects_total",
                "Stored objects left out at startup because they no longer load, by kind",
            ),
            &["kind"],
        )?;
        let node_healthy = IntGaugeVec::new(
            Opts::new(
                "portico_upstream_node_healthy",
                "1 when health checks consider the node healthy, 0 when not",
            ),
            &["upstream", "node"],
        )?;
        let health_transitions = IntCounterVec::new(
            Opts::new(
                "portico_upstream_health_transitions_total",
                "Node health transitions by upstream, node and new state",
            ),
            &["upstream", "node", "to"],
        )?;
        let all_unhealthy = IntCounterVec::new(
            Opts::new(
                "portico_upstream_all_unhealthy_total",
                "Requests balanced over all nodes because every node was unhealthy",
            ),
            &["upstream"],
        )?;
        let lua_errors = IntCounterVec::new(
            Opts::new(
                "portico_lua_errors_total",
                "Lua functions that failed, by plugin, phase and kind (error, timeout, memory)",
            ),
            &["plugin", "phase", "kind"],
        )?;
        let lua_duration_vec = HistogramVec::new(
            HistogramOpts::new(
                "portico_lua_duration_seconds",
                "Time spent running one phase's Lua functions for one request",
            )
            .buckets(vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
            &["phase"],
        )?;
        let lua_duration = portico_plugins::Phase::ALL
            .iter()
            .map(|p| lua_duration_vec.with_label_values(&[p.name()]))
            .collect();
        let dynacode_polls = IntCounterVec::new(
            Opts::new(
                "portico_dynacode_polls_total",
                "Dynacode polls by result: updated, not_modified, fetch_error, status_error, invalid",
            ),
            &["result"],
        )?;
        let dynacode_snippets = IntGaugeVec::new(
            Opts::new(
                "portico_dynacode_snippets",
                "Dynacode snippets of the running document by state (active, compile_error)",
            ),
            &["state"],
        )?;
        let dynacode_last_success = IntGauge::new(
            "portico_dynacode_last_success_timestamp_seconds",
            "Unix time of the last poll that returned a usable document (updated or not modified)",
        )?;
        registry.register(Box::new(dynacode_polls.clone()))?;
        registry.register(Box::new(dynacode_snippets.clone()))?;
        registry.register(Box::new(dynacode_last_success.clone()))?;
        registry.register(Box::new(lua_errors.clone()))?;
        let access_log_dropped = IntCounter::new(
            "portico_access_log_dropped_total",
            "Access log lines dropped because the log writer was behind",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(lua_duration_vec))?;
        registry.register(Box::new(node_healthy.clone()))?;
        registry.register(Box::new(health_transitions.clone()))?;
        registry.register(Box::new(all_unhealthy.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bandwidth.clone()))?;
        registry.register(Box::new(config_version.clone()))?;
        registry.register(Box::new(config_applies.clone()))?;
        registry.register(Box::new(store_skipped.clone()))?;
        let ssl_expiry = IntGaugeVec::new(
            Opts::new(
                "portico_ssl_expiry_seconds",
                "Seconds until the earliest certificate of an SSL expires (negative: expired)",
            ),
            &["ssl"],
        )?;
        registry.register(Box::new(ssl_expiry.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let unmatched = Arc::new(RouteMetrics::new(
            Families {
                requests: requests.clone(),
                duration: duration.clone(),
                bandwidth: bandwidth.clone(),
            },
            "",
            "",
        ));
        let plugins = crate::metrics_plugins::PluginMetrics::register(&registry)?;
        let cache = crate::metrics_cache::CacheMetrics::register(&registry)?;
        let node = crate::metrics_node::NodeMetrics::register(&registry)?;
        let etcd = crate::metrics_etcd::EtcdMetrics::register(&registry)?;
        Ok(Arc::new(Metrics {
            plugins,
            cache,
            node,
            etcd,
            apisix,
            registry,
            requests,
            duration,
            bandwidth,
            config_version,
            config_applies,
            store_skipped,
            unmatched,
            node_healthy,
            health_transitions,
            all_unhealthy,
            health_series: Mutex::new(BTreeSet::new()),
            lua_errors,
            dynacode_polls,
            dynacode_snippets,
            dynacode_last_success,
            lua_duration,
            ssl_expiry,
            ssl_not_after: Mutex::new(BTreeMap::new()),
            access_log_dropped,
        }))
    }

    /// The metrics handle of one route, made when the route is compiled. It registers no
    /// series until the route serves its first request, so idle routes (and routes of
    /// rejected changes or dry runs) cost nothing in memory or in the scrape.
    pub fn route(&self, route: &str, upstream: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics::new(self.families(), route, upstream))
    }

    fn families(&self) -> Families {
        Families {
            requests: self.requests.clone(),
            duration: self.duration.clone(),
            bandwidth: self.bandwidth.clone(),
        }
    }

    /// Series for requests that matched no route.
    pub fn unmatched(&self) -> Arc<RouteMetrics> {
        Arc::clone(&self.unmatched)
    }

    pub fn set_config_version(&self, version: u64) {
        self.config_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    pub fn count_apply(&self, source: &str, ok: bool) {
        self.config_applies
            .with_label_values(&[source, if ok { "ok" } else { "rejected" }])
            .inc();
    }

    /// A stored object of `kind` (a bounded label: resource segments, `dynacode`,
    /// `unknown`) was left out at startup.
    pub fn count_store_skipped(&self, kind: &str) {
        self.store_skipped.with_label_values(&[kind]).inc();
    }

    /// A node changed health.
    pub fn health_transition(&self, upstream: &str, node: &str, healthy: bool) {
        let to = if healthy { "healthy" } else { "unhealthy" };
        self.health_transitions
            .with_label_values(&[upstream, node, to])
            .inc();
        self.node_healthy
            .with_label_values(&[upstream, node])
            .set(i64::from(healthy));
        if let Some(a) = &self.apisix {
            a.set_upstream_status(upstream, node, healthy);
        }
    }

    /// After a swap: one `node_healthy` series per checked node, none for removed nodes.
    pub fn sync_node_health(&self, nodes: Vec<(String, String, bool)>) {
        let mut series = self.health_series.lock();
        let now: BTreeSet<(String, String)> = nodes
            .iter()
            .map(|(u, n, _)| (u.clone(), n.clone()))
            .collect();
        for (u, n) in series.difference(&now) {
            let _ = self.node_healthy.remove_label_values(&[u, n]);
            for to in ["healthy", "unhealthy"] {
                let _ = self.health_transitions.remove_label_values(&[u, n, to]);
            }
        }
        for (u, n, healthy) in &nodes {
            self.node_healthy
                .with_label_values(&[u, n])
                .set(i64::from(*healthy));
            if let Some(a) = &self.apisix {
                a.set_upstream_status(u, n, *healthy);
            }
        }
        if let Some(a) = &self.apisix {
            for (u, n) in series.difference(&now) {
                a.forget_upstream_status(u, n);
            }
        }
        *series = now;
    }

    /// Every node of `upstream` was unhealthy, so a request went to any of them.
    pub fn count_all_unhealthy(&self, upstream: &str) {
        self.all_unhealthy.with_label_values(&[upstream]).inc();
    }

    /// One dynacode poll ended with `result`.
    pub fn count_dynacode_poll(&self, result: &str) {
        self.dynacode_polls.with_label_values(&[result]).inc();
    }

    /// A poll returned a usable document (new or unchanged).
    pub fn set_dynacode_last_success(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.dynacode_last_success
            .set(i64::try_from(now).unwrap_or(i64::MAX));
    }

    /// Snippet counts of the running document.
    pub fn set_dynacode_snippets(&self, active: usize, compile_error: usize) {
        self.dynacode_snippets
            .with_label_values(&["active"])
            .set(active as i64);
        self.dynacode_snippets
            .with_label_values(&["compile_error"])
            .set(compile_error as i64);
    }

    /// A Lua function failed.
    pub fn count_lua_error(&self, plugin: &str, phase: portico_plugins::Phase, kind: &str) {
        self.lua_errors
            .with_label_values(&[plugin, phase.name(), kind])
            .inc();
    }

    /// Time one request spent in one phase's Lua.
    pub fn observe_lua_phase(&self, phase: portico_plugins::Phase, seconds: f64) {
        if let Some(h) = self.lua_duration.get(phase as usize) {
            h.observe(seconds);
        }
    }

    /// After a swap: the SSLs whose expiry is exported, by id, with their `notAfter`.
    pub fn set_ssl_expiry(&self, ssls: BTreeMap<String, i64>) {
        let mut current = self.ssl_not_after.lock();
        for id in current.keys() {
            if !ssls.contains_key(id) {
                let _ = self.ssl_expiry.remove_label_values(&[id]);
            }
        }
        *current = ssls;
    }

    /// The counter of access log lines dropped under pressure.
    pub fn access_log_dropped(&self) -> IntCounter {
        self.access_log_dropped.clone()
    }

    /// APISIX's families, when `metrics.naming` is `apisix`.
    pub fn apisix(&self) -> Option<&crate::metrics_apisix::ApisixMetrics> {
        self.apisix.as_ref()
    }

    /// The text exposition format, as served on `GET /metrics`.
    pub fn render(&self) -> Vec<u8> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for (id, not_after) in self.ssl_not_after.lock().iter() {
            self.ssl_expiry
                .with_label_values(&[id])
                .set(not_after.saturating_sub(now));
        }
        self.plugins.refresh();
        self.node.refresh();
        crate::cache::zone::refresh_metrics();
        let mut families = self.registry.gather();
        let mut buf = match &self.apisix {
            Some(apisix) => {
                // APISIX's families replace the ones they duplicate; the rest (config,
                // Lua, limits, health transitions) keep their Portico names.
                families.retain(|f| !APISIX_REPLACES.contains(&f.name()));
                apisix.render()
            }
            None => Vec::new(),
        };
        // Encoding into a Vec cannot fail for well-formed families; an error would only
        // truncate the scrape, which Prometheus reports on its side.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        buf
    }
}

/// `metrics.naming` (docs/operations.md).
#[derive(Debug, Clone, Copy, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetricsNaming {
    #[default]
    Portico,
    Apisix,
}

/// Portico families that `metrics.naming: apisix` replaces with APISIX's.
const APISIX_REPLACES: &[&str] = &[
    "portico_http_requests_total",
    "portico_http_request_duration_seconds",
    "portico_bandwidth_bytes_total",
    "portico_upstream_node_healthy",
    "portico_http_connections",
    "portico_node_info",
];

/// The labelled families a route's series live in (cheap `Arc` clones).
struct Families {
    requests: IntCounterVec,
    duration: HistogramVec,
    bandwidth: IntCounterVec,
}

/// Status codes with a lock-free slot; others go through a per-route list.
const FAST_CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504,
];

/// A route's latency and bandwidth series, created on its first request.
struct RouteSeries {
    request_duration: Histogram,
    upstream_duration: Histogram,
    ingress: IntCounter,
    egress: IntCounter,
}

/// One route's metrics, shared by every request on the route. Label sets are resolved
/// at most once per series; after that a request only touches atomics (and, for status
/// codes outside [`FAST_CODES`], a short per-route lock, never a registry-wide one).
pub struct RouteMetrics {
    route: String,
    upstream: String,
    families: Families,
    series: OnceLock<RouteSeries>,
    fast_codes: [OnceLock<IntCounter>; FAST_CODES.len()],
    other_codes: Mutex<Vec<(u16, IntCounter)>>,
}

/// What one finished request reports.
pub struct RequestSample {
    pub status: u16,
    pub total_seconds: f64,
    pub upstream_seconds: Option<f64>,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
}

impl RouteMetrics {
    fn new(families: Families, route: &str, upstream: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            upstream: upstream.to_string(),
            families,
            series: OnceLock::new(),
            fast_codes: Default::default(),
            other_codes: Mutex::new(Vec::new()),
        }
    }

    /// Records one finished request.
    pub fn record(&self, sample: &RequestSample) {
        self.count_request(sample.status);
        let series = self.series.get_or_init(|| RouteSeries {
            request_duration: self
                .families
                .duration
                .with_label_values(&[&self.route, "request"]),
            upstream_duration: self
                .families
                .duration
                .with_label_values(&[&self.route, "upstream"]),
            ingress: self
                .families
                .bandwidth
                .with_label_values(&[&self.route, "ingress"]),
            egress: self
                .families
                .bandwidth
                .with_label_values(&[&self.route, "egress"]),
        });
        series.request_duration.observe(sample.total_seconds);
        if let Some(up) = sample.upstream_seconds {
            series.upstream_duration.observe(up);
        }
        series.ingress.inc_by(sample.ingress_bytes);
        series.egress.inc_by(sample.egress_bytes);
    }

    fn count_request(&self, code: u16) {
        if let Some(i) = FAST_CODES.iter().position(|c| *c == code) {
            self.fast_codes[i]
                .get_or_init(|| self.code_counter(code))
                .inc();
            return;
        }
        let mut others = self.other_codes.lock();
        match others.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => counter.inc(),
            None => {
                let counter = self.code_counter(code);
                counter.inc();
                others.push((code, counter));
            }
        }
    }

    fn code_counter(&self, code: u16) -> IntCounter {
        self.families
            .requests
            .with_label_values(&[&self.route, &self.upstream, &code.to_string()])
    }

    /// Removes the request-count series this handle created (the route now points at
    /// another upstream, or is gone).
    pub fn forget_requests(&self) {
        let fast = FAST_CODES
            .iter()
            .zip(self.fast_codes.iter())
            .filter(|(_, c)| c.get().is_some())
            .map(|(code, _)| *code);
        let others: Vec<u16> = self.other_codes.lock().iter().map(|(c, _)| *c).collect();
        for code in fast.chain(others) {
            let _ = self.families.requests.remove_label_values(&[
                &self.route,
                &self.upstream,
                &code.to_string(),
            ]);
        }
    }

    /// Removes every series of the route (it left the configuration).
    pub fn forget_all(&self) {
        self.forget_requests();
        if self.series.get().is_some() {
            for t in ["request", "upstream"] {
                let _ = self
                    .families
                    .duration
                    .remove_label_values(&[&self.route, t]);
            }
            for t in ["ingress", "egress"] {
                let _ = self
                    .families
                    .bandwidth
                    .remove_label_values(&[&self.route, t]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16) -> RequestSample {
        RequestSample {
            status,
            total_seconds: 0.003,
            upstream_seconds: Some(0.002),
            ingress_bytes: 10,
            egress_bytes: 20,
        }
    }

    #[test]
    fn series_appear_on_first_request_with_bounded_labels() {
        let m = Metrics::new().unwrap();
        let r = m.route("r1", "u1");
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            !text.contains(r#"route="r1""#),
            "no series before a request"
        );
        r.record(&sample(200));
        r.record(&sample(200));
        r.record(&sample(418));
        m.set_config_version(7);
        m.count_apply("admin", true);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains(r#"portico_http_requests_total{code="200",route="r1",upstream="u1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"portico_http_requests_total{code="418",route="r1",upstream="u1"} 1"#)
        );
        assert!(text.contains("portico_config_version 7"));
        assert!(text.contains(r#"portico_config_applies_total{result="ok",source="admin"} 1"#));
        assert!(text.contains(r#"portico_bandwidth_bytes_total{route="r1",type="ingress"} 30"#));
        assert!(text.contains(
            r#"portico_http_request_duration_seconds_count{route="r1",type="upstream"} 3"#
        ));
    }

    #[test]
    fn forgetting_removes_exactly_what_was_created() {
        let m = Metrics::new().unwrap();
        let old = m.route("r1", "u1");
        old.record(&sample(200));
        old.record(&sample(418));
        let new = m.route("r1", "u2");
        new.record(&sample(200));
        old.forget_requests();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains(r#"upstream="u1""#), "{text}");
        assert!(text.contains(r#"code="200",route="r1",upstream="u2""#));
        assert!(text.contains(r#"portico_bandwidth_bytes_total{route="r1",type="egress"} 60"#));
        new.forget_all();
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains(r#"route="r1""#), "{text}");
    }
}
