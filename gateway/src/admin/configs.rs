//! `/apisix/admin/configs`: the whole configuration at once (APISIX's API-driven
//! standalone mode, see [`super::standalone`]). `PUT` replaces everything atomically,
//! `POST /configs/validate` dry-runs.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Map, Value};

use super::reply;
use super::standalone::{self, StandaloneState};
use crate::config::{items_of, ResourceKind};
use crate::store::{ApplyError, ApplySource, Change, ConfigStore, Origin};

/// `GET /configs`: every resource, by kind, as lists of objects, with the
/// `<kind>_conf_version`s an API-driven client set (none until one does, so a plain
/// export can be `PUT` back as it is) and its `X-Digest` header.
pub fn get(store: &ConfigStore, state: &StandaloneState) -> Response<Vec<u8>> {
    let resources = store.resources();
    let mut out = Map::new();
    for kind in ResourceKind::ALL {
        let list: Vec<Value> = resources
            .list(kind)
            .into_iter()
            .map(|(_, v)| reply::public_value(kind, &v.value))
            .collect();
        out.insert(kind.segment().to_string(), Value::Array(list));
    }
    for (kind, v) in &state.versions {
        out.insert(format!("{kind}_conf_version"), (*v).into());
    }
    let mut response = reply::json(200, &Value::Object(out));
    if let Some(d) = state.digest.as_ref().and_then(|d| d.parse().ok()) {
        response.headers_mut().insert("x-digest", d);
    }
    response
}

/// `PUT /configs`: an API-driven body (see [`super::standalone`]): skipped when its
/// `X-Digest` is the last applied one; versions remembered once it is applied.
pub async fn put(
    store: &Arc<ConfigStore>,
    body: Value,
    digest: Option<String>,
    state: &mut StandaloneState,
    origin: Origin,
) -> Response<Vec<u8>> {
    if digest.is_some() && digest == state.digest {
        return reply::json(
            200,
            &json!({ "message": "configuration unchanged: X-Digest is the one last applied" }),
        );
    }
    let prepared = match standalone::prepare(body, state, &store.resources()) {
        Ok(p) => p,
        Err(m) => return reply::error(400, m),
    };
    let response = replace(store, prepared.body, false, origin).await;
    if response.status().is_success() {
        state.versions.extend(prepared.versions);
        if digest.is_some() {
            state.digest = digest;
        }
    }
    response
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
