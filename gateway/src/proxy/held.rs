//! The upstream connection a client connection keeps between its requests.
//!
//! Why: taking a connection from Pingora's shared pool and putting it back costs about
//! 10,000 instructions per request (a sixth of Portico's user time in benchmark S1,
//! callgrind): the peer's hash twice, the pool's locks and LRU, and an idle-watch task
//! spawned at every release and woken at every take. A client on a kept-alive connection
//! usually sends its next request to the same node (one node, or a hash on the client),
//! so [`H1Driver`](super::driver::H1Driver) keeps the connection with the client's
//! connection after the response, and takes it back for the next request when that
//! request goes to the same peer (HAProxy keeps a session's idle server connection the
//! same way). Otherwise, and when the client's connection ends, it goes to the pool.
//!
//! A kept connection is checked before it is used, as the pool checks its own: closed by
//! the upstream or carrying unexpected bytes, it is dropped. It is not used once it has
//! been idle for the upstream's `keepalive_pool.idle_timeout`. While it is kept, nothing
//! watches it; a client that stays idle keeps it until the client's keep-alive ends.
//! At most [`HeldBudget`]'s limit of connections are kept at once (Pingora's pool size),
//! so idle clients cannot pin more upstream connections than the pool would keep.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use tokio::io::AsyncReadExt;

/// How many connections all client connections may keep at once.
pub struct HeldBudget {
    kept: AtomicUsize,
    limit: usize,
}

impl HeldBudget {
    pub fn new(limit: usize) -> HeldBudget {
        HeldBudget {
            kept: AtomicUsize::new(0),
            limit,
        }
    }

    fn try_acquire(&self) -> bool {
        self.kept
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.kept.fetch_sub(1, Ordering::AcqRel);
    }

    /// Connections kept right now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.kept.load(Ordering::Acquire)
    }
}

/// One client connection's kept upstream connection, if any. Dropping it returns the
/// connection to the pool.
pub struct HeldUpstream<'a> {
    pool: &'a TransportConnector,
    budget: &'a HeldBudget,
    kept: Option<Kept>,
}

struct Kept {
    stream: Stream,
    /// The peer's `reuse_hash`: the pool's key.
    key: u64,
    idle_timeout: Option<Duration>,
    since: Instant,
}

impl<'a> HeldUpstream<'a> {
    pub fn new(pool: &'a TransportConnector, budget: &'a HeldBudget) -> HeldUpstream<'a> {
        HeldUpstream {
            pool,
            budget,
            kept: None,
        }
    }

    /// The kept connection, when it goes to the peer whose pool key is `key` and can
    /// still carry a request. A kept connection to another peer goes back to the pool.
    pub fn take(&mut self, key: u64) -> Option<Stream> {
        if self.kept.as_ref()?.key != key {
            self.give_back();
            return None;
        }
        let mut kept = self.kept.take()?;
        self.budget.release();
        if kept
            .idle_timeout
            .is_some_and(|idle| kept.since.elapsed() >= idle)
        {
            return None;
        }
        usable(&mut kept.stream).then_some(kept.stream)
    }

    /// Keeps `stream` for this client connection's next request, or gives it to the
    /// pool when the budget is spent.
    pub fn keep(&mut self, stream: Stream, key: u64, idle_timeout: Option<Duration>) {
        self.give_back();
        if !self.budget.try_acquire() {
            self.pool.release_stream(stream, key, idle_timeout);
            return;
        }
        self.kept = Some(Kept {
            stream,
            key,
            idle_timeout,
            since: Instant::now(),
        });
    }

    /// Returns the kept connection, if any, to the pool.
    fn give_back(&mut self) {
        if let Some(kept) = self.kept.take() {
            self.budget.release();
            self.pool
                .release_stream(kept.stream, kept.key, kept.idle_timeout);
        }
    }
}

impl Drop for HeldUpstream<'_> {
    fn drop(&mut self) {
        self.give_back();
    }
}

/// Whether an idle connection can carry a request: the upstream has neither closed it
/// nor sent anything unasked (a read would not complete now). The pool makes the same
/// check on the connections it hands out.
fn usable(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    // Polled once, never awaited. `unconstrained`: tokio's cooperative budget could make
    // a ready read look pending.
    let mut read = std::pin::pin!(tokio::task::unconstrained(stream.read(&mut byte)));
    read.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

#[cfg(test)]
mod tests {
    use super::HeldBudget;

    #[test]
    fn the_budget_stops_at_its_limit_and_frees_on_release() {
        let budget = HeldBudget::new(2);
        assert!(budget.try_acquire());
        assert!(budget.try_acquire());
        assert!(!budget.try_acquire());
        assert_eq!(budget.kept(), 2);
        budget.release();
        assert!(budget.try_acquire());
        assert_eq!(budget.kept(), 2);
    }
}
