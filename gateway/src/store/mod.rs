//! [`ConfigStore`]: the one writer of the running configuration.
//!
//! Every change (startup load, admin write, `configs` replace, yaml reload) goes through
//! [`ConfigStore::apply`]: parse and validate everything, build the whole next
//! [`Snapshot`], persist (admin provider), then swap once. A rejected change swaps
//! nothing and writes nothing. Requests read [`ConfigStore::snapshot`] once each.

mod disk;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde_json::Value;

pub use disk::{DiskError, DiskStore};
use disk::{DiskWrite, Record};

use crate::config::{FieldError, ResourceKind, ResourceSet};
use crate::metrics::{Metrics, RouteMetrics};
use crate::snapshot::{self, BuildContext, DnsFailure, Snapshot};
use portico_healthcheck::HealthRegistry;
use portico_plugins::PluginRegistry;

/// What a change came from; a label of `portico_config_applies_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplySource {
    Startup,
    Admin,
    Yaml,
    /// The dynacode poller.
    Poll,
}

impl ApplySource {
    pub fn label(self) -> &'static str {
        match self {
            ApplySource::Startup => "startup",
            ApplySource::Admin => "admin",
            ApplySource::Yaml => "yaml",
            ApplySource::Poll => "poll",
        }
    }
}

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
    /// Delete `kind/id`; refused while referenced unless `force`.
    Delete {
        kind: ResourceKind,
        id: String,
        force: bool,
    },
    /// Replace every resource (`PUT /configs`, a yaml file). The dynacode document is
    /// not part of it and stays.
    ReplaceAll(Vec<(ResourceKind, String, Value)>),
    /// Replace the dynacode document.
    PutDynacode(Value),
    /// Remove the dynacode document.
    DeleteDynacode,
}

/// Why a change was refused. Nothing was swapped or written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid configuration: {}", crate::config::describe(.0))]
    Invalid(Vec<FieldError>),
    #[error("Key not found")]
    NotFound,
    #[error("can not delete this {}, {} [{}] is still using it now", .kind.noun(), .by.0.noun(), .by.1)]
    Referenced {
        kind: ResourceKind,
        by: (ResourceKind, String),
    },
    #[error("the admin API is read-only: config_provider is yaml")]
    ReadOnly,
    #[error("{0}")]
    Persist(#[from] DiskError),
}

/// The result of an accepted change.
#[derive(Debug)]
pub struct Applied {
    pub version: u64,
    /// For `Put`: whether the id was new.
    pub created: bool,
}

/// The desired state and its compiled snapshot, swapped together.
pub struct Current {
    pub resources: Arc<ResourceSet>,
    pub snapshot: Arc<Snapshot>,
}

struct Writer {
    /// etcd-style revision behind `createdIndex`/`modifiedIndex`.
    revision: u64,
    disk: Option<DiskStore>,
}

/// What the store builds snapshots with.
#[derive(Clone)]
pub struct StoreDeps {
    pub plugins: Arc<PluginRegistry>,
    pub metrics: Arc<Metrics>,
    /// Node health, outside every snapshot; reconciled after each swap.
    pub health: Arc<HealthRegistry>,
}

pub struct ConfigStore {
    current: ArcSwap<Current>,
    writer: Mutex<Writer>,
    plugins: Arc<PluginRegistry>,
    metrics: Arc<Metrics>,
    health: Arc<HealthRegistry>,
    read_only: bool,
}

impl ConfigStore {
    /// A store backed by `disk`: loads every persisted resource through the same
    /// validation and build as any change. Fails if a stored resource no longer validates
    /// rather than silently starting without it.
    pub fn open(disk: DiskStore, deps: StoreDeps) -> Result<ConfigStore, ApplyError> {
        let StoreDeps {
            plugins, metrics, ..
        } = deps.clone();
        let loaded = disk.load()?;
        let mut set = ResourceSet::default();
        let mut errors = Vec::new();
        for (kind, id, record) in loaded.records {
            let prefix = format!("{}[id={id}]", kind.segment());
            if let Err(errs) = set.insert(
                kind,
                &id,
                record.value,
                record.created_index,
                record.modified_index,
                &plugins,
            ) {
                errors.extend(errs.into_iter().map(|e| e.under(&prefix)));
            }
        }
        if let Some(record) = loaded.dynacode {
            match crate::dynacode::DynacodeDoc::parse(&record.value) {
                Ok(doc) => {
                    set.dynacode = Some(crate::config::Entry {
                        value: Arc::new(record.value),
                        spec: Arc::new(doc),
                        created_index: record.created_index,
                        modified_index: record.modified_index,
                    })
                }
                Err(errs) => errors.extend(errs.into_iter().map(|e| e.under("dynacode"))),
            }
        }
        if !errors.is_empty() {
            metrics.count_apply(ApplySource::Startup.label(), false);
            return Err(ApplyError::Invalid(errors));
        }
        let revision = loaded.revision.max(set.max_index());
        ConfigStore::start(set, Some(disk), revision, deps, false)
    }

