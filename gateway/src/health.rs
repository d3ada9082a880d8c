//! The gateway's side of health checks: what the long-lived [`HealthRegistry`] is told
//! after each swap, what a transition turns into (metrics, one log line), and the
//! background service that runs the active prober.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use portico_healthcheck::{
    Cause, Counters, HealthObserver, HealthRegistry, TargetKey, TargetNode, UpstreamTargets,
};

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// Tells the registry which upstreams and nodes the new snapshot checks (probes start now
/// for new ones and stop for removed ones) and syncs the node-health gauges.
pub fn reconcile(registry: &HealthRegistry, metrics: &Metrics, snapshot: &Snapshot) {
    let mut desired = Vec::new();
    let mut gauges = Vec::new();
    for upstream in snapshot.upstreams.values() {
        let Some(health) = &upstream.health else {
            continue;
        };
        desired.push(UpstreamTargets {
            upstream: upstream.id.clone(),
            spec: Arc::clone(&health.spec),
            nodes: upstream
                .nodes
                .iter()
                .map(|n| TargetNode {
                    addr: n.addr,
                    host: n.sni.clone(),
                })
                .collect(),
        });
        for (node, state) in upstream.nodes.iter().zip(health.nodes.iter()) {
            gauges.push((
                upstream.id.clone(),
                node.addr.to_string(),
                state.is_healthy(),
            ));
        }
    }
    registry.reconcile(desired);
    metrics.sync_node_health(gauges);
}

/// Turns transitions into metrics and one log line each.
pub struct HealthEvents {
    pub metrics: Arc<Metrics>,
}

impl HealthObserver for HealthEvents {
    fn transition(&self, key: &TargetKey, healthy: bool, cause: Cause, counters: Counters) {
        let node = key.addr.to_string();
        self.metrics
            .health_transition(&key.upstream, &node, healthy);
        let to = if healthy { "healthy" } else { "unhealthy" };
        tracing::warn!(
            upstream = %key.upstream,
            node = %node,
            cause = %cause,
            success = counters.success,
            http_failure = counters.http_failure,
            tcp_failure = counters.tcp_failure,
            timeout_failure = counters.timeout_failure,
            "node is now {to}"
        );
    }
}

/// Runs the active prober for every checked upstream until shutdown.
pub struct HealthProber {
    pub registry: Arc<HealthRegistry>,
}

#[async_trait]
impl BackgroundService for HealthProber {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        Arc::clone(&self.registry).run_active(stop).await;
    }
}
