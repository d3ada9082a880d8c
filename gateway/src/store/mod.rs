//! [`ConfigStore`]: the one writer of the running configuration.
//!
//! Every change (startup load, seed import, admin write, `configs` replace, yaml reload,
//! dynacode poll) goes through [`ConfigStore::apply`]: plan and validate everything,
//! build the whole next [`Snapshot`], persist (admin provider), then swap once. A
//! rejected change swaps nothing and writes nothing. Startup is `apply(Restore(loaded))`
//! on an empty store. Requests read [`ConfigStore::snapshot`] once each.

mod backend;
mod change;
mod check;
mod disk;
pub mod history;
mod remote;
mod restore;
mod sealed;
mod sync;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

pub use backend::StoreBackend;
pub use change::Change;
pub use check::every_error;
pub use disk::{DiskError, DiskStore, DiskWrite, HistoryWrite, Loaded, Record};
pub use history::{History, HistoryEntry, Origin};
pub use remote::{Expect, RemoteError, RemoteWrite, RemoteWriter};
pub use restore::Skipped;
pub use sealed::{Keyring, SealedBackend};
pub use sync::SyncBatch;

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
    /// The etcd watcher (`config_provider: etcd`).
    Etcd,
}

impl ApplySource {
    pub fn label(self) -> &'static str {
        match self {
            ApplySource::Startup => "startup",
            ApplySource::Admin => "admin",
            ApplySource::Yaml => "yaml",
            ApplySource::Poll => "poll",
            ApplySource::Etcd => "etcd",
        }
    }
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
    /// A request the change cannot be made from (a PATCH of a missing sub-path, a body
    /// whose `id` disagrees with the URL); the message is the 400's.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Persist(#[from] DiskError),
    /// A binary upgrade: this process handed the store over to its successor.
    #[error("the configuration store was handed over to a new process (binary upgrade in progress): this process accepts no more writes; retry, the new process answers them")]
    HandedOver,
    /// The shared store (etcd) cannot take the write now; nothing changed.
    #[error("{0}")]
    Unavailable(String),
    /// Concurrent writes kept changing the object; nothing changed.
    #[error("{0}")]
    Conflict(String),
}

/// The result of an accepted change.
#[derive(Debug)]
pub struct Applied {
    pub version: u64,
    /// The store revision the change got.
    pub revision: u64,
    /// For writes of one object: whether the id was new.
    pub created: bool,
    /// For writes of one object: its id (the generated one for `Create`).
    pub id: Option<String>,
    /// Objects a restore or a sync left out (logged by the caller for a sync).
    pub skipped: Vec<Skipped>,
}

/// The desired state and its compiled snapshot, swapped together.
pub struct Current {
    pub resources: Arc<ResourceSet>,
    pub snapshot: Arc<Snapshot>,
    /// The changes that led to `resources`, oldest first (the last `history.keep`).
    pub history: History,
}

/// Default of `history.keep`.
pub const DEFAULT_HISTORY_KEEP: usize = 50;

struct Writer {
    /// etcd-style revision behind `createdIndex`/`modifiedIndex`.
    revision: u64,
    backend: Option<Box<dyn StoreBackend>>,
    /// The backend was closed for a binary upgrade ([`ConfigStore::release`]).
    released: bool,
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
    history_keep: AtomicUsize,
    /// `config_provider: etcd`: admin writes go there and come back through the watch.
    remote: Option<Arc<dyn RemoteWriter>>,
    /// Signalled (with the writer's lock) after every applied change, for admin writes
    /// waiting for the watch to deliver theirs.
    applied: Condvar,
}

impl ConfigStore {
    /// A store backed by `backend`, started with `apply(Restore(loaded), Startup)`: every
    /// persisted resource goes through the same validation and build as any change. A
    /// stored object that no longer loads is left out with an error naming its key (and
    /// `portico_store_skipped_objects_total`), never the whole gateway.
    pub fn open(
        backend: impl StoreBackend + 'static,
        deps: StoreDeps,
    ) -> Result<ConfigStore, ApplyError> {
        let mut loaded = backend.load()?;
        let history = std::mem::take(&mut loaded.history);
        let store = ConfigStore::empty(Some(Box::new(backend)), deps, false)?;
        store.current.store(Arc::new(Current {
            history: Arc::new(history.into_iter().map(Arc::new).collect()),
            ..Current::clone_of(&store.current.load())
        }));
        store.apply(Change::Restore(loaded), ApplySource::Startup)?;
        Ok(store)
    }

