//! Changes read from a shared store (etcd): a batch of puts and deletes, or everything
//! at once, with etcd's revisions as `createdIndex`/`modifiedIndex`.
//!
//! Someone else may have written these objects (another gateway of another version,
//! APISIX, `etcdctl`), so, as at startup, one object that does not load is left out
//! (returned, for the provider to log with its etcd key and count) and the rest
//! applies; nothing is rejected as a whole. The values are taken as stored: their `id`,
//! `create_time` and `update_time` are the writer's.
//!
//! One exception: an object whose only problem is a plugin this gateway does not have
//! (another gateway's, or APISIX's) is not left out, because leaving out a global rule,
//! a service or a plugin config would run its routes without that plugin (an
//! authentication skipped silently). It is kept with the missing plugins replaced by a
//! `mocking` 503, so what uses it fails closed, and reported like a left-out object.

use std::sync::Arc;

use serde_json::{json, Value};

use super::disk::Record;
use super::restore::{remove_culprits, Skipped};
use crate::config::{FieldError, ResourceKind, ResourceSet};
use portico_plugins::PluginRegistry;

/// One batch as the watch delivered it (or a full read).
#[derive(Debug, Default)]
pub struct SyncBatch {
    /// Everything: the set is rebuilt from `puts` alone (a full read after a
    /// (re)connection, a compaction or an etcd restart).
    pub full: bool,
    pub puts: Vec<(ResourceKind, String, Record)>,
    pub deletes: Vec<(ResourceKind, String)>,
    /// The revision the running configuration is at once this is applied (it may go
    /// backwards: an etcd restored from an older backup).
    pub revision: u64,
}

/// `current` with `batch` applied, and what did not load.
pub(super) fn synced_set(
    current: &ResourceSet,
    batch: SyncBatch,
    plugins: &PluginRegistry,
) -> (ResourceSet, Vec<Skipped>) {
    let SyncBatch {
        full,
        mut puts,
        deletes,
        ..
    } = batch;
    let mut set = if full {
        // The dynacode document is not kept in etcd: it stays.
        ResourceSet {
            dynacode: current.dynacode.clone(),
            ..ResourceSet::default()
        }
    } else {
        current.clone()
    };
    for (kind, id) in &deletes {
        set.remove(*kind, id);
    }
    // Lua plugin modules before the objects that use them (the kind order).
    puts.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut skipped = Vec::new();
    for (kind, id, record) in puts {
        // A replaced object that no longer loads is gone, not kept in its old form:
        // the running set follows what etcd holds.
        set.remove(kind, &id);
        // Kept for a stand-in, which only an object with plugins can need.
        let original = record.value.get("plugins").map(|_| record.value.clone());
        let Err(errors) = set.insert(
            kind,
            &id,
            record.value,
            record.created_index,
            record.modified_index,
            plugins,
        ) else {
            continue;
        };
        let with_stand_in = original
            .as_ref()
            .and_then(|v| stand_in(kind, v, &errors).map(|s| (s, v)));
        if let Some(((value, missing), original)) = with_stand_in {
            let stood_in = set
                .insert(
                    kind,
                    &id,
                    value,
                    record.created_index,
                    record.modified_index,
                    plugins,
                )
                .is_ok();
            if stood_in {
                // Admin reads show what etcd holds; requests get the stand-in.
                show_value(&mut set, kind, &id, original.clone());
                skipped.push(Skipped {
                    kind: kind.segment(),
                    key: kind.key(&id),
                    reason: format!(
                        "answers 503: plugin {missing} is not available on this gateway"
                    ),
                    object: Some((kind, id)),
                });
                continue;
            }
        }
        skipped.push(Skipped {
            kind: kind.segment(),
            key: kind.key(&id),
            reason: crate::config::describe(&errors),
            object: Some((kind, id)),
        });
    }
    loop {
        let dangling = set.check_all_references();
        if dangling.is_empty() {
            break;
        }
        skipped.extend(remove_culprits(&mut set, &dangling));
    }
    (set, skipped)
}

/// What uses an object with plugins this gateway lacks answers this.
fn unavailable_body(missing: &str) -> String {
    json!({ "error_msg": format!("plugin {missing} is not available on this gateway") }).to_string()
}

/// `value` with the plugins `errors` name as unknown replaced by a `mocking` 503, when
/// those are its only errors and its kind runs plugins for routes; and their names.
fn stand_in(kind: ResourceKind, value: &Value, errors: &[FieldError]) -> Option<(Value, String)> {
    if !matches!(
        kind,
        ResourceKind::Routes
            | ResourceKind::Services
            | ResourceKind::GlobalRules
            | ResourceKind::PluginConfigs
            | ResourceKind::ConsumerGroups
    ) {
        return None;
    }
    let mut missing = Vec::new();
    for e in errors {
        let name = e.path.strip_prefix("plugins.")?;
        if !e.message.starts_with("unknown plugin") {
            return None;
        }
        missing.push(format!("`{name}`"));
    }
    let mut value = value.clone();
    let plugins = value.get_mut("plugins")?.as_object_mut()?;
    for e in errors {
        plugins.remove(e.path.strip_prefix("plugins.")?);
    }
    let missing = missing.join(", ");
    plugins.insert(
        "mocking".into(),
        json!({
            "response_status": 503,
            "content_type": "application/json",
            "response_example": unavailable_body(&missing),
        }),
    );
    Some((value, missing))
}

/// Sets the value admin reads show for `kind/id` (its parsed form stays).
fn show_value(set: &mut ResourceSet, kind: ResourceKind, id: &str, value: Value) {
    let value = Arc::new(value);
    let slot = match kind {
        ResourceKind::Routes => set.routes.get_mut(id).map(|e| &mut e.value),
        ResourceKind::Services => set.services.get_mut(id).map(|e| &mut e.value),
        ResourceKind::GlobalRules => set.global_rules.get_mut(id).map(|e| &mut e.value),
        ResourceKind::PluginConfigs => set.plugin_configs.get_mut(id).map(|e| &mut e.value),
        ResourceKind::ConsumerGroups => set.consumer_groups.get_mut(id).map(|e| &mut e.value),
        _ => None,
    };
    if let Some(slot) = slot {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_plugins_get_a_stand_in() {
        let v = json!({"uri": "/a", "plugins": {"key-auth": {}, "my-auth": {"x": 1}}});
        let unknown = |name: &str| {
            FieldError::new(
                format!("plugins.{name}"),
                format!("unknown plugin `{name}`"),
            )
        };
        let (got, missing) = stand_in(ResourceKind::Routes, &v, &[unknown("my-auth")]).unwrap();
        assert_eq!(missing, "`my-auth`");
        assert!(got["plugins"].get("my-auth").is_none());
        assert!(got["plugins"].get("key-auth").is_some(), "the others stay");
        assert_eq!(got["plugins"]["mocking"]["response_status"], 503);
        // Any other error: left out as usual.
        let other = FieldError::new("uri", "bad");
        assert!(stand_in(ResourceKind::Routes, &v, &[unknown("my-auth"), other]).is_none());
        // Kinds that do not run plugins for routes.
        assert!(stand_in(ResourceKind::Consumers, &v, &[unknown("my-auth")]).is_none());
    }
}
