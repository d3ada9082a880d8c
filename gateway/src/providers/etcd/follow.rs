//! What the watcher knows between batches, and how a full read or a watch batch
//! becomes one `apply(Sync(..), Etcd)` (synchronous; the watcher calls it).
//!
//! Objects that do not load (bad JSON, a field Portico does not know, a reference to a
//! missing object) are left out with an error log naming their etcd key and a
//! `portico_etcd_skipped_objects{key}` series, and the rest applies (APISIX's
//! behaviour); one whose only problem is a plugin this gateway lacks answers 503
//! instead (`store/sync.rs`), reported the same way. They are offered again with every later batch, so a route left out for
//! a missing upstream comes back when the upstream is written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::layout::{self, KeyKind};
use super::wire::{Event, Kv};
use super::EtcdStatus;
use crate::config::ResourceKind;
use crate::metrics::Metrics;
use crate::store::{ApplySource, Change, ConfigStore, Keyring, Record, SyncBatch};

use super::local_copy::LocalCopy;

/// Where the running configuration is in etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub revision: u64,
    pub cluster_id: u64,
}

pub struct Follow {
    pub store: Arc<ConfigStore>,
    pub prefix: String,
    pub local: Option<LocalCopy>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<EtcdStatus>,
    /// `data_encryption.keyring`: SSL private keys in etcd are sealed (APISIX's scheme).
    pub keyring: Option<Keyring>,
    /// Objects the last apply left out, offered again with the next batch.
    pending: BTreeMap<(ResourceKind, String), Record>,
    /// Why each left-out etcd key is out (bad values and objects that did not load).
    skipped: BTreeMap<String, String>,
}

/// A key-value decoded: an object, not ours, or not readable.
enum Decoded {
    Object(ResourceKind, String, Record),
    NotOurs,
    Unreadable(String),
}

fn decode(prefix: &str, kv: Kv) -> Decoded {
    let (kind, id) = match layout::classify(prefix, &kv.key) {
        KeyKind::Object(kind, id) => (kind, id.to_string()),
        KeyKind::NotOurs => return Decoded::NotOurs,
    };
    let mut value: Value = match serde_json::from_slice(&kv.value) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Decoded::Unreadable("the value is not a JSON object".into()),
        Err(e) => return Decoded::Unreadable(format!("the value is not JSON: {e}")),
    };
    // `etcdctl put` by hand may leave `id` out; the key says it (APISIX does the same).
    if let Some(obj) = value.as_object_mut() {
        obj.entry("id").or_insert_with(|| Value::String(id.clone()));
    }
    Decoded::Object(
        kind,
        id,
        Record {
            value,
            created_index: kv.create_revision,
            modified_index: kv.mod_revision,
        },
    )
}

