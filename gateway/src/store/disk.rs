//! Durable storage of admin-API resources in `data_dir/store.redb`.
//!
//! redb is an embedded, pure-Rust, ACID key-value store: a committed write transaction is
//! fsynced before `commit` returns, and a crash (even `kill -9` mid-write) leaves either
//! the old or the new state, never a torn one. An admin write is acknowledged only after
//! its transaction commits. One record per resource, keyed like APISIX's etcd keys
//! (`/apisix/routes/1`), plus the revision counter behind `createdIndex`/`modifiedIndex`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::HistoryEntry;
use crate::config::ResourceKind;

const RESOURCES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("resources");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// The configuration history: revision → JSON of a [`HistoryEntry`].
const HISTORY: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("history");
const REVISION: &str = "revision";

/// A failure of the durable store; the write it belonged to was not applied.
#[derive(Debug, thiserror::Error)]
#[error("store {context}: {message}")]
pub struct DiskError {
    context: &'static str,
    message: String,
    /// The store file is held by another process (redb's lock).
    locked: bool,
}

impl DiskError {
    /// True when another process holds the store (a running instance, or the old one
    /// of a binary upgrade that has not released it yet).
    pub fn is_locked(&self) -> bool {
        self.locked
    }
}

fn err(context: &'static str) -> impl FnOnce(String) -> DiskError {
    move |message| DiskError {
        context,
        message,
        locked: false,
    }
}

/// One stored resource record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub value: Value,
    #[serde(rename = "createdIndex")]
    pub created_index: u64,
    #[serde(rename = "modifiedIndex")]
    pub modified_index: u64,
}

/// What a load returns: every record with its kind and id, and the revision counter.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<(ResourceKind, String, Record)>,
    /// The dynacode document, stored under its own key.
    pub dynacode: Option<Record>,
    /// Keys whose record could not be read (not a resource key, not a record), with why:
    /// the startup leaves them out and says so instead of refusing to start.
    pub unreadable: Vec<(String, String)>,
    pub revision: u64,
    /// The kept configuration history, oldest first (entries that do not decode are
    /// left out with a warning).
    pub history: Vec<HistoryEntry>,
}

/// A history entry to record with a write, and how many entries to keep.
#[derive(Clone, Copy)]
pub struct HistoryWrite<'a> {
    pub entry: &'a HistoryEntry,
    pub keep: usize,
}

/// One write, applied in a single transaction.
pub enum DiskWrite<'a> {
    Put {
        kind: ResourceKind,
        id: &'a str,
        record: &'a Record,
    },
    Delete {
        kind: ResourceKind,
        id: &'a str,
    },
    /// Replace every record (the `configs` bulk replace); the dynacode document stays.
    ReplaceAll(Vec<(ResourceKind, &'a str, &'a Record)>),
    /// Store (`Some`) or remove (`None`) the dynacode document.
    Dynacode(Option<&'a Record>),
}

pub struct DiskStore {
    db: Database,
}

impl DiskStore {
    /// Opens (creating if needed) the store in `dir`: a new `dir` is created 0700, the
    /// store file is 0600.
    pub fn open(dir: &Path) -> Result<DiskStore, DiskError> {
        crate::data_dir::create_private(dir).map_err(|e| err("create data_dir")(e.to_string()))?;
        let path = dir.join("store.redb");
        let db = Database::create(&path).map_err(|e| DiskError {
            locked: matches!(e, redb::DatabaseError::DatabaseAlreadyOpen),
            ..err("open")(e.to_string())
        })?;
        crate::data_dir::make_private(&path).map_err(|e| err("open")(e.to_string()))?;
        let tx = db.begin_write().map_err(|e| err("init")(e.to_string()))?;
        {
            tx.open_table(RESOURCES)
                .map_err(|e| err("init")(e.to_string()))?;
            tx.open_table(META)
                .map_err(|e| err("init")(e.to_string()))?;
            tx.open_table(HISTORY)
                .map_err(|e| err("init")(e.to_string()))?;
        }
        tx.commit().map_err(|e| err("init")(e.to_string()))?;
        Ok(DiskStore { db })
    }

