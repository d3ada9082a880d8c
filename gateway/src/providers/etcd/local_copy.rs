//! The local copy of the last configuration applied from etcd, in
//! `data_dir/etcd/store.redb` (redb, as the admin provider's store): a gateway started
//! while etcd is unreachable serves it until etcd answers again.
//!
//! It holds the objects as etcd had them (with their revisions), not what loaded: the
//! startup from it leaves out the same objects the running gateway did, and says so.

use std::path::Path;

use crate::config::ResourceKind;
use crate::store::{DiskError, DiskStore, DiskWrite, Record};

pub struct LocalCopy {
    disk: DiskStore,
}

/// What the local copy holds.
pub struct Copied {
    pub records: Vec<(ResourceKind, String, Record)>,
    pub revision: u64,
}

impl LocalCopy {
    pub fn open(dir: &Path) -> Result<LocalCopy, DiskError> {
        Ok(LocalCopy {
            disk: DiskStore::open(dir)?,
        })
    }

    /// The copy; `None` when nothing was ever copied.
    pub fn load(&self) -> Result<Option<Copied>, DiskError> {
        let loaded = self.disk.load()?;
        for (key, why) in &loaded.unreadable {
            tracing::warn!(%key, "local copy of etcd: record left out: {why}");
        }
        if loaded.revision == 0 {
            return Ok(None);
        }
        Ok(Some(Copied {
            records: loaded.records,
            revision: loaded.revision,
        }))
    }

    /// Replaces the whole copy (after a full read).
    pub fn replace(
        &self,
        records: &[(ResourceKind, String, Record)],
        revision: u64,
    ) -> Result<(), DiskError> {
        let items = records
            .iter()
            .map(|(kind, id, record)| (*kind, id.as_str(), record))
            .collect();
        self.disk.write(DiskWrite::ReplaceAll(items), revision)
    }

    /// Applies one watch batch to the copy.
    pub fn update(
        &self,
        puts: &[(ResourceKind, String, Record)],
        deletes: &[(ResourceKind, String)],
        revision: u64,
    ) -> Result<(), DiskError> {
        let puts: Vec<(ResourceKind, &str, &Record)> = puts
            .iter()
            .map(|(kind, id, record)| (*kind, id.as_str(), record))
            .collect();
        let deletes: Vec<(ResourceKind, &str)> = deletes
            .iter()
            .map(|(kind, id)| (*kind, id.as_str()))
            .collect();
        self.disk.write_batch(&puts, &deletes, revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_survives_reopen_and_follows_batches() {
        let dir = std::env::temp_dir().join(format!("portico-etcd-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rec = |v: serde_json::Value, i| Record {
            value: v,
            created_index: i,
            modified_index: i,
        };
        {
            let copy = LocalCopy::open(&dir).unwrap();
            assert!(copy.load().unwrap().is_none());
            copy.replace(
                &[
                    (
                        ResourceKind::Routes,
                        "1".into(),
                        rec(serde_json::json!({"uri": "/a"}), 3),
                    ),
                    (
                        ResourceKind::Routes,
                        "2".into(),
                        rec(serde_json::json!({"uri": "/b"}), 4),
                    ),
                ],
                4,
            )
            .unwrap();
            copy.update(
                &[(
                    ResourceKind::Upstreams,
                    "u".into(),
                    rec(serde_json::json!({}), 5),
                )],
                &[(ResourceKind::Routes, "1".into())],
                6,
            )
            .unwrap();
        }
        let copy = LocalCopy::open(&dir).unwrap().load().unwrap().unwrap();
        assert_eq!(copy.revision, 6);
        let ids: Vec<&str> = copy.records.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(ids, ["2", "u"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
