//! The long-lived health registry: node states keyed by (upstream, address), kept across
//! config swaps, fed by passive reports and by the active prober (`run_active`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::spec::{ChecksSpec, ProbeKind};
use crate::state::{Counters, NodeState, Observation, Thresholds, Transition};
use crate::TargetKey;

/// Notified on every transition (the gateway turns these into metrics and log lines).
///
/// Called with that node's state lock held (so transitions of one node arrive in order):
/// an implementation must not call back into [`NodeHealth::counters`] of the same node.
pub trait HealthObserver: Send + Sync + 'static {
    fn transition(&self, key: &TargetKey, healthy: bool, cause: Cause, counters: Counters);
}

/// An observer that ignores transitions.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopObserver;

impl HealthObserver for NoopObserver {
    fn transition(&self, _: &TargetKey, _: bool, _: Cause, _: Counters) {}
}

/// What caused a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Active(Observation),
    Passive(Observation),
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Active(o) => write!(f, "active {o}"),
            Cause::Passive(o) => write!(f, "passive {o}"),
        }
    }
}

/// One node's health: a lock-free read for the balancer (an `Arc` the snapshot holds).
#[derive(Debug)]
pub struct NodeHealth {
    key: TargetKey,
    healthy: AtomicBool,
    state: Mutex<NodeState>,
}

impl NodeHealth {
    pub fn new(key: TargetKey) -> NodeHealth {
        NodeHealth {
            key,
            healthy: AtomicBool::new(true),
            state: Mutex::new(NodeState::new()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn counters(&self) -> Counters {
        self.state.lock().counters
    }

    pub fn key(&self) -> &TargetKey {
        &self.key
    }

    /// Applies one observation and tells `observer` about a transition.
    pub(crate) fn observe(
        &self,
        obs: Observation,
        t: &Thresholds,
        cause: Cause,
        observer: &dyn HealthObserver,
    ) -> Option<Transition> {
        let mut state = self.state.lock();
        let (tr, counters) = state.step(obs, t)?;
        self.healthy.store(state.healthy, Ordering::Release);
        observer.transition(&self.key, state.healthy, cause, counters);
        Some(tr)
    }
}

/// What the gateway reports after each proxied attempt (passive checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// Connecting failed (refused, reset, TLS handshake failed).
    TcpFailure,
    /// Connecting or reading timed out.
    Timeout,
}

/// One node of a checked upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetNode {
    pub addr: SocketAddr,
    /// The configured node host, for the probe's Host header and SNI.
    pub host: String,
}

/// A checked upstream as the current config has it.
#[derive(Debug, Clone)]
pub struct UpstreamTargets {
    pub upstream: String,
    pub spec: Arc<ChecksSpec>,
    pub nodes: Vec<TargetNode>,
}

/// One upstream of `GET /v1/healthcheck` (APISIX control-API shape; the gateway adds `name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamStatus {
    pub upstream: String,
    /// The active probe type (`http`, `https` or `tcp`).
    #[serde(rename = "type")]
    pub kind: ProbeKind,
    pub nodes: Vec<NodeStatus>,
}

/// One node of an [`UpstreamStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeStatus {
    pub ip: String,
    pub port: u16,
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub counter: Counters,
}

/// Health state of every checked node, and the active probes' schedule.
pub struct HealthRegistry {
    pub(crate) observer: Arc<dyn HealthObserver>,
    pub(crate) inner: Mutex<Inner>,
    /// Wakes the prober: after a reconcile, and when a probe finished.
    pub(crate) wake: Notify,
}

pub(crate) struct Inner {
    /// Every handle given out and still alive; a node a snapshot still holds keeps its
    /// state even while no reconciled upstream lists it.
    nodes: HashMap<TargetKey, Weak<NodeHealth>>,
    /// Checked upstreams by id, with their probe schedules.
    pub(crate) upstreams: BTreeMap<String, Checked>,
    pub(crate) next_token: u64,
}

/// A checked upstream and the schedule of its nodes.
pub(crate) struct Checked {
    pub(crate) spec: Arc<ChecksSpec>,
    /// `active.concurrency` permits; replaced (and the old one closed) on a spec change.
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) targets: BTreeMap<SocketAddr, Target>,
}

