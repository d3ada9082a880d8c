//! Startup from the durable store: everything that still loads, and a clear word about
//! what does not.
//!
//! A stored object can stop loading although the admin API accepted it: a record from an
//! older version with a deeper nesting than today's limits, Lua whose load-time code
//! fails only later (`if os.time() > T then error() end`), a reference to an object that
//! itself no longer loads. Refusing to start for one such object takes every route down
//! and leaves nothing to repair it with, so each is left out (logged with its key,
//! counted in `portico_store_skipped_objects_total`) and stays on disk for `portico store`.

use std::sync::Arc;

use super::disk::Loaded;
use super::ApplyError;
use crate::config::{Entry, FieldError, ResourceKind, ResourceSet};
use crate::metrics::Metrics;
use crate::snapshot::{self, BuildContext, Snapshot};
use portico_plugins::PluginRegistry;

/// One stored object left out at startup.
#[derive(Debug)]
pub struct Skipped {
    /// A bounded metric label: a resource segment, `dynacode` or `unknown`.
    pub kind: &'static str,
    /// Its key in the store (`/apisix/routes/1`).
    pub key: String,
    pub reason: String,
    /// The object, when the key names one.
    pub object: Option<(ResourceKind, String)>,
}

/// The set of every loaded object that parses and whose references resolve, and what
/// was left out.
pub fn restored_set(loaded: Loaded, plugins: &PluginRegistry) -> (ResourceSet, Vec<Skipped>) {
    let Loaded {
        mut records,
        dynacode,
        unreadable,
        ..
    } = loaded;
    let mut skipped: Vec<Skipped> = unreadable
        .into_iter()
        .map(|(key, reason)| Skipped {
            kind: kind_label_of_key(&key),
            key,
            reason,
            object: None,
        })
        .collect();
    // Keys sort `global_rules` before `lua_plugins`; objects must come after the Lua
    // plugin modules they use.
    records.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut set = ResourceSet::default();
    for (kind, id, record) in records {
        if let Err(errors) = set.insert(
            kind,
            &id,
            record.value,
            record.created_index,
            record.modified_index,
            plugins,
        ) {
            skipped.push(Skipped {
                kind: kind.segment(),
                key: kind.key(&id),
                reason: crate::config::describe(&errors),
                object: Some((kind, id)),
            });
        }
    }
    if let Some(record) = dynacode {
        match crate::config::DynacodeDoc::parse(&record.value) {
            Ok(doc) => {
                set.dynacode = Some(Entry {
                    value: Arc::new(record.value),
                    spec: Arc::new(doc),
                    created_index: record.created_index,
                    modified_index: record.modified_index,
                })
            }
            Err(errors) => skipped.push(Skipped {
                kind: "dynacode",
                key: crate::config::dynacode::KEY.to_string(),
                reason: crate::config::describe(&errors),
                object: None,
            }),
        }
    }
    // Leaving an object out can leave its referrers dangling: repeat until none is.
    loop {
        let dangling = set.check_all_references();
        if dangling.is_empty() {
            break;
        }
        skipped.extend(remove_culprits(&mut set, &dangling));
    }
    (set, skipped)
}

/// Builds `set`, leaving out each object a build error names and building again, until
/// the build succeeds. An error that names no object fails the startup as before.
pub fn build_skipping(
    mut set: ResourceSet,
    prev: &Snapshot,
    version: u64,
    cx: &BuildContext<'_>,
) -> Result<(ResourceSet, Snapshot, Vec<Skipped>), ApplyError> {
    let mut skipped = Vec::new();
    loop {
        match snapshot::build(&set, Some(prev), version, cx) {
            Ok(snapshot) => return Ok((set, snapshot, skipped)),
            Err(e) => {
                if e.0.iter().any(|err| culprit(&err.path).is_none()) {
                    return Err(ApplyError::Invalid(e.0));
                }
                // Each round removes at least one object, so this ends.
                skipped.extend(remove_culprits(&mut set, &e.0));
                loop {
                    let dangling = set.check_all_references();
                    if dangling.is_empty() {
                        break;
                    }
                    skipped.extend(remove_culprits(&mut set, &dangling));
                }
            }
        }
    }
}

/// Logs and counts every object left out.
pub fn report(metrics: &Metrics, skipped: &[Skipped]) {
    for s in skipped {
        tracing::error!(
            key = %s.key,
            "stored object left out at startup: {}; repair it with the admin API or `portico store`",
            s.reason
        );
        metrics.count_store_skipped(s.kind);
    }
}

/// Removes every object `errors` name, once each, and says why.
pub(super) fn remove_culprits(set: &mut ResourceSet, errors: &[FieldError]) -> Vec<Skipped> {
    let mut out: Vec<Skipped> = Vec::new();
    for e in errors {
        let Some((kind, id)) = culprit(&e.path) else {
            continue;
        };
        let key = kind.key(id);
        match out.iter_mut().find(|s| s.key == key) {
            Some(s) => {
                s.reason.push_str("; ");
                s.reason.push_str(&e.to_string());
            }
            None => {
                set.remove(kind, id);
                out.push(Skipped {
                    kind: kind.segment(),
                    key,
                    reason: e.to_string(),
                    object: Some((kind, id.to_string())),
                });
            }
        }
    }
    out
}

/// The object a build or reference error names: `routes[id=1].plugins.x` → routes/1.
pub(super) fn culprit(path: &str) -> Option<(ResourceKind, &str)> {
    let (segment, rest) = path.split_once("[id=")?;
    let (id, _) = rest.split_once(']')?;
    Some((ResourceKind::from_segment(segment)?, id))
}

fn kind_label_of_key(key: &str) -> &'static str {
    if key == crate::config::dynacode::KEY {
        return "dynacode";
    }
    key.strip_prefix("/apisix/")
        .and_then(|rest| rest.split('/').next())
        .and_then(ResourceKind::from_segment)
        .map_or("unknown", ResourceKind::segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn culprits_are_named_by_paths() {
        assert_eq!(
            culprit("routes[id=r1].plugins.serverless-pre-function"),
            Some((ResourceKind::Routes, "r1"))
        );
        assert_eq!(
            culprit("lua_plugins[id=my-mod].code"),
            Some((ResourceKind::LuaPlugins, "my-mod"))
        );
        assert_eq!(culprit("routes[2].uri"), None);
        assert_eq!(culprit("nope[id=1]"), None);
        assert_eq!(kind_label_of_key("/apisix/routes/1"), "routes");
        assert_eq!(kind_label_of_key("/other/x"), "unknown");
    }
}
