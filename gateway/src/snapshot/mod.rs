//! The compiled, immutable configuration every request reads.
//!
//! A [`Snapshot`] is built from a validated [`crate::config::ResourceSet`] at apply time
//! (router compiled, pickers built, references resolved to `Arc`s) and swapped in whole.
//! A request loads it once and reads only it, so it sees either the old or the new
//! configuration, never a mix.

mod build;
pub mod consumers;
pub mod dynacode;
mod modules;
pub mod mtls;
pub mod tls;
mod upstream_key;
mod upstream_tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use build::{build, BuildContext, BuildError, DnsFailure};
pub use portico_plugins::LuaModule;
pub use upstream_key::UpstreamKey;

use crate::balancer::PriorityPicker;
use crate::config::{PassHost, UpstreamSpec};
use crate::hash_key::HashKey;
use crate::metrics::RouteMetrics;
use crate::router::Router;
use portico_plugins::{PluginChain, PluginInstance};

/// The whole running configuration.
pub struct Snapshot {
    /// Monotonic version; also exported as `portico_config_version`.
    pub version: u64,
    pub router: Router,
    /// Enabled routes, indexed by the router's match result.
    pub routes: Vec<Arc<RouteRuntime>>,
    /// Every upstream runtime by identity (standalone ids, `route:ID`/`service:ID` for
    /// inline ones), for reuse across swaps and for visibility.
    pub upstreams: std::collections::BTreeMap<String, Arc<UpstreamRuntime>>,
    /// Plugins of the global rules alone: what a request that matched no route runs.
    pub global_chain: Arc<PluginChain>,
    /// The compiled dynacode document, if there is one.
    pub dynacode: Option<Arc<crate::snapshot::dynacode::DynacodeRuntime>>,
    /// Lua library modules (`lua_modules` resources) as `require` resolves them.
    pub lua_libraries: Arc<portico_plugins::lua::LuaLibraries>,
    /// Lua plugin modules by name (`lua_plugins` resources), compiled.
    pub lua_modules: std::collections::HashMap<String, Arc<LuaModule>>,
    /// Every built plugin instance by (name, configuration), reused by the next build.
    pub plugin_instances: std::collections::HashMap<String, Arc<PluginInstance>>,
    /// Certificates (`ssls`) and their SNI index, read by the TLS listener per handshake.
    pub tls: Arc<tls::TlsIndex>,
    /// The consumers and their credentials, for the auth plugins.
    pub consumers: Arc<portico_plugins::consumer::ConsumerIndex>,
    /// Whether every route can be served by Portico's own HTTP/1 request driver
    /// ([`crate::proxy::driver`]): none uses `proxy-cache` (Pingora's cache state
    /// machine) or an HTTP/2 upstream (`grpc`, `grpcs`). Decided per snapshot, so a
    /// request's choice of driver and its route come from the same snapshot.
    pub own_driver_fits: bool,
}

/// See [`Snapshot::own_driver_fits`].
pub fn own_driver_fits(routes: &[Arc<RouteRuntime>]) -> bool {
    routes
        .iter()
        .all(|r| r.cache.is_none() && r.upstream.as_ref().is_none_or(|u| !u.scheme.http2()))
}

/// A compiled route.
pub struct RouteRuntime {
    pub id: String,
    /// The route's `service_id` (for the access log's `$service_id`).
    pub service_id: Option<String>,
    /// `None` when the route has no upstream (a plugin-only route, or an upstream removed
    /// with `?force=true`): such a request gets a 503.
    pub upstream: Option<Arc<UpstreamRuntime>>,
    /// The route's `timeout`, which overrides the upstream's.
    pub timeouts: Option<Timeouts>,
    /// `enable_websocket` of the route, else of its service (APISIX: the route's value
    /// wins when set); off by default. Off: a client's `Upgrade` handshake is not
    /// forwarded and the request goes upstream as plain HTTP.
    pub websocket: bool,
    pub metrics: Arc<RouteMetrics>,
    /// The route's first URI pattern and host pattern (APISIX's metric labels).
    pub matched_uri: String,
    pub matched_host: String,
    /// Global rules' plugins, then the route's (and its service's), per phase.
    pub chain: Arc<PluginChain>,
    /// By consumer username: the chain an authenticated consumer with plugins of its own
    /// switches to (empty unless the route authenticates).
    pub consumer_chains: std::collections::HashMap<Arc<str>, consumers::ConsumerChain>,
    /// The route's `proxy-cache` (its own, its plugin config's or its service's),
    /// resolved against its zone.
    pub cache: Option<Arc<crate::cache::route::RouteCache>>,
}

