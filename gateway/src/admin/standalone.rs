//! APISIX's API-driven standalone body on `PUT /apisix/admin/configs`, as ADC and the
//! APISIX ingress controller send it: `<kind>_conf_version` per resource kind,
//! `modifiedIndex` per object, and an `X-Digest` header.
//!
//! - `<kind>_conf_version` greater than the last one accepted for that kind: the kind is
//!   replaced by the body's list; equal: the kind is left as it runs (the body's list is
//!   ignored); smaller: 400, the update is stale. Versions start at 0 and live in memory
//!   (as in APISIX); a kind without one in the body is replaced, as before.
//! - `modifiedIndex` / `createdIndex` on an object are dropped: Portico's store gives the
//!   indexes.
//! - `X-Digest`: a body whose digest equals the last applied one is not applied again.
//! - Lists of APISIX kinds Portico does not have (`protos`, `secrets`, `stream_routes`) are accepted
//!   when empty (ADC sends them all) and refused otherwise, naming the kind.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{ResourceKind, ResourceSet};

/// The suffix of a kind's version field.
const CONF_VERSION: &str = "_conf_version";

/// APISIX resource kinds Portico has no counterpart for.
const FOREIGN_KINDS: &[&str] = &["protos", "secrets", "stream_routes"];

/// What the last accepted API-driven updates set, kept between requests.
#[derive(Debug, Default)]
pub struct StandaloneState {
    /// Kind segment → its `conf_version`.
    pub versions: BTreeMap<String, u64>,
    /// The `X-Digest` of the last applied body.
    pub digest: Option<String>,
}

/// A body made ready for the ordinary `configs` parser, and the versions to remember
/// when it is applied.
pub struct Prepared {
    pub body: Value,
    pub versions: BTreeMap<String, u64>,
}

/// Turns an API-driven body into a plain `configs` document: version fields checked and
/// removed, kinds whose version is unchanged replaced by what runs, per-object indexes
/// dropped, empty lists of foreign kinds removed. The error is the 400's message.
pub fn prepare(
    body: Value,
    state: &StandaloneState,
    running: &ResourceSet,
) -> Result<Prepared, String> {
    let Value::Object(map) = body else {
        return Err("invalid configuration: expected a JSON object".to_string());
    };
    let mut versions = BTreeMap::new();
    let mut lists = Map::new();
    for (key, value) in map {
        match key.strip_suffix(CONF_VERSION) {
            Some(kind) => {
                let v = value
                    .as_u64()
                    .ok_or_else(|| format!("{key}: must be a non-negative integer"))?;
                versions.insert(kind.to_string(), v);
            }
            None => {
                lists.insert(key, value);
            }
        }
    }
    let mut out = Map::new();
    for (key, list) in lists {
        if FOREIGN_KINDS.contains(&key.as_str()) {
            if list.as_array().is_some_and(|a| !a.is_empty()) || !list.is_array() {
                return Err(format!(
                    "{key}: Portico has no {key}; send an empty list or leave it out"
                ));
            }
            continue;
        }
        out.insert(key, without_indexes(list));
    }
    for (kind, &v) in &versions {
        let current = state.versions.get(kind).copied().unwrap_or(0);
        if v < current {
            return Err(format!(
                "{kind}{CONF_VERSION}: {v} is older than the running {current}; the update is stale"
            ));
        }
        if v == current {
            if let Some(k) = ResourceKind::from_segment(kind) {
                let objects = running
                    .list(k)
                    .into_iter()
                    .map(|(_, view)| (*view.value).clone())
                    .collect();
                out.insert(kind.clone(), Value::Array(objects));
            }
        }
    }
    Ok(Prepared {
        body: Value::Object(out),
        versions,
    })
}

/// A list with `modifiedIndex`/`createdIndex` removed from each object.
fn without_indexes(list: Value) -> Value {
    match list {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|mut item| {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("modifiedIndex");
                        o.remove("createdIndex");
                    }
                    item
                })
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_decide_per_kind_and_indexes_are_dropped() {
        let mut state = StandaloneState::default();
        state.versions.insert("routes".into(), 5);
        let body = json!({
            "routes_conf_version": 5,
            "upstreams_conf_version": 7,
            "consumers_conf_version": 1,
            "routes": [{"id": "ignored", "uri": "/x"}],
            "upstreams": [{"id": "u", "modifiedIndex": 7, "nodes": {}}],
            "consumers": [],
        });
        let p = prepare(body, &state, &ResourceSet::default()).unwrap();
        assert_eq!(p.body["routes"], json!([]), "unchanged version: what runs");
        assert_eq!(p.body["upstreams"], json!([{"id": "u", "nodes": {}}]));
        assert_eq!(p.body["consumers"], json!([]), "a kind Portico has is kept");
        assert_eq!(p.versions["upstreams"], 7);

        let stale = prepare(
            json!({"routes_conf_version": 4}),
            &state,
            &ResourceSet::default(),
        );
        assert!(stale.err().unwrap().contains("stale"));
        let foreign = prepare(
            json!({"protos": [{"id": "1"}], "stream_routes": []}),
            &state,
            &ResourceSet::default(),
        );
        assert!(foreign
            .err()
            .unwrap()
            .starts_with("protos: Portico has no protos"));
        // Kinds Portico has since issue 14 pass through (a `GET /configs` export of
        // consumers or plugin metadata must `PUT` back).
        let ours = prepare(
            json!({"consumers": [{"username": "jack"}], "plugin_metadata": [{"id": "cors"}],
                   "stream_routes": []}),
            &state,
            &ResourceSet::default(),
        )
        .unwrap();
        assert_eq!(ours.body["consumers"][0]["username"], "jack");
        assert_eq!(ours.body["plugin_metadata"][0]["id"], "cors");
        assert!(ours.body.get("stream_routes").is_none());
    }
}