    /// A read-only store whose resources come from a declarative source (yaml provider),
    /// started with `apply(ReplaceAll(items), Startup)`.
    pub fn declarative(
        items: Vec<(ResourceKind, String, serde_json::Value)>,
        deps: StoreDeps,
    ) -> Result<ConfigStore, ApplyError> {
        let store = ConfigStore::empty(None, deps, true)?;
        store.apply(Change::ReplaceAll(items), ApplySource::Startup)?;
        Ok(store)
    }

    /// An empty store whose resources come from a shared store (etcd) through
    /// `apply(Sync(..), Etcd)`, and whose admin writes go to `remote`.
    pub fn shared(
        deps: StoreDeps,
        remote: Arc<dyn RemoteWriter>,
    ) -> Result<ConfigStore, ApplyError> {
        let mut store = ConfigStore::empty(None, deps, false)?;
        store.remote = Some(remote);
        Ok(store)
    }

    /// A store holding nothing (snapshot version 0), for startup to apply to.
    fn empty(
        backend: Option<Box<dyn StoreBackend>>,
        deps: StoreDeps,
        read_only: bool,
    ) -> Result<ConfigStore, ApplyError> {
        let StoreDeps {
            plugins,
            metrics,
            health,
        } = deps;
        let set = ResourceSet::default();
        let cx = BuildContext {
            metrics: &metrics,
            plugins: &plugins,
            health: &health,
            dns: DnsFailure::Reject,
        };
        let snapshot = snapshot::build(&set, None, 0, &cx).map_err(|e| ApplyError::Invalid(e.0))?;
        Ok(ConfigStore {
            current: ArcSwap::from_pointee(Current {
                resources: Arc::new(set),
                snapshot: Arc::new(snapshot),
                history: Arc::new(Vec::new()),
            }),
            writer: Mutex::new(Writer {
                revision: 0,
                backend,
                released: false,
            }),
            plugins,
            metrics,
            health,
            read_only,
            history_keep: AtomicUsize::new(DEFAULT_HISTORY_KEEP),
            remote: None,
            applied: Condvar::new(),
        })
    }

    /// How many applied changes the history keeps (`history.keep`; 0 keeps none). Takes
    /// effect from the next change.
    pub fn set_history_keep(&self, keep: usize) {
        self.history_keep.store(keep, Ordering::Relaxed);
    }

    /// The running resources and the history that led to them, read together.
    pub fn history(&self) -> (Arc<ResourceSet>, History) {
        let current = self.current.load();
        (Arc::clone(&current.resources), Arc::clone(&current.history))
    }

