//! `impl ProxyHttp for Gateway`: each hook is a thin delegation to a function of the
//! phase module that owns it.
//!
//! | phase (OpenResty) | Pingora hook                 | module        |
//! |-------------------|------------------------------|---------------|
//! | (per request)     | `new_ctx`                    | [`ctx`]       |
//! | rewrite/access    | `request_filter`             | [`request`]   |
//! | (proxy-cache)     | `request_cache_filter`, `cache_key_callback`, `is_purge`, `response_cache_filter`, `cache_vary_filter` | [`cache`] |
//! | balancer          | `upstream_peer`              | [`upstream`]  |
//! | (retry decision)  | `fail_to_connect`, `error_while_proxy` | [`upstream`] |
//! | before_proxy      | `upstream_request_filter`    | [`request`]   |
//! | content           | `request_filter`             | [`request`]   |
//! | (passive health)  | `upstream_response_filter`   | [`upstream`]  |
//! | header_filter     | `response_filter`            | [`filters`]   |
//! | body_filter       | `response_body_filter`       | [`filters`]   |
//! | error page        | `fail_to_proxy`              | [`error`]     |
//! | log               | `logging`                    | [`log`]       |

pub mod cache;
pub mod ctx;
pub mod driver;
pub mod error;
pub mod filters;
mod held;
mod hop_by_hop;
pub mod local;
pub mod log;
mod mtls;
mod native;
pub mod phases;
pub mod request;
mod rewrite;
pub mod sanitize;
pub mod upstream;
pub mod view;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::metrics::Metrics;
use crate::store::ConfigStore;
pub use ctx::RequestCtx;
use portico_plugins::Phase;

/// The data plane: reads one snapshot per request from the store. Cloned once at
/// startup, for `pingora-proxy` and for Portico's own driver ([`driver`]); the clones
/// share everything.
#[derive(Clone)]
pub struct Gateway {
    pub store: Arc<ConfigStore>,
    pub metrics: Arc<Metrics>,
    pub in_flight: crate::drain::InFlight,
    /// Where passive health reports go.
    pub health: Arc<portico_healthcheck::HealthRegistry>,
    /// One Lua VM per proxy worker thread.
    pub lua: Arc<portico_plugins::lua::WorkerVms>,
    pub access_log: Arc<crate::logging::AccessLog>,
    /// `server_header`, checked at startup; `None`: no `Server` header.
    pub server_header: Option<http::HeaderValue>,
    /// Unreachable nodes are logged once per node per interval.
    pub upstream_errors: Arc<crate::logging::throttle::Throttle>,
    /// `proxy.client_max_body_size` in bytes: the bound of `ngx.req.read_body()`.
    pub max_read_body: usize,
}

impl Gateway {
    /// A request's context on `snapshot`, counted in flight until it is dropped.
    pub fn ctx_on(&self, snapshot: Arc<crate::snapshot::Snapshot>) -> RequestCtx {
        RequestCtx::new(snapshot, self.in_flight.enter())
    }

    fn lua_env(&self) -> phases::LuaEnv<'_> {
        phases::LuaEnv {
            workers: &self.lua,
            metrics: &self.metrics,
            server_header: self.server_header.as_ref(),
            max_read_body: self.max_read_body,
        }
    }

    // The hooks' bodies. `impl ProxyHttp` below delegates to them, and Portico's own
    // driver calls them directly: no `async_trait` box per hook and per request, and the
    // synchronous ones (the balancer, the response header) are plain calls.

    /// rewrite/access/content (`request_filter`): true when a response was sent.
    pub(crate) async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        request::route_request(session, ctx, &self.lua_env()).await
    }

    /// balancer (`upstream_peer`): the node for this attempt.
    pub(crate) fn pick_peer(&self, session: &Session, ctx: &mut RequestCtx) -> Result<HttpPeer> {
        let choice = phases::run_balancer(session, ctx, &self.lua_env())?;
        upstream::select_peer(ctx, &self.metrics, choice)
    }

    /// before_proxy (`upstream_request_filter`).
    pub(crate) async fn on_upstream_request(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        request::prepare_upstream_request(session, upstream_request, ctx)?;
        let env = self.lua_env();
        // An answer here is written now; the error then only stops the proxying (the
        // error page is skipped because a response was written).
        match phases::run_phase(session, ctx, Phase::BeforeProxy, &env).await {
            phases::PhaseResult::Failed => {
                local::respond_lua_failure(session, ctx, &env).await?;
                return Error::e_explain(HTTPStatus(500), "before_proxy Lua failed");
            }
            phases::PhaseResult::Respond { status, body } => {
                local::respond_from_lua(session, ctx, status, body, &env).await?;
                return Error::e_explain(HTTPStatus(status), "before_proxy Lua answered");
            }
            phases::PhaseResult::Continue => {}
        }
        rewrite::apply_request_changes(ctx, upstream_request)?;
        if self.access_log.enabled() {
            log::note_upstream_target(ctx, upstream_request);
        }
        Ok(())
    }

    /// Passive health on the upstream's status (`upstream_response_filter`).
    pub(crate) fn on_upstream_response(
        &self,
        upstream_response: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) {
        upstream::on_response_header(&self.health, ctx, upstream_response.status.as_u16());
    }

    /// header_filter (`response_filter`).
    pub(crate) fn on_response(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if crate::drain::draining() {
            // Shutting down or upgrading: the client's next request goes to a new
            // connection (the new process), not to this one as it closes.
            session.set_keepalive(None);
        }
        cache::response_header(session, ctx, upstream_response);
        filters::filter_response_header(session, ctx, upstream_response, &self.lua_env())
            .map(|_| ())
    }

    /// log (`logging`).
    pub(crate) async fn on_log(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        let _ = phases::run_phase(session, ctx, Phase::Log, &self.lua_env()).await;
        log::record(session, e, ctx, &self.metrics, &self.access_log);
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a disabled response-compression
    /// module, whose context every request would build and consult for nothing; Portico
    /// compresses in its own plugins (`gzip`).
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        self.ctx_on(self.store.snapshot())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.on_request(session, ctx).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        cache::enable(session, ctx);
        Ok(())
    }

    fn cache_key_callback(
        &self,
        _session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<pingora_cache::CacheKey> {
        Ok(cache::key(ctx))
    }

    fn is_purge(&self, session: &Session, ctx: &RequestCtx) -> bool {
        cache::is_purge(session, ctx)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<pingora_cache::RespCacheable> {
        Ok(cache::cacheable(session, resp, ctx))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora_cache::CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        cache::variance(meta, req)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        self.pick_peer(session, ctx).map(Box::new)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::on_connect_failure(&self.health, ctx, e)
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        upstream::on_proxy_error(&self.health, session, ctx, e, client_reused)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.on_upstream_request(session, upstream_request, ctx)
            .await
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.on_upstream_response(upstream_response, ctx);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.on_response(session, upstream_response, ctx)
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        filters::filter_body(session, ctx, body, end_of_stream, &self.lua_env());
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        error::respond_error(session, e, ctx, &self.lua_env()).await
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, e: &Error) -> bool {
        error::suppress_log(e, ctx, &self.upstream_errors)
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        e: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        error::suppress_log(e, ctx, &self.upstream_errors)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        self.on_log(session, e, ctx).await
    }
}