pub(crate) struct Target {
    pub(crate) node: Arc<NodeHealth>,
    pub(crate) host: String,
    pub(crate) next_due: Instant,
    /// The token of the probe in flight: a result whose token does not match is stale
    /// (spec changed, or the target was removed and re-added meanwhile) and is dropped.
    pub(crate) in_flight: Option<u64>,
}

impl HealthRegistry {
    pub fn new(observer: Arc<dyn HealthObserver>) -> Arc<HealthRegistry> {
        Arc::new(HealthRegistry {
            observer,
            inner: Mutex::new(Inner {
                nodes: HashMap::new(),
                upstreams: BTreeMap::new(),
                next_token: 0,
            }),
            wake: Notify::new(),
        })
    }

    /// Get-or-create the state of (upstream, addr), called when a snapshot is built so the
    /// snapshot can hold the handle. Existing state (health + counters) is returned unchanged.
    pub fn node(&self, upstream: &str, addr: SocketAddr) -> Arc<NodeHealth> {
        let mut inner = self.inner.lock();
        inner.node(TargetKey::new(upstream, addr))
    }

    /// Called after every successful config swap with ALL upstreams that have `checks`.
    /// Keeps the state of (upstream, addr) pairs still desired and stops probing the rest
    /// (an in-flight probe's result is discarded); an upstream whose spec changed gets its
    /// schedule restarted (every node due now) but keeps node states; new targets are
    /// probed starting now.
    pub fn reconcile(&self, desired: Vec<UpstreamTargets>) {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        let mut old = std::mem::take(&mut inner.upstreams);
        let mut upstreams = BTreeMap::new();
        for u in desired {
            let prev = old.remove(&u.upstream);
            let (permits, mut targets) = match prev {
                Some(p) if *p.spec == *u.spec => (p.permits, p.targets),
                Some(p) => {
                    p.permits.close();
                    let mut targets = p.targets;
                    for t in targets.values_mut() {
                        t.next_due = now;
                        t.in_flight = None;
                    }
                    (new_permits(&u.spec), targets)
                }
                None => (new_permits(&u.spec), BTreeMap::new()),
            };
            let wanted: BTreeSet<SocketAddr> = u.nodes.iter().map(|n| n.addr).collect();
            targets.retain(|addr, _| wanted.contains(addr));
            for n in &u.nodes {
                let key = TargetKey::new(u.upstream.as_str(), n.addr);
                let target = targets.entry(n.addr).or_insert_with(|| Target {
                    node: inner.node(key),
                    host: n.host.clone(),
                    next_due: now,
                    in_flight: None,
                });
                target.host.clone_from(&n.host);
            }
            upstreams.insert(
                u.upstream,
                Checked {
                    spec: u.spec,
                    permits,
                    targets,
                },
            );
        }
        for gone in old.into_values() {
            gone.permits.close();
        }
        inner.upstreams = upstreams;
        inner.nodes.retain(|_, w| w.strong_count() > 0);
        drop(inner);
        self.wake.notify_one();
    }

    /// Passive report for one attempt. A status in `passive.healthy.http_statuses` is a
    /// success, one in `passive.unhealthy.http_statuses` an HTTP failure, any other is
    /// ignored; passive thresholds apply. No-op when the upstream has no `passive` block.
    pub fn report(&self, node: &NodeHealth, spec: &ChecksSpec, outcome: Outcome) {
        let Some(passive) = &spec.passive else {
            return;
        };
        let obs = match outcome {
            Outcome::Status(s) if passive.healthy.http_statuses.contains(&s) => {
                Observation::Success
            }
            Outcome::Status(s) if passive.unhealthy.http_statuses.contains(&s) => {
                Observation::HttpFailure
            }
            Outcome::Status(_) => return,
            Outcome::TcpFailure => Observation::TcpFailure,
            Outcome::Timeout => Observation::Timeout,
        };
        node.observe(
            obs,
            &passive.thresholds(),
            Cause::Passive(obs),
            &*self.observer,
        );
    }

