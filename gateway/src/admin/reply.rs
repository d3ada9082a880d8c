//! Admin API responses: APISIX's envelopes and error bodies.

use http::Response;
use serde_json::{json, Value};

use crate::config::ResourceKind;
use crate::config::StoredView;
use crate::store::ApplyError;

/// A JSON response; every admin response carries `X-API-VERSION: v3`.
pub fn json(status: u16, body: &Value) -> Response<Vec<u8>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", bytes.len())
        .header("x-api-version", "v3")
        .header("server", crate::SERVER_NAME)
        .body(bytes)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

pub fn error(status: u16, message: impl Into<String>) -> Response<Vec<u8>> {
    json(status, &json!({ "error_msg": message.into() }))
}

pub fn not_found() -> Response<Vec<u8>> {
    json(404, &json!({ "message": "Key not found" }))
}

/// `{"key", "value", "createdIndex", "modifiedIndex"}`; `value` with the schema
/// defaults filled in (see [`crate::config::defaults`]).
pub fn envelope(kind: ResourceKind, id: &str, view: &StoredView) -> Value {
    json!({
        "key": kind.key(id),
        "value": crate::config::defaults::with_defaults(kind, &public_value(kind, &view.value)),
        "createdIndex": view.created_index,
        "modifiedIndex": view.modified_index,
    })
}

/// Maps a refused change to its status and body.
pub fn apply_error(e: &ApplyError) -> Response<Vec<u8>> {
    match e {
        ApplyError::Invalid(_) | ApplyError::Referenced { .. } | ApplyError::BadRequest(_) => {
            error(400, e.to_string())
        }
        ApplyError::NotFound => not_found(),
        ApplyError::ReadOnly => error(405, e.to_string()),
        ApplyError::Persist(_) => error(500, e.to_string()),
        ApplyError::HandedOver => {
            // The new process of the upgrade answers within seconds.
            let mut reply = error(503, e.to_string());
            reply.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            reply
        }
        ApplyError::Unavailable(_) => error(503, e.to_string()),
        ApplyError::Conflict(_) => error(409, e.to_string()),
    }
}

/// A stored object as the admin API shows it: an SSL's private keys (`key`, `keys`)
/// never leave the store.
pub fn public_value(kind: ResourceKind, value: &Value) -> Value {
    let mut value = value.clone();
    if kind == ResourceKind::Ssls {
        if let Some(obj) = value.as_object_mut() {
            obj.remove("key");
            obj.remove("keys");
        }
    }
    value
}
