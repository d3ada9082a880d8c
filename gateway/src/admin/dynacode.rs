//! `/apisix/admin/dynacode`: the lua-resty-dynacode document (push), with the compile
//! status of every snippet.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::reply;
use crate::config::dynacode::KEY;
use crate::config::DynacodeDoc;
use crate::snapshot::dynacode::DynacodeRuntime;
use crate::store::{ApplySource, Change, ConfigStore, Origin};

/// The envelope: APISIX's `{key, value, createdIndex, modifiedIndex}` plus `snippets`.
fn envelope(store: &ConfigStore) -> Option<Value> {
    let resources = store.resources();
    let entry = resources.dynacode.as_ref()?;
    let snapshot = store.snapshot();
    let snippets = snapshot
        .dynacode
        .as_ref()
        .map(|d| serde_json::to_value(&d.status).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Some(json!({
        "key": KEY,
        "value": *entry.value,
        "createdIndex": entry.created_index,
        "modifiedIndex": entry.modified_index,
        "snippets": snippets,
    }))
}

pub fn get(store: &ConfigStore) -> Response<Vec<u8>> {
    match envelope(store) {
        Some(v) => reply::json(200, &v),
        None => reply::not_found(),
    }
}

/// `PUT`: replaces the document (201 when there was none). Snippets that do not compile
/// are skipped and reported; a wrong shape is a 400 and changes nothing.
pub async fn put(store: &Arc<ConfigStore>, body: Value, origin: Origin) -> Response<Vec<u8>> {
    let s = Arc::clone(store);
    let result = tokio::task::spawn_blocking(move || {
        s.apply_from(Change::PutDynacode(body), ApplySource::Admin, origin)
    })
    .await;
    match result {
        Ok(Ok(applied)) => match envelope(store) {
            Some(v) => reply::json(if applied.created { 201 } else { 200 }, &v),
            None => reply::not_found(),
        },
        Ok(Err(e)) => reply::apply_error(&e),
        Err(e) => reply::error(500, format!("internal error applying the change: {e}")),
    }
}

pub async fn delete(store: &Arc<ConfigStore>, origin: Origin) -> Response<Vec<u8>> {
    let s = Arc::clone(store);
    match tokio::task::spawn_blocking(move || {
        s.apply_from(Change::DeleteDynacode, ApplySource::Admin, origin)
    })
    .await
    {
        Ok(Ok(_)) => reply::json(200, &json!({"deleted": "dynacode", "key": KEY})),
        Ok(Err(e)) => reply::apply_error(&e),
        Err(e) => reply::error(500, format!("internal error applying the change: {e}")),
    }
}

/// `POST /dynacode/validate`: compiles the document without applying it.
pub fn validate(body: &Value) -> Response<Vec<u8>> {
    match DynacodeDoc::parse(body) {
        Ok(doc) => {
            let rt = DynacodeRuntime::build(&doc, Arc::new(body.clone()));
            let (active, failed) = rt.counts();
            reply::json(
                200,
                &json!({"valid": failed == 0, "active": active, "compile_error": failed, "snippets": rt.status}),
            )
        }
        Err(errors) => reply::error(
            400,
            format!(
                "invalid configuration: {}",
                crate::config::describe(&errors)
            ),
        ),
    }
}
