//! Pingora's HTTP/1 codec without its proxy layer:
//! `pingora-codec-floor LISTEN ORIGIN [owned|pooled|hooks]`.
//!
//! Issue 17 asks what stands between Portico and nginx. `pingora-floor` (a bare
//! `ProxyHttp`) showed that most of it is Pingora's, before any Portico code runs. This
//! binary splits Pingora's part in two. It does S1's work, with the forwarding headers and
//! timeouts `pingora-floor` uses, on `pingora-core` alone:
//! - Pingora's listener, runtime and connection task;
//! - Pingora's HTTP/1 server session for the client's request and response;
//! - Pingora's HTTP/1 client session for the origin's.
//!
//! It leaves out `pingora-proxy`: no `ProxyHttp` hooks or their boxed futures, no
//! downstream modules, no request and response halves joined through channels, and no
//! per-request context.
//!
//! The loop is written for S1 only. It relays bodies one after the other and answers 502
//! to any failure, and it is not a proxy to ship. What it measures is how much a proxy loop
//! on Pingora's codec could save.
//!
//! Two ways to hold the origin connection:
//! - `owned` (the default): each client connection owns one, opened on its first request,
//!   as `bench/floor-proxy` does;
//! - `pooled`: Pingora's connector and pool, as `pingora-proxy` uses them. That is a
//!   pool lookup (with its `getpeername`) per request, and an idle-watch task spawned at
//!   each release.
//!
//! Mode `hooks` keeps the pool and puts back what a gateway would keep of
//! `pingora-proxy` if it ran its own loop: the per-request `pingora_proxy::Session`, and
//! `pingora-floor`'s `ProxyHttp` hooks, called through the trait (so each hook's future is
//! boxed, as `async_trait` makes it). It leaves out `pingora-proxy`'s request driver:
//! `process_request`, and `proxy_1to1` with its two halves joined through channels.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::connectors::http::v1::Connector;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::http::v1::client::HttpSession as ClientSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::Stream;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora_floor::{add_forwarding_headers, args, origin_peer, server, Bare, TIMEOUT};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Where the origin connection of a request comes from and goes back to.
enum Upstream {
    Owned,
    Pooled(Connector),
}

/// `pingora-proxy`'s `Session` and the bare `ProxyHttp`'s hooks, driven in sequence.
struct HooksLoop {
    hooks: Bare,
    connector: Connector,
    modules: HttpModules,
}

impl HooksLoop {
    async fn proxy(&self, session: &mut Session) -> Result<()> {
        let hooks = &self.hooks;
        let ctx = &mut hooks.new_ctx();
        if hooks.request_filter(session, ctx).await? {
            return Ok(());
        }
        let peer = hooks.upstream_peer(session, ctx).await?;
        let mut upstream = self.connector.get_http_session(&*peer).await?.0;
        let mut request = Box::new(session.req_header().clone());
        hooks
            .upstream_request_filter(session, &mut request, ctx)
            .await?;
        upstream.write_request_header(request).await?;
        while let Some(chunk) = session.downstream_session.read_request_body().await? {
            upstream.write_body(&chunk).await?;
        }
        upstream.finish_body().await?;

        let mut response = upstream.read_resp_header_parts().await?;
        hooks
            .upstream_response_filter(session, &mut response, ctx)
            .await?;
        hooks.response_filter(session, &mut response, ctx).await?;
        session.write_response_header(response, false).await?;
        while let Some(chunk) = upstream.read_body_bytes().await? {
            let mut body = Some(chunk);
            hooks.response_body_filter(session, &mut body, false, ctx)?;
            session.write_response_body(body, false).await?;
        }
        session.write_response_body(None, true).await?;
        self.connector
            .release_http_session(upstream, &*peer, Some(TIMEOUT))
            .await;
        hooks.logging(session, None, ctx).await;
        Ok(())
    }
}

#[async_trait]
impl ServerApp for HooksLoop {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut next = Some(stream);
        while let Some(stream) = next.take() {
            let mut session = Session::new_h1_with_modules(stream, &self.modules);
            session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
            if !matches!(session.read_request().await, Ok(true)) {
                return None;
            }
            if self.proxy(&mut session).await.is_err() {
                let _ = session.respond_error(502).await;
                return None;
            }
            next = match session.downstream_session.finish().await {
                Ok(Some(reusable)) => Some(reusable.into_parts().0),
                _ => None,
            };
        }
        None
    }
}

