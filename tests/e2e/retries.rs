//! Retries on unreachable nodes, 502 when nothing answers, 504 on timeout.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn dead_node_is_retried_on_a_live_one() {
    let gw = Gateway::start_default();
    let live = Backend::start("live");
    let dead = dead_addr();
    gw.put(
        "/routes/1",
        json!({"uri": "/r", "upstream": {"type": "roundrobin", "retries": 1,
               "nodes": {dead: 1, live.node(): 1}}}),
    );
    gw.sync();
    for i in 0..20 {
        let r = gw.proxy_get("/r");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("live"));
    }
    assert_eq!(live.hits(), 20);
}

#[test]
fn default_retries_cover_every_node() {
    // retries defaults to nodes - 1: two dead nodes and one live one, no retries field
    let gw = Gateway::start_default();
    let live = Backend::start("live");
    gw.put(
        "/routes/1",
        json!({"uri": "/r", "upstream": {"nodes": {dead_addr(): 1, live.node(): 1, dead_addr(): 1}}}),
    );
    gw.sync();
    for i in 0..15 {
        let r = gw.proxy_get("/r");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
}

#[test]
fn backend_going_away_mid_traffic() {
    let gw = Gateway::start_default();
    let mut a = Backend::start("a");
    let b = Backend::start("b");
    gw.put(
        "/routes/1",
        json!({"uri": "/r", "upstream": {"retries": 1, "nodes": {a.node(): 1, b.node(): 1}}}),
    );
    gw.sync();
    let mut conn = gw.proxy_conn();
    for _ in 0..10 {
        assert_eq!(conn.send(&Request::get("/r")).unwrap().status, 200);
    }
    assert!(a.hits() > 0, "a served before it went away");
    a.stop(); // closes its listener and the gateway's pooled connections to it
    for i in 0..20 {
        let r = conn.send(&Request::get("/r")).unwrap();
        assert_eq!(r.status, 200, "request {i} after a stopped: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("b"));
    }
}

#[test]
fn only_dead_nodes_give_502() {
    let gw = Gateway::start_default();
    gw.put(
        "/routes/1",
        json!({"uri": "/r", "upstream": {"retries": 1, "nodes": {dead_addr(): 1, dead_addr(): 1}}}),
    );
    gw.sync();
    for _ in 0..3 {
        let r = gw.proxy_get("/r");
        assert_eq!(r.status, 502, "{r:?}");
    }
}

#[test]
fn read_timeout_gives_504() {
    let gw = Gateway::start_default();
    let slow = Backend::start_with("slow", 200, Duration::from_secs(6));
    gw.put(
        "/routes/1",
        json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1},
               "timeout": {"connect": 1, "send": 1, "read": 1}}}),
    );
    gw.sync();
    let t = Instant::now();
    let r = gw.proxy_get("/slow");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "answered after the 1 s read timeout, not after the backend: {:?}",
        t.elapsed()
    );
    // a fast answer on the same upstream is fine
    slow.set_delay(Duration::ZERO);
    assert_eq!(gw.proxy_get("/slow").status, 200);
}

/// An origin that answers the first request of each connection with keep-alive headers,
/// then drops the connection when a second request arrives on it: what a pooled
/// upstream connection looks like after the origin's keep-alive timeout.
fn origin_dropping_reused_connections() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // request head of the first request (no body: GET)
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let body = r#"{"backend":"dropper"}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                    body.len()
                );
                count.fetch_add(1, Ordering::SeqCst);
                // wait for the next request on this connection, then drop it unanswered
                line.clear();
                let _ = reader.read_line(&mut line);
            });
        }
    });
    (addr, answered)
}

#[test]
fn closed_pooled_connection_is_retried_not_failed() {
    let gw = Gateway::start_default();
    let (origin, answered) = origin_dropping_reused_connections();
    // One node and no retries: only the stale-connection rule can save these requests.
    gw.put(
        "/routes/1",
        json!({"uri": "/pooled", "upstream": {"nodes": {origin.to_string(): 1}, "retries": 0}}),
    );
    gw.sync();
    for i in 0..10 {
        let r = gw.proxy_get("/pooled");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }
    assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 10);
}
