//! The configuration history: the last `history.keep` applied changes, each with what it
//! changed (every object's value before and after), kept beside the running
//! configuration and persisted in the same transaction as the change.
//!
//! A revision's whole configuration is not stored: it is the running one with the
//! changes of every later revision undone, newest first. So a write of one route costs
//! one route's worth of history, however many routes there are.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ResourceKind, ResourceSet, StoredView};

/// The key of the dynacode document in changes (it is not part of `/configs`).
const DYNACODE: &str = crate::config::dynacode::KEY;

/// One applied change, as the history shows and persists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The store revision the change got (`modifiedIndex` of what it wrote).
    pub revision: u64,
    /// Unix seconds.
    pub time: u64,
    /// `admin`, `yaml`, `poll`, `startup` (seed import).
    pub source: String,
    /// The name of the admin key that made the change (admin changes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// One line: what changed.
    pub summary: String,
    /// Every object the change created, replaced or removed.
    pub changes: Vec<ObjectChange>,
}

/// One object's value before and after a change (`None`: absent).
///
/// The values are the configuration's own `Arc`s: an entry's `after` is the next entry's
/// `before` and the running object's value, held once. Deep copies made the kept
/// history of three 10,000-route `PUT /configs` cost about 70 MB of RSS (S5).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectChange {
    /// `/apisix/routes/1`, or the dynacode document's key.
    pub key: String,
    pub before: Option<Arc<Value>>,
    pub after: Option<Arc<Value>>,
}

impl ObjectChange {
    pub fn action(&self) -> &'static str {
        match (&self.before, &self.after) {
            (None, _) => "created",
            (Some(_), Some(_)) => "updated",
            (Some(_), None) => "deleted",
        }
    }
}

/// The kept entries, oldest first; swapped with the configuration they lead to.
pub type History = Arc<Vec<Arc<HistoryEntry>>>;

/// Who and what a change comes from, for its history entry.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The admin key's name.
    pub key_name: Option<String>,
    /// Put before the summary (`rollback to revision 7`).
    pub note: Option<String>,
}

/// What `next` changed against `current`; empty when nothing did.
pub fn changes(current: &ResourceSet, next: &ResourceSet) -> Vec<ObjectChange> {
    let mut out = Vec::new();
    for kind in ResourceKind::ALL {
        let before: BTreeMap<String, StoredView> = current.list(kind).into_iter().collect();
        let after: BTreeMap<String, StoredView> = next.list(kind).into_iter().collect();
        for (id, b) in &before {
            match after.get(id) {
                None => out.push(change(kind.key(id), Some(b), None)),
                Some(a) if differs(b, a) => out.push(change(kind.key(id), Some(b), Some(a))),
                Some(_) => {}
            }
        }
        for (id, a) in &after {
            if !before.contains_key(id) {
                out.push(change(kind.key(id), None, Some(a)));
            }
        }
    }
    let view = |s: &ResourceSet| s.dynacode.as_ref().map(StoredView::from);
    match (view(current), view(next)) {
        (None, None) => {}
        (Some(b), Some(a)) if !differs(&b, &a) => {}
        (b, a) => out.push(change(DYNACODE.to_string(), b.as_ref(), a.as_ref())),
    }
    out
}

fn differs(a: &StoredView, b: &StoredView) -> bool {
    a.modified_index != b.modified_index || !(Arc::ptr_eq(&a.value, &b.value) || a.value == b.value)
}

fn change(key: String, before: Option<&StoredView>, after: Option<&StoredView>) -> ObjectChange {
    ObjectChange {
        key,
        before: before.map(|v| Arc::clone(&v.value)),
        after: after.map(|v| Arc::clone(&v.value)),
    }
}

