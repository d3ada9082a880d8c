//! Health state across config changes (issue 3): keyed by (upstream id, node address),
//! kept by a swap that keeps the node; a removed node's probes stop within an interval.

use crate::support::health::*;
use crate::support::*;

fn checks(successes: u32) -> Value {
    json!({"active": {"http_path": "/hc",
        "healthy": {"interval": 1, "successes": successes},
        "unhealthy": {"interval": 1, "http_failures": 2}}})
}

/// `b` (`port`) of `id` is unhealthy right now, and the proxy sends nothing to it.
fn assert_still_ejected(gw: &Gateway, id: &str, port: u16, b: &Backend, path: &str, what: &str) {
    let n = node_hc(gw, id, port).unwrap_or_else(|| panic!("{what}: node :{port} listed"));
    assert_eq!(
        n["status"], "unhealthy",
        "{what}: right after the swap: {n}"
    );
    gw.sync(); // the swap is applied on the data path
    let n = node_hc(gw, id, port).unwrap_or_else(|| panic!("{what}: node :{port} listed"));
    assert_eq!(
        n["status"], "unhealthy",
        "{what}: after the swap is applied: {n}"
    );
    let hits = b.path_hits(path);
    let mut conn = gw.proxy_conn();
    for i in 0..20 {
        let r = conn.send(&Request::get(path)).unwrap();
        assert_eq!(r.status, 200, "{what}: request {i}: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("a"), "{what}: request {i}");
    }
    assert_eq!(
        b.path_hits(path),
        hits,
        "{what}: no traffic to the unhealthy node"
    );
}

#[test]
fn config_swaps_that_keep_a_node_keep_its_unhealthy_state() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    gw.put(
        "/upstreams/u",
        json!({"nodes": {a.node(): 1, b.node(): 1}, "checks": checks(2)}),
    );
    gw.put("/routes/p", json!({"uri": "/p", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[a.port(), b.port()]);
    b.set_status(500);
    watch(&gw, "u", b.port(), "unhealthy", "http_failure", HC_WAIT);
    // it keeps failing probes while unhealthy: the counter grows
    let ok = wait_until(HC_WAIT, || {
        node_hc(&gw, "u", b.port())
            .is_some_and(|n| n["counter"]["http_failure"].as_u64() >= Some(1))
    });
    assert!(ok, "{:?}", node_hc(&gw, "u", b.port()));

    // 1. PATCH of desc
    let c0 = node_hc(&gw, "u", b.port()).unwrap()["counter"]["http_failure"]
        .as_u64()
        .unwrap();
    gw.write_ok("PATCH", "/upstreams/u", json!({"desc": "changed"}));
    let n = node_hc(&gw, "u", b.port()).unwrap();
    assert!(
        n["counter"]["http_failure"].as_u64() >= Some(c0),
        "counters are kept too: before {c0}, after {n}"
    );
    assert_still_ejected(&gw, "u", b.port(), &b, "/p", "PATCH desc");

    // 2. another node's weight
    gw.write_ok(
        "PATCH",
        "/upstreams/u/nodes",
        json!({a.node(): 3, b.node(): 1}),
    );
    assert_still_ejected(&gw, "u", b.port(), &b, "/p", "PATCH of a's weight");

    // 3. route changes: the route replaced, a second route on the same upstream
    gw.put(
        "/routes/p",
        json!({"uri": "/p", "upstream_id": "u", "desc": "v2"}),
    );
    gw.put("/routes/q", json!({"uri": "/q", "upstream_id": "u"}));
    assert_still_ejected(&gw, "u", b.port(), &b, "/q", "route changes");

    // 4. full PUT of the same upstream with the same nodes (host spelled the same)
    gw.put(
        "/upstreams/u",
        json!({"nodes": {a.node(): 3, b.node(): 1}, "checks": checks(2), "desc": "put"}),
    );
    assert_still_ejected(&gw, "u", b.port(), &b, "/p", "PUT of the upstream");

    // 5. a changed checks block restarts the schedule but keeps node states; the new
    //    thresholds apply to the recovery
    gw.write_ok("PATCH", "/upstreams/u", json!({"checks": checks(3)}));
    assert_still_ejected(&gw, "u", b.port(), &b, "/p", "PATCH of checks");
    b.set_status(200);
    let up = watch(&gw, "u", b.port(), "healthy", "success", HC_WAIT);
    assert_eq!(
        up.max_before, 2,
        "readmitted on the 3rd success (the new successes): {:?}",
        up.seen
    );
    assert_eq!(
        metric(
            &gw,
            "portico_upstream_health_transitions_total",
            &[
                ("upstream", "u"),
                ("node", b.node().as_str()),
                ("to", "unhealthy")
            ]
        ),
        Some(1.0),
        "one ejection across all the swaps (no reset-and-eject-again)"
    );
}

#[test]
fn route_inline_upstream_keeps_its_unhealthy_state_across_a_route_patch() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    gw.put(
        "/routes/ir",
        json!({"uri": "/ir", "upstream": {"nodes": {a.node(): 1, b.node(): 1}, "checks": checks(2)}}),
    );
    gw.sync();
    wait_checked(&gw, "routes/ir", &[a.port(), b.port()]);
    b.set_status(500);
    watch(
        &gw,
        "routes/ir",
        b.port(),
        "unhealthy",
        "http_failure",
        HC_WAIT,
    );
    gw.write_ok("PATCH", "/routes/ir", json!({"desc": "changed"}));
    assert_still_ejected(
        &gw,
        "routes/ir",
        b.port(),
        &b,
        "/ir",
        "PATCH of the route's desc",
    );
    gw.write_ok("PATCH", "/routes/ir", json!({"uri": "/ir2"}));
    assert_still_ejected(
        &gw,
        "routes/ir",
        b.port(),
        &b,
        "/ir2",
        "PATCH of the route's uris",
    );
}

#[test]
fn removing_a_node_stops_its_probes() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    gw.put(
        "/upstreams/u",
        json!({"nodes": {a.node(): 1, b.node(): 1}, "checks": checks(2)}),
    );
    gw.sync();
    // checkers start when the upstream is applied: no route, no traffic
    let ok = wait_until(HC_WAIT, || {
        a.path_hits("/hc") >= 2 && b.path_hits("/hc") >= 2
    });
    assert!(
        ok,
        "both nodes probed: a {} b {}",
        a.path_hits("/hc"),
        b.path_hits("/hc")
    );

    gw.write_ok("PATCH", "/upstreams/u/nodes", json!({a.node(): 1}));
    gw.sync(); // applied
    let b_at_removal = b.path_hits("/hc");
    let a_at_removal = a.path_hits("/hc");
    let body = upstream_hc(&gw, "u").expect("u still checked");
    assert!(
        find_node(&body, b.port()).is_none(),
        "b no longer listed: {body}"
    );
    assert!(
        find_node(&body, a.port()).is_some(),
        "a still listed: {body}"
    );

    // one interval (1 s) plus margin: a gets 2 more probes meanwhile
    let ok = wait_until(HC_WAIT, || a.path_hits("/hc") >= a_at_removal + 2);
    assert!(ok, "a keeps being probed");
    let b_settled = b.path_hits("/hc");
    assert!(
        b_settled <= b_at_removal + 1,
        "at most the probe in flight at removal: {b_at_removal} -> {b_settled}"
    );
    let b_conns = b.connections();
    // ... and nothing after that, while a gets 3 more
    let a_now = a.path_hits("/hc");
    let ok = wait_until(HC_WAIT, || a.path_hits("/hc") >= a_now + 3);
    assert!(ok, "a keeps being probed");
    assert_eq!(
        b.path_hits("/hc"),
        b_settled,
        "no probe of the removed node"
    );
    assert_eq!(
        b.connections(),
        b_conns,
        "no connection to the removed node"
    );

    // removing the checks block stops every probe of the upstream and drops it from the
    // API (upstream `clock`, still checked, shows time passing)
    let c = Backend::start("c");
    gw.put(
        "/upstreams/clock",
        json!({"nodes": {c.node(): 1}, "checks": checks(2)}),
    );
    gw.put("/upstreams/u", json!({"nodes": {a.node(): 1}}));
    gw.sync();
    let (status, body) = hc(&gw, "/upstreams/u");
    assert_eq!(status, 404, "u has no checks any more: {body}");
    let a_at_removal = a.path_hits("/hc");
    let c_now = c.path_hits("/hc");
    let ok = wait_until(HC_WAIT, || c.path_hits("/hc") >= c_now + 2);
    assert!(ok, "clock upstream probed");
    let a_settled = a.path_hits("/hc");
    assert!(
        a_settled <= a_at_removal + 1,
        "{a_at_removal} -> {a_settled}"
    );
    let c_now = c.path_hits("/hc");
    let ok = wait_until(HC_WAIT, || c.path_hits("/hc") >= c_now + 3);
    assert!(ok, "clock upstream probed");
    assert_eq!(
        a.path_hits("/hc"),
        a_settled,
        "no probe of an upstream without checks"
    );
}
