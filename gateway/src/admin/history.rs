//! `/apisix/admin/configs/history` and `/configs/rollback/{revision}`: the last
//! `history.keep` applied changes, each revision's whole configuration and what it
//! changed (secrets redacted), and a rollback that applies an earlier configuration
//! through the one apply path as a new revision.

use std::sync::Arc;

use http::Response;
use serde_json::{json, Value};

use super::reply;
use crate::store::history::{self, HistoryEntry};
use crate::store::{ApplyError, ApplySource, Change, ConfigStore, Origin};

/// `GET /configs/history`: every kept entry, newest first, without its changes.
pub fn list(store: &ConfigStore) -> Response<Vec<u8>> {
    let (_, entries) = store.history();
    let list: Vec<Value> = entries.iter().rev().map(|e| meta(e)).collect();
    reply::json(200, &json!({ "list": list, "total": list.len() }))
}

/// `GET /configs/history/{revision}`: the configuration right after that revision, as
/// `GET /configs` shows it, secrets redacted.
pub fn get(store: &ConfigStore, revision: &str) -> Response<Vec<u8>> {
    let (resources, entries) = store.history();
    let Some((entry, rev)) = find(&entries, revision) else {
        return not_kept(revision);
    };
    match history::config_at(&resources, &entries, rev) {
        Some(config) => {
            let mut body = meta(entry);
            body["config"] = history::redacted(&history::document(&config));
            reply::json(200, &body)
        }
        None => not_kept(revision),
    }
}

/// `GET /configs/history/{revision}/diff`: what that revision changed against the one
/// before it: each object's value before and after, secrets redacted.
pub fn diff(store: &ConfigStore, revision: &str) -> Response<Vec<u8>> {
    let (_, entries) = store.history();
    let Some((entry, _)) = find(&entries, revision) else {
        return not_kept(revision);
    };
    let changes: Vec<Value> = entry
        .changes
        .iter()
        .map(|c| {
            json!({
                "key": c.key,
                "action": c.action(),
                "before": c.before.as_deref().map(history::redacted),
                "after": c.after.as_deref().map(history::redacted),
            })
        })
        .collect();
    let mut body = meta(entry);
    body["changes"] = Value::Array(changes);
    reply::json(200, &body)
}

/// `POST /configs/rollback/{revision}`: applies the configuration right after that
/// revision (`ReplaceAll`, validated, persisted and swapped as any change) as a new
/// revision; 400 when it no longer validates. The dynacode document is not part of
/// it and stays as it is.
pub async fn rollback(
    store: &Arc<ConfigStore>,
    revision: &str,
    origin: Origin,
) -> Response<Vec<u8>> {
    let (resources, entries) = store.history();
    let Some((_, rev)) = find(&entries, revision) else {
        return not_kept(revision);
    };
    let Some(config) = history::config_at(&resources, &entries, rev) else {
        return not_kept(revision);
    };
    let items: Vec<_> = config
        .into_iter()
        .flat_map(|(kind, objects)| {
            objects.into_iter().map(move |(id, mut value)| {
                if let Some(o) = value.as_object_mut() {
                    o.remove("create_time");
                    o.remove("update_time");
                }
                (kind, id, value)
            })
        })
        .collect();
    let total = items.len();
    let origin = Origin {
        note: Some(format!("rollback to revision {rev}")),
        ..origin
    };
    let s = Arc::clone(store);
    let result = tokio::task::spawn_blocking(move || {
        s.apply_from(Change::ReplaceAll(items), ApplySource::Admin, origin)
    })
    .await;
    match result {
        Ok(Ok(applied)) => reply::json(
            200,
            &json!({
                "rolled_back_to": rev,
                "revision": applied.revision,
                "version": applied.version,
                "total": total,
            }),
        ),
        Ok(Err(e @ ApplyError::Invalid(_))) => reply::error(
            400,
            format!("revision {rev} no longer validates, nothing was changed: {e}"),
        ),
        Ok(Err(e)) => reply::apply_error(&e),
        Err(e) => reply::error(500, format!("internal error applying the change: {e}")),
    }
}

fn meta(e: &HistoryEntry) -> Value {
    json!({
        "revision": e.revision,
        "time": e.time,
        "source": e.source,
        "key_name": e.key_name,
        "summary": e.summary,
    })
}

fn find<'a>(entries: &'a [Arc<HistoryEntry>], revision: &str) -> Option<(&'a HistoryEntry, u64)> {
    let rev = revision.parse::<u64>().ok()?;
    entries
        .iter()
        .find(|e| e.revision == rev)
        .map(|e| (e.as_ref(), rev))
}

fn not_kept(revision: &str) -> Response<Vec<u8>> {
    reply::error(
        404,
        format!("revision {revision} is not in the configuration history (see GET /apisix/admin/configs/history)"),
    )
}
