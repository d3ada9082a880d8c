//! `GET /apisix/admin/plugins/list` and `GET /apisix/admin/plugins/{name}` (APISIX):
//! which plugins exist (built-in Lua, native, and Lua modules) and a plugin's schema.

use http::Response;
use serde_json::{json, Value};

use super::reply;
use crate::store::ConfigStore;

/// The schema of the built-in serverless plugins.
fn serverless_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "phase": {
                "type": "string",
                "default": "access",
                "enum": ["rewrite", "access", "content", "balancer", "header_filter", "body_filter", "log", "before_proxy"]
            },
            "functions": {"type": "array", "minItems": 1, "items": {"type": "string"}}
        },
        "required": ["functions"]
    })
}

pub fn list(store: &ConfigStore) -> Response<Vec<u8>> {
    let snapshot = store.snapshot();
    let mut names: Vec<String> = store.plugins().names().map(str::to_string).collect();
    names.extend(snapshot.lua_modules.keys().cloned());
    names.sort();
    reply::json(200, &Value::from(names))
}

/// `GET /plugins?all=true`: every plugin's schema with its `priority` and `type`
/// (`auth` for authentication plugins), and `metadata_schema` where it has one, by name.
pub fn all(store: &ConfigStore) -> Response<Vec<u8>> {
    let snapshot = store.snapshot();
    let registry = store.plugins();
    let mut out = serde_json::Map::new();
    for name in registry.names() {
        let schema = if name.starts_with("serverless-") {
            serverless_schema()
        } else {
            registry.native_schema(name).unwrap_or_else(|| json!({}))
        };
        let mut described = describe(schema, registry.priority(name).unwrap_or(0), name);
        // APISIX lists `metadata_schema` for the plugins that take plugin_metadata.
        if let Some(m) = registry.metadata_schema(name) {
            described["metadata_schema"] = m;
        }
        out.insert(name.to_string(), described);
    }
    for (name, m) in &snapshot.lua_modules {
        let schema = m
            .schema_json
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        out.insert(name.clone(), describe(schema, m.priority, name));
    }
    reply::json(200, &Value::Object(out))
}

fn describe(schema: Value, priority: i32, name: &str) -> Value {
    let kind = if portico_plugins::consumer::is_auth_plugin(name) {
        "auth"
    } else {
        "other"
    };
    json!({"name": name, "priority": priority, "type": kind, "schema": schema})
}

/// `PUT /plugins/reload`: plugins are compiled into the binary and every configuration
/// is rebuilt at each apply, so there is nothing to reload; answers `done` as APISIX.
pub fn reload() -> Response<Vec<u8>> {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("content-length", 4)
        .header("x-api-version", "v3")
        .header("server", crate::SERVER_NAME)
        .body(b"done".to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

pub fn schema(store: &ConfigStore, name: &str) -> Response<Vec<u8>> {
    if name == "serverless-pre-function" || name == "serverless-post-function" {
        return reply::json(200, &serverless_schema());
    }
    if let Some(schema) = store.plugins().native_schema(name) {
        return reply::json(200, &schema);
    }
    match store.snapshot().lua_modules.get(name) {
        Some(m) => reply::json(
            200,
            &m.schema_json
                .clone()
                .unwrap_or_else(|| json!({"type": "object"})),
        ),
        None => reply::error(404, format!("plugin `{name}` not found")),
    }
}
