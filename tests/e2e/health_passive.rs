//! Passive health checks and the all-unhealthy fallback (issue 3).

use std::collections::BTreeSet;

use crate::support::health::*;
use crate::support::*;

#[test]
fn backend_returning_500_is_ejected_by_passive_checks_and_recovers_through_active_probes() {
    const HTTP_FAILURES: u64 = 3;
    let gw = Gateway::start_default();
    let good = Backend::start("good");
    let bad = Backend::start("bad");
    // Active probes only count 200 (healthy) and 503 (unhealthy): a 500 probe answer is
    // ignored, so the ejection below is the passive checks' doing alone.
    gw.put(
        "/upstreams/u",
        json!({"nodes": {good.node(): 1, bad.node(): 1},
               "checks": {
                 "active": {"http_path": "/hc",
                     "healthy": {"interval": 1, "successes": 2, "http_statuses": [200]},
                     "unhealthy": {"interval": 1, "http_statuses": [503], "http_failures": 5}},
                 "passive": {
                     "healthy": {"http_statuses": [200], "successes": 3},
                     "unhealthy": {"http_statuses": [500], "http_failures": HTTP_FAILURES,
                                   "tcp_failures": 2, "timeouts": 2}}}}),
    );
    gw.put("/routes/p", json!({"uri": "/p", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[good.port(), bad.port()]);
    bad.set_status(500);

    // Each 500 the client sees is one passive http_failure; the node flips on the third.
    let mut seen_500 = 0u64;
    let mut ejected = false;
    for i in 0..60 {
        let r = gw.proxy_get("/p");
        match r.status {
            200 => assert_eq!(r.backend().as_deref(), Some("good"), "request {i}: {r:?}"),
            500 => {
                assert_eq!(r.backend().as_deref(), Some("bad"), "request {i}: {r:?}");
                seen_500 += 1;
                // the report may land just after the response: wait for it
                let mut last = None;
                let ok = wait_until(WAIT, || {
                    last = node_hc(&gw, "u", bad.port());
                    last.as_ref().is_some_and(|n| {
                        n["status"] == "unhealthy"
                            || n["counter"]["http_failure"].as_u64() == Some(seen_500)
                    })
                });
                assert!(ok, "passive report of 500 #{seen_500}: {last:?}");
                if last.is_some_and(|n| n["status"] == "unhealthy") {
                    ejected = true;
                    break;
                }
            }
            _ => panic!("request {i}: {r:?}"),
        }
    }
    assert!(ejected, "bad was never ejected ({seen_500} x 500)");
    assert_eq!(
        seen_500, HTTP_FAILURES,
        "ejected on the {HTTP_FAILURES}th passive http failure"
    );
    assert_eq!(
        node_status(&gw, "u", good.port()).as_deref(),
        Some("healthy")
    );
    let bad_node = bad.node();
    wait_metric(
        &gw,
        "portico_upstream_health_transitions_total",
        &[
            ("upstream", "u"),
            ("node", bad_node.as_str()),
            ("to", "unhealthy"),
        ],
        "passive ejection is a transition",
        |v| v == 1.0,
    );

    // ejected: every request goes to the healthy peer
    let bad_hits = bad.path_hits("/p");
    let mut conn = gw.proxy_conn();
    for i in 0..30 {
        let r = conn.send(&Request::get("/p")).unwrap();
        assert_eq!(r.status, 200, "request {i} after ejection: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("good"));
    }
    assert_eq!(
        bad.path_hits("/p"),
        bad_hits,
        "no traffic to the ejected node"
    );
    // the active probes still run on it, and a 500 answer leaves it unhealthy
    let probes = bad.path_hits("/hc");
    let ok = wait_until(WAIT, || bad.path_hits("/hc") >= probes + 2);
    assert!(ok, "active probes keep probing the ejected node");
    assert_eq!(
        node_status(&gw, "u", bad.port()).as_deref(),
        Some("unhealthy")
    );

    // recovery is the active checker's job: healthy after 2 successful probes
    bad.set_status(200);
    let up = watch(&gw, "u", bad.port(), "healthy", "success", HC_WAIT);
    assert_eq!(
        up.max_before, 1,
        "readmitted on the 2nd successful probe: {:?}",
        up.seen
    );
    let ok = wait_until(WAIT, || {
        gw.proxy_get("/p");
        bad.path_hits("/p") > bad_hits
    });
    assert!(ok, "the recovered node receives traffic again");
}

#[test]
fn passive_connect_failures_eject_without_failing_clients() {
    // passive tcp_failures: a dead node is ejected by the proxied attempts themselves
    // (its active probes run every 30 s, too slow to matter); retries hide it from clients
    let gw = Gateway::start_default();
    let live = Backend::start("live");
    let mut dead = Backend::start("dead");
    gw.put(
        "/upstreams/u",
        json!({"nodes": {live.node(): 1, dead.node(): 1},
               "checks": {
                 "active": {"http_path": "/hc",
                     "healthy": {"interval": 30, "successes": 2},
                     "unhealthy": {"interval": 30, "tcp_failures": 100}},
                 "passive": {"unhealthy": {"tcp_failures": 2}}}}),
    );
    gw.put("/routes/p", json!({"uri": "/p", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[live.port(), dead.port()]);
    dead.stop();
    let mut ejected = false;
    for i in 0..40 {
        let r = gw.proxy_get("/p");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("live"));
        if node_status(&gw, "u", dead.port()).as_deref() == Some("unhealthy") {
            ejected = true;
            break;
        }
    }
    assert!(
        ejected,
        "connect failures of proxied attempts eject the node: {:?}",
        node_hc(&gw, "u", dead.port())
    );
}

#[test]
fn all_nodes_unhealthy_balances_over_all_and_counts_it() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    // both nodes answer, but 500: the active checker (500 is in the default unhealthy
    // list) marks both unhealthy after one probe
    gw.put(
        "/upstreams/u",
        json!({"nodes": {a.node(): 1, b.node(): 1},
               "checks": {"active": {"http_path": "/hc",
                   "healthy": {"interval": 1, "successes": 1},
                   "unhealthy": {"interval": 1, "http_failures": 1}}}}),
    );
    gw.put("/routes/r", json!({"uri": "/r", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[a.port(), b.port()]);
    a.set_status(500);
    b.set_status(500);
    watch(&gw, "u", a.port(), "unhealthy", "http_failure", HC_WAIT);
    watch(&gw, "u", b.port(), "unhealthy", "http_failure", HC_WAIT);

    let all = [("upstream", "u")];
    let before = metric(&gw, "portico_upstream_all_unhealthy_total", &all).unwrap_or(0.0);
    let mut names = BTreeSet::new();
    for i in 0..20 {
        let r = gw.proxy_get("/r");
        // the backends' own 500s, not a gateway error: traffic still reaches them
        assert_eq!(r.status, 500, "request {i}: {r:?}");
        names.insert(
            r.backend()
                .unwrap_or_else(|| panic!("request {i} reached a backend: {r:?}")),
        );
    }
    assert_eq!(
        names,
        BTreeSet::from(["a".to_owned(), "b".to_owned()]),
        "balanced over all nodes"
    );
    let during = wait_metric(
        &gw,
        "portico_upstream_all_unhealthy_total",
        &all,
        "counted once per request (20) while every node is unhealthy",
        |v| v >= before + 20.0,
    );

    // one node recovers: it alone gets the traffic and the fallback is no longer counted
    a.set_status(200);
    watch(&gw, "u", a.port(), "healthy", "success", HC_WAIT);
    assert_eq!(
        node_status(&gw, "u", b.port()).as_deref(),
        Some("unhealthy")
    );
    let during = metric(&gw, "portico_upstream_all_unhealthy_total", &all).unwrap_or(during);
    for i in 0..20 {
        let r = gw.proxy_get("/r");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("a"));
    }
    assert_eq!(
        metric(&gw, "portico_upstream_all_unhealthy_total", &all),
        Some(during),
        "not counted while a node is healthy"
    );
}

#[test]
fn clients_that_leave_early_count_against_no_node_and_are_not_retried() {
    // Every passive failure ejects at once: a client closing while its request waits on
    // a slow node must not count as the node's failure (a client could otherwise eject
    // nodes by hanging up), nor be retried on the next node for nobody.
    let gw = Gateway::start_default();
    let slow = std::time::Duration::from_secs(2);
    let a = Backend::start_with("a", 200, slow);
    let b = Backend::start_with("b", 200, slow);
    gw.put(
        "/upstreams/u",
        json!({"nodes": {a.node(): 1, b.node(): 1},
               "checks": {
                 "active": {"http_path": "/hc", "timeout": 5,
                     "healthy": {"interval": 1, "successes": 1},
                     "unhealthy": {"interval": 1, "http_failures": 5, "tcp_failures": 5,
                                   "timeouts": 5}},
                 "passive": {"unhealthy": {"http_failures": 1, "tcp_failures": 1,
                                           "timeouts": 1}}}}),
    );
    gw.put("/routes/s", json!({"uri": "/s", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[a.port(), b.port()]);
    let hits = || a.path_hits("/s") + b.path_hits("/s");
    for i in 1..=2 {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(gw.proxy_addr()).expect("connect");
        s.write_all(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        assert!(
            wait_until(WAIT, || hits() == i),
            "request {i} reached a node"
        );
    } // each closed before its node answers
      // The log phase (which counts the 499) runs after the retry decision and its report.
    wait_metric(
        &gw,
        "portico_http_requests_total",
        &[("route", "s"), ("code", "499")],
        "both requests end as 499",
        |v| v == 2.0,
    );
    assert_eq!(hits(), 2, "a request whose client left was retried");
    for node in [&a, &b] {
        let hc = node_hc(&gw, "u", node.port()).expect("node in the health API");
        assert_eq!(hc["status"], "healthy", "{hc}");
        assert_eq!(hc["counter"]["tcp_failure"], 0, "{hc}");
        assert_eq!(hc["counter"]["timeout_failure"], 0, "{hc}");
    }
}