    /// A read-only store whose resources come from a declarative source (yaml provider).
    pub fn declarative(
        items: Vec<(ResourceKind, String, Value)>,
        deps: StoreDeps,
    ) -> Result<ConfigStore, ApplyError> {
        let set = set_from_items(items, &ResourceSet::default(), 1, &deps.plugins)?;
        ConfigStore::start(set, None, 1, deps, true)
    }

    fn start(
        set: ResourceSet,
        disk: Option<DiskStore>,
        revision: u64,
        deps: StoreDeps,
        read_only: bool,
    ) -> Result<ConfigStore, ApplyError> {
        let StoreDeps {
            plugins,
            metrics,
            health,
        } = deps;
        let cx = BuildContext {
            metrics: &metrics,
            plugins: &plugins,
            health: &health,
            dns: DnsFailure::SkipNode,
        };
        let snapshot = match snapshot::build(&set, None, 1, &cx) {
            Ok(s) => s,
            Err(e) => {
                metrics.count_apply(ApplySource::Startup.label(), false);
                return Err(ApplyError::Invalid(e.0));
            }
        };
        metrics.count_apply(ApplySource::Startup.label(), true);
        metrics.set_config_version(1);
        crate::health::reconcile(&health, &metrics, &snapshot);
        report_dynacode(&metrics, &snapshot);
        Ok(ConfigStore {
            current: ArcSwap::from_pointee(Current {
                resources: Arc::new(set),
                snapshot: Arc::new(snapshot),
            }),
            writer: Mutex::new(Writer { revision, disk }),
            plugins,
            metrics,
            health,
            read_only,
        })
    }

    /// The snapshot for one request. Call once per request and keep the `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.load().snapshot)
    }

    /// The health registry, for `/v1/healthcheck`.
    pub fn health(&self) -> &Arc<HealthRegistry> {
        &self.health
    }

    /// The desired state, for admin reads.
    pub fn resources(&self) -> Arc<ResourceSet> {
        Arc::clone(&self.current.load().resources)
    }

    /// The revision counter: 0 only for a store that has never been written.
    pub fn revision(&self) -> u64 {
        self.writer.lock().revision
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Validates, builds, persists and swaps `change`; the only way the running
    /// configuration changes.
    pub fn apply(&self, change: Change, source: ApplySource) -> Result<Applied, ApplyError> {
        if self.read_only && source == ApplySource::Admin {
            return Err(ApplyError::ReadOnly);
        }
        let result = self.apply_locked(change, false);
        self.metrics.count_apply(source.label(), result.is_ok());
        result
    }

    /// Counts a change from `source` that was rejected before it reached `apply` (a yaml
    /// file that does not parse), so every rejected change shows in the metrics.
    pub fn count_rejected(&self, source: ApplySource) {
        self.metrics.count_apply(source.label(), false);
    }

    /// Runs every check `apply` would, without persisting or swapping.
    pub fn dry_run(&self, change: Change) -> Result<(), ApplyError> {
        self.apply_locked(change, true).map(|_| ())
    }

    fn apply_locked(&self, change: Change, dry_run: bool) -> Result<Applied, ApplyError> {
        let mut writer = self.writer.lock();
        let current = self.current.load_full();
        let revision = writer.revision + 1;
        let (next, created) = next_set(&current.resources, &change, revision, &self.plugins)?;
        let version = current.snapshot.version + 1;
        let cx = BuildContext {
            metrics: &self.metrics,
            plugins: &self.plugins,
            health: &self.health,
            dns: DnsFailure::Reject,
        };
        let snapshot = snapshot::build(&next, Some(&current.snapshot), version, &cx)
            .map_err(|e| ApplyError::Invalid(relative_to_change(&change, e.0)))?;
        if dry_run {
            return Ok(Applied { version, created });
        }
        if let Some(disk) = &writer.disk {
            persist(disk, &change, &next, revision)?;
        }
        writer.revision = revision;
        let replaced = replaced_route_metrics(&current.snapshot, &snapshot);
        let snapshot = Arc::new(snapshot);
        self.current.store(Arc::new(Current {
            resources: Arc::new(next),
            snapshot: Arc::clone(&snapshot),
        }));
        self.metrics.set_config_version(version);
        crate::health::reconcile(&self.health, &self.metrics, &snapshot);
        report_dynacode(&self.metrics, &snapshot);
        for (metrics, route_still_exists) in replaced {
            if route_still_exists {
                metrics.forget_requests();
            } else {
                metrics.forget_all();
            }
        }
        Ok(Applied { version, created })
    }

    /// The next free id for `POST`: 20 digits, like APISIX's generated ids.
    pub fn next_id(&self) -> String {
        let writer = self.writer.lock();
        format!("{:020}", writer.revision + 1)
    }
}

