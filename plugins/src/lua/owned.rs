//! What one run of Lua (a request, or one run of a timer) owns beyond its coroutine:
//! the cosockets it opened and the light threads it spawned. When the run ends, sockets
//! that were neither closed nor put in the keepalive pool are closed (no descriptor
//! outlives its request or timer, as in OpenResty) and light threads are stopped.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::light_task::LightThread;

/// A socket a run can close from outside (its Lua object may live on in a table).
pub(crate) trait Closable: Send + Sync {
    fn close_from_owner(&self);
}

/// Sockets tracked before dead entries are pruned (a loop opening and closing sockets
/// must not grow the list without bound).
const PRUNE_AT: usize = 64;

#[derive(Default)]
pub struct Owned {
    sockets: Mutex<Vec<Weak<dyn Closable>>>,
    threads: Mutex<Vec<Arc<LightThread>>>,
}

impl std::fmt::Debug for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owned")
            .field("sockets", &self.sockets.lock().len())
            .field("threads", &self.threads.lock().len())
            .finish()
    }
}

impl Owned {
    pub(crate) fn adopt_socket(&self, socket: Weak<dyn Closable>) {
        let mut sockets = self.sockets.lock();
        if sockets.len() >= PRUNE_AT {
            sockets.retain(|s| s.strong_count() > 0);
        }
        sockets.push(socket);
    }

    /// Closes every socket of the run still open (pooled ones left already).
    pub(crate) fn close_sockets(&self) {
        let sockets = std::mem::take(&mut *self.sockets.lock());
        for s in sockets {
            if let Some(s) = s.upgrade() {
                s.close_from_owner();
            }
        }
    }

    pub(crate) fn adopt_thread(&self, t: Arc<LightThread>) {
        let mut threads = self.threads.lock();
        threads.retain(|t| !t.is_finished());
        threads.push(t);
    }

    /// Light threads not yet finished.
    pub(crate) fn take_threads(&self) -> Vec<Arc<LightThread>> {
        std::mem::take(&mut *self.threads.lock())
    }

    /// The entry function ended: OpenResty's handler waits for the user threads it
    /// spawned (unless it exited or failed, which kills them).
    pub(crate) async fn finish_threads(&self, kill: bool) {
        loop {
            let threads = self.take_threads();
            if threads.is_empty() {
                return;
            }
            for t in threads {
                if kill {
                    t.kill();
                } else {
                    t.finished().await;
                }
            }
        }
    }

    /// Ends the run: stops its threads and closes its sockets.
    pub(crate) fn end(&self) {
        for t in self.take_threads() {
            t.kill();
        }
        self.close_sockets();
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.end();
    }
}

/// A new owner for a timer run.
pub(crate) fn for_timer() -> Arc<Owned> {
    Arc::new(Owned::default())
}