struct CodecLoop {
    origin: std::net::SocketAddr,
    peer: HttpPeer,
    upstream: Upstream,
}

impl CodecLoop {
    async fn connect(&self, owned: &mut Option<ClientSession>) -> Result<ClientSession> {
        if let Some(session) = owned.take() {
            return Ok(session);
        }
        match &self.upstream {
            Upstream::Owned => {
                let stream = tokio::net::TcpStream::connect(self.origin)
                    .await
                    .or_err(ConnectError, "connecting to the origin")?;
                // As Pingora's connector does for every origin connection.
                stream
                    .set_nodelay(true)
                    .or_err(ConnectError, "TCP_NODELAY")?;
                let stream: Stream = Box::new(L4Stream::from(stream));
                Ok(ClientSession::new_with_options(stream, &self.peer))
            }
            Upstream::Pooled(connector) => Ok(connector.get_http_session(&self.peer).await?.0),
        }
    }

    async fn release(&self, mut session: ClientSession, owned: &mut Option<ClientSession>) {
        match &self.upstream {
            Upstream::Owned => {
                session.respect_keepalive();
                if let Some(stream) = session.reuse().await {
                    *owned = Some(ClientSession::new_with_options(stream, &self.peer));
                }
            }
            Upstream::Pooled(connector) => {
                connector
                    .release_http_session(session, &self.peer, Some(TIMEOUT))
                    .await
            }
        }
    }

    /// One request, from the client's head to the end of the origin's response.
    async fn proxy(
        &self,
        downstream: &mut ServerSession,
        owned: &mut Option<ClientSession>,
    ) -> Result<()> {
        let mut request = Box::new(downstream.req_header().clone());
        add_forwarding_headers(
            downstream.client_addr(),
            downstream.server_addr(),
            downstream.req_header(),
            &mut request,
        )?;
        let mut upstream = self.connect(owned).await?;
        upstream.write_request_header(request).await?;
        while let Some(chunk) = downstream.read_request_body().await? {
            upstream.write_body(&chunk).await?;
        }
        upstream.finish_body().await?;

        let response = upstream.read_resp_header_parts().await?;
        downstream.write_response_header(response).await?;
        while let Some(chunk) = upstream.read_body_bytes().await? {
            downstream.write_response_body(chunk, false).await?;
        }
        downstream.finish_body().await?;
        self.release(upstream, owned).await;
        Ok(())
    }
}

#[async_trait]
impl ServerApp for CodecLoop {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut owned = None;
        let mut next = Some(stream);
        while let Some(stream) = next.take() {
            let mut downstream = ServerSession::new_http1(stream);
            // What pingora-core's HTTP loop sets on every session (apps/mod.rs).
            downstream.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
            if !matches!(downstream.read_request().await, Ok(true)) {
                return None;
            }
            if self.proxy(&mut downstream, &mut owned).await.is_err() {
                let _ = downstream.respond_error(502).await;
                return None;
            }
            next = match downstream.finish().await {
                Ok(Some(reusable)) => Some(reusable.into_parts().0),
                _ => None,
            };
        }
        None
    }
}

fn main() {
    let (listen, origin, mode) =
        args("pingora-codec-floor LISTEN_ADDR ORIGIN_ADDR [owned|pooled|hooks]");
    let peer = origin_peer(origin);
    let upstream = match mode.as_deref() {
        None | Some("owned") => Upstream::Owned,
        Some("pooled") => Upstream::Pooled(Connector::new(None)),
        Some("hooks") => {
            let hooks = Bare { peer };
            let connector = Connector::new(None);
            let modules = HttpModules::new();
            serve(
                &listen,
                HooksLoop {
                    hooks,
                    connector,
                    modules,
                },
            )
        }
        Some(other) => {
            eprintln!("mode {other}: expected owned, pooled or hooks");
            std::process::exit(2);
        }
    };
    serve(
        &listen,
        CodecLoop {
            origin,
            peer,
            upstream,
        },
    )
}

/// Runs `app` on `listen` with the floors' one-thread server, until the process is stopped.
fn serve<A: ServerApp + Send + Sync + 'static>(listen: &str, app: A) -> ! {
    let mut server = server();
    let mut service = Service::new("pingora-codec-floor".to_string(), app);
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
