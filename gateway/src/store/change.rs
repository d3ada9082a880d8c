//! Changes and what they plan: the next [`ResourceSet`] and the write that persists it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::disk::{DiskError, DiskWrite, HistoryWrite, Loaded, Record};
use super::ApplyError;
use super::StoreBackend;
use crate::config::{FieldError, ResourceKind, ResourceSet};
use portico_plugins::PluginRegistry;

/// One change to the resources.
#[derive(Debug)]
pub enum Change {
    /// Create or replace `kind/id` with `value` (without `create_time`/`update_time`;
    /// the store sets those).
    Put {
        kind: ResourceKind,
        id: String,
        value: Value,
    },
    /// `POST`: create a `kind` object under an id the writer chooses.
    Create { kind: ResourceKind, value: Value },
    /// `PATCH`: merge `patch` into `kind/id` (empty `path`), or replace the sub-tree at
    /// `path` with it; read, merged and written inside the writer.
    Patch {
        kind: ResourceKind,
        id: String,
        path: Vec<String>,
        patch: Value,
    },
    /// Delete `kind/id`; refused while referenced unless `force`.
    Delete {
        kind: ResourceKind,
        id: String,
        force: bool,
    },
    /// Replace every resource (`PUT /configs`, a yaml file). The dynacode document is
    /// not part of it and stays.
    ReplaceAll(Vec<(ResourceKind, String, Value)>),
    /// Startup: everything the durable store holds. An object that no longer loads is
    /// left out (logged with its key, counted) instead of keeping the gateway down.
    Restore(Loaded),
    /// Replace the dynacode document.
    PutDynacode(Value),
    /// Remove the dynacode document.
    DeleteDynacode,
    /// What a shared store (etcd) delivered: applied as stored, an object that does not
    /// load left out; persists nothing here (etcd has it).
    Sync(super::sync::SyncBatch),
}

/// What a change plans: the next set, fully parsed and reference-checked, and what the
/// writer reports and persists for it.
pub(super) struct Planned {
    pub next: ResourceSet,
    /// For writes of one object: whether its id was new.
    pub created: bool,
    /// For writes of one object: its id (chosen here for `Create`).
    pub id: Option<String>,
    /// The write to persist; `None` for a restore (it is what the disk holds).
    pub persist: Option<PersistOp>,
    /// Stored objects a restore left out.
    pub skipped: Vec<super::restore::Skipped>,
    /// A restore's persisted revision counter: the revision continues from it even when
    /// the object that had it was deleted.
    pub revision_floor: u64,
    /// The revision after this change, when it is someone else's (etcd's).
    pub exact_revision: Option<u64>,
}

/// The durable form of a planned change.
pub(super) enum PersistOp {
    Object(ResourceKind, String),
    Deleted(ResourceKind, String),
    Dynacode,
    All,
}

/// Plans `change` on top of `current`. `revision` is the revision the change gets.
pub(super) fn plan(
    current: &ResourceSet,
    change: Change,
    revision: u64,
    plugins: &PluginRegistry,
) -> Result<Planned, ApplyError> {
    let one = |kind, id: String, (next, created)| Planned {
        next,
        created,
        persist: Some(PersistOp::Object(kind, id.clone())),
        id: Some(id),
        skipped: Vec::new(),
        revision_floor: 0,
        exact_revision: None,
    };
    match change {
        Change::Put { kind, id, value } => {
            let r = put_one(current, kind, &id, value, revision, plugins)?;
            Ok(one(kind, id, r))
        }
        Change::Create { kind, value } => {
            // APISIX-style 20-digit ids from the revision: unique because the writer
            // hands out each revision once.
            let id = format!("{revision:020}");
            let r = put_one(current, kind, &id, value, revision, plugins)?;
            Ok(one(kind, id, r))
        }
        Change::Patch {
            kind,
            id,
            path,
            patch,
        } => {
            let Some(existing) = current.get(kind, &id) else {
                return Err(ApplyError::NotFound);
            };
            let value = crate::config::patch::patched(&existing.value, &path, patch)
                .and_then(|v| crate::config::patch::checked_body(kind, Some(&id), v))
                .map_err(ApplyError::BadRequest)?;
            let r = put_one(current, kind, &id, value, revision, plugins)?;
            Ok(one(kind, id, r))
        }
        Change::Restore(loaded) => {
            let revision_floor = loaded.revision;
            let (next, skipped) = super::restore::restored_set(loaded, plugins);
            Ok(Planned {
                next,
                created: false,
                id: None,
                persist: None,
                skipped,
                revision_floor,
                exact_revision: None,
            })
        }
        Change::Sync(batch) => {
            let revision = batch.revision;
            let (next, skipped) = super::sync::synced_set(current, batch, plugins);
            Ok(Planned {
                next,
                created: false,
                id: None,
                persist: None,
                skipped,
                revision_floor: 0,
                exact_revision: Some(revision),
            })
        }
        other => {
            let persist = match &other {
                Change::Delete { kind, id, .. } => PersistOp::Deleted(*kind, id.clone()),
                Change::ReplaceAll(_) => PersistOp::All,
                _ => PersistOp::Dynacode,
            };
            let (next, created) = next_set(current, &other, revision, plugins)?;
            Ok(Planned {
                next,
                created,
                id: None,
                persist: Some(persist),
                skipped: Vec::new(),
                revision_floor: 0,
                exact_revision: None,
            })
        }
    }
}

