//! Portico's own request driver: the loop that runs [`Gateway`]'s `ProxyHttp` hooks for
//! one plain HTTP/1 request without a body, in place of `pingora-proxy`'s.
//!
//! Why: in benchmark S1, `pingora-proxy`'s driver (`process_request`, and `proxy_1to1`
//! with its request and response halves joined by channels) costs more CPU per request
//! than everything Portico does on top of it (`docs/benchmarks.md`, "Pingora's codec
//! without `pingora-proxy`"). A request without a body needs none of that machinery:
//! the request is sent whole, then the response is relayed as it comes, while the client
//! is watched for a close.
//!
//! What it serves ([`H1Driver::takes`]): a request the edge framed as bodyless, with a
//! path as target, on a snapshot where no route uses `proxy-cache` or an HTTP/2 upstream
//! ([`crate::snapshot::Snapshot::own_driver_fits`]). Everything else (bodies, upgrades,
//! the cache, gRPC, TLS and HTTP/2 clients) goes through `pingora-proxy` unchanged.
//! `proxy.request_driver: pingora` sends every request there.
//!
//! The hooks run in `pingora-proxy`'s order, with its retry loop and its error handling,
//! so a route behaves the same on either driver; the e2e suite runs on this one for every
//! bodyless request. Of the hooks, it calls those [`Gateway`] implements; the others
//! (`early_request_filter`, `proxy_upstream_filter`, `connected_to_upstream`, the body
//! and trailer filters of the upstream response) are Pingora's no-op defaults there. A
//! hook added to `impl ProxyHttp for Gateway` needs its call here too. The hooks that run
//! on every request are called by their bodies (`Gateway::on_request`, `pick_peer`, ...,
//! which `impl ProxyHttp` delegates to), not through the trait: `async_trait` would box
//! each one's future per request, and the balancer and response-header hooks are
//! synchronous underneath.

use std::sync::Arc;

use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora::connectors::{ConnectorOptions, TransportConnector};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::HttpTask;
use pingora::proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use pingora::upstreams::peer::{HttpPeer, Peer};

use super::held::{HeldBudget, HeldUpstream};
use super::{Gateway, RequestCtx};
use crate::edge::head::{Framing, Head};
use crate::snapshot::Snapshot;

/// Runs [`Gateway`]'s hooks for the requests it [`takes`](H1Driver::takes).
pub struct H1Driver {
    gateway: Gateway,
    /// Its own pool of upstream connections (`pingora-proxy` keeps another).
    pool: TransportConnector,
    /// How many upstream connections client connections keep between requests
    /// ([`HeldUpstream`]).
    held_budget: HeldBudget,
    /// None: `Gateway` adds no downstream module. Kept for `Session`'s constructor.
    modules: HttpModules,
    /// Pingora's `max_retries`: attempts per request, at most.
    max_tries: usize,
}

/// How one attempt ended: whether the client connection can serve another request and
/// the upstream connection go back to the pool, and the error, if any.
struct Attempt {
    client_reusable: bool,
    upstream_reusable: bool,
    error: Option<Box<Error>>,
}

impl Attempt {
    fn failed(upstream_reusable: bool, error: Box<Error>) -> Attempt {
        Attempt {
            client_reusable: false,
            upstream_reusable,
            error: Some(error),
        }
    }
}

impl H1Driver {
    pub fn new(gateway: Gateway, conf: &ServerConf) -> H1Driver {
        H1Driver {
            gateway,
            pool: TransportConnector::new(Some(ConnectorOptions::from_server_conf(conf))),
            held_budget: HeldBudget::new(conf.upstream_keepalive_pool_size),
            modules: HttpModules::new(),
            max_tries: conf.max_retries,
        }
    }

    /// The snapshot to serve this request on, when this driver can serve it. The
    /// request's context is built on it, so the choice and the route agree.
    pub fn takes(&self, head: &Head) -> Option<Arc<Snapshot>> {
        if head.framing != Framing::Empty || !head.origin_form {
            return None;
        }
        let snapshot = self.gateway.store.snapshot();
        snapshot.own_driver_fits.then_some(snapshot)
    }