impl Follow {
    pub fn new(
        store: Arc<ConfigStore>,
        prefix: String,
        local: Option<LocalCopy>,
        metrics: Arc<Metrics>,
        status: Arc<EtcdStatus>,
        keyring: Option<Keyring>,
    ) -> Follow {
        Follow {
            store,
            prefix,
            local,
            metrics,
            status,
            keyring,
            pending: BTreeMap::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// Applies everything a full read returned, as one change that replaces the running
    /// configuration, and copies it to `data_dir`.
    pub fn apply_full(&mut self, kvs: Vec<Kv>, revision: u64) {
        let before = self.skipped_keys();
        let mut unreadable = BTreeMap::new();
        let mut records = Vec::new();
        for kv in kvs {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            match decode(&self.prefix, kv) {
                Decoded::Object(kind, id, record) => records.push((kind, id, record)),
                Decoded::NotOurs => {}
                Decoded::Unreadable(why) => {
                    unreadable.insert(key, why);
                }
            }
        }
        self.pending.clear();
        self.skipped = unreadable;
        self.apply(true, records, Vec::new(), revision, before, true);
    }

    /// Applies a startup from the local copy (etcd unreachable).
    pub fn apply_local_copy(
        &mut self,
        records: Vec<(ResourceKind, String, Record)>,
        revision: u64,
    ) {
        self.pending.clear();
        self.skipped.clear();
        // It is what the copy holds: nothing to copy back.
        self.apply(true, records, Vec::new(), revision, BTreeSet::new(), false);
    }

    /// Applies one batch of watch events (the last event of a key wins).
    pub fn apply_events(&mut self, events: Vec<Event>, revision: u64) {
        let before = self.skipped_keys();
        let mut latest: BTreeMap<Vec<u8>, Option<Kv>> = BTreeMap::new();
        let mut revision = revision;
        for event in events {
            match event {
                Event::Put(kv) => {
                    revision = revision.max(kv.mod_revision);
                    latest.insert(kv.key.clone(), Some(kv));
                }
                Event::Delete { key, revision: r } => {
                    revision = revision.max(r);
                    latest.insert(key, None);
                }
            }
        }
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (key, kv) in latest {
            let text = String::from_utf8_lossy(&key).into_owned();
            let object = match layout::classify(&self.prefix, &key) {
                KeyKind::Object(kind, id) => (kind, id.to_string()),
                KeyKind::NotOurs => continue,
            };
            self.skipped.remove(&text);
            self.pending.remove(&object);
            match kv.map(|kv| decode(&self.prefix, kv)) {
                None => deletes.push(object),
                Some(Decoded::Object(kind, id, record)) => puts.push((kind, id, record)),
                Some(Decoded::NotOurs) => {}
                Some(Decoded::Unreadable(why)) => {
                    self.skipped.insert(text, why);
                    // What was there before is gone from etcd: not served any more.
                    deletes.push(object);
                }
            }
        }
        self.apply(false, puts, deletes, revision, before, true);
    }

    fn apply(
        &mut self,
        full: bool,
        mut puts: Vec<(ResourceKind, String, Record)>,
        deletes: Vec<(ResourceKind, String)>,
        revision: u64,
        // Keys left out before this change: only the new ones are logged.
        before: BTreeSet<String>,
        // Copy the change to `data_dir` (after it is served: a large first read is
        // served before its copy is written).
        copy: bool,
    ) {
        let deleted = if copy { deletes.clone() } else { Vec::new() };
        // Retry what did not load before: what it needed may have arrived.
        for ((kind, id), record) in std::mem::take(&mut self.pending) {
            puts.push((kind, id, record));
        }
        let offered: BTreeMap<(ResourceKind, String), Record> = puts
            .iter()
            .map(|(kind, id, r)| ((*kind, id.clone()), r.clone()))
            .collect();
        // Keys of objects (not bad values) are recomputed from this apply.
        let object_keys: BTreeSet<String> = offered
            .keys()
            .map(|(kind, id)| layout::key(&self.prefix, *kind, id))
            .collect();
        self.skipped.retain(|k, _| !object_keys.contains(k));
        // The local copy and `pending` keep SSL keys sealed; the store gets them open.
        if let Some(ring) = &self.keyring {
            let mut opened = Vec::with_capacity(puts.len());
            for (kind, id, mut record) in puts {
                if kind == ResourceKind::Ssls && !ring.open_ssl(&mut record.value) {
                    let key = layout::key(&self.prefix, kind, &id);
                    self.skipped.insert(
                        key,
                        "a private key does not decrypt with any key of data_encryption.keyring"
                            .into(),
                    );
                    continue;
                }
                opened.push((kind, id, record));
            }
            puts = opened;
        }
        let batch = SyncBatch {
            full,
            puts,
            deletes,
            revision,
        };
        match self.store.apply(Change::Sync(batch), ApplySource::Etcd) {
            Ok(applied) => {
                for s in applied.skipped {
                    let Some(object) = s.object else { continue };
                    let key = layout::key(&self.prefix, object.0, &object.1);
                    if let Some(record) = offered.get(&object) {
                        self.pending.insert(object, record.clone());
                    }
                    self.skipped.insert(key, s.reason);
                }
                self.status.set_revision(revision);
                self.metrics.etcd.set_revision(revision);
            }
            // Only a failure that names no object gets here (the set is left as it was):
            // everything offered is offered again with the next change.
            Err(e) => {
                tracing::error!(revision, "etcd change not applied: {e}");
                self.pending
                    .extend(offered.iter().map(|(k, r)| (k.clone(), r.clone())));
            }
        }
        if let (true, Some(local)) = (copy, &self.local) {
            let records: Vec<(ResourceKind, String, Record)> = offered
                .into_iter()
                .map(|((kind, id), record)| (kind, id, record))
                .collect();
            let written = if full {
                local.replace(&records, revision)
            } else {
                local.update(&records, &deleted, revision)
            };
            if let Err(e) = written {
                tracing::warn!("cannot update the local copy of etcd's configuration: {e}");
            }
        }
        for (key, why) in &self.skipped {
            if !before.contains(key) {
                tracing::error!(%key, "etcd object not served as written: {why}");
            }
        }
        self.metrics.etcd.set_skipped(&self.skipped_keys());
    }

    fn skipped_keys(&self) -> BTreeSet<String> {
        self.skipped.keys().cloned().collect()
    }
}