/// The set with `kind/id` created or replaced by `value`, and whether it was new.
fn put_one(
    current: &ResourceSet,
    kind: ResourceKind,
    id: &str,
    value: Value,
    revision: u64,
    plugins: &PluginRegistry,
) -> Result<(ResourceSet, bool), ApplyError> {
    next_set(
        current,
        &Change::Put {
            kind,
            id: id.to_string(),
            value,
        },
        revision,
        plugins,
    )
}

/// The resource set after `change`, fully parsed and reference-checked.
fn next_set(
    current: &ResourceSet,
    change: &Change,
    revision: u64,
    plugins: &PluginRegistry,
) -> Result<(ResourceSet, bool), ApplyError> {
    match change {
        Change::Put { kind, id, value } => {
            if let Err(m) = crate::config::check_id(id) {
                return Err(ApplyError::Invalid(vec![FieldError::new("id", m)]));
            }
            let mut next = current.clone();
            let existing = current.get(*kind, id);
            let created = existing.is_none();
            let t = now();
            let create_time = existing
                .as_ref()
                .and_then(|e| e.value.get("create_time").and_then(Value::as_u64))
                .unwrap_or(t);
            let created_index = existing
                .as_ref()
                .map(|e| e.created_index)
                .unwrap_or(revision);
            let value = stamp(*kind, value.clone(), id, create_time, t);
            next.insert(*kind, id, value, created_index, revision, plugins)
                .map_err(ApplyError::Invalid)?;
            let errors = next.check_references(*kind, id);
            if !errors.is_empty() {
                return Err(ApplyError::Invalid(errors));
            }
            Ok((next, created))
        }
        Change::Delete { kind, id, force } => {
            if current.get(*kind, id).is_none() {
                return Err(ApplyError::NotFound);
            }
            if !force {
                if let Some(by) = current.referrers(*kind, id).into_iter().next() {
                    return Err(ApplyError::Referenced { kind: *kind, by });
                }
            }
            let mut next = current.clone();
            next.remove(*kind, id);
            Ok((next, false))
        }
        Change::ReplaceAll(items) => {
            let mut next = set_from_items(items.clone(), current, revision, plugins)?;
            next.dynacode = current.dynacode.clone();
            Ok((next, false))
        }
        Change::PutDynacode(value) => {
            let doc = crate::config::DynacodeDoc::parse(value).map_err(ApplyError::Invalid)?;
            let mut next = current.clone();
            let created = current.dynacode.is_none();
            let created_index = current
                .dynacode
                .as_ref()
                .map(|d| d.created_index)
                .unwrap_or(revision);
            next.dynacode = Some(crate::config::Entry {
                value: Arc::new(value.clone()),
                spec: Arc::new(doc),
                created_index,
                modified_index: revision,
            });
            Ok((next, created))
        }
        Change::DeleteDynacode => {
            if current.dynacode.is_none() {
                return Err(ApplyError::NotFound);
            }
            let mut next = current.clone();
            next.dynacode = None;
            Ok((next, false))
        }
        Change::Create { .. } | Change::Patch { .. } | Change::Restore(_) | Change::Sync(_) => {
            unreachable!("planned by `plan`")
        }
    }
}

