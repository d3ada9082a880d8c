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

/// After an upgrade under systemd (`NOTIFY_SOCKET` set, the unit's `NotifyAccess=all`):
/// tells systemd that this process is now the unit's main process, so that the old
/// one's exit does not stop the unit. Sent by this process itself, which stays: a
/// message from a short-lived helper (`systemd-notify`) may be attributed to no unit
/// once the helper has exited.
pub fn notify_systemd_main_pid() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("MAINPID={}\n", std::process::id());
    match send_notify(&socket, &message) {
        Ok(()) => tracing::info!("upgrade: told systemd this is the main process"),
        Err(e) => tracing::warn!("upgrade: cannot notify systemd of the main pid: {e}"),
    }
}

/// One datagram to the `sd_notify` socket: a path, or an abstract name (`@...`).
fn send_notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    let sender = UnixDatagram::unbound()?;
    sender.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notify_message_reaches_a_path_socket() {
        let dir = std::env::temp_dir().join(format!(
            "portico-notify-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str(), "MAINPID=42\n").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=42\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_locked_store_is_not_waited_for_outside_an_upgrade() {
        let dir = std::env::temp_dir().join(format!(
            "portico-handover-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let held = DiskStore::open(&dir).unwrap();
        let started = Instant::now();
        let err = open_disk_store(&dir, false).err().expect("locked");
        assert!(err.is_locked(), "{err}");
        assert!(started.elapsed() < STORE_WAIT / 2);
        drop(held);
        assert!(open_disk_store(&dir, true).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
