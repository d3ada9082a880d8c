//! Admin writes with a shared store (`config_provider: etcd`).
//!
//! The change is planned and built exactly as a local write (every check, every error
//! with its JSON path), then written to etcd instead of swapped in, and answered once
//! this gateway's watch has applied it: the writer's next request (a route using the
//! upstream it just created) sees it, as against APISIX. Every gateway of the fleet
//! applies it the same way, through the watch.
//!
//! Conflicts: a `PATCH` is read and merged here, then written with a comparison of the
//! object's `modifiedIndex` (etcd's `mod_revision`); when another gateway wrote the object
//! meanwhile, this one waits until it has applied that write and merges again, so two
//! gateways' concurrent patches never lose each other's fields. A `POST` takes its id from
//! etcd's revision (APISIX's `gen_id`), unique across the fleet.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::change::{self, PersistOp};
use super::{relative_to_object, Applied, ApplyError, Change, ConfigStore};
use crate::config::ResourceKind;
use crate::snapshot::{self, BuildContext, DnsFailure};

/// How many times a `PATCH` is merged again after losing a race.
const PATCH_ATTEMPTS: usize = 20;

/// What a conditional write requires of the stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing (APISIX's `PUT` and `DELETE`).
    Any,
    /// The object does not exist (a `POST` under a fresh id).
    Absent,
    /// The object was last modified at this revision.
    ModRevision(u64),
}

/// One write to the shared store.
#[derive(Debug)]
pub enum RemoteWrite<'a> {
    Put {
        kind: ResourceKind,
        id: &'a str,
        value: &'a Value,
        expect: Expect,
    },
    Delete {
        kind: ResourceKind,
        id: &'a str,
        expect: Expect,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The expectation did not hold; the store was at this revision.
    #[error("the object changed meanwhile (revision {revision})")]
    Conflict { revision: u64 },
    #[error("{0}")]
    Unavailable(String),
}

