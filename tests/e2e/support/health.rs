//! Helpers of the health-check suites: the `/v1/healthcheck` control API on the
//! admin listener, waiting for node transitions while watching the counters,
//! and the health metrics.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::Gateway;
use super::http::{self, Request};
use super::prom::{self, Sample};
use super::{POLL, WAIT};

/// Transitions take a few probe intervals; CI has two cores and a debug build.
pub const HC_WAIT: Duration = Duration::from_secs(40);

/// `GET /v1/healthcheck{path}` on the admin listener with `key` (None: no key).
pub fn hc_with_key(gw: &Gateway, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = Request::get(&format!("/v1/healthcheck{path}"));
    if let Some(k) = key {
        req = req.header("X-API-KEY", k);
    }
    let resp = http::send(gw.admin_addr(), &req)
        .unwrap_or_else(|e| panic!("GET /v1/healthcheck{path}: transport error {e}"));
    (resp.status, resp.json())
}

/// `GET /v1/healthcheck{path}` with the admin key.
pub fn hc(gw: &Gateway, path: &str) -> (u16, Value) {
    hc_with_key(gw, path, Some(&gw.admin_key))
}

/// `/upstreams/{id}`, or `/{id}` when `id` already names the kind (`routes/r1`).
pub fn hc_path(id: &str) -> String {
    if id.contains('/') {
        format!("/{id}")
    } else {
        format!("/upstreams/{id}")
    }
}

/// The `/v1/healthcheck/upstreams/{id}` object (or `/v1/healthcheck/routes/{r}` for
/// `id` = `routes/{r}`), `None` unless 200.
pub fn upstream_hc(gw: &Gateway, id: &str) -> Option<Value> {
    match hc(gw, &hc_path(id)) {
        (200, v) => Some(v),
        _ => None,
    }
}

/// The node object (`ip`, `port`, `status`, `counter`) of `port` in `body`.
pub fn find_node(body: &Value, port: u16) -> Option<Value> {
    body["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["port"].as_u64() == Some(u64::from(port)))
        .cloned()
}

/// The node object of `port` in upstream `id`, if listed.
pub fn node_hc(gw: &Gateway, id: &str, port: u16) -> Option<Value> {
    upstream_hc(gw, id).and_then(|b| find_node(&b, port))
}

/// `"healthy"` / `"unhealthy"` of `port` in upstream `id`, if listed.
pub fn node_status(gw: &Gateway, id: &str, port: u16) -> Option<String> {
    node_hc(gw, id, port).and_then(|n| n["status"].as_str().map(str::to_owned))
}

/// Waits until upstream `id` is checked and lists every port of `ports` as healthy.
pub fn wait_checked(gw: &Gateway, id: &str, ports: &[u16]) -> Value {
    let mut last = Value::Null;
    let ok = super::wait_until(WAIT, || {
        let Some(body) = upstream_hc(gw, id) else {
            return false;
        };
        last = body.clone();
        ports
            .iter()
            .all(|p| find_node(&body, *p).is_some_and(|n| n["status"] == "healthy"))
    });
    assert!(
        ok,
        "upstream {id} checked with healthy nodes {ports:?}; last /v1/healthcheck{}: {last}",
        hc_path(id)
    );
    last
}

/// What `watch` saw on the way to a status.
#[derive(Debug)]
pub struct Watch {
    /// Largest value of the watched counter while the node still had the old status.
    pub max_before: u64,
    /// When the new status was first seen.
    pub at: Instant,
    /// The node object when the new status was first seen.
    pub node: Value,
    /// Every distinct (status, counter) pair seen, in order (for messages).
    pub seen: Vec<(String, Value)>,
}

/// Polls `/v1/healthcheck/upstreams/{id}` until `port` has status `to`, tracking the
/// largest `counter[counter]` seen before that. Panics after `timeout`.
pub fn watch(
    gw: &Gateway,
    id: &str,
    port: u16,
    to: &str,
    counter: &str,
    timeout: Duration,
) -> Watch {
    let deadline = Instant::now() + timeout;
    let mut max_before = 0;
    let mut seen: Vec<(String, Value)> = Vec::new();
    loop {
        if let Some(n) = node_hc(gw, id, port) {
            let status = n["status"].as_str().unwrap_or("?").to_owned();
            let entry = (status.clone(), n["counter"].clone());
            if seen.last() != Some(&entry) {
                seen.push(entry);
            }
            if status == to {
                return Watch {
                    max_before,
                    at: Instant::now(),
                    node: n,
                    seen,
                };
            }
            max_before = max_before.max(n["counter"][counter].as_u64().unwrap_or(0));
        }
        assert!(
            Instant::now() < deadline,
            "node :{port} of upstream {id} did not become {to} within {timeout:?}; seen {seen:?}; last {}",
            hc(gw, &hc_path(id)).1
        );
        std::thread::sleep(POLL);
    }
}

pub fn scrape(gw: &Gateway) -> Vec<Sample> {
    let text = gw.metrics_text();
    prom::parse(&text).unwrap_or_else(|e| panic!("metrics do not parse: {e}\n{text}"))
}

/// The single sample `name{pairs}`, if present.
pub fn metric(gw: &Gateway, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
    let s = scrape(gw);
    let sel = prom::select(&s, name, pairs);
    if sel.is_empty() {
        None
    } else {
        Some(sel.iter().map(|x| x.value).sum())
    }
}

/// Waits until `name{pairs}` satisfies `pred`; panics with the metrics text otherwise.
pub fn wait_metric(
    gw: &Gateway,
    name: &str,
    pairs: &[(&str, &str)],
    what: &str,
    pred: impl Fn(f64) -> bool,
) -> f64 {
    let mut last = None;
    let ok = super::wait_until(WAIT, || {
        last = metric(gw, name, pairs);
        last.is_some_and(&pred)
    });
    assert!(
        ok,
        "{name}{pairs:?}: {what}; last value {last:?}\n{}",
        gw.metrics_text()
            .lines()
            .filter(|l| l.contains("portico_upstream"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    last.unwrap_or_default()
}
