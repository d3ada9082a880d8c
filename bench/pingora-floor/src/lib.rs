//! What the two Pingora floors of issue 17 share: S1's forwarding headers, the upstream
//! peer with Portico's timeouts, the one-thread server configuration and the arguments.
//! `pingora-floor` (src/main.rs) runs them through `pingora-proxy`'s `ProxyHttp`;
//! `pingora-codec-floor` (src/bin) runs them through a loop of its own on `pingora-core`'s
//! HTTP/1 sessions, so S1 can tell the proxy layer's cost from the codec's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::server::configuration::ServerConf;

/// APISIX's default connect/send/read timeouts, which Portico applies to every peer.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// `LISTEN ORIGIN [MODE]` from the command line; exits with a usage line when they are
/// missing or the origin is not an address.
pub fn args(usage: &str) -> (String, SocketAddr, Option<String>) {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    match origin.parse() {
        Ok(origin) => (listen, origin, args.next()),
        Err(e) => {
            eprintln!("origin {origin}: {e}");
            std::process::exit(2);
        }
    }
}

/// The origin as Pingora's peer, with Portico's timeouts (Pingora arms them per request).
pub fn origin_peer(origin: SocketAddr) -> HttpPeer {
    let mut peer = HttpPeer::new(origin, false, String::new());
    peer.options.connection_timeout = Some(TIMEOUT);
    peer.options.read_timeout = Some(TIMEOUT);
    peer.options.write_timeout = Some(TIMEOUT);
    peer.options.idle_timeout = Some(TIMEOUT);
    peer
}

/// One worker thread, like nginx's one worker, and a quick shutdown.
pub fn server() -> Server {
    let conf = ServerConf {
        threads: 1,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// The bare `ProxyHttp`: a fixed peer and the forwarding headers, nothing else. Like
/// Portico it adds no downstream modules (Pingora's default adds a disabled compression
/// module to every request).
pub struct Bare {
    pub peer: HttpPeer,
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
        add_forwarding_headers(
            session.client_addr(),
            session.server_addr(),
            session.req_header(),
            upstream_request,
        )
    }
}

/// The forwarding headers every S1 peer adds (X-Forwarded-For/Proto/Host/Port,
/// X-Real-IP), from the downstream request `received` into the upstream one.
pub fn add_forwarding_headers(
    client: Option<&PingoraAddr>,
    server: Option<&PingoraAddr>,
    received: &RequestHeader,
    upstream: &mut RequestHeader,
) -> Result<()> {
    if let Some(client) = client.and_then(|a| a.as_inet()) {
        let ip = client.ip();
        let real_ip = header_value(ip)?;
        let xff = match received
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => http::HeaderValue::from_str(&format!("{prev}, {ip}"))
                .or_err(InvalidHTTPHeader, "x-forwarded-for")?,
            _ => real_ip.clone(),
        };
        upstream.insert_header("x-forwarded-for", xff)?;
        upstream.insert_header("x-real-ip", real_ip)?;
    }
    upstream.insert_header("x-forwarded-proto", "http")?;
    if let Some(host) = received.headers.get(http::header::HOST) {
        let host = host.clone();
        upstream.insert_header("x-forwarded-host", host)?;
    }
    if let Some(server) = server.and_then(|a| a.as_inet()) {
        upstream.insert_header("x-forwarded-port", http::HeaderValue::from(server.port()))?;
    }
    Ok(())
}

fn header_value(ip: IpAddr) -> Result<http::HeaderValue> {
    http::HeaderValue::from_str(&ip.to_string()).or_err(InvalidHTTPHeader, "client address")
}
