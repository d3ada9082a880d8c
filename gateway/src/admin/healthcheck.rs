//! `GET /v1/healthcheck[/{upstreams|routes|services}/{id}]`: node health in APISIX's
//! control-API format, served on the admin listener (key required).

use http::Response;
use portico_healthcheck::{HealthRegistry, UpstreamStatus};
use serde_json::{json, Value};

use super::reply;
use crate::health::resource_name;

fn render(status: &UpstreamStatus) -> Value {
    json!({
        "name": resource_name(&status.upstream),
        "type": status.kind,
        "nodes": status.nodes,
    })
}

/// `segments` are the path parts after `/v1/healthcheck`.
pub fn get(registry: &HealthRegistry, segments: &[&str]) -> Response<Vec<u8>> {
    match segments {
        [] => {
            let list: Vec<Value> = registry.status().iter().map(render).collect();
            reply::json(200, &Value::Array(list))
        }
        [kind, id] => {
            let identity = match *kind {
                "upstreams" => id.to_string(),
                "routes" => format!("route:{id}"),
                "services" => format!("service:{id}"),
                _ => return reply::error(404, "404 Route Not Found"),
            };
            match registry.upstream_status(&identity) {
                Some(status) => reply::json(200, &render(&status)),
                None => reply::error(
                    404,
                    format!("no health checker for {}", resource_name(&identity)),
                ),
            }
        }
        _ => reply::error(404, "404 Route Not Found"),
    }
}
