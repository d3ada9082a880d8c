//! The least a proxy built on Pingora costs: `pingora-floor LISTEN ORIGIN`.
//!
//! One `ProxyHttp` that does what every peer of benchmark S1 does and nothing more: a fixed
//! origin peer (built once, cloned per request as Pingora's `upstream_peer` requires) and
//! the same forwarding headers (X-Forwarded-For/Proto/Host/Port, X-Real-IP). It runs on the
//! Pingora version, features, allocator (jemalloc) and build profile (fat LTO, one codegen
//! unit) that Portico ships, with one worker thread like nginx's one worker, and with
//! Portico's upstream timeouts (APISIX's 60 s defaults), which Pingora arms per request.
//! Like Portico it adds no downstream modules (Pingora's default adds a disabled
//! compression module to every request).
//!
//! What it leaves out is Portico: routing, the snapshot, plugins, the balancer, health
//! reports, metrics, the access log, Portico's edge checks and its keep-alive loop
//! (`gateway/src/keepalive.rs`). So in S1, Portico's CPU per request minus this one is
//! what Portico's own code costs, and this one minus `bench/floor-proxy`'s is what
//! Pingora costs over the least a Rust async proxy needs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::http_proxy_service;
use pingora::server::configuration::ServerConf;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// APISIX's default connect/send/read timeouts, which Portico applies to every peer.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip();
            let real_ip = header_value(ip)?;
            let xff = match session
                .req_header()
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) if !prev.is_empty() => {
                    http::HeaderValue::from_str(&format!("{prev}, {ip}"))
                        .or_err(InvalidHTTPHeader, "x-forwarded-for")?
                }
                _ => real_ip.clone(),
            };
            upstream_request.insert_header("x-forwarded-for", xff)?;
            upstream_request.insert_header("x-real-ip", real_ip)?;
        }
        upstream_request.insert_header("x-forwarded-proto", "http")?;
        if let Some(host) = session.req_header().headers.get(http::header::HOST) {
            let host = host.clone();
            upstream_request.insert_header("x-forwarded-host", host)?;
        }
        if let Some(server) = session.server_addr().and_then(|a| a.as_inet()) {
            upstream_request
                .insert_header("x-forwarded-port", http::HeaderValue::from(server.port()))?;
        }
        Ok(())
    }
}

fn header_value(ip: IpAddr) -> Result<http::HeaderValue> {
    http::HeaderValue::from_str(&ip.to_string()).or_err(InvalidHTTPHeader, "client address")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: pingora-floor LISTEN_ADDR ORIGIN_ADDR");
        std::process::exit(2);
    };
    let origin: SocketAddr = match origin.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("origin {origin}: {e}");
            std::process::exit(2);
        }
    };
    let mut peer = HttpPeer::new(origin, false, String::new());
    peer.options.connection_timeout = Some(TIMEOUT);
    peer.options.read_timeout = Some(TIMEOUT);
    peer.options.write_timeout = Some(TIMEOUT);
    peer.options.idle_timeout = Some(TIMEOUT);

    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { peer });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
