//! The durable-storage seam behind the one writer: what `ConfigStore` needs from a
//! backend. The embedded redb store ([`super::DiskStore`]) implements it; a backend that
//! shares one configuration among gateways (etcd) sits behind the same writer.

use super::disk::{DiskError, DiskWrite, HistoryWrite, Loaded};

pub trait StoreBackend: Send + Sync {
    /// Every stored record and the revision counter (startup).
    fn load(&self) -> Result<Loaded, DiskError>;

    /// Applies one write (one object, its removal, the dynacode document, or every
    /// object), sets the revision counter and records `history` (keeping at most its
    /// `keep` entries), durably and in one transaction, before returning.
    fn write(
        &self,
        write: DiskWrite<'_>,
        revision: u64,
        history: Option<HistoryWrite<'_>>,
    ) -> Result<(), DiskError>;
}

impl StoreBackend for super::DiskStore {
    fn load(&self) -> Result<Loaded, DiskError> {
        super::DiskStore::load(self)
    }

    fn write(
        &self,
        write: DiskWrite<'_>,
        revision: u64,
        history: Option<HistoryWrite<'_>>,
    ) -> Result<(), DiskError> {
        super::DiskStore::write_with_history(self, write, revision, history)
    }
}
