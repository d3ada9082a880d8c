//! `config_provider: etcd`: many gateways on one etcd, in APISIX's layout
//! (docs/cluster.md).
//!
//! - [`client`]: etcd v3 over its JSON gateway (HTTP/1.1 on `portico-outbound`), [`wire`]
//!   its messages;
//! - [`layout`]: `{prefix}/{kind}/{id}` keys;
//! - [`follow`]: full reads and watch batches into `apply(Sync(..), Etcd)`, objects that
//!   do not load left out and reported;
//! - [`watcher`]: the background service (read, watch, resync, back off);
//! - [`local_copy`]: the last configuration applied, in `data_dir/etcd/`, served when
//!   etcd is down at startup;
//! - [`admin_writer`]: the admin API's writes, into etcd.

pub mod admin_writer;
pub mod client;
pub mod follow;
pub mod layout;
pub mod local_copy;
pub mod watcher;
pub mod wire;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::settings_etcd::EtcdSettings;
use crate::store::{ApplyError, ConfigStore, DiskError, Keyring, StoreDeps};
use client::{EtcdClient, EtcdError};
use follow::{Follow, Position};
use watcher::EtcdWatcher;

/// The connection to etcd as `/status/ready` and the metrics report it.
#[derive(Default)]
pub struct EtcdStatus {
    connected: AtomicBool,
    local_copy: AtomicBool,
    revision: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl EtcdStatus {
    pub fn set_connected(&self, metrics: &Metrics) {
        if !self.connected.swap(true, Ordering::AcqRel) {
            tracing::info!("etcd connected");
        }
        if self.local_copy.swap(false, Ordering::AcqRel) {
            tracing::info!("etcd is back: no longer serving the local copy");
        }
        *self.last_error.lock() = None;
        metrics.etcd.set_connected(true);
        metrics.etcd.set_serving_local_copy(false);
    }

    /// etcd did not answer; logged once per outage.
    pub fn set_disconnected(&self, error: &str, metrics: &Metrics) {
        let was = self.connected.swap(false, Ordering::AcqRel);
        let mut last = self.last_error.lock();
        if was || last.is_none() {
            tracing::error!("etcd unreachable, serving the last configuration applied: {error}");
        }
        *last = Some(error.to_string());
        metrics.etcd.set_connected(false);
    }

    fn set_serving_local_copy(&self, metrics: &Metrics) {
        self.local_copy.store(true, Ordering::Release);
        metrics.etcd.set_serving_local_copy(true);
    }

    pub fn serving_local_copy(&self) -> bool {
        self.local_copy.load(Ordering::Acquire)
    }

    pub fn set_revision(&self, revision: u64) {
        self.revision.store(revision, Ordering::Release);
    }

    /// `{"connected", "serving_local_copy", "revision", "error"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "connected": self.connected.load(Ordering::Acquire),
            "serving_local_copy": self.local_copy.load(Ordering::Acquire),
            "revision": self.revision.load(Ordering::Acquire),
            "error": *self.last_error.lock(),
        })
    }
}

/// Why the etcd provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum EtcdStartError {
    #[error("etcd client: {0}")]
    Client(#[from] EtcdError),
    #[error("etcd local copy: {0}")]
    LocalCopy(#[from] DiskError),
    #[error("{0}")]
    Store(#[from] ApplyError),
    #[error("cannot start the startup runtime: {0}")]
    Runtime(std::io::Error),
}

/// The store, its watcher (a background service to add) and the status it reports.
pub struct Started {
    pub store: Arc<ConfigStore>,
    pub watcher: EtcdWatcher,
    pub status: Arc<EtcdStatus>,
}

/// Opens the store on etcd: reads everything once (or, when etcd does not answer, the
/// local copy in `data_dir/etcd/`), and returns the watcher that follows it.
pub fn start(
    settings: &EtcdSettings,
    data_dir: &Path,
    keyring: Option<Keyring>,
    deps: StoreDeps,
) -> Result<Started, EtcdStartError> {
    let metrics = Arc::clone(&deps.metrics);
    let writer = admin_writer::EtcdAdminWriter {
        client: EtcdClient::new(settings)?,
        prefix: settings.prefix.clone(),
        keyring: keyring.clone(),
    };
    let store = Arc::new(ConfigStore::shared(deps, Arc::new(writer))?);
    let status = Arc::new(EtcdStatus::default());
    let local = local_copy::LocalCopy::open(&data_dir.join("etcd"))?;
    let copied = local.load()?;
    let mut follow = Follow::new(
        Arc::clone(&store),
        settings.prefix.clone(),
        Some(local),
        Arc::clone(&metrics),
        Arc::clone(&status),
        keyring,
    );
    // The first read runs on a runtime of its own: Pingora's have not started yet. Its
    // client (and connection) goes with it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(EtcdStartError::Runtime)?;
    let first = runtime.block_on(async {
        let client = EtcdClient::new(settings)?;
        client.range(&layout::dir(&settings.prefix)).await
    });
    drop(runtime);
    let start = match first {
        Ok(reply) => {
            let pos = Position {
                revision: reply.header.revision,
                cluster_id: reply.header.cluster_id,
            };
            metrics.etcd.count_full_read();
            follow.apply_full(reply.kvs, pos.revision);
            status.set_connected(&metrics);
            tracing::info!(
                revision = pos.revision,
                "config_provider etcd: loaded {} under {}",
                settings.endpoints.join(", "),
                settings.prefix
            );
            Some(pos)
        }
        Err(e) => {
            status.set_disconnected(&e.to_string(), &metrics);
            match copied {
                Some(copy) => {
                    tracing::warn!(
                        revision = copy.revision,
                        "etcd unreachable at startup: serving the local copy of the last configuration applied from etcd ({} objects, etcd revision {}) until etcd answers",
                        copy.records.len(),
                        copy.revision
                    );
                    follow.apply_local_copy(copy.records, copy.revision);
                    status.set_serving_local_copy(&metrics);
                }
                None => tracing::error!(
                    "etcd unreachable at startup and no local copy in {}: serving no routes until etcd answers",
                    data_dir.join("etcd").display()
                ),
            }
            None
        }
    };
    let watcher = EtcdWatcher {
        client: EtcdClient::new(settings)?,
        follow: Arc::new(Mutex::new(follow)),
        status: Arc::clone(&status),
        start,
    };
    Ok(Started {
        store,
        watcher,
        status,
    })
}
