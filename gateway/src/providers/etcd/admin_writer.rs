//! The admin API's writes with `config_provider: etcd`: the store's [`RemoteWriter`] on
//! the etcd client. The store calls it from the blocking pool, so each request is run to
//! completion on the calling runtime's handle.

use std::time::Duration;

use serde_json::Value;

use super::client::{EtcdClient, EtcdError, Written};
use super::{layout, wire};
use crate::config::ResourceKind;
use crate::store::{Keyring, RemoteError, RemoteWrite, RemoteWriter};

pub struct EtcdAdminWriter {
    pub client: EtcdClient,
    pub prefix: String,
    /// `data_encryption.keyring`: SSL private keys are sealed in etcd, as APISIX does.
    pub keyring: Option<Keyring>,
}

fn remote_error(e: EtcdError) -> RemoteError {
    RemoteError::Unavailable(e.to_string())
}

/// Operations per transaction of a bulk write.
const MAX_TXN_OPS: usize = 100;

impl EtcdAdminWriter {
    /// The value as stored in etcd: an SSL's private keys sealed with the keyring.
    fn sealed<'v>(&self, kind: ResourceKind, value: &'v Value) -> std::borrow::Cow<'v, Value> {
        match &self.keyring {
            Some(ring) if kind == ResourceKind::Ssls => {
                let mut v = value.clone();
                ring.seal_ssl(&mut v);
                std::borrow::Cow::Owned(v)
            }
            _ => std::borrow::Cow::Borrowed(value),
        }
    }

    fn run<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, EtcdError>>,
    ) -> Result<T, RemoteError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            RemoteError::Unavailable("etcd writes need the admin runtime".to_string())
        })?;
        handle.block_on(fut).map_err(remote_error)
    }
}

impl RemoteWriter for EtcdAdminWriter {
    /// APISIX's way: put `{prefix}/gen_id` and use the revision it got, 20 digits.
    fn new_id(&self) -> Result<String, RemoteError> {
        let key = layout::gen_id_key(&self.prefix);
        let revision = self.run(self.client.put(&key, b"1"))?;
        Ok(format!("{revision:020}"))
    }

    fn write(&self, write: RemoteWrite<'_>) -> Result<u64, RemoteError> {
        let written = match write {
            RemoteWrite::Put {
                kind,
                id,
                value,
                expect,
            } => {
                let key = layout::key(&self.prefix, kind, id);
                let bytes = serde_json::to_vec::<Value>(&self.sealed(kind, value))
                    .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
                self.run(self.client.put_if(&key, &bytes, expect))?
            }
            RemoteWrite::Delete { kind, id, expect } => {
                let key = layout::key(&self.prefix, kind, id);
                self.run(self.client.delete_if(&key, expect))?
            }
        };
        match written {
            Written::At(revision) => Ok(revision),
            Written::Conflict(revision) => Err(RemoteError::Conflict { revision }),
        }
    }

    /// In transactions of at most [`MAX_TXN_OPS`] operations (etcd's default
    /// `--max-txn-ops` is 128).
    fn write_all(&self, writes: &[RemoteWrite<'_>]) -> Result<u64, RemoteError> {
        let mut ops = Vec::with_capacity(writes.len());
        for w in writes {
            ops.push(match w {
                RemoteWrite::Put {
                    kind, id, value, ..
                } => {
                    let key = layout::key(&self.prefix, *kind, id);
                    let bytes = serde_json::to_vec::<Value>(&self.sealed(*kind, value))
                        .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
                    wire::put_op(key.as_bytes(), &bytes)
                }
                RemoteWrite::Delete { kind, id, .. } => {
                    wire::delete_op(layout::key(&self.prefix, *kind, id).as_bytes())
                }
            });
        }
        let mut revision = 0;
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let chunk: Vec<Value> = ops.by_ref().take(MAX_TXN_OPS).collect();
            revision = self.run(self.client.ops(chunk))?;
        }
        Ok(revision)
    }

    fn apply_timeout(&self) -> Duration {
        self.client.timeout()
    }
}
