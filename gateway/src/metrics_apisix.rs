//! `metrics.naming: apisix`: the families, labels and units of APISIX's `prometheus`
//! plugin, so dashboards and alerts written for APISIX work unchanged.
//!
//! - `apisix_http_status{code,route,matched_uri,matched_host,service,consumer,node}`
//! - `apisix_http_latency{type=request|upstream|apisix,route,service,consumer,node}`, a
//!   histogram in milliseconds with APISIX's buckets
//! - `apisix_bandwidth{type=ingress|egress,route,service,consumer,node}`
//! - `apisix_upstream_status{name,ip,port}`, `apisix_nginx_http_current_connections{state}`,
//!   `apisix_http_requests_total`, `apisix_node_info{hostname,version}`
//!
//! APISIX exposes `apisix_http_status` and `apisix_bandwidth` as counters without the
//! `_total` suffix, which `promtool check metrics` refuses; Portico keeps the names (the
//! dashboards query them) and declares them `untyped`, which promtool accepts and
//! PromQL's `rate()`/`increase()` treat the same. APISIX's `apisix_http_requests_total`
//! is a gauge, which promtool refuses with that suffix; it is a counter here (it only
//! grows, and `rate()`/`irate()` over it read the same). Label values are bounded: ids and
//! configured patterns, never raw paths; `node` is the upstream node's IP, as in APISIX.
//!
//! Every label lookup here hashes seven labels per request, which the `portico` naming's
//! per-route handles avoid; the cost is only paid when this naming is chosen.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// APISIX's default latency buckets, in milliseconds.
const LATENCY_BUCKETS_MS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// The counters APISIX names without `_total`, declared untyped (see above).
const UNTYPED: &[&str] = &["apisix_http_status", "apisix_bandwidth"];

pub struct ApisixMetrics {
    registry: Registry,
    status: IntCounterVec,
    latency: HistogramVec,
    bandwidth: IntCounterVec,
    upstream_status: IntGaugeVec,
    connections: IntGaugeVec,
    requests: IntCounter,
}

/// One finished request, as APISIX labels it.
pub struct ApisixSample<'a> {
    pub route: &'a str,
    pub matched_uri: &'a str,
    pub matched_host: &'a str,
    pub service: &'a str,
    pub consumer: &'a str,
    pub node: &'a str,
    pub status: u16,
    pub total_seconds: f64,
    pub upstream_seconds: Option<f64>,
    pub ingress_bytes: u64,
    pub egress_bytes: u64,
}

