//! Prometheus metrics, registered explicitly in one [`Registry`] owned by the gateway.
//!
//! Label sets are bounded: route id, upstream id, status code, a fixed `type`. Raw paths
//! never become labels. The request path never looks a label set up in a shared map: each
//! compiled route carries [`RouteMetrics`] with its series already resolved at apply
//! time, and status codes resolve through a per-route lock-free table.

use std::sync::{Arc, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
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
    /// Series for requests that matched no route (`route=""`).
    unmatched: Arc<RouteMetrics>,
}

/// Errors registering metrics; only possible with a programming error (duplicate names).
pub type MetricsError = prometheus::Error;

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
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
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(bandwidth.clone()))?;
        registry.register(Box::new(config_version.clone()))?;
        registry.register(Box::new(config_applies.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let unmatched = Arc::new(RouteMetrics::resolve(
            &requests, &duration, &bandwidth, "", "",
        ));
        Ok(Arc::new(Metrics {
            registry,
            requests,
            duration,
            bandwidth,
            config_version,
            config_applies,
            unmatched,
        }))
    }

    /// Series of one route, resolved once when the route is compiled.
    pub fn route(&self, route: &str, upstream: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics::resolve(
            &self.requests,
            &self.duration,
            &self.bandwidth,
            route,
            upstream,
        ))
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

    /// Drops the series of routes that no longer exist, so route churn does not grow the
    /// scrape forever.
    pub fn forget_route(&self, route: &RouteMetrics) {
        for code in route.codes_seen() {
            let _ = self.requests.remove_label_values(&[
                &route.route,
                &route.upstream,
                &code.to_string(),
            ]);
        }
        for t in ["request", "upstream"] {
            let _ = self.duration.remove_label_values(&[&route.route, t]);
        }
        for t in ["ingress", "egress"] {
            let _ = self.bandwidth.remove_label_values(&[&route.route, t]);
        }
    }

    /// The text exposition format, as served on `GET /metrics`.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        // Encoding into a Vec cannot fail for well-formed families; an error would only
        // truncate the scrape, which Prometheus reports on its side.
        let _ = TextEncoder::new().encode(&families, &mut buf);
        buf
    }
}

/// Status codes with a pre-allocated slot; others go through the labelled vector.
const FAST_CODES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 429, 499, 500, 502, 503, 504,
];

/// One route's series, resolved at apply time and shared by every request on the route.
pub struct RouteMetrics {
    route: String,
    upstream: String,
    requests: IntCounterVec,
    fast_codes: [OnceLock<IntCounter>; FAST_CODES.len()],
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub ingress: IntCounter,
    pub egress: IntCounter,
}

impl RouteMetrics {
    fn resolve(
        requests: &IntCounterVec,
        duration: &HistogramVec,
        bandwidth: &IntCounterVec,
        route: &str,
        upstream: &str,
    ) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            upstream: upstream.to_string(),
            requests: requests.clone(),
            fast_codes: Default::default(),
            request_duration: duration.with_label_values(&[route, "request"]),
            upstream_duration: duration.with_label_values(&[route, "upstream"]),
            ingress: bandwidth.with_label_values(&[route, "ingress"]),
            egress: bandwidth.with_label_values(&[route, "egress"]),
        }
    }

    /// Counts one request with its final status code.
    pub fn count_request(&self, code: u16) {
        match FAST_CODES.iter().position(|c| *c == code) {
            Some(i) => self.fast_codes[i]
                .get_or_init(|| self.code_counter(code))
                .inc(),
            None => self.code_counter(code).inc(),
        }
    }

    fn code_counter(&self, code: u16) -> IntCounter {
        self.requests
            .with_label_values(&[&self.route, &self.upstream, &code.to_string()])
    }

    fn codes_seen(&self) -> Vec<u16> {
        // Codes outside the fast table are not tracked; removing them would need a scan of
        // the family. They are rare (1xx, unusual 4xx/5xx), so the bound holds in practice.
        FAST_CODES
            .iter()
            .zip(self.fast_codes.iter())
            .filter(|(_, c)| c.get().is_some())
            .map(|(code, _)| *code)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_series_render_with_bounded_labels() {
        let m = Metrics::new().unwrap();
        let r = m.route("r1", "u1");
        r.count_request(200);
        r.count_request(200);
        r.count_request(418);
        r.request_duration.observe(0.003);
        r.ingress.inc_by(10);
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
        assert!(text.contains(r#"portico_bandwidth_bytes_total{route="r1",type="ingress"} 10"#));
        m.forget_route(&r);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains(r#"code="200",route="r1""#));
    }
}
