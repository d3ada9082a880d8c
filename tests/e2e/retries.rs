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