/// One line: `created /apisix/routes/1`, or `3 objects: 1 created, 2 updated, 0 deleted
/// (routes 2, upstreams 1)`.
pub fn summary(changes: &[ObjectChange], note: Option<&str>) -> String {
    let body = match changes {
        [one] => format!("{} {}", one.action(), one.key),
        many => {
            let count = |a: &str| many.iter().filter(|c| c.action() == a).count();
            let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
            for c in many {
                *kinds.entry(kind_of(&c.key)).or_default() += 1;
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!(
                "{} objects: {} created, {} updated, {} deleted ({})",
                many.len(),
                count("created"),
                count("updated"),
                count("deleted"),
                kinds.join(", ")
            )
        }
    };
    match note {
        Some(n) => format!("{n}: {body}"),
        None => body,
    }
}

fn kind_of(key: &str) -> &str {
    key.strip_prefix("/apisix/")
        .and_then(|r| r.split('/').next())
        .unwrap_or(key)
}

/// `history` with `entry` added, at most `keep` entries.
pub fn appended(history: &History, entry: HistoryEntry, keep: usize) -> History {
    let mut out: Vec<Arc<HistoryEntry>> = history.iter().cloned().collect();
    out.push(Arc::new(entry));
    let extra = out.len().saturating_sub(keep);
    out.drain(..extra);
    Arc::new(out)
}

/// The configuration right after `revision` was applied, as `/configs` shows it (kind →
/// objects), unredacted: the running `resources` with every later change undone.
/// `None` when `revision` is not in the history.
pub fn config_at(
    resources: &ResourceSet,
    history: &History,
    revision: u64,
) -> Option<BTreeMap<ResourceKind, BTreeMap<String, Value>>> {
    history.iter().find(|e| e.revision == revision)?;
    let mut config: BTreeMap<ResourceKind, BTreeMap<String, Value>> = ResourceKind::ALL
        .iter()
        .map(|k| {
            let objects = resources
                .list(*k)
                .into_iter()
                .map(|(id, v)| (id, (*v.value).clone()))
                .collect();
            (*k, objects)
        })
        .collect();
    for entry in history.iter().rev().take_while(|e| e.revision > revision) {
        for c in &entry.changes {
            let Some((kind, id)) = parse_key(&c.key) else {
                continue; // the dynacode document is not part of `/configs`
            };
            let objects = config.entry(kind).or_default();
            match &c.before {
                Some(v) => objects.insert(id.to_string(), (**v).clone()),
                None => objects.remove(id),
            };
        }
    }
    Some(config)
}

/// The `/configs` document of a configuration.
pub fn document(config: &BTreeMap<ResourceKind, BTreeMap<String, Value>>) -> Value {
    let mut out = Map::new();
    for kind in ResourceKind::ALL {
        let list = config
            .get(&kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        out.insert(kind.segment().to_string(), Value::Array(list));
    }
    Value::Object(out)
}

fn parse_key(key: &str) -> Option<(ResourceKind, &str)> {
    let rest = key.strip_prefix("/apisix/")?;
    let (segment, id) = rest.split_once('/')?;
    Some((ResourceKind::from_segment(segment)?, id))
}

/// Field names whose values the history never shows (plugin credentials, TLS keys).
const SECRET_FIELDS: &[&str] = &[
    "password",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "api_key",
    "private_key",
    "client_key",
    "authorization",
];

/// What the history shows in place of a secret.
pub const REDACTED: &str = "******";

/// `value` with every secret field's value replaced by [`REDACTED`].
pub fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let secret = SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str());
                    let v = if secret && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(revision: u64, changes: Vec<ObjectChange>) -> HistoryEntry {
        HistoryEntry {
            revision,
            time: 0,
            source: "admin".into(),
            key_name: None,
            summary: summary(&changes, None),
            changes,
        }
    }

    fn set_change(key: &str, before: Option<Value>, after: Option<Value>) -> ObjectChange {
        ObjectChange {
            key: key.into(),
            before: before.map(Arc::new),
            after: after.map(Arc::new),
        }
    }

    #[test]
    fn later_changes_are_undone_newest_first() {
        // Running: route a = v3, route b absent; history: r1 created a=v1, r2 a=v2 and
        // b created, r3 a=v3 and b deleted.
        let mut running = ResourceSet::default();
        let plugins = portico_plugins::PluginRegistry::new(Default::default(), &Default::default())
            .expect("registry");
        running
            .insert(
                ResourceKind::Routes,
                "a",
                json!({"uri": "/v3", "plugins": {}}),
                1,
                3,
                &plugins,
            )
            .expect("insert");
        let v = |u: &str| Some(json!({"uri": u}));
        let history: History = Arc::new(vec![
            Arc::new(entry(
                1,
                vec![set_change("/apisix/routes/a", None, v("/v1"))],
            )),
            Arc::new(entry(
                2,
                vec![
                    set_change("/apisix/routes/a", v("/v1"), v("/v2")),
                    set_change("/apisix/routes/b", None, v("/b")),
                ],
            )),
            Arc::new(entry(
                3,
                vec![
                    set_change("/apisix/routes/a", v("/v2"), v("/v3")),
                    set_change("/apisix/routes/b", v("/b"), None),
                ],
            )),
        ]);
        let at = |r| document(&config_at(&running, &history, r).expect("kept"));
        assert_eq!(at(3)["routes"], json!([{"uri": "/v3", "plugins": {}}]));
        assert_eq!(at(2)["routes"], json!([{"uri": "/v2"}, {"uri": "/b"}]));
        assert_eq!(at(1)["routes"], json!([{"uri": "/v1"}]));
        assert!(config_at(&running, &history, 9).is_none());
        assert_eq!(
            history[1].summary,
            "2 objects: 1 created, 1 updated, 0 deleted (routes 2)"
        );
    }

    /// A change holds the configuration's own values, not copies (S5: deep copies of
    /// three 10,000-route applies kept 70 MB).
    #[test]
    fn changes_share_the_configuration_values() {
        let plugins = portico_plugins::PluginRegistry::new(Default::default(), &Default::default())
            .expect("registry");
        let set = |uri: &str, index| {
            let mut s = ResourceSet::default();
            s.insert(
                ResourceKind::Routes,
                "a",
                json!({"uri": uri, "plugins": {}}),
                1,
                index,
                &plugins,
            )
            .expect("insert");
            s
        };
        let (v1, v2) = (set("/v1", 1), set("/v2", 2));
        let c = changes(&v1, &v2);
        assert_eq!(c.len(), 1);
        let value = |s: &ResourceSet| s.get(ResourceKind::Routes, "a").expect("route").value;
        let (before, after) = (c[0].before.as_ref(), c[0].after.as_ref());
        assert!(Arc::ptr_eq(before.expect("before"), &value(&v1)));
        assert!(Arc::ptr_eq(after.expect("after"), &value(&v2)));
    }

    #[test]
    fn secrets_are_redacted_and_keep_is_a_bound() {
        let v =
            json!({"plugins": {"basic-auth": {"username": "u", "password": "p"}}, "key": "uri"});
        let r = redacted(&v);
        assert_eq!(r["plugins"]["basic-auth"]["password"], REDACTED);
        assert_eq!(r["plugins"]["basic-auth"]["username"], "u");
        assert_eq!(r["key"], "uri");
        let mut h: History = Arc::new(Vec::new());
        for i in 1..=5 {
            h = appended(&h, entry(i, Vec::new()), 3);
        }
        let revs: Vec<u64> = h.iter().map(|e| e.revision).collect();
        assert_eq!(revs, vec![3, 4, 5]);
    }
}
