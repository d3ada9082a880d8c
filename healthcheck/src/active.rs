//! The active prober: one task schedules every reconciled target and spawns its probes.
//!
//! Each target has its own next-due time (`healthy.interval` while healthy, else
//! `unhealthy.interval`, plus 0–10 % jitter). A probe runs as its own task, so a slow one
//! never delays others, and holds one of its upstream's `concurrency` permits while it
//! runs. A result is applied only if its target is still scheduled with the same token.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portico_outbound::Client;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::probe;
use crate::registry::HealthRegistry;
use crate::spec::ChecksSpec;

/// The scheduler looks again at least this often even when nothing is due.
const IDLE_WAKE: Duration = Duration::from_secs(1);

impl HealthRegistry {
    /// The active prober: runs until `shutdown` resolves (in-flight probes are then
    /// cancelled). One task for all upstreams.
    pub async fn run_active(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        // Probes never pool, so the pool is minimal.
        let client = match Client::new(1) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::error!("health checks: HTTP and HTTPS probes will fail: {e}");
                None
            }
        };
        let mut probes = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while probes.try_join_next().is_some() {}
            let now = Instant::now();
            let (jobs, next_due) = self.due_probes(now);
            for job in jobs {
                probes.spawn(job.run(Arc::clone(&self), client.clone()));
            }
            let until = next_due.map_or(now + IDLE_WAKE, |t| t.min(now + IDLE_WAKE));
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        probes.abort_all();
    }

    /// Marks every due target in flight and returns its probe, and the earliest time a
    /// target not in flight becomes due.
    fn due_probes(&self, now: Instant) -> (Vec<ProbeJob>, Option<Instant>) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut jobs = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, c) in inner.upstreams.iter_mut() {
            if c.spec.active.is_none() {
                continue;
            }
            for (addr, t) in c.targets.iter_mut() {
                if t.in_flight.is_some() {
                    continue;
                }
                if t.next_due <= now {
                    inner.next_token += 1;
                    t.in_flight = Some(inner.next_token);
                    jobs.push(ProbeJob {
                        upstream: id.clone(),
                        addr: *addr,
                        host: t.host.clone(),
                        token: inner.next_token,
                        spec: Arc::clone(&c.spec),
                        permits: Arc::clone(&c.permits),
                    });
                } else {
                    next = Some(next.map_or(t.next_due, |n| n.min(t.next_due)));
                }
            }
        }
        (jobs, next)
    }
}

/// One scheduled probe of one target.
struct ProbeJob {
    upstream: String,
    addr: SocketAddr,
    host: String,
    token: u64,
    spec: Arc<ChecksSpec>,
    permits: Arc<Semaphore>,
}

impl ProbeJob {
    async fn run(self, registry: Arc<HealthRegistry>, client: Option<Arc<Client>>) {
        // Closed when the upstream's spec changed or it was removed: the probe is stale.
        let Ok(_permit) = self.permits.acquire_owned().await else {
            return;
        };
        let Some(active) = self.spec.active.as_ref() else {
            return;
        };
        // Removed (or rescheduled) while waiting for a permit: do not touch it again.
        if !registry.is_current(&self.upstream, self.addr, self.token) {
            return;
        }
        let obs = probe::probe(client.as_deref(), self.addr, &self.host, active).await;
        tracing::debug!(
            upstream = %self.upstream,
            node = %self.addr,
            result = obs.map_or("ignored", |o| o.as_str()),
            "health probe"
        );
        registry.probe_done(&self.upstream, self.addr, self.token, obs);
    }
}