    /// For `GET /v1/healthcheck`: every checked upstream, ordered by id, nodes by address.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        let inner = self.inner.lock();
        inner
            .upstreams
            .iter()
            .map(|(id, c)| upstream_status(id, c))
            .collect()
    }

    /// For `GET /v1/healthcheck/upstreams/{id}`.
    pub fn upstream_status(&self, upstream: &str) -> Option<UpstreamStatus> {
        let inner = self.inner.lock();
        inner
            .upstreams
            .get(upstream)
            .map(|c| upstream_status(upstream, c))
    }

    /// Whether the probe with `token` is still the one scheduled for this target.
    pub(crate) fn is_current(&self, upstream: &str, addr: SocketAddr, token: u64) -> bool {
        let inner = self.inner.lock();
        inner
            .upstreams
            .get(upstream)
            .and_then(|c| c.targets.get(&addr))
            .is_some_and(|t| t.in_flight == Some(token))
    }

    /// Applies a finished probe's result, if it is still current, and schedules the
    /// target's next probe.
    pub(crate) fn probe_done(
        &self,
        upstream: &str,
        addr: SocketAddr,
        token: u64,
        obs: Option<Observation>,
    ) {
        let now = Instant::now();
        let (node, thresholds) = {
            let mut inner = self.inner.lock();
            let Some(c) = inner.upstreams.get_mut(upstream) else {
                return;
            };
            let Some(active) = c.spec.active.as_ref() else {
                return;
            };
            let thresholds = active.thresholds();
            let Some(t) = c.targets.get_mut(&addr) else {
                return;
            };
            if t.in_flight != Some(token) {
                return;
            }
            // Provisional, so the target is never left unscheduled; set properly below.
            t.next_due = now + interval_of(active, t.node.is_healthy());
            (Arc::clone(&t.node), thresholds)
        };
        if let Some(obs) = obs {
            node.observe(obs, &thresholds, Cause::Active(obs), &*self.observer);
        }
        {
            let mut inner = self.inner.lock();
            if let Some(c) = inner.upstreams.get_mut(upstream) {
                if let (Some(active), Some(t)) = (c.spec.active.as_ref(), c.targets.get_mut(&addr))
                {
                    if t.in_flight == Some(token) {
                        t.next_due = now + with_jitter(interval_of(active, node.is_healthy()));
                        t.in_flight = None;
                    }
                }
            }
        }
        self.wake.notify_one();
    }
}

impl Inner {
    fn node(&mut self, key: TargetKey) -> Arc<NodeHealth> {
        if let Some(n) = self.nodes.get(&key).and_then(Weak::upgrade) {
            return n;
        }
        let n = Arc::new(NodeHealth::new(key.clone()));
        self.nodes.insert(key, Arc::downgrade(&n));
        n
    }
}

fn new_permits(spec: &ChecksSpec) -> Arc<Semaphore> {
    let n = spec
        .active
        .as_ref()
        .map(|a| a.concurrency.max(1) as usize)
        .unwrap_or(1)
        .min(Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(n))
}

fn upstream_status(id: &str, c: &Checked) -> UpstreamStatus {
    UpstreamStatus {
        upstream: id.to_string(),
        kind: c.spec.active.as_ref().map(|a| a.kind).unwrap_or_default(),
        nodes: c
            .targets
            .iter()
            .map(|(addr, t)| NodeStatus {
                ip: addr.ip().to_string(),
                port: addr.port(),
                status: if t.node.is_healthy() {
                    "healthy"
                } else {
                    "unhealthy"
                }
                .to_string(),
                counter: t.node.counters(),
            })
            .collect(),
    }
}

/// The probe interval for a node in this health state.
pub(crate) fn interval_of(active: &crate::spec::ActiveSpec, healthy: bool) -> Duration {
    let secs = if healthy {
        active.healthy.interval
    } else {
        active.unhealthy.interval
    };
    seconds(secs, Duration::from_secs(1)).max(MIN_INTERVAL)
}

/// Never probe one node more often than this, whatever an unvalidated spec says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `secs` as a Duration, or `fallback` when it is not a valid non-negative number.
pub(crate) fn seconds(secs: f64, fallback: Duration) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(fallback)
}

/// `d` plus a random 0–10 % so probes of many nodes do not align.
pub(crate) fn with_jitter(d: Duration) -> Duration {
    use rand::Rng;
    let f: f64 = rand::rng().random_range(0.0..0.1);
    d + d.mul_f64(f)
}