/// Snippet counts of the running dynacode document, and a log line per snippet that
/// did not compile (each is skipped; the others run).
fn report_dynacode(metrics: &Metrics, snapshot: &Snapshot) {
    let (active, failed) = snapshot
        .dynacode
        .as_ref()
        .map(|d| d.counts())
        .unwrap_or((0, 0));
    metrics.set_dynacode_snippets(active, failed);
    for s in snapshot.dynacode.iter().flat_map(|d| d.status.iter()) {
        if let Some(e) = &s.error {
            tracing::warn!(domain = %s.domain, snippet = %s.name, "dynacode snippet skipped: {e}");
        }
    }
}

/// Errors of a single-resource write name fields of that resource without the
/// `routes[id=1].` prefix, as the object's own validation errors do.
fn relative_to_change(change: &Change, errors: Vec<FieldError>) -> Vec<FieldError> {
    let Change::Put { kind, id, .. } = change else {
        return errors;
    };
    let prefix = format!("{}[id={id}].", kind.segment());
    errors
        .into_iter()
        .map(|mut e| {
            if let Some(rest) = e.path.strip_prefix(&prefix) {
                e.path = rest.to_string();
            }
            e
        })
        .collect()
}

/// Metric handles of `old` that `new` no longer uses, with whether their route still
/// exists (then only its per-upstream request series go; latency and bandwidth stay).
fn replaced_route_metrics(old: &Snapshot, new: &Snapshot) -> Vec<(Arc<RouteMetrics>, bool)> {
    let kept: std::collections::HashMap<&str, &Arc<RouteMetrics>> = new
        .routes
        .iter()
        .map(|r| (r.id.as_str(), &r.metrics))
        .collect();
    old.routes
        .iter()
        .filter_map(|r| match kept.get(r.id.as_str()) {
            Some(m) if Arc::ptr_eq(m, &r.metrics) => None,
            Some(_) => Some((Arc::clone(&r.metrics), true)),
            None => Some((Arc::clone(&r.metrics), false)),
        })
        .collect()
}

/// Seconds since the epoch, for `create_time`/`update_time`.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets `id`, `create_time` and `update_time` on a resource object.
fn stamp(mut value: Value, id: &str, create_time: u64, update_time: u64) -> Value {
    if let Some(obj) = value.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_string()));
        obj.insert("create_time".into(), create_time.into());
        obj.insert("update_time".into(), update_time.into());
    }
    value
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
            let value = stamp(value.clone(), id, create_time, t);
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
            let doc = crate::dynacode::DynacodeDoc::parse(value).map_err(ApplyError::Invalid)?;
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
    }
}

/// Builds a whole set from declarative items; errors are prefixed `routes[2]`.
fn set_from_items(
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
                (stamp(value, &id, ct, t), e.created_index, revision)
            }
            (None, _) => (stamp(value, &id, t, t), revision, revision),
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

fn persist(
    disk: &DiskStore,
    change: &Change,
    next: &ResourceSet,
    revision: u64,
) -> Result<(), DiskError> {
    let record_of = |kind: ResourceKind, id: &str| {
        next.get(kind, id).map(|v| Record {
            value: (*v.value).clone(),
            created_index: v.created_index,
            modified_index: v.modified_index,
        })
    };
    match change {
        Change::Put { kind, id, .. } => match record_of(*kind, id) {
            Some(record) => disk.write(
                DiskWrite::Put {
                    kind: *kind,
                    id,
                    record: &record,
                },
                revision,
            ),
            None => Ok(()),
        },
        Change::Delete { kind, id, .. } => {
            disk.write(DiskWrite::Delete { kind: *kind, id }, revision)
        }
        Change::PutDynacode(_) | Change::DeleteDynacode => {
            let record = next.dynacode.as_ref().map(|d| Record {
                value: (*d.value).clone(),
                created_index: d.created_index,
                modified_index: d.modified_index,
            });
            disk.write(DiskWrite::Dynacode(record.as_ref()), revision)
        }
        Change::ReplaceAll(_) => {
            let records: Vec<(ResourceKind, String, Record)> = ResourceKind::ALL
                .iter()
                .flat_map(|k| next.list(*k).into_iter().map(move |(id, _)| (*k, id)))
                .filter_map(|(k, id)| record_of(k, &id).map(|r| (k, id, r)))
                .collect();
            let refs = records
                .iter()
                .map(|(k, id, r)| (*k, id.as_str(), r))
                .collect();
            disk.write(DiskWrite::ReplaceAll(refs), revision)
        }
    }
}

#[cfg(test)]
mod tests;
