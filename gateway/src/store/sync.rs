//! Changes read from a shared store (etcd): a batch of puts and deletes, or everything
//! at once, with etcd's revisions as `createdIndex`/`modifiedIndex`.
//!
//! Someone else may have written these objects (another gateway of another version,
//! APISIX, `etcdctl`), so, as at startup, one object that does not load is left out
//! (returned, for the provider to log with its etcd key and count) and the rest
//! applies; nothing is rejected as a whole. The values are taken as stored: their `id`,
//! `create_time` and `update_time` are the writer's.

use super::disk::Record;
use super::restore::{remove_culprits, Skipped};
use crate::config::{ResourceKind, ResourceSet};
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
    loop {
        let dangling = set.check_all_references();
        if dangling.is_empty() {
            break;
        }
        skipped.extend(remove_culprits(&mut set, &dangling));
    }
    (set, skipped)
}
