//! `checks` validation (issue 3): APISIX's bounds, a 400 naming the field path, and the
//! running config (and its health checkers) untouched by a rejected write.

use crate::support::health::*;
use crate::support::*;

fn error_msg(body: &Value) -> String {
    body["error_msg"]
        .as_str()
        .unwrap_or_else(|| panic!("400 body has error_msg: {body}"))
        .to_owned()
}

fn upstream_with_checks(node: &str, checks: Value) -> Value {
    json!({"type": "roundrobin", "nodes": {node: 1}, "checks": checks})
}

#[test]
fn bad_checks_are_400_naming_the_field_and_leave_config_untouched() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let n = b.node();
    let good_checks = json!({"active": {"http_path": "/hc",
        "healthy": {"interval": 1, "successes": 2},
        "unhealthy": {"interval": 1, "tcp_failures": 2}}});
    gw.put(
        "/upstreams/u1",
        upstream_with_checks(&n, good_checks.clone()),
    );
    gw.put("/routes/v", json!({"uri": "/v", "upstream_id": "u1"}));
    gw.sync();
    assert_eq!(gw.proxy_get("/v").backend().as_deref(), Some("b"));
    let hc_before = wait_checked(&gw, "u1", &[b.port()]);
    assert_eq!(hc_before["type"], "http", "{hc_before}");
    let before = gw.get("/upstreams/u1");

    // (what, body of PUT /upstreams/u1 or None for the route case, field path the message names)
    let active = |inner: Value| json!({"active": inner});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "healthy.successes 0",
            active(json!({"healthy": {"successes": 0}})),
            "checks.active.healthy.successes",
        ),
        (
            "healthy.successes 255",
            active(json!({"healthy": {"successes": 255}})),
            "checks.active.healthy.successes",
        ),
        (
            "unhealthy.tcp_failures 0 (active counters are 1..254)",
            active(json!({"unhealthy": {"tcp_failures": 0}})),
            "checks.active.unhealthy.tcp_failures",
        ),
        (
            "unhealthy.timeouts 255",
            active(json!({"unhealthy": {"timeouts": 255}})),
            "checks.active.unhealthy.timeouts",
        ),
        (
            "healthy.http_statuses[0] 99",
            active(json!({"healthy": {"http_statuses": [99]}})),
            "checks.active.healthy.http_statuses[0]",
        ),
        (
            "unhealthy.http_statuses[1] 600",
            active(json!({"unhealthy": {"http_statuses": [500, 600]}})),
            "checks.active.unhealthy.http_statuses[1]",
        ),
        (
            "healthy.interval 0",
            active(json!({"healthy": {"interval": 0}})),
            "checks.active.healthy.interval",
        ),
        (
            "unhealthy.interval 1.5 (integer seconds)",
            active(json!({"unhealthy": {"interval": 1.5}})),
            "checks.active.unhealthy.interval",
        ),
        (
            "passive counter 255",
            json!({"active": {}, "passive": {"unhealthy": {"http_failures": 255}}}),
            "checks.passive.unhealthy.http_failures",
        ),
        (
            "passive status 700",
            json!({"active": {}, "passive": {"healthy": {"http_statuses": [200, 700]}}}),
            "checks.passive.healthy.http_statuses[1]",
        ),
        (
            "active missing",
            json!({"passive": {"unhealthy": {"http_failures": 3}}}),
            "checks.active",
        ),
        (
            "unknown probe type, together with a type change",
            active(json!({"type": "udp"})),
            "checks.active.type",
        ),
        (
            "unknown field",
            active(json!({"bogus_knob": 1})),
            "bogus_knob",
        ),
    ];
    for (what, checks, path) in &cases {
        let (status, _, resp) = gw.admin(
            "PUT",
            "/upstreams/u1",
            Some(upstream_with_checks(&n, checks.clone())),
        );
        assert_eq!(status, 400, "{what}: {checks} -> {resp}");
        let msg = error_msg(&resp);
        assert!(msg.contains(path), "{what}: message names {path:?}: {msg}");
    }

    // the same through a route's inline upstream and through POST
    let (status, _, resp) = gw.admin(
        "PUT",
        "/routes/v",
        Some(json!({"uri": "/v", "upstream": upstream_with_checks(&n,
            json!({"active": {"healthy": {"successes": 0}}}))})),
    );
    assert_eq!(status, 400, "inline upstream: {resp}");
    let msg = error_msg(&resp);
    assert!(
        msg.contains("checks.active.healthy.successes"),
        "inline upstream: message names the path: {msg}"
    );
    let (status, _, resp) = gw.admin(
        "POST",
        "/upstreams",
        Some(upstream_with_checks(&n, json!({"active": {"timeout": 0}}))),
    );
    assert_eq!(status, 400, "POST: {resp}");
    assert!(error_msg(&resp).contains("checks.active.timeout"), "{resp}");
    // a PATCH that would make the stored object invalid is rejected too
    let (status, _, resp) = gw.admin(
        "PATCH",
        "/upstreams/u1",
        Some(json!({"checks": {"active": {"healthy": {"successes": 0}}}})),
    );
    assert_eq!(status, 400, "PATCH: {resp}");
    assert!(
        error_msg(&resp).contains("checks.active.healthy.successes"),
        "{resp}"
    );

    // nothing changed: stored object, checker and data path
    assert_eq!(gw.get("/upstreams/u1"), before, "stored upstream untouched");
    let list = gw.get("/upstreams");
    assert_eq!(list["total"], 1, "no upstream created: {list}");
    let route = gw.get("/routes/v");
    assert_eq!(route["value"]["upstream_id"], "u1", "{route}");
    gw.sync();
    let hc_after = upstream_hc(&gw, "u1").expect("u1 still checked");
    assert_eq!(hc_after["type"], "http", "probe type unchanged: {hc_after}");
    assert_eq!(
        hc_after["nodes"].as_array().map(Vec::len),
        Some(1),
        "{hc_after}"
    );
    assert_eq!(hc_after["name"], "/apisix/upstreams/u1", "{hc_after}");
    for _ in 0..5 {
        let r = gw.proxy_get("/v");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.backend().as_deref(), Some("b"));
    }

    // the bounds themselves are accepted: active 1 and 254, passive 0 (disables) and 254
    gw.put(
        "/upstreams/u2",
        upstream_with_checks(
            &n,
            json!({
                "active": {"type": "tcp", "timeout": 0.5,
                    "healthy": {"interval": 1, "successes": 254, "http_statuses": [200]},
                    "unhealthy": {"interval": 3, "http_failures": 1, "tcp_failures": 254,
                                  "timeouts": 1, "http_statuses": [599]}},
                "passive": {"healthy": {"successes": 0, "http_statuses": [200, 599]},
                    "unhealthy": {"http_failures": 254, "tcp_failures": 0, "timeouts": 0}}
            }),
        ),
    );
    let u2 = wait_checked(&gw, "u2", &[b.port()]);
    assert_eq!(u2["type"], "tcp", "{u2}");
}
