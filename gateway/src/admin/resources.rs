//! CRUD on `/apisix/admin/{routes,upstreams,services,global_rules}`, APISIX v3 semantics.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::reply;
use crate::config::patch::checked_body;
use crate::config::ResourceKind;
use crate::store::{ApplySource, Change, ConfigStore};

/// Page size bounds of APISIX's list pagination.
const PAGE_SIZE_MIN: usize = 10;
const PAGE_SIZE_MAX: usize = 500;

pub fn get_one(store: &ConfigStore, kind: ResourceKind, id: &str) -> Response<Vec<u8>> {
    match store.resources().get(kind, id) {
        Some(view) => reply::json(200, &reply::envelope(kind, id, &view)),
        None => reply::not_found(),
    }
}

/// `GET /{res}`: every entry, or one page with `page`/`page_size`.
pub fn list(store: &ConfigStore, kind: ResourceKind, query: Option<&str>) -> Response<Vec<u8>> {
    let arg = |name: &str| super::query_arg(query, name);
    let page = match arg("page").map(|v| v.parse::<usize>()) {
        None => None,
        Some(Ok(p)) if p >= 1 => Some(p),
        Some(_) => return reply::error(400, "invalid page: must be an integer of at least 1"),
    };
    let page_size = match arg("page_size").map(|v| v.parse::<usize>()) {
        None => None,
        Some(Ok(s)) if (PAGE_SIZE_MIN..=PAGE_SIZE_MAX).contains(&s) => Some(s),
        Some(_) => {
            return reply::error(
                400,
                format!(
                    "invalid page_size: must be an integer from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX}"
                ),
            )
        }
    };
    let resources = store.resources();
    let all = resources.list(kind);
    let total = all.len();
    let items: Vec<Value> = match (page, page_size) {
        (None, None) => all
            .iter()
            .map(|(id, v)| reply::envelope(kind, id, v))
            .collect(),
        (p, s) => {
            let size = s.unwrap_or(PAGE_SIZE_MIN);
            let start = (p.unwrap_or(1) - 1).saturating_mul(size);
            all.iter()
                .skip(start)
                .take(size)
                .map(|(id, v)| reply::envelope(kind, id, v))
                .collect()
        }
    };
    reply::json(200, &json!({ "list": items, "total": total }))
}

/// Runs a change on the blocking pool: `apply` fsyncs, which must not stall the admin
/// runtime's other connections.
async fn apply(
    store: &Arc<ConfigStore>,
    change: Change,
) -> Result<crate::store::Applied, crate::store::ApplyError> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.apply(change, ApplySource::Admin)).await {
        Ok(r) => r,
        Err(e) => Err(crate::store::ApplyError::Invalid(vec![
            crate::config::FieldError::new("", format!("internal error applying the change: {e}")),
        ])),
    }
}

/// `PUT /{res}/{id}`: 201 when created, 200 when replaced.
pub async fn put(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    id: &str,
    body: Value,
) -> Response<Vec<u8>> {
    let value = match checked_body(kind, Some(id), body) {
        Ok(v) => v,
        Err(m) => return reply::error(400, m),
    };
    let change = Change::Put {
        kind,
        id: id.to_string(),
        value,
    };
    write_and_reply(store, kind, change).await
}

/// `PUT /consumers` (the username in the body, APISIX's documented form) and
/// `PUT /consumers/{username}` (a body without `username` takes the URL's).
pub async fn put_consumer(
    store: &Arc<ConfigStore>,
    url_name: Option<&str>,
    mut body: Value,
) -> Response<Vec<u8>> {
    let Some(obj) = body.as_object_mut() else {
        return reply::error(400, "invalid configuration: expected a JSON object");
    };
    let name = match (obj.get("username"), url_name) {
        (Some(Value::String(b)), Some(u)) if b != u => {
            return reply::error(400, "wrong username: the body's differs from the URL's")
        }
        (Some(Value::String(b)), _) => b.clone(),
        (Some(_), _) => {
            return reply::error(400, "invalid configuration: username: expected a string")
        }
        (None, Some(u)) => {
            obj.insert("username".into(), Value::String(u.to_string()));
            u.to_string()
        }
        (None, None) => return reply::error(400, "invalid configuration: username: is required"),
    };
    if let Err(m) = crate::config::check_username(&name) {
        return reply::error(400, format!("invalid configuration: username: {m}"));
    }
    // The stored object carries `id` = username (set by the store); a body may repeat it.
    put(store, ResourceKind::Consumers, &name, body).await
}

/// `POST /{res}`: a server-generated id (chosen inside the writer, so concurrent POSTs
/// never share one), 201.
pub async fn post(store: &Arc<ConfigStore>, kind: ResourceKind, body: Value) -> Response<Vec<u8>> {
    let value = match checked_body(kind, None, body) {
        Ok(v) => v,
        Err(m) => return reply::error(400, m),
    };
    write_and_reply(store, kind, Change::Create { kind, value }).await
}

/// `PATCH /{res}/{id}` (merge patch) and `PATCH /{res}/{id}/{sub/path}` (replace). The
/// read-merge-write runs inside the writer: concurrent PATCHes never lose an update.
pub async fn patch(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    id: &str,
    sub_path: &[&str],
    body: Value,
) -> Response<Vec<u8>> {
    let change = Change::Patch {
        kind,
        id: id.to_string(),
        path: sub_path.iter().map(|s| s.to_string()).collect(),
        patch: body,
    };
    write_and_reply(store, kind, change).await
}

async fn write_and_reply(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    change: Change,
) -> Response<Vec<u8>> {
    match apply(store, change).await {
        Ok(applied) => {
            let id = applied.id.unwrap_or_default();
            match store.resources().get(kind, &id) {
                Some(view) => {
                    let status = if applied.created { 201 } else { 200 };
                    reply::json(status, &reply::envelope(kind, &id, &view))
                }
                None => reply::not_found(),
            }
        }
        Err(e) => reply::apply_error(&e),
    }
}

/// `DELETE /{res}/{id}[?force=true]`.
pub async fn delete(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    id: &str,
    query: Option<&str>,
) -> Response<Vec<u8>> {
    let force = super::query_arg(query, "force").is_some_and(|v| v == "true");
    let change = Change::Delete {
        kind,
        id: id.to_string(),
        force,
    };
    match apply(store, change).await {
        Ok(_) => reply::json(200, &json!({ "deleted": id, "key": kind.key(id) })),
        Err(e) => reply::apply_error(&e),
    }
}
