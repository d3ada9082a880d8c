//! Portico upstream health state: active probes and passive reports, with
//! lua-resty-healthcheck's semantics and APISIX's `checks` configuration.
//!
//! - [`spec`]: the `checks` object (APISIX field names and defaults) and its validation;
//! - [`state`]: the pure per-node state machine (four counters, thresholds, transitions);
//! - [`registry`]: the long-lived [`HealthRegistry`] keyed by [`TargetKey`], kept outside
//!   config snapshots so a swap that keeps a node keeps its health;
//! - `active` / `probe`: the one prober task and a single probe.
//!
//! The dependency order is fixed: `gateway` uses `healthcheck`; `healthcheck` never uses
//! `gateway` or `plugins`.

#![forbid(unsafe_code)]

mod active;
mod probe;
pub mod registry;
#[cfg(test)]
mod registry_tests;
pub mod spec;
pub mod state;

use std::net::SocketAddr;

pub use registry::{
    Cause, HealthObserver, HealthRegistry, NodeHealth, NodeStatus, NoopObserver, Outcome,
    TargetNode, UpstreamStatus, UpstreamTargets,
};
pub use spec::{
    ActiveHealthy, ActiveSpec, ActiveUnhealthy, ChecksSpec, PassiveHealthy, PassiveSpec,
    PassiveUnhealthy, ProbeKind,
};
pub use state::{Counters, NodeState, Observation, Thresholds, Transition};

/// Stable identity of a health target: it survives config swaps as long as the upstream
/// keeps the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub upstream: String,
    pub addr: SocketAddr,
}

impl TargetKey {
    pub fn new(upstream: impl Into<String>, addr: SocketAddr) -> TargetKey {
        TargetKey {
            upstream: upstream.into(),
            addr,
        }
    }
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.upstream, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_key_identity_and_display() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let k1 = TargetKey::new("1", a);
        let k2 = TargetKey::new("1".to_string(), a);
        assert_eq!(k1, k2);
        assert_eq!(k1.to_string(), "1/127.0.0.1:80");
    }
}
