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
