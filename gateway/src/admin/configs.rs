//! `/apisix/admin/configs`: the whole configuration at once (APISIX's API-driven
//! standalone mode). `PUT` replaces everything atomically, `POST /configs/validate`
//! dry-runs.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Map, Value};

use super::reply;
use crate::config::{items_of, ResourceKind};
use crate::store::{ApplyError, ApplySource, Change, ConfigStore, Origin};

/// `GET /configs`: every resource, by kind, as lists of objects.
pub fn get(store: &ConfigStore) -> Response<Vec<u8>> {
    let resources = store.resources();
    let mut out = Map::new();
    for kind in ResourceKind::ALL {
        let list: Vec<Value> = resources
            .list(kind)
            .into_iter()
            .map(|(_, v)| (*v.value).clone())
            .collect();
        out.insert(kind.segment().to_string(), Value::Array(list));
    }
    reply::json(200, &Value::Object(out))
}

/// `PUT /configs` (`dry_run = false`) and `POST /configs/validate` (`dry_run = true`).
pub async fn replace(
    store: &Arc<ConfigStore>,
    body: Value,
    dry_run: bool,
    origin: Origin,
) -> Response<Vec<u8>> {
    let items = match items_of(body) {
        Ok(items) => items,
        Err(errors) => return reply::apply_error(&ApplyError::Invalid(errors)),
    };
    let total = items.len();
    let store = Arc::clone(store);
    let result = tokio::task::spawn_blocking(move || {
        let change = Change::ReplaceAll(items);
        if dry_run {
            store.dry_run(change).map(|_| None)
        } else {
            store
                .apply_from(change, ApplySource::Admin, origin)
                .map(|a| Some(a.version))
        }
    })
    .await;
    match result {
        Ok(Ok(None)) => reply::json(
            200,
            &json!({ "message": "configuration is valid", "total": total }),
        ),
        Ok(Ok(Some(version))) => reply::json(200, &json!({ "version": version, "total": total })),
        Ok(Err(e)) => reply::apply_error(&e),
        Err(e) => reply::error(500, format!("internal error applying the change: {e}")),
    }
}
