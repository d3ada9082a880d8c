//! The binary upgrade's store handover (`portico --upgrade`, then `SIGQUIT` to the
//! running process; see docs/operations.md, "Upgrade").
//!
//! Two processes cannot hold `data_dir/store.redb` at once (redb locks the file), and
//! the new one must not serve before it has the configuration. Pingora's order decides
//! the rest: the new process's `Server::bootstrap` waits on `upgrade_sock` for the
//! listening sockets, which the old process sends only after its `SIGQUIT`, and then
//! keeps accepting on them itself for 5 s (`CLOSE_TIMEOUT` in pingora-core's server).
//! So:
//!
//! 1. the new process takes the sockets first (bootstrap), before it opens the store;
//! 2. the old process, once the sockets are sent (`GracefulUpgradeCloseTimeout`),
//!    releases the store ([`ConfigStore::release`]): the write in progress finishes,
//!    later admin writes answer 503, its running snapshot keeps serving;
//! 3. the new process opens the store, retrying for [`STORE_WAIT`] while the old one
//!    still holds it, builds its snapshot, and only then starts its services.
//!
//! Connections that arrive while neither accepts wait in the listen queue of the sockets
//! both share; none is refused.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::server::ExecutionPhase;
use tokio::sync::broadcast;

use crate::store::{ConfigStore, DiskError, DiskStore};

/// How long a new process waits for the old one to release the store. The old one
/// releases it as soon as it has sent the sockets, after the write it may be running.
pub const STORE_WAIT: Duration = Duration::from_secs(30);

/// Between two attempts to open a store the old process still holds.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// Opens the store in `dir`. `upgrade`: another process holding it is the old one of a
/// binary upgrade, which releases it once it has handed the sockets over, so a locked
/// store is retried for up to [`STORE_WAIT`]; otherwise it fails at once (a second
/// instance on the same `data_dir`).
pub fn open_disk_store(dir: &Path, upgrade: bool) -> Result<DiskStore, DiskError> {
    let deadline = Instant::now() + STORE_WAIT;
    let mut waiting = false;
    loop {
        match DiskStore::open(dir) {
            Err(e) if upgrade && e.is_locked() && Instant::now() < deadline => {
                if !waiting {
                    tracing::info!(
                        "upgrade: waiting for the old process to release {}",
                        dir.join("store.redb").display()
                    );
                    waiting = true;
                }
                std::thread::sleep(RETRY_EVERY);
            }
            Err(e) if upgrade && e.is_locked() => {
                tracing::error!(
                    "upgrade: the old process did not release the store within {}s",
                    STORE_WAIT.as_secs()
                );
                return Err(e);
            }
            opened => {
                if waiting {
                    tracing::info!("upgrade: store opened");
                }
                return opened;
            }
        }
    }
}

/// Releases `store` once Pingora has sent the listening sockets to a new process
/// (`phases` from `Server::watch_execution_phase`), from a thread of its own.
pub fn release_store_on_handover(
    mut phases: broadcast::Receiver<ExecutionPhase>,
    store: Arc<ConfigStore>,
) {
    let spawned = std::thread::Builder::new()
        .name("portico-handover".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulUpgradeCloseTimeout) => {
                    if store.release() {
                        tracing::info!(
                            "upgrade: sockets handed over; store released to the new process (admin writes answer 503 here from now on)"
                        );
                    }
                    return;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        // Without it a new process of an upgrade waits for the store in vain and exits.
        tracing::error!("cannot start the store handover watcher: {e}");
    }
}