/// Builds a whole set from declarative items; errors are prefixed `routes[2]`.
pub(super) fn set_from_items(
    items: Vec<(ResourceKind, String, Value)>,
    current: &ResourceSet,
    revision: u64,
    plugins: &PluginRegistry,
) -> Result<ResourceSet, ApplyError> {
    let mut next = ResourceSet::default();
    let mut errors = Vec::new();
    let mut index_in_kind = std::collections::HashMap::new();
    let t = now();
    for (kind, id, value) in items {
        let i = index_in_kind.entry(kind).or_insert(0usize);
        let prefix = format!("{}[{}]", kind.segment(), *i);
        *i += 1;
        if let Err(m) = crate::config::check_id(&id) {
            errors.push(FieldError::new(format!("{prefix}.id"), m));
            continue;
        }
        if next.get(kind, &id).is_some() {
            errors.push(FieldError::new(
                format!("{prefix}.id"),
                format!("duplicate {} id `{id}`", kind.noun()),
            ));
            continue;
        }
        let existing = current.get(kind, &id);
        // An unchanged object keeps its indexes and timestamps, so a re-applied file or
        // bulk replace does not look like an edit of everything.
        let unchanged = existing
            .as_ref()
            .is_some_and(|e| strip_times(&e.value) == strip_times(&value));
        let (value, created_index, modified_index) = match (&existing, unchanged) {
            (Some(e), true) => ((*e.value).clone(), e.created_index, e.modified_index),
            (Some(e), false) => {
                let ct = e
                    .value
                    .get("create_time")
                    .and_then(Value::as_u64)
                    .unwrap_or(t);
                (stamp(kind, value, &id, ct, t), e.created_index, revision)
            }
            (None, _) => (stamp(kind, value, &id, t, t), revision, revision),
        };
        if let Err(errs) = next.insert(kind, &id, value, created_index, modified_index, plugins) {
            errors.extend(errs.into_iter().map(|e| e.under(&prefix)));
        }
    }
    errors.extend(next.check_all_references());
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(ApplyError::Invalid(errors))
    }
}

/// A resource object without the fields the store sets.
fn strip_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("create_time");
        o.remove("update_time");
        o.remove("id");
    }
    v
}

/// Writes what `op` changed in `next`, in one durable transaction.
pub(super) fn persist(
    disk: &dyn StoreBackend,
    op: &PersistOp,
    next: &ResourceSet,
    revision: u64,
    history: Option<HistoryWrite<'_>>,
) -> Result<(), DiskError> {
    let record_of = |kind: ResourceKind, id: &str| {
        next.get(kind, id).map(|v| Record {
            value: (*v.value).clone(),
            created_index: v.created_index,
            modified_index: v.modified_index,
        })
    };
    match op {
        PersistOp::Object(kind, id) => match record_of(*kind, id) {
            Some(record) => disk.write(
                DiskWrite::Put {
                    kind: *kind,
                    id,
                    record: &record,
                },
                revision,
                history,
            ),
            None => Ok(()),
        },
        PersistOp::Deleted(kind, id) => {
            disk.write(DiskWrite::Delete { kind: *kind, id }, revision, history)
        }
        PersistOp::Dynacode => {
            let record = next.dynacode.as_ref().map(|d| Record {
                value: (*d.value).clone(),
                created_index: d.created_index,
                modified_index: d.modified_index,
            });
            disk.write(DiskWrite::Dynacode(record.as_ref()), revision, history)
        }
        PersistOp::All => {
            let records: Vec<(ResourceKind, String, Record)> = ResourceKind::ALL
                .iter()
                .flat_map(|k| next.list(*k).into_iter().map(move |(id, _)| (*k, id)))
                .filter_map(|(k, id)| record_of(k, &id).map(|r| (k, id, r)))
                .collect();
            let refs = records
                .iter()
                .map(|(k, id, r)| (*k, id.as_str(), r))
                .collect();
            disk.write(DiskWrite::ReplaceAll(refs), revision, history)
        }
    }
}

/// Seconds since the epoch, for `create_time`/`update_time`.
pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets `id`, `create_time` and `update_time` on a resource object (only `id` on plugin
/// metadata, which APISIX stores without times).
pub(super) fn stamp(
    kind: ResourceKind,
    mut value: Value,
    id: &str,
    create_time: u64,
    update_time: u64,
) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_string()));
        if kind == ResourceKind::PluginMetadata {
            return value;
        }
        obj.insert("create_time".into(), create_time.into());
        obj.insert("update_time".into(), update_time.into());
    }
    value
}