/// The shared store, as the admin path needs it. Blocking (called from the blocking
/// pool, like every admin write).
pub trait RemoteWriter: Send + Sync {
    /// A fresh id, unique across every writer of the store.
    fn new_id(&self) -> Result<String, RemoteError>;
    /// The revision the write got.
    fn write(&self, write: RemoteWrite<'_>) -> Result<u64, RemoteError>;
    /// Unconditional writes, in order (possibly in several transactions); the revision
    /// of the last.
    fn write_all(&self, writes: &[RemoteWrite<'_>]) -> Result<u64, RemoteError>;
    /// How long a write waits for the watch to bring it back.
    fn apply_timeout(&self) -> Duration;
}

fn unavailable(e: RemoteError) -> ApplyError {
    match e {
        RemoteError::Unavailable(m) => {
            ApplyError::Unavailable(format!("{m}; the change was not made"))
        }
        RemoteError::Conflict { revision } => ApplyError::Conflict(format!(
            "the object was changed by another writer (etcd revision {revision}); retry"
        )),
    }
}

/// An admin change, validated here and made in the shared store.
pub(super) fn apply(
    store: &ConfigStore,
    remote: &dyn RemoteWriter,
    change: Change,
) -> Result<Applied, ApplyError> {
    match change {
        Change::Create { kind, value } => {
            let id = remote.new_id().map_err(unavailable)?;
            let change = Change::Put {
                kind,
                id: id.clone(),
                value,
            };
            let mut applied = put(store, remote, change, Expect::Absent)?;
            applied.created = true;
            Ok(applied)
        }
        change @ Change::Put { .. } => put(store, remote, change, Expect::Any),
        Change::Patch {
            kind,
            id,
            path,
            patch,
        } => {
            for _ in 0..PATCH_ATTEMPTS {
                let change = Change::Patch {
                    kind,
                    id: id.clone(),
                    path: path.clone(),
                    patch: patch.clone(),
                };
                match put(store, remote, change, Expect::ModRevision(0)) {
                    Err(ApplyError::Conflict(_)) => continue,
                    other => return other,
                }
            }
            Err(ApplyError::Conflict(format!(
                "{} {id} kept changing: {PATCH_ATTEMPTS} merges lost the race; retry",
                kind.noun()
            )))
        }
        Change::Delete { kind, id, force } => {
            let v = validate(
                store,
                Change::Delete {
                    kind,
                    id: id.clone(),
                    force,
                },
            )?;
            let revision = remote
                .write(RemoteWrite::Delete {
                    kind,
                    id: &id,
                    expect: Expect::Any,
                })
                .map_err(unavailable)?;
            wait_applied(store, revision, remote.apply_timeout())?;
            Ok(applied(store, revision, v.created, Some(id)))
        }
        Change::ReplaceAll(items) => replace_all(store, remote, items),
        _ => Err(ApplyError::BadRequest(
            "not available with config_provider etcd: write objects one by one (docs/cluster.md)"
                .to_string(),
        )),
    }
}

/// `PUT /configs` (and a rollback): validated as a whole here, then what differs from
/// the running configuration is written: new and changed objects first (in kind order,
/// so what is referenced comes first), then deletions (referrers first). etcd's
/// transactions are limited in size, so a large replace is several; a watch batch
/// delivered between them may leave a referrer out for a moment, and the next batch
/// brings it back.
fn replace_all(
    store: &ConfigStore,
    remote: &dyn RemoteWriter,
    items: Vec<(ResourceKind, String, Value)>,
) -> Result<Applied, ApplyError> {
    let (current, next) = {
        let writer = store.writer.lock();
        let current = store.current.load_full();
        let planned = change::plan(
            &current.resources,
            Change::ReplaceAll(items),
            writer.revision + 1,
            &store.plugins,
        )?;
        let cx = BuildContext {
            metrics: &store.metrics,
            plugins: &store.plugins,
            health: &store.health,
            dns: DnsFailure::Reject,
        };
        let version = current.snapshot.version + 1;
        snapshot::build(&planned.next, Some(&current.snapshot), version, &cx)
            .map_err(|e| ApplyError::Invalid(e.0))?;
        (std::sync::Arc::clone(&current.resources), planned.next)
    };
    let mut puts: Vec<(ResourceKind, String, std::sync::Arc<Value>)> = Vec::new();
    for kind in ResourceKind::ALL {
        for (id, view) in next.list(kind) {
            let unchanged = current
                .get(kind, &id)
                .is_some_and(|c| c.value == view.value);
            if !unchanged {
                puts.push((kind, id, view.value));
            }
        }
    }
    let mut deletes: Vec<(ResourceKind, String)> = Vec::new();
    for kind in ResourceKind::ALL.into_iter().rev() {
        for (id, _) in current.list(kind) {
            if next.get(kind, &id).is_none() {
                deletes.push((kind, id));
            }
        }
    }
    let writes: Vec<RemoteWrite<'_>> = puts
        .iter()
        .map(|(kind, id, value)| RemoteWrite::Put {
            kind: *kind,
            id,
            value,
            expect: Expect::Any,
        })
        .chain(deletes.iter().map(|(kind, id)| RemoteWrite::Delete {
            kind: *kind,
            id,
            expect: Expect::Any,
        }))
        .collect();
    if writes.is_empty() {
        return Ok(applied(store, store.revision(), false, None));
    }
    let revision = remote.write_all(&writes).map_err(unavailable)?;
    wait_applied(store, revision, remote.apply_timeout())?;
    Ok(applied(store, revision, false, None))
}

/// Validates a write of one object, writes it to the shared store and waits for it.
/// `Expect::ModRevision(_)` means "as this gateway last saw it" (filled in here).
fn put(
    store: &ConfigStore,
    remote: &dyn RemoteWriter,
    change: Change,
    expect: Expect,
) -> Result<Applied, ApplyError> {
    let v = validate(store, change)?;
    let (Some((kind, id)), Some(value)) = (v.object.clone(), v.value.as_ref()) else {
        return Err(ApplyError::NotFound);
    };
    let expect = match expect {
        Expect::ModRevision(_) => Expect::ModRevision(v.base.unwrap_or(0)),
        other => other,
    };
    let written = remote.write(RemoteWrite::Put {
        kind,
        id: &id,
        value,
        expect,
    });
    let revision = match written {
        Ok(revision) => revision,
        // Someone else wrote it: catch up with their write, then the caller merges again.
        Err(RemoteError::Conflict { revision }) => {
            wait_applied(store, revision, remote.apply_timeout())?;
            return Err(unavailable(RemoteError::Conflict { revision }));
        }
        Err(e) => return Err(unavailable(e)),
    };
    wait_applied(store, revision, remote.apply_timeout())?;
    Ok(applied(store, revision, v.created, Some(id)))
}

fn applied(store: &ConfigStore, revision: u64, created: bool, id: Option<String>) -> Applied {
    Applied {
        version: store.snapshot().version,
        revision,
        created,
        id,
        skipped: Vec::new(),
    }
}

/// A change planned and built on the running configuration, not applied.
struct Validated {
    created: bool,
    object: Option<(ResourceKind, String)>,
    /// The object as it would be stored (`id`, `create_time`, `update_time` set).
    value: Option<Value>,
    /// The object's `modifiedIndex` before the change.
    base: Option<u64>,
}

fn validate(store: &ConfigStore, change: Change) -> Result<Validated, ApplyError> {
    let writer = store.writer.lock();
    let current = store.current.load_full();
    let target = match &change {
        Change::Put { kind, id, .. }
        | Change::Patch { kind, id, .. }
        | Change::Delete { kind, id, .. } => Some((*kind, id.clone())),
        _ => None,
    };
    let base = target
        .as_ref()
        .and_then(|(kind, id)| current.resources.get(*kind, id))
        .map(|v| v.modified_index);
    let planned = change::plan(
        &current.resources,
        change,
        writer.revision + 1,
        &store.plugins,
    )?;
    let cx = BuildContext {
        metrics: &store.metrics,
        plugins: &store.plugins,
        health: &store.health,
        dns: DnsFailure::Reject,
    };
    let version = current.snapshot.version + 1;
    snapshot::build(&planned.next, Some(&current.snapshot), version, &cx)
        .map_err(|e| ApplyError::Invalid(relative_to_object(&planned.persist, e.0)))?;
    let object = match &planned.persist {
        Some(PersistOp::Object(kind, id)) | Some(PersistOp::Deleted(kind, id)) => {
            Some((*kind, id.clone()))
        }
        _ => target,
    };
    let value = object
        .as_ref()
        .and_then(|(kind, id)| planned.next.get(*kind, id))
        .map(|v| (*v.value).clone());
    Ok(Validated {
        created: planned.created,
        object,
        value,
        base,
    })
}

/// Waits until the running configuration is at `revision` or later.
fn wait_applied(store: &ConfigStore, revision: u64, timeout: Duration) -> Result<(), ApplyError> {
    let deadline = Instant::now() + timeout;
    let mut writer = store.writer.lock();
    while writer.revision < revision {
        if store.applied.wait_until(&mut writer, deadline).timed_out() {
            return Err(ApplyError::Unavailable(format!(
                "written to etcd at revision {revision}, but this gateway has not applied it within {}s (its watch of etcd may be down)",
                timeout.as_secs()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Weak};

    use parking_lot::Mutex;
    use serde_json::json;

    use super::*;
    use crate::store::{ApplySource, Record, StoreDeps, SyncBatch};

    /// An etcd in memory whose "watch" applies each write to the store at once. An
    /// `interfere`nce is another writer's put, made just before the next write.
    #[derive(Default)]
    struct FakeEtcd {
        store: Mutex<Weak<ConfigStore>>,
        revision: Mutex<u64>,
        kvs: Mutex<BTreeMap<(ResourceKind, String), Record>>,
        interfere: Mutex<Option<(ResourceKind, String, Value)>>,
        writes: Mutex<usize>,
    }

    impl FakeEtcd {
        fn put_and_deliver(&self, kind: ResourceKind, id: &str, value: Value) -> u64 {
            let revision = {
                let mut r = self.revision.lock();
                *r += 1;
                *r
            };
            let created = self
                .kvs
                .lock()
                .get(&(kind, id.to_string()))
                .map_or(revision, |r| r.created_index);
            let record = Record {
                value,
                created_index: created,
                modified_index: revision,
            };
            self.kvs
                .lock()
                .insert((kind, id.to_string()), record.clone());
            self.deliver(vec![(kind, id.to_string(), record)], Vec::new(), revision);
            revision
        }

        fn deliver(
            &self,
            puts: Vec<(ResourceKind, String, Record)>,
            deletes: Vec<(ResourceKind, String)>,
            revision: u64,
        ) {
            let store = self.store.lock().upgrade().expect("store alive");
            let batch = SyncBatch {
                full: false,
                puts,
                deletes,
                revision,
            };
            store
                .apply(Change::Sync(batch), ApplySource::Etcd)
                .expect("sync applies");
        }
    }

    impl RemoteWriter for FakeEtcd {
        fn new_id(&self) -> Result<String, RemoteError> {
            let mut r = self.revision.lock();
            *r += 1;
            Ok(format!("{:020}", *r))
        }

        fn write(&self, write: RemoteWrite<'_>) -> Result<u64, RemoteError> {
            *self.writes.lock() += 1;
            if let Some((kind, id, value)) = self.interfere.lock().take() {
                self.put_and_deliver(kind, &id, value);
            }
            match write {
                RemoteWrite::Put {
                    kind,
                    id,
                    value,
                    expect,
                } => {
                    let current = self
                        .kvs
                        .lock()
                        .get(&(kind, id.to_string()))
                        .map(|r| r.modified_index);
                    let holds = match expect {
                        Expect::Any => true,
                        Expect::Absent => current.is_none(),
                        Expect::ModRevision(m) => current == Some(m),
                    };
                    if !holds {
                        return Err(RemoteError::Conflict {
                            revision: *self.revision.lock(),
                        });
                    }
                    Ok(self.put_and_deliver(kind, id, value.clone()))
                }
                RemoteWrite::Delete { kind, id, .. } => {
                    let revision = {
                        let mut r = self.revision.lock();
                        *r += 1;
                        *r
                    };
                    self.kvs.lock().remove(&(kind, id.to_string()));
                    self.deliver(Vec::new(), vec![(kind, id.to_string())], revision);
                    Ok(revision)
                }
            }
        }

        fn write_all(&self, writes: &[RemoteWrite<'_>]) -> Result<u64, RemoteError> {
            let mut last = 0;
            for w in writes {
                let w = match w {
                    RemoteWrite::Put {
                        kind, id, value, ..
                    } => RemoteWrite::Put {
                        kind: *kind,
                        id,
                        value,
                        expect: Expect::Any,
                    },
                    RemoteWrite::Delete { kind, id, .. } => RemoteWrite::Delete {
                        kind: *kind,
                        id,
                        expect: Expect::Any,
                    },
                };
                last = self.write(w)?;
            }
            Ok(last)
        }

        fn apply_timeout(&self) -> Duration {
            Duration::from_secs(5)
        }
    }

    fn shared() -> (Arc<ConfigStore>, Arc<FakeEtcd>) {
        let etcd = Arc::new(FakeEtcd::default());
        let deps = StoreDeps {
            plugins: Arc::new(portico_plugins::PluginRegistry::builtin()),
            metrics: crate::metrics::Metrics::new().expect("metrics"),
            health: portico_healthcheck::HealthRegistry::new(Arc::new(
                portico_healthcheck::NoopObserver,
            )),
        };
        let store = Arc::new(ConfigStore::shared(deps, etcd.clone()).expect("store"));
        *etcd.store.lock() = Arc::downgrade(&store);
        (store, etcd)
    }

    fn admin(store: &ConfigStore, change: Change) -> Result<Applied, ApplyError> {
        store.apply(change, ApplySource::Admin)
    }

    #[test]
    fn writes_go_through_the_shared_store_and_come_back_with_its_revisions() {
        let (store, etcd) = shared();
        let up = json!({"nodes": {"127.0.0.1:1": 1}});
        let a = admin(
            &store,
            Change::Put {
                kind: ResourceKind::Upstreams,
                id: "u".into(),
                value: up,
            },
        )
        .expect("put");
        assert!(a.created);
        assert_eq!(a.revision, 1);
        let got = store
            .resources()
            .get(ResourceKind::Upstreams, "u")
            .expect("applied");
        assert_eq!((got.created_index, got.modified_index), (1, 1));
        assert!(
            got.value.get("create_time").is_some(),
            "stamped before the write"
        );
        // Validation happens before anything is written.
        let bad = admin(
            &store,
            Change::Put {
                kind: ResourceKind::Routes,
                id: "r".into(),
                value: json!({"uri": "/a", "upstream_id": "missing"}),
            },
        );
        assert!(matches!(bad, Err(ApplyError::Invalid(_))), "{bad:?}");
        assert_eq!(*etcd.writes.lock(), 1);
        // POST takes its id from the shared store.
        let c = admin(
            &store,
            Change::Create {
                kind: ResourceKind::Routes,
                value: json!({"uri": "/c", "upstream_id": "u"}),
            },
        )
        .expect("create");
        assert_eq!(c.id.as_deref(), Some("00000000000000000002"));
        assert!(c.created);
        // Not available: a dynacode push.
        let dyn_push = admin(&store, Change::DeleteDynacode);
        assert!(matches!(dyn_push, Err(ApplyError::BadRequest(_))));
        let d = admin(
            &store,
            Change::Delete {
                kind: ResourceKind::Routes,
                id: "00000000000000000002".into(),
                force: false,
            },
        );
        assert!(d.is_ok());
        assert!(store
            .resources()
            .get(ResourceKind::Routes, "00000000000000000002")
            .is_none());
    }

    #[test]
    fn a_patch_that_lost_a_race_is_merged_again_and_loses_nothing() {
        let (store, etcd) = shared();
        admin(
            &store,
            Change::Put {
                kind: ResourceKind::Upstreams,
                id: "u".into(),
                value: json!({"nodes": {"127.0.0.1:1": 1}, "labels": {"a": "1"}}),
            },
        )
        .expect("put");
        // Another gateway writes a label between this one's read and its write.
        *etcd.interfere.lock() = Some((
            ResourceKind::Upstreams,
            "u".into(),
            json!({"id": "u", "nodes": {"127.0.0.1:1": 1}, "labels": {"a": "1", "b": "2"}}),
        ));
        admin(
            &store,
            Change::Patch {
                kind: ResourceKind::Upstreams,
                id: "u".into(),
                path: Vec::new(),
                patch: json!({"labels": {"c": "3"}}),
            },
        )
        .expect("patch");
        let got = store
            .resources()
            .get(ResourceKind::Upstreams, "u")
            .expect("there");
        assert_eq!(got.value["labels"], json!({"a": "1", "b": "2", "c": "3"}));
        // The first attempt conflicted, the second wrote.
        assert_eq!(*etcd.writes.lock(), 3);
    }

    #[test]
    fn a_sync_leaves_out_what_does_not_load_and_takes_the_shared_revision() {
        let (store, _etcd) = shared();
        let rec = |v: Value, i| Record {
            value: v,
            created_index: i,
            modified_index: i,
        };
        let batch = SyncBatch {
            full: true,
            puts: vec![
                (
                    ResourceKind::Routes,
                    "ok".into(),
                    rec(
                        json!({"uri": "/ok", "upstream": {"nodes": {"127.0.0.1:1": 1}}}),
                        3,
                    ),
                ),
                (
                    ResourceKind::Routes,
                    "bad".into(),
                    rec(json!({"uri": "/b", "nope": 1}), 4),
                ),
                (
                    ResourceKind::Routes,
                    "dangling".into(),
                    rec(json!({"uri": "/d", "upstream_id": "x"}), 5),
                ),
            ],
            deletes: Vec::new(),
            revision: 9,
        };
        let applied = store
            .apply(Change::Sync(batch), ApplySource::Etcd)
            .expect("applies");
        let mut out: Vec<String> = applied
            .skipped
            .iter()
            .filter_map(|s| s.object.as_ref().map(|o| o.1.clone()))
            .collect();
        out.sort();
        assert_eq!(out, ["bad", "dangling"]);
        assert_eq!(store.revision(), 9);
        assert!(store.resources().get(ResourceKind::Routes, "ok").is_some());
        // A full read at an older revision (etcd restored) replaces everything.
        let empty = SyncBatch {
            full: true,
            revision: 2,
            ..SyncBatch::default()
        };
        store
            .apply(Change::Sync(empty), ApplySource::Etcd)
            .expect("applies");
        assert_eq!(store.revision(), 2);
        assert_eq!(store.resources().total(), 0);
    }

    #[test]
    fn a_bulk_replace_writes_only_the_difference() {
        let (store, etcd) = shared();
        let up = |port: u16| json!({"nodes": {format!("127.0.0.1:{port}"): 1}});
        let items = |route: &str, port: u16| {
            vec![
                (ResourceKind::Upstreams, "u".to_string(), up(port)),
                (
                    ResourceKind::Routes,
                    route.to_string(),
                    json!({"uri": "/x", "upstream_id": "u"}),
                ),
            ]
        };
        admin(&store, Change::ReplaceAll(items("a", 1))).expect("first");
        assert_eq!(*etcd.writes.lock(), 2);
        // Same upstream, route renamed: one put, one delete.
        admin(&store, Change::ReplaceAll(items("b", 1))).expect("second");
        assert_eq!(*etcd.writes.lock(), 4);
        let r = store.resources();
        assert!(r.get(ResourceKind::Routes, "b").is_some());
        assert!(r.get(ResourceKind::Routes, "a").is_none());
        // Invalid as a whole: nothing written.
        let bad = vec![(
            ResourceKind::Routes,
            "c".to_string(),
            json!({"uri": "/c", "upstream_id": "nope"}),
        )];
        assert!(admin(&store, Change::ReplaceAll(bad)).is_err());
        assert_eq!(*etcd.writes.lock(), 4);
    }
}