    /// The snapshot for one request. Call once per request and keep the `Arc`.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.load().snapshot)
    }

    /// The plugins this build knows, for `/apisix/admin/plugins`.
    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
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

    /// Closes the durable backend so that another process can open it (the new process
    /// of a binary upgrade, once it holds the listening sockets). Waits for a write in
    /// progress: every write acknowledged before is on disk, and every later one is
    /// refused with [`ApplyError::HandedOver`]; the running snapshot keeps serving.
    /// Returns whether there was a backend to close (a yaml store has none, and keeps
    /// following its file).
    pub fn release(&self) -> bool {
        let mut writer = self.writer.lock();
        let Some(backend) = writer.backend.take() else {
            return false;
        };
        writer.released = true;
        drop(backend);
        true
    }

    /// Validates, builds, persists and swaps `change`; the only way the running
    /// configuration changes.
    pub fn apply(&self, change: Change, source: ApplySource) -> Result<Applied, ApplyError> {
        self.apply_from(change, source, Origin::default())
    }

    /// [`apply`](ConfigStore::apply), naming who made the change in its history entry.
    pub fn apply_from(
        &self,
        change: Change,
        source: ApplySource,
        origin: Origin,
    ) -> Result<Applied, ApplyError> {
        if self.read_only && source == ApplySource::Admin {
            return Err(ApplyError::ReadOnly);
        }
        let result = match (&self.remote, source) {
            (Some(remote), ApplySource::Admin) => remote::apply(self, remote.as_ref(), change),
            _ => self.apply_locked(change, source, origin, false),
        };
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
        self.apply_locked(change, ApplySource::Admin, Origin::default(), true)
            .map(|_| ())
    }

    fn apply_locked(
        &self,
        change: Change,
        source: ApplySource,
        origin: Origin,
        dry_run: bool,
    ) -> Result<Applied, ApplyError> {
        let mut writer = self.writer.lock();
        if writer.released && !dry_run {
            return Err(ApplyError::HandedOver);
        }
        let current = self.current.load_full();
        let revision = writer.revision + 1;
        let planned = change::plan(&current.resources, change, revision, &self.plugins)?;
        let version = current.snapshot.version + 1;
        let cx = BuildContext {
            metrics: &self.metrics,
            plugins: &self.plugins,
            health: &self.health,
            // A DNS hiccup at startup must not keep the gateway from serving everything
            // else it has; a change made later is refused so its author sees the error.
            // Data another writer put in etcd is treated alike: it is not refusable.
            dns: if matches!(source, ApplySource::Startup | ApplySource::Etcd) {
                DnsFailure::SkipNode
            } else {
                DnsFailure::Reject
            },
        };
        let mut skipped = planned.skipped;
        let (next, snapshot) = match planned.persist {
            // A restore leaves out what does not build rather than failing.
            None => {
                let (next, snapshot, more) =
                    restore::build_skipping(planned.next, &current.snapshot, version, &cx)?;
                skipped.extend(more);
                (next, snapshot)
            }
            Some(_) => {
                let snapshot =
                    snapshot::build(&planned.next, Some(&current.snapshot), version, &cx).map_err(
                        |e| ApplyError::Invalid(relative_to_object(&planned.persist, e.0)),
                    )?;
                (planned.next, snapshot)
            }
        };
        let mut applied = Applied {
            version,
            revision,
            created: planned.created,
            id: planned.id,
            skipped: Vec::new(),
        };
        if dry_run {
            return Ok(applied);
        }
        let keep = self.history_keep.load(Ordering::Relaxed);
        // A restore is what the history already led to: it records nothing.
        let entry = planned
            .persist
            .as_ref()
            .filter(|_| keep > 0)
            .map(|_| history::changes(&current.resources, &next))
            .filter(|changes| !changes.is_empty())
            .map(|changes| HistoryEntry {
                revision,
                time: change::now(),
                source: source.label().to_string(),
                key_name: origin.key_name,
                summary: history::summary(&changes, origin.note.as_deref()),
                changes,
            });
        writer.revision = match &planned.persist {
            Some(op) => {
                if let Some(backend) = &writer.backend {
                    let h = entry.as_ref().map(|entry| HistoryWrite { entry, keep });
                    change::persist(backend.as_ref(), op, &next, revision, h)?;
                }
                revision
            }
            None => match planned.exact_revision {
                // A sync is at the revision of the shared store.
                Some(revision) => revision,
                // A restore continues the stored revision.
                None => writer
                    .revision
                    .max(next.max_index())
                    .max(planned.revision_floor),
            },
        };
        applied.revision = writer.revision;
        let history = match entry {
            Some(e) => history::appended(&current.history, e, keep),
            None => Arc::clone(&current.history),
        };
        self.swap(&current, next, snapshot, history);
        self.applied.notify_all();
        // The etcd provider reports its own, with the keys as etcd names them.
        if source != ApplySource::Etcd {
            restore::report(&self.metrics, &skipped);
        }
        applied.skipped = skipped;
        Ok(applied)
    }

    /// Makes `next` the running configuration, then brings what lives outside the
    /// snapshot (version gauge, health probes, metric series) in line with it.
    fn swap(&self, current: &Current, next: ResourceSet, snapshot: Snapshot, history: History) {
        let version = snapshot.version;
        let replaced = replaced_route_metrics(&current.snapshot, &snapshot);
        let snapshot = Arc::new(snapshot);
        self.current.store(Arc::new(Current {
            resources: Arc::new(next),
            snapshot: Arc::clone(&snapshot),
            history,
        }));
        self.metrics.set_config_version(version);
        crate::health::reconcile(&self.health, &self.metrics, &snapshot);
        report_dynacode(&self.metrics, &snapshot);
        self.metrics.set_ssl_expiry(
            snapshot
                .tls
                .ssls
                .iter()
                .map(|(id, ssl)| (id.clone(), ssl.not_after))
                .collect(),
        );
        for (metrics, route_still_exists) in replaced {
            if route_still_exists {
                metrics.forget_requests();
            } else {
                metrics.forget_all();
            }
        }
    }
}

impl Current {
    /// A copy sharing every part (`Arc`s).
    fn clone_of(c: &Current) -> Current {
        Current {
            resources: Arc::clone(&c.resources),
            snapshot: Arc::clone(&c.snapshot),
            history: Arc::clone(&c.history),
        }
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
fn relative_to_object(op: &Option<change::PersistOp>, errors: Vec<FieldError>) -> Vec<FieldError> {
    let Some(change::PersistOp::Object(kind, id)) = op else {
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

#[cfg(test)]
mod tests;