    /// The upstream connection one client connection keeps between its requests; it
    /// goes back to the pool when dropped.
    pub fn held(&self) -> HeldUpstream<'_> {
        HeldUpstream::new(&self.pool, &self.held_budget)
    }

    /// A proxy session on `stream`, for [`serve`](H1Driver::serve).
    pub fn session(&self, stream: pingora::protocols::Stream) -> Session {
        Session::new_h1_with_modules(stream, &self.modules)
    }

    /// Reads the request from `session` and proxies it; the client connection comes back
    /// when it can carry another request. `held` is the client connection's
    /// [`held`](H1Driver::held) upstream connection.
    pub async fn serve(
        &self,
        snapshot: Arc<Snapshot>,
        mut session: Session,
        shutdown: &ShutdownWatch,
        held: &mut HeldUpstream<'_>,
    ) -> Option<ReusedHttpStream> {
        match session.downstream_session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // The edge checked the head; Pingora's parser may still refuse it.
                if matches!(e.etype(), InvalidHTTPHeader) {
                    let _ = session.respond_error(400).await;
                }
                session.downstream_session.shutdown().await;
                return None;
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        let mut ctx = self.gateway.ctx_on(snapshot);
        match self.gateway.on_request(&mut session, &mut ctx).await {
            Ok(true) => return self.finish(session, &mut ctx, true, None).await,
            Ok(false) => {}
            Err(e) => {
                // An error before any upstream was tried: the error page, and the
                // connection's reuse as `fail_to_proxy` says.
                let answer = self
                    .answer_error(&mut session, &mut ctx, &e, "filter request")
                    .await;
                return self
                    .finish(session, &mut ctx, answer.can_reuse_downstream, Some(e))
                    .await;
            }
        }
        let (client_reusable, error) = self.proxy(&mut session, &mut ctx, held).await;
        if let Some(e) = &error {
            self.answer_error(&mut session, &mut ctx, e, "proxy").await;
        }
        self.finish(session, &mut ctx, client_reusable, error).await
    }

    /// The error page (`fail_to_proxy`), and the error's log line unless the gateway
    /// keeps it out (`suppress_error_log`).
    async fn answer_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        e: &Error,
        failed_to: &str,
    ) -> FailToProxy {
        let answer = self.gateway.fail_to_proxy(session, e, ctx).await;
        if !self.gateway.suppress_error_log(session, ctx, e) {
            tracing::error!("Fail to {failed_to}: {e}, status: {}", answer.error_code);
        }
        answer
    }

    /// The log phase, then the client connection, if it can carry another request.
    async fn finish(
        &self,
        mut session: Session,
        ctx: &mut RequestCtx,
        reusable: bool,
        error: Option<Box<Error>>,
    ) -> Option<ReusedHttpStream> {
        self.gateway
            .on_log(&mut session, error.as_deref(), ctx)
            .await;
        if !reusable {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session.downstream_session);
        let stream = session.downstream_session.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(stream, settings))
    }

    /// Attempts until one succeeds or its error is not to be retried (the balancer's
    /// `fail_to_connect` and `error_while_proxy` decide).
    async fn proxy(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        held: &mut HeldUpstream<'_>,
    ) -> (bool, Option<Box<Error>>) {
        let mut tries = 0;
        loop {
            tries += 1;
            let attempt = self.attempt(session, ctx, held).await;
            let Some(e) = attempt.error else {
                return (attempt.client_reusable, None);
            };
            if !e.retry() || tries >= self.max_tries {
                return (attempt.client_reusable, Some(e));
            }
            let quiet = self.gateway.suppress_proxy_warn_log(
                session,
                ctx,
                &e,
                ProxyWarnLogContext::UpstreamRetry,
            );
            if !quiet {
                tracing::warn!("Fail to proxy: {e}, tries: {tries}, retrying");
            }
        }
    }

    /// One attempt: a node, a connection to it (the one the client connection kept, when
    /// it goes to the same peer, else one from the pool), the exchange.
    async fn attempt(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        held: &mut HeldUpstream<'_>,
    ) -> Attempt {
        let gateway = &self.gateway;
        let peer = match gateway.pick_peer(session, ctx) {
            Ok(peer) => peer,
            Err(e) => return Attempt::failed(false, e),
        };
        let key = peer.reuse_hash();
        let kept = match held.take(key) {
            Some(stream) => Some(stream),
            None => self.pool.reused_stream(&peer).await,
        };
        let (stream, reused) = match kept {
            Some(stream) => (stream, true),
            // Boxed: connecting (TCP, TLS) is the largest future here, and an idle client
            // connection's future is as large as its largest state (S9, S11). A connect
            // costs far more than the allocation.
            None => match Box::pin(self.pool.new_stream(&peer)).await {
                Ok(stream) => (stream, false),
                Err(mut e) => {
                    e.as_up();
                    let e = gateway.fail_to_connect(session, &peer, ctx, e);
                    return Attempt::failed(false, e.into_up());
                }
            },
        };
        let mut upstream = UpstreamSession::new_with_options(stream, &peer);
        let mut attempt = self.exchange(session, &mut upstream, &peer, ctx).await;
        if attempt.upstream_reusable {
            upstream.respect_keepalive();
            if let Some(stream) = upstream.reuse().await {
                held.keep(stream, key, peer.idle_timeout());
            }
        }
        attempt.error = attempt
            .error
            .map(|e| gateway.error_while_proxy(&peer, session, e, ctx, reused));
        attempt
    }

    /// Sends the request header, then relays the response as it comes, watching the
    /// client for a close meanwhile (as `pingora-proxy` does: the client going away
    /// stops the request, 499).
    async fn exchange(
        &self,
        session: &mut Session,
        upstream: &mut UpstreamSession,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
    ) -> Attempt {
        let gateway = &self.gateway;
        upstream.read_timeout = peer.options.read_timeout;
        upstream.write_timeout = peer.options.write_timeout;
        let mut req = session.req_header().clone();
        let had_host = req.headers.contains_key(http::header::HOST);
        req.set_version(http::Version::HTTP_11);
        if let Err(e) =
            super::hop_by_hop::strip(&mut req, peer.options.http_upstream_request_policy)
        {
            return Attempt::failed(true, e.into_down());
        }
        if let Err(e) = gateway.on_upstream_request(session, &mut req, ctx).await {
            return Attempt::failed(true, e);
        }
        // An origin-form request keeps its `Host`: a filter that removed it gets an
        // empty one, as HTTP/1.1 requires a `Host` (and `pingora-proxy` does the same).
        if had_host && !req.headers.contains_key(http::header::HOST) {
            if let Err(e) = req.insert_header(http::header::HOST, "") {
                return Attempt::failed(true, e.into_in());
            }
        }
        if let Err(e) = pingora::protocols::http::authority::validate_request_authority(&req) {
            return Attempt::failed(true, e.into_in());
        }
        if let Err(e) = upstream.write_request_header(Box::new(req)).await {
            return Attempt::failed(false, e.into_up());
        }
        if let Err(e) = upstream.finish_body().await {
            return Attempt::failed(false, e.into_up());
        }
        let mut watch_client = true;
        loop {
            let task = tokio::select! {
                biased;
                task = upstream.read_response_task() => match task {
                    Ok(task) => task,
                    Err(e) => return Attempt::failed(false, e.into_up()),
                },
                gone = session.downstream_session.read_body_or_idle(true), if watch_client => {
                    match gone {
                        Err(e) => return Attempt::failed(false, e.into_down()),
                        // Nothing else is expected of a request without a body; stop
                        // watching rather than spin.
                        Ok(_) => {
                            watch_client = false;
                            continue;
                        }
                    }
                }
            };
            let end = task.is_end();
            let task = match self.filter_response(session, task, ctx) {
                Ok(task) => task,
                Err(e) => return Attempt::failed(false, e),
            };
            if let Err(e) = session.write_response_tasks(vec![task]).await {
                return Attempt::failed(false, e.into_down());
            }
            if end {
                return Attempt {
                    client_reusable: true,
                    upstream_reusable: true,
                    error: None,
                };
            }
        }
    }

    /// The response's hooks, per part: `upstream_response_filter` and `response_filter`
    /// on the header, `response_body_filter` on each piece of body.
    fn filter_response(
        &self,
        session: &mut Session,
        task: HttpTask,
        ctx: &mut RequestCtx,
    ) -> Result<HttpTask> {
        let gateway = &self.gateway;
        Ok(match task {
            HttpTask::Header(mut header, end) => {
                gateway.on_upstream_response(&header, ctx);
                if header.status == http::StatusCode::SWITCHING_PROTOCOLS {
                    // No upgrade was asked for (those requests stay on pingora-proxy).
                    return Error::e_explain(InvalidHTTPHeader, "101 to a request without Upgrade")
                        .map_err(|e| e.into_up());
                }
                if needs_chunked(session, &header, end) {
                    header.set_version(http::Version::HTTP_11);
                    header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
                }
                gateway.on_response(session, &mut header, ctx)?;
                HttpTask::Header(header, end)
            }
            HttpTask::Body(mut data, end) => {
                gateway.response_body_filter(session, &mut data, end, ctx)?;
                HttpTask::Body(data, end)
            }
            other => other,
        })
    }
}

/// A response that ends when its connection closes (HTTP/1.0 style, no length) is sent
/// chunked, so the client connection stays usable; a response that cannot have a body
/// is left alone.
fn needs_chunked(session: &Session, header: &ResponseHeader, end: bool) -> bool {
    let no_body = session.req_header().method == http::Method::HEAD
        || matches!(header.status.as_u16(), 204 | 304);
    !no_body
        && !end
        && !header.status.is_informational()
        && !header.headers.contains_key(http::header::TRANSFER_ENCODING)
        && !header.headers.contains_key(http::header::CONTENT_LENGTH)
}
