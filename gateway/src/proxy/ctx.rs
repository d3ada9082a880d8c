//! Per-request state, kept across every hook of one request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use portico_plugins::lua::{LuaVm, SharedRequest};

use crate::drain::InFlightGuard;
use crate::snapshot::{RouteRuntime, Snapshot};

/// Created in `new_ctx`; the snapshot is loaded there, once, and never again.
pub struct RequestCtx {
    pub snap: Arc<Snapshot>,
    pub route: Option<Arc<RouteRuntime>>,
    /// The chash key of this request (computed once, in `request_filter`).
    pub hash_key: Option<String>,
    /// Node indexes already tried by this request, in order (APISIX's
    /// `balancer_tried_servers`). Inline: almost every request tries one node, and this
    /// saves an allocation per request (issue 17).
    pub tried: SmallVec<[usize; 2]>,
    pub started: Instant,
    /// When the current attempt's peer was chosen.
    pub attempt_started: Option<Instant>,
    /// When the first attempt started (bounds `retry_timeout`).
    pub first_attempt: Option<Instant>,
    /// Time from choosing the peer to the upstream's response header.
    pub upstream_duration: Option<Duration>,
    /// Attempts made so far (bounded by the upstream's `retries` + `extra_tries`).
    pub attempts: usize,
    /// Extra attempts granted by `ngx.balancer.set_more_tries`.
    pub extra_tries: usize,
    /// Retries spent on pooled connections the upstream had closed.
    pub stale_retries: u8,
    /// Set once an upstream response header arrived: no retry after that.
    pub response_started: bool,
    /// Status of a response the gateway wrote itself (404, 502, ...).
    pub local_status: Option<u16>,
    /// Domains of the dynacode document whose snippets run for this request (computed
    /// once, from the host).
    pub dynacode: Vec<u16>,
    /// The request's Lua VM and state, from its first Lua phase on.
    pub lua: Option<LuaCtx>,
    /// The response goes through body filters (sent chunked).
    pub body_filtered: bool,
    /// Native plugins' per-request state, by type.
    pub plugin_state: http::Extensions,
    /// Headers set for the response before it exists (native plugins in rewrite/access):
    /// applied to whichever response goes out, proxied or local.
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The client address a plugin (`real-ip`) set for the rest of the request; routing
    /// happened before, everything after it (limits, `$remote_addr`, the forwarding
    /// headers, Lua, the access log) sees this one.
    pub client_override: Option<portico_plugins::ClientAddr>,
    /// Every peer an attempt went to, in order (the access log's `$upstream_addr`).
    pub upstream_addrs: SmallVec<[std::net::SocketAddr; 2]>,
    /// The status of the upstream's response header.
    pub upstream_status: Option<u16>,
    /// The Host header and path sent upstream (recorded when the access log is on).
    pub upstream_target: Option<(String, String)>,
    /// The consumer the request authenticated as (set by an auth plugin).
    pub consumer: Option<Arc<portico_plugins::consumer::Consumer>>,
    /// The route's chain merged with that consumer's plugins, from access on.
    pub consumer_chain: Option<Arc<portico_plugins::PluginChain>>,
    /// What `proxy-cache` decided for this request.
    pub cache: crate::cache::request::CacheRequest,
    /// Keeps the request counted as in flight (graceful shutdown waits for it).
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    pub fn new(snap: Arc<Snapshot>, in_flight: InFlightGuard) -> RequestCtx {
        RequestCtx {
            snap,
            route: None,
            hash_key: None,
            tried: SmallVec::new(),
            started: Instant::now(),
            attempt_started: None,
            first_attempt: None,
            upstream_duration: None,
            attempts: 0,
            extra_tries: 0,
            stale_retries: 0,
            response_started: false,
            local_status: None,
            dynacode: Vec::new(),
            lua: None,
            body_filtered: false,
            plugin_state: http::Extensions::new(),
            response_headers: Vec::new(),
            client_override: None,
            upstream_addrs: SmallVec::new(),
            upstream_status: None,
            upstream_target: None,
            consumer: None,
            consumer_chain: None,
            cache: Default::default(),
            _in_flight: in_flight,
        }
    }
}

/// The request's VM and Lua-side state, kept from its first Lua phase to its last.
pub struct LuaCtx {
    pub vm: Arc<LuaVm>,
    pub req: SharedRequest,
    /// `ctx.tried.len()` when `upstream_addr` was last brought up to date.
    pub(crate) tried_seen: usize,
}