    /// Reads every record. A key that is not a resource key, or whose record does not
    /// decode, is returned in `unreadable`; only a failure of the database itself is an
    /// error.
    pub fn load(&self) -> Result<Loaded, DiskError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| err("load")(e.to_string()))?;
        let table = tx
            .open_table(RESOURCES)
            .map_err(|e| err("load")(e.to_string()))?;
        let mut loaded = Loaded::default();
        for item in table.iter().map_err(|e| err("load")(e.to_string()))? {
            let (k, v) = item.map_err(|e| err("load")(e.to_string()))?;
            let key = k.value();
            let record = serde_json::from_slice::<Record>(v.value());
            match (key == crate::config::dynacode::KEY, parse_key(key), record) {
                (_, _, Err(e)) => loaded.unreadable.push((key.to_string(), e.to_string())),
                (true, _, Ok(record)) => loaded.dynacode = Some(record),
                (false, Some((kind, id)), Ok(record)) => {
                    loaded.records.push((kind, id.to_string(), record))
                }
                (false, None, Ok(_)) => loaded
                    .unreadable
                    .push((key.to_string(), "not a resource key".to_string())),
            }
        }
        let meta = tx
            .open_table(META)
            .map_err(|e| err("load")(e.to_string()))?;
        loaded.revision = meta
            .get(REVISION)
            .map_err(|e| err("load")(e.to_string()))?
            .map(|g| g.value())
            .unwrap_or(0);
        if let Ok(history) = tx.open_table(HISTORY) {
            for item in history.iter().map_err(|e| err("load")(e.to_string()))? {
                let (k, v) = item.map_err(|e| err("load")(e.to_string()))?;
                match serde_json::from_slice::<HistoryEntry>(v.value()) {
                    Ok(entry) => loaded.history.push(entry),
                    Err(e) => tracing::warn!(
                        revision = k.value(),
                        "configuration history entry left out: {e}"
                    ),
                }
            }
        }
        Ok(loaded)
    }

    /// Opens the store in `dir` for offline repair (`portico store`); unlike [`open`]
    /// it creates nothing, and says so when another process holds the store.
    ///
    /// [`open`]: DiskStore::open
    pub fn open_existing(dir: &Path) -> Result<DiskStore, DiskError> {
        let path = dir.join("store.redb");
        if !path.exists() {
            return Err(err("open")(format!("{} does not exist", path.display())));
        }
        let db = Database::open(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => err("open")(format!(
                "{} is in use by another process (stop portico first)",
                path.display()
            )),
            other => err("open")(other.to_string()),
        })?;
        Ok(DiskStore { db })
    }

    /// Every key with its stored bytes, in key order, for `portico store`.
    pub fn raw_records(&self) -> Result<Vec<(String, Vec<u8>)>, DiskError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| err("read")(e.to_string()))?;
        let table = tx
            .open_table(RESOURCES)
            .map_err(|e| err("read")(e.to_string()))?;
        let mut out = Vec::new();
        for item in table.iter().map_err(|e| err("read")(e.to_string()))? {
            let (k, v) = item.map_err(|e| err("read")(e.to_string()))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes the record under `key` (any key, readable or not); whether it was there.
    /// The revision counter is left as it is.
    pub fn remove_key(&self, key: &str) -> Result<bool, DiskError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| err("write")(e.to_string()))?;
        let removed = {
            let mut table = tx
                .open_table(RESOURCES)
                .map_err(|e| err("write")(e.to_string()))?;
            let removed = table
                .remove(key)
                .map_err(|e| err("write")(e.to_string()))?
                .is_some();
            removed
        };
        tx.commit().map_err(|e| err("commit")(e.to_string()))?;
        Ok(removed)
    }

    /// Puts and deletes many records and sets the revision counter, in one durable
    /// transaction (the etcd provider's local copy, one watch batch at a time).
    pub fn write_batch(
        &self,
        puts: &[(ResourceKind, &str, &Record)],
        deletes: &[(ResourceKind, &str)],
        revision: u64,
    ) -> Result<(), DiskError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| err("write")(e.to_string()))?;
        {
            let mut table = tx
                .open_table(RESOURCES)
                .map_err(|e| err("write")(e.to_string()))?;
            for (kind, id) in deletes {
                table
                    .remove(kind.key(id).as_str())
                    .map_err(|e| err("write")(e.to_string()))?;
            }
            for (kind, id, record) in puts {
                let bytes = encode(record)?;
                table
                    .insert(kind.key(id).as_str(), bytes.as_slice())
                    .map_err(|e| err("write")(e.to_string()))?;
            }
            let mut meta = tx
                .open_table(META)
                .map_err(|e| err("write")(e.to_string()))?;
            meta.insert(REVISION, revision)
                .map_err(|e| err("write")(e.to_string()))?;
        }
        tx.commit().map_err(|e| err("commit")(e.to_string()))
    }

    /// Applies `write` and sets the revision counter, in one durable transaction.
    pub fn write(&self, write: DiskWrite<'_>, revision: u64) -> Result<(), DiskError> {
        self.write_with_history(write, revision, None)
    }

    /// [`write`](DiskStore::write), recording `history` (and dropping the entries beyond
    /// its `keep`) in the same transaction.
    pub fn write_with_history(
        &self,
        write: DiskWrite<'_>,
        revision: u64,
        history: Option<HistoryWrite<'_>>,
    ) -> Result<(), DiskError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| err("write")(e.to_string()))?;
        {
            let mut table = tx
                .open_table(RESOURCES)
                .map_err(|e| err("write")(e.to_string()))?;
            match write {
                DiskWrite::Put { kind, id, record } => {
                    let bytes = encode(record)?;
                    table
                        .insert(kind.key(id).as_str(), bytes.as_slice())
                        .map_err(|e| err("write")(e.to_string()))?;
                }
                DiskWrite::Delete { kind, id } => {
                    table
                        .remove(kind.key(id).as_str())
                        .map_err(|e| err("write")(e.to_string()))?;
                }
                DiskWrite::Dynacode(Some(record)) => {
                    let bytes = encode(record)?;
                    table
                        .insert(crate::config::dynacode::KEY, bytes.as_slice())
                        .map_err(|e| err("write")(e.to_string()))?;
                }
                DiskWrite::Dynacode(None) => {
                    table
                        .remove(crate::config::dynacode::KEY)
                        .map_err(|e| err("write")(e.to_string()))?;
                }
                DiskWrite::ReplaceAll(items) => {
                    table
                        .retain(|k, _| k == crate::config::dynacode::KEY)
                        .map_err(|e| err("write")(e.to_string()))?;
                    for (kind, id, record) in items {
                        let bytes = encode(record)?;
                        table
                            .insert(kind.key(id).as_str(), bytes.as_slice())
                            .map_err(|e| err("write")(e.to_string()))?;
                    }
                }
            }
            let mut meta = tx
                .open_table(META)
                .map_err(|e| err("write")(e.to_string()))?;
            meta.insert(REVISION, revision)
                .map_err(|e| err("write")(e.to_string()))?;
            if let Some(h) = history {
                record_history(&tx, h)?;
            }
        }
        tx.commit().map_err(|e| err("commit")(e.to_string()))
    }
}