/// Connect/send/read timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub read: Duration,
}

impl Timeouts {
    /// APISIX's defaults (nginx's `proxy_*_timeout 60s`).
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(60),
        send: Duration::from_secs(60),
        read: Duration::from_secs(60),
    };

    pub fn from_spec(t: &crate::config::Timeout) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs_f64(t.connect),
            send: Duration::from_secs_f64(t.send),
            read: Duration::from_secs_f64(t.read),
        }
    }
}

/// A compiled upstream. Built over all its nodes; which ones a request may use is decided
/// at pick time, so the chash ring never moves when a node is skipped.
pub struct UpstreamRuntime {
    /// The resource it belongs to.
    pub key: UpstreamKey,
    /// `key.label()`, kept for the request path's metric and health labels.
    pub id: String,
    pub nodes: Box<[NodeRuntime]>,
    pub picker: PriorityPicker,
    /// Set for `chash` upstreams.
    pub hash_key: Option<HashKey>,
    /// Attempts after the first one.
    pub retries: usize,
    /// No new attempt starts once this long has passed since the first (None = no limit).
    pub retry_timeout: Option<Duration>,
    pub timeouts: Timeouts,
    /// TLS to the nodes (`scheme` `https` or `grpcs`).
    pub tls: bool,
    /// `http`, `https`, or the HTTP/2-only `grpc` (h2c) and `grpcs`.
    pub scheme: crate::config::Scheme,
    /// Verify the node's certificate and name (`tls.verify`).
    pub verify: bool,
    /// The client certificate presented to the nodes (`tls.client_cert*`).
    pub client_cert: Option<Arc<pingora::utils::tls::CertKey>>,
    pub pass_host: PassHost,
    pub upstream_host: Option<String>,
    pub idle_timeout: Option<Duration>,
    /// Health state of the nodes, when the upstream has `checks`.
    pub health: Option<UpstreamHealth>,
    /// The spec this was built from, to reuse the runtime when a swap leaves it unchanged.
    pub spec: Arc<UpstreamSpec>,
}

/// Handles into the long-lived health registry, one per node (same index as `nodes`).
/// The state itself lives outside the snapshot, so a swap that keeps a node keeps it.
pub struct UpstreamHealth {
    pub spec: Arc<portico_healthcheck::ChecksSpec>,
    pub nodes: Box<[Arc<portico_healthcheck::NodeHealth>]>,
}

impl UpstreamRuntime {
    /// Whether node `i` may take traffic as far as health checks are concerned.
    pub fn is_healthy(&self, i: usize) -> bool {
        match &self.health {
            Some(h) => h.nodes.get(i).is_none_or(|n| n.is_healthy()),
            None => true,
        }
    }

    /// True when health checks mark every node unhealthy: then traffic goes to all nodes,
    /// as APISIX does, rather than to none.
    pub fn all_unhealthy(&self) -> bool {
        match &self.health {
            Some(h) => !h.nodes.is_empty() && h.nodes.iter().all(|n| !n.is_healthy()),
            None => false,
        }
    }
}

/// One node of an upstream.
pub struct NodeRuntime {
    pub addr: SocketAddr,
    /// `addr` as text (`ngx.var.upstream_addr`), formatted once per snapshot.
    pub addr_text: String,
    /// The node as configured (`host:port`), used as a metric label and for logs.
    pub label: String,
    /// The Host header for `pass_host: node`.
    pub host_header: String,
    /// For TLS: the SNI name (the configured host).
    pub sni: String,
    pub weight: u32,
    /// Higher-priority nodes take the traffic; lower ones are backups.
    pub priority: i32,
}
