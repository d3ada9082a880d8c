//! CRUD on `/apisix/admin/{routes,upstreams,services,global_rules}`, APISIX v3 semantics.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::reply;
use crate::config::patch::checked_body;
use crate::config::ResourceKind;
use crate::store::{ApplySource, Change, ConfigStore, Origin};

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
pub(super) async fn apply(
    store: &Arc<ConfigStore>,
    change: Change,
    origin: Origin,
) -> Result<crate::store::Applied, crate::store::ApplyError> {
    let store = Arc::clone(store);
    match tokio::task::spawn_blocking(move || store.apply_from(change, ApplySource::Admin, origin))
        .await
    {
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
    origin: Origin,
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
    write_and_reply(store, kind, change, origin).await
}

/// `PUT /{res}` with `id` in the body: creates or replaces that id, as APISIX does for
/// every kind. A body without `id` is a 400 naming the field.
pub async fn put_with_body_id(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    body: Value,
    origin: Origin,
) -> Response<Vec<u8>> {
    let id = match body.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return reply::error(
                400,
                format!(
                    "invalid {} id: `id` must be a non-empty string or an integer",
                    kind.noun()
                ),
            )
        }
        None => {
            return reply::error(
                400,
                format!(
                    "missing {} id: give it in the URL or as `id` in the body",
                    kind.noun()
                ),
            )
        }
    };
    put(store, kind, &id, body, origin).await
}

/// `PUT /consumers` (the username in the body, APISIX's documented form) and
/// `PUT /consumers/{username}` (a body without `username` takes the URL's).
pub async fn put_consumer(
    store: &Arc<ConfigStore>,
    url_name: Option<&str>,
    mut body: Value,
    origin: Origin,
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
    put(store, ResourceKind::Consumers, &name, body, origin).await
}

/// `POST /{res}`: a server-generated id (chosen inside the writer, so concurrent POSTs
/// never share one), 201.
pub async fn post(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    body: Value,
    origin: Origin,
) -> Response<Vec<u8>> {
    let value = match checked_body(kind, None, body) {
        Ok(v) => v,
        Err(m) => return reply::error(400, m),
    };
    write_and_reply(store, kind, Change::Create { kind, value }, origin).await
}

/// `PATCH /{res}/{id}` (merge patch) and `PATCH /{res}/{id}/{sub/path}` (replace). The
/// read-merge-write runs inside the writer: concurrent PATCHes never lose an update.
pub async fn patch(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    id: &str,
    sub_path: &[&str],
    body: Value,
    origin: Origin,
) -> Response<Vec<u8>> {
    let change = Change::Patch {
        kind,
        id: id.to_string(),
        path: sub_path.iter().map(|s| s.to_string()).collect(),
        patch: body,
    };
    write_and_reply(store, kind, change, origin).await
}

async fn write_and_reply(
    store: &Arc<ConfigStore>,
    kind: ResourceKind,
    change: Change,
    origin: Origin,
) -> Response<Vec<u8>> {
    match apply(store, change, origin).await {
        Ok(applied) => {
            let id = applied.id.unwrap_or_default();
            match store.resources().get(kind, &id) {
                Some(view) => {
                    let status = if applied.created { 201 } else { 200 };
                    let mut body = reply::envelope(kind, &id, &view);
                    if let Some(warning) = ssl_warning(store, kind, &id) {
                        body["warning"] = Value::String(warning);
                    }
                    reply::json(status, &body)
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
    origin: Origin,
) -> Response<Vec<u8>> {
    let force = super::query_arg(query, "force").is_some_and(|v| v == "true");
    let change = Change::Delete {
        kind,
        id: id.to_string(),
        force,
    };
    match apply(store, change, origin).await {
        // etcd's delete count, as APISIX 3 answers it (clients run `int(deleted)`).
        Ok(_) => reply::json(200, &json!({ "deleted": "1", "key": kind.key(id) })),
        Err(e) => reply::apply_error(&e),
    }
}

/// The warning an SSL write answers with when a certificate it holds has expired: it is
/// accepted and served (as nginx does), and the writer should know.
fn ssl_warning(store: &ConfigStore, kind: ResourceKind, id: &str) -> Option<String> {
    if kind != ResourceKind::Ssls {
        return None;
    }
    let snapshot = store.snapshot();
    let ssl = snapshot.tls.ssls.get(id)?;
    let now = crate::snapshot::tls::unix_now();
    ssl.expired_at(now).then(|| {
        format!(
            "certificate expired {} seconds ago; it is served anyway",
            now - ssl.not_after
        )
    })
}
