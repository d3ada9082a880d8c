//! Portico upstream health state: the active prober and passive reports arrive with the
//! health-check issue. The crate exists now so the dependency order is fixed from the
//! start: `gateway` uses `healthcheck`; `healthcheck` never uses `gateway` or `plugins`.
//!
//! What is here today is the identity health state will be keyed by, so the gateway's
//! balancer already asks "is this node acceptable?" through one predicate.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

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
