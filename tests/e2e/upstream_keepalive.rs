//! A kept-alive client connection keeps its upstream connection between requests
//! (Portico's driver, `gateway/src/proxy/held.rs`), and gives it up when it can no
//! longer carry a request: closed by the upstream, idle past `keepalive_pool.idle_timeout`,
//! or needed by another client after this one left.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

fn gateway_to(upstream: Value) -> Gateway {
    let gw = Gateway::start_default();
    gw.put("/routes/r", json!({"uri": "/*", "upstream": upstream}));
    gw
}

#[test]
fn a_kept_alive_client_uses_one_upstream_connection_across_requests_and_swaps() {
    let backend = Backend::start("b");
    let gw = gateway_to(json!({"nodes": {backend.node(): 1}}));
    let mut first = gw.proxy_conn();
    for i in 0..5 {
        let r = first
            .send(&Request::get(&format!("/a/{i}")))
            .expect("first client");
        assert_eq!(r.status, 200);
    }
    assert_eq!(backend.connections(), 1);
    // A second client while the first stays connected: the first keeps its connection,
    // so the second needs its own.
    let mut second = gw.proxy_conn();
    assert_eq!(
        second.send(&Request::get("/b")).expect("second").status,
        200
    );
    assert_eq!(backend.connections(), 2);
    // A new snapshot with the same node: the kept connection still goes to it.
    gw.put(
        "/routes/other",
        json!({"uri": "/other", "upstream": {"nodes": {backend.node(): 1}}}),
    );
    for client in [&mut first, &mut second] {
        assert_eq!(
            client.send(&Request::get("/c")).expect("after swap").status,
            200
        );
    }
    assert_eq!(backend.connections(), 2);
    // A client that leaves gives its connection back to the pool, for the next client.
    // Its connection is given back before the gateway stops counting it as active.
    drop(second);
    assert!(
        wait_until(Duration::from_secs(5), || active_clients(&gw) == 1.0),
        "the second client is still counted: {}",
        active_clients(&gw)
    );
    let mut third = gw.proxy_conn();
    assert_eq!(third.send(&Request::get("/d")).expect("third").status, 200);
    assert_eq!(
        backend.connections(),
        2,
        "the third client opened a connection"
    );
}

fn active_clients(gw: &Gateway) -> f64 {
    let text = gw.metrics_text();
    let samples = prom::parse(&text).unwrap_or_else(|e| panic!("metrics: {e}"));
    prom::sum(&samples, "portico_http_connections", &[("state", "active")])
}

/// A backend that answers each connection's first request (keep-alive framing, no
/// `Connection: close`) and then closes it, as an upstream whose keep-alive timeout has
/// passed does. Counts the connections it accepted and closed.
struct ClosingBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl ClosingBackend {
    fn start() -> ClosingBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                a.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                let _ = stream.shutdown(std::net::Shutdown::Both);
                c.fetch_add(1, Ordering::SeqCst);
            }
        });
        ClosingBackend {
            addr,
            accepted,
            closed,
        }
    }
}

#[test]
fn a_kept_connection_the_upstream_closed_is_not_used() {
    let backend = ClosingBackend::start();
    // One node and no retries: the request must not fail for the closed connection.
    // (The check before use drops it; if the close races the request, the stale-pool
    // retry of `proxy/upstream.rs` resends it, as for a pooled connection.)
    let gw = gateway_to(json!({"nodes": {backend.addr.to_string(): 1}, "retries": 0}));
    let mut client = gw.proxy_conn();
    for i in 1..=3 {
        let r = client.send(&Request::get("/x")).expect("request");
        assert_eq!((r.status, r.text()), (200, "ok".to_string()), "request {i}");
        assert!(
            wait_until(Duration::from_secs(5), || backend
                .closed
                .load(Ordering::SeqCst)
                == i),
            "the backend did not close connection {i}"
        );
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn a_kept_connection_idle_past_the_pools_idle_timeout_is_not_used() {
    let backend = Backend::start("b");
    let gw = gateway_to(json!({
        "nodes": {backend.node(): 1},
        "keepalive_pool": {"idle_timeout": 0.3}
    }));
    let mut client = gw.proxy_conn();
    assert_eq!(client.send(&Request::get("/1")).expect("first").status, 200);
    assert_eq!(
        client.send(&Request::get("/2")).expect("second").status,
        200
    );
    assert_eq!(backend.connections(), 1);
    // Waiting is the point here: the connection must have been idle that long.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(client.send(&Request::get("/3")).expect("third").status, 200);
    assert_eq!(backend.connections(), 2);
}
