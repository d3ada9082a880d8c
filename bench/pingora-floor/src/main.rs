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

use pingora::proxy::http_proxy_service;
use pingora_floor::{args, origin_peer, server, Bare};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let (listen, origin, _) = args("pingora-floor LISTEN_ADDR ORIGIN_ADDR");
    let mut server = server();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Bare {
            peer: origin_peer(origin),
        },
    );
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
