//! `GET /v1/healthcheck[/{upstreams|routes|services}/{id}]`: node health in APISIX's
//! control-API format, served on the admin listener (key required).

use http::Response;
use portico_healthcheck::UpstreamStatus;
use serde_json::{json, Value};

use super::reply;
use crate::snapshot::{Snapshot, UpstreamKey};
use crate::store::ConfigStore;

/// APISIX's resource key of the upstream a status is about (the registry knows it by its
/// label; the running snapshot knows which resource that is).
fn name(snapshot: &Snapshot, status: &UpstreamStatus) -> String {
    snapshot
        .upstreams
        .get(&status.upstream)
        .map(|u| u.key.to_string())
        .unwrap_or_else(|| status.upstream.clone())
}

fn render(snapshot: &Snapshot, status: &UpstreamStatus) -> Value {
    json!({
        "name": name(snapshot, status),
        "type": status.kind,
        "nodes": status.nodes,
    })
}

/// `segments` are the path parts after `/v1/healthcheck`.
pub fn get(store: &ConfigStore, segments: &[&str]) -> Response<Vec<u8>> {
    let registry = store.health();
    let snapshot = store.snapshot();
    match segments {
        [] => {
            let list: Vec<Value> = registry
                .status()
                .iter()
                .map(|s| render(&snapshot, s))
                .collect();
            reply::json(200, &Value::Array(list))
        }
        [kind, id] => {
            let key = match *kind {
                "upstreams" => UpstreamKey::Upstream(id.to_string()),
                "routes" => UpstreamKey::Route(id.to_string()),
                "services" => UpstreamKey::Service(id.to_string()),
                _ => return reply::error(404, "404 Route Not Found"),
            };
            match registry.upstream_status(&key.label()) {
                Some(status) => reply::json(200, &render(&snapshot, &status)),
                None => reply::error(404, format!("no health checker for {key}")),
            }
        }
        _ => reply::error(404, "404 Route Not Found"),
    }
}
