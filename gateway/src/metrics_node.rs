//! The gateway process itself, in the `portico` naming: `portico_node_info{hostname,
//! version}` (always 1) and `portico_http_connections{state}` (nginx `stub_status`'s
//! states: active, reading, writing, waiting, and accepted and handled since start).

use prometheus::{IntGaugeVec, Opts, Registry};

pub struct NodeMetrics {
    connections: IntGaugeVec,
}

/// This machine's name, for `node_info` (Linux; `unknown` elsewhere).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

impl NodeMetrics {
    pub fn register(registry: &Registry) -> Result<NodeMetrics, prometheus::Error> {
        let info = IntGaugeVec::new(
            Opts::new(
                "portico_node_info",
                "This gateway: its host name and version (always 1)",
            ),
            &["hostname", "version"],
        )?;
        info.with_label_values(&[&hostname(), env!("CARGO_PKG_VERSION")])
            .set(1);
        let connections = IntGaugeVec::new(
            Opts::new(
                "portico_http_connections",
                "Client connections by state: active (reading + writing + waiting), reading a request header, writing (a request in progress), waiting (idle keep-alive), accepted and handled since start",
            ),
            &["state"],
        )?;
        registry.register(Box::new(info))?;
        registry.register(Box::new(connections.clone()))?;
        Ok(NodeMetrics { connections })
    }

    /// Copies the connection counts in; called before each scrape.
    pub fn refresh(&self) {
        for (state, v) in crate::connections::counts().by_state() {
            self.connections.with_label_values(&[state]).set(v);
        }
    }
}