/// Inserts `h.entry` and drops the oldest entries beyond `h.keep`.
fn record_history(tx: &redb::WriteTransaction, h: HistoryWrite<'_>) -> Result<(), DiskError> {
    use redb::ReadableTableMetadata;
    let w = |e: redb::Error| err("write history")(e.to_string());
    let mut table = tx.open_table(HISTORY).map_err(|e| w(e.into()))?;
    let bytes = serde_json::to_vec(h.entry).map_err(|e| err("encode")(e.to_string()))?;
    table
        .insert(h.entry.revision, bytes.as_slice())
        .map_err(|e| w(e.into()))?;
    while table.len().map_err(|e| w(e.into()))? > h.keep as u64 {
        if table.pop_first().map_err(|e| w(e.into()))?.is_none() {
            break;
        }
    }
    Ok(())
}

fn encode(record: &Record) -> Result<Vec<u8>, DiskError> {
    serde_json::to_vec(record).map_err(|e| err("encode")(e.to_string()))
}

/// `/apisix/routes/1` → (Routes, "1").
fn parse_key(key: &str) -> Option<(ResourceKind, &str)> {
    let rest = key.strip_prefix("/apisix/")?;
    let (segment, id) = rest.split_once('/')?;
    Some((ResourceKind::from_segment(segment)?, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: Value, i: u64) -> Record {
        Record {
            value: v,
            created_index: i,
            modified_index: i,
        }
    }

    #[test]
    fn put_delete_replace_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("portico-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let d = DiskStore::open(&dir).unwrap();
            let r1 = rec(serde_json::json!({"uri": "/a"}), 1);
            let r2 = rec(serde_json::json!({"nodes": {}}), 2);
            d.write(
                DiskWrite::Put {
                    kind: ResourceKind::Routes,
                    id: "1",
                    record: &r1,
                },
                1,
            )
            .unwrap();
            d.write(
                DiskWrite::Put {
                    kind: ResourceKind::Upstreams,
                    id: "u",
                    record: &r2,
                },
                2,
            )
            .unwrap();
            d.write(
                DiskWrite::Delete {
                    kind: ResourceKind::Routes,
                    id: "1",
                },
                3,
            )
            .unwrap();
        }
        let d = DiskStore::open(&dir).unwrap();
        let loaded = d.load().unwrap();
        assert_eq!(loaded.revision, 3);
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].0, ResourceKind::Upstreams);
        assert_eq!(loaded.records[0].1, "u");
        let r3 = rec(serde_json::json!({"plugins": {}}), 4);
        d.write(
            DiskWrite::ReplaceAll(vec![(ResourceKind::GlobalRules, "g", &r3)]),
            4,
        )
        .unwrap();
        let loaded = d.load().unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].1, "g");
        assert_eq!(loaded.revision, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_parse() {
        assert_eq!(
            parse_key("/apisix/global_rules/7"),
            Some((ResourceKind::GlobalRules, "7"))
        );
        assert_eq!(parse_key("/apisix/nope/7"), None);
    }
}