impl ApisixMetrics {
    pub fn new(hostname: &str, version: &str) -> Result<ApisixMetrics, prometheus::Error> {
        let registry = Registry::new();
        let status = IntCounterVec::new(
            Opts::new(
                "apisix_http_status",
                "HTTP status codes per service in APISIX",
            ),
            &[
                "code",
                "route",
                "matched_uri",
                "matched_host",
                "service",
                "consumer",
                "node",
            ],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "apisix_http_latency",
                "HTTP request latency in milliseconds per service in APISIX",
            )
            .buckets(LATENCY_BUCKETS_MS.to_vec()),
            &["type", "route", "service", "consumer", "node"],
        )?;
        let bandwidth = IntCounterVec::new(
            Opts::new(
                "apisix_bandwidth",
                "Total bandwidth in bytes consumed per service in APISIX",
            ),
            &["type", "route", "service", "consumer", "node"],
        )?;
        let upstream_status = IntGaugeVec::new(
            Opts::new(
                "apisix_upstream_status",
                "Upstream status from health check",
            ),
            &["name", "ip", "port"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "apisix_nginx_http_current_connections",
                "Number of HTTP connections",
            ),
            &["state"],
        )?;
        let requests = IntCounter::new(
            "apisix_http_requests_total",
            "The total number of client requests since APISIX started",
        )?;
        let node_info = IntGaugeVec::new(
            Opts::new("apisix_node_info", "Info of APISIX node"),
            &["hostname", "version"],
        )?;
        node_info.with_label_values(&[hostname, version]).set(1);
        for c in [&status, &bandwidth] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(upstream_status.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(node_info))?;
        Ok(ApisixMetrics {
            registry,
            status,
            latency,
            bandwidth,
            upstream_status,
            connections,
            requests,
        })
    }

    pub fn record(&self, s: &ApisixSample<'_>) {
        self.requests.inc();
        let code = s.status.to_string();
        self.status
            .with_label_values(&[
                &code,
                s.route,
                s.matched_uri,
                s.matched_host,
                s.service,
                s.consumer,
                s.node,
            ])
            .inc();
        let labels = |t: &'static str| [t, s.route, s.service, s.consumer, s.node];
        let total_ms = s.total_seconds * 1000.0;
        self.latency
            .with_label_values(&labels("request"))
            .observe(total_ms);
        if let Some(up) = s.upstream_seconds {
            let up_ms = up * 1000.0;
            self.latency
                .with_label_values(&labels("upstream"))
                .observe(up_ms);
            self.latency
                .with_label_values(&labels("apisix"))
                .observe((total_ms - up_ms).max(0.0));
        }
        self.bandwidth
            .with_label_values(&labels("ingress"))
            .inc_by(s.ingress_bytes);
        self.bandwidth
            .with_label_values(&labels("egress"))
            .inc_by(s.egress_bytes);
    }

    /// A node's health (`name` is the upstream's identity, `node` its `ip:port`).
    pub fn set_upstream_status(&self, name: &str, node: &str, healthy: bool) {
        let (ip, port) = node.rsplit_once(':').unwrap_or((node, ""));
        let ip = ip.trim_matches(['[', ']']);
        self.upstream_status
            .with_label_values(&[name, ip, port])
            .set(i64::from(healthy));
    }

    /// Drops the health series of nodes no longer configured.
    pub fn forget_upstream_status(&self, name: &str, node: &str) {
        let (ip, port) = node.rsplit_once(':').unwrap_or((node, ""));
        let ip = ip.trim_matches(['[', ']']);
        let _ = self.upstream_status.remove_label_values(&[name, ip, port]);
    }

    /// The exposition text, with APISIX's suffix-less counters declared untyped.
    pub fn render(&self) -> Vec<u8> {
        for (state, v) in crate::connections::counts().by_state() {
            self.connections.with_label_values(&[state]).set(v);
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        for name in UNTYPED {
            text = text.replace(
                &format!("# TYPE {name} counter\n"),
                &format!("# TYPE {name} untyped\n"),
            );
        }
        text.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_labelled_as_apisix_labels_it() {
        let m = ApisixMetrics::new("host-1", "0.1.0").unwrap();
        m.record(&ApisixSample {
            route: "1",
            matched_uri: "/hello/*",
            matched_host: "",
            service: "",
            consumer: "",
            node: "127.0.0.1",
            status: 200,
            total_seconds: 0.010,
            upstream_seconds: Some(0.004),
            ingress_bytes: 100,
            egress_bytes: 200,
        });
        m.set_upstream_status("upstreams/1", "127.0.0.1:8080", true);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains("# TYPE apisix_http_status untyped"), "{text}");
        assert!(text.contains(r#"apisix_http_status{code="200",consumer="",matched_host="",matched_uri="/hello/*",node="127.0.0.1",route="1",service=""} 1"#), "{text}");
        assert!(text.contains(r#"apisix_http_latency_bucket{consumer="",node="127.0.0.1",route="1",service="",type="request",le="10"} 1"#), "{text}");
        assert!(text.contains(r#"apisix_http_latency_sum{consumer="",node="127.0.0.1",route="1",service="",type="apisix"} 6"#), "{text}");
        assert!(
            text.contains(
                r#"apisix_upstream_status{ip="127.0.0.1",name="upstreams/1",port="8080"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"apisix_node_info{hostname="host-1",version="0.1.0"} 1"#),
            "{text}"
        );
        assert!(text.contains("apisix_http_requests_total 1"), "{text}");
        assert!(
            text.contains(r#"apisix_nginx_http_current_connections{state="active"}"#),
            "{text}"
        );
    }
}
