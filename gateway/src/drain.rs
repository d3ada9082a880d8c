//! Graceful shutdown that ends when the work does.
//!
//! Pingora's graceful terminate stops accepting, then always sleeps the whole grace
//! period. Like nginx, Portico exits as soon as no request is in flight, and uses the
//! grace period only as the upper bound.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long, once the proxy stops accepting, a kept-alive client connection may stay
/// idle before it is closed (`keepalive.rs`). Closing an idle connection at once races
/// with a request the client may be sending at that moment: the client sees a reset,
/// and one that does not retry fails. A busy client sends its next request well within
/// this, gets it answered with `Connection: close`, and reconnects to the new process.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// Set by the shutdown signal (SIGTERM, SIGINT, SIGQUIT).
static DRAINING: AtomicBool = AtomicBool::new(false);

/// A shutdown or upgrade began: every response from now on closes its connection, so
/// kept-alive clients move to a new connection (the new process, after an upgrade)
/// between requests rather than finding their connection closed.
pub fn begin() {
    DRAINING.store(true, Ordering::Release);
}

/// Whether [`begin`] was called.
pub fn draining() -> bool {
    DRAINING.load(Ordering::Acquire)
}

/// Count of requests in flight on the proxy.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one request until the guard is dropped.
    pub fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(Arc::clone(&self.0))
    }

    pub fn current(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// After a shutdown signal: waits for listeners to close, then for the count and the
    /// proxy's client connections (idle ones close after [`DRAIN_IDLE`]) to stay at
    /// zero briefly, then exits the process. Runs on its own thread; if requests are
    /// still running when `grace` ends, Pingora's own shutdown takes over.
    ///
    /// `start_after` delays the watch: on a graceful upgrade the new process needs a moment
    /// to start accepting on the sockets it took over.
    pub fn exit_when_drained(&self, grace: Duration, start_after: Duration) {
        let in_flight = self.clone();
        let spawned = std::thread::Builder::new()
            .name("portico-drain".into())
            .spawn(move || {
                std::thread::sleep(start_after + Duration::from_millis(100));
                let start = Instant::now();
                let mut idle_since: Option<Instant> = None;
                while start.elapsed() < grace {
                    if in_flight.current() == 0 && crate::connections::counts().active == 0 {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= Duration::from_millis(200) {
                            tracing::info!("no request in flight; exiting");
                            std::process::exit(0);
                        }
                    } else {
                        idle_since = None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the drain watcher, waiting the full grace period: {e}");
        }
    }
}

/// Decrements the in-flight count when the request's context is dropped.
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_requests() {
        let f = InFlight::default();
        let a = f.enter();
        let b = f.enter();
        assert_eq!(f.current(), 2);
        drop(a);
        assert_eq!(f.current(), 1);
        drop(b);
        assert_eq!(f.current(), 0);
    }
}
