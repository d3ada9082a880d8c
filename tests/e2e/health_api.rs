//! `GET /v1/healthcheck` (APISIX control-API format) on the admin listener, and the
//! health metrics (issue 3).

use crate::support::health::*;
use crate::support::*;

fn assert_node_shape(n: &Value) {
    assert_eq!(n["ip"], "127.0.0.1", "{n}");
    assert!(n["port"].is_u64(), "port is a number: {n}");
    assert!(
        n["status"] == "healthy" || n["status"] == "unhealthy",
        "status: {n}"
    );
    let counter = n["counter"]
        .as_object()
        .unwrap_or_else(|| panic!("counter: {n}"));
    for k in ["success", "http_failure", "tcp_failure", "timeout_failure"] {
        assert!(
            counter.get(k).is_some_and(Value::is_u64),
            "counter.{k}: {n}"
        );
    }
    assert_eq!(counter.len(), 4, "exactly the four counters: {n}");
}

#[test]
fn healthcheck_endpoints_and_metrics() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let mut d = Backend::start("d");
    let checks = json!({"active": {"http_path": "/hc",
        "healthy": {"interval": 1, "successes": 2},
        "unhealthy": {"interval": 1, "tcp_failures": 2}}});
    gw.put(
        "/upstreams/1",
        json!({"nodes": {a.node(): 1, d.node(): 1}, "checks": checks}),
    );
    gw.put("/upstreams/plain", json!({"nodes": {a.node(): 1}}));
    gw.put(
        "/routes/r1",
        json!({"uri": "/r1", "upstream": {"nodes": {a.node(): 1},
               "checks": {"active": {"type": "tcp", "healthy": {"interval": 1}}}}}),
    );
    gw.sync();
    wait_checked(&gw, "1", &[a.port(), d.port()]);
    wait_checked(&gw, "routes/r1", &[a.port()]);
    d.stop();
    watch(&gw, "1", d.port(), "unhealthy", "tcp_failure", HC_WAIT);

    // list
    let (status, list) = hc(&gw, "");
    assert_eq!(status, 200, "{list}");
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array: {list}"));
    let names: Vec<&str> = items.iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(
        items.len(),
        2,
        "the two checked upstreams, not `plain`: {list}"
    );
    assert!(names.contains(&"/apisix/upstreams/1"), "{names:?}");
    assert!(names.contains(&"/apisix/routes/r1"), "{names:?}");
    for item in items {
        let nodes = item["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("nodes: {item}"));
        nodes.iter().for_each(assert_node_shape);
    }
    let u1 = items
        .iter()
        .find(|i| i["name"] == "/apisix/upstreams/1")
        .unwrap();
    assert_eq!(u1["type"], "http", "{u1}");
    assert_eq!(u1["nodes"].as_array().unwrap().len(), 2, "{u1}");
    assert_eq!(
        find_node(u1, a.port()).unwrap()["status"],
        "healthy",
        "{u1}"
    );
    assert_eq!(
        find_node(u1, d.port()).unwrap()["status"],
        "unhealthy",
        "{u1}"
    );
    let r1 = items
        .iter()
        .find(|i| i["name"] == "/apisix/routes/r1")
        .unwrap();
    assert_eq!(r1["type"], "tcp", "{r1}");

    // single
    let (status, one) = hc(&gw, "/upstreams/1");
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["name"], "/apisix/upstreams/1");
    assert_eq!(one["type"], "http");
    let ports = |v: &Value| {
        let mut p: Vec<u64> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["port"].as_u64().unwrap())
            .collect();
        p.sort_unstable();
        p
    };
    assert_eq!(
        ports(&one),
        ports(u1),
        "single and list agree: {one} vs {u1}"
    );
    one["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .for_each(assert_node_shape);
    let dn = find_node(&one, d.port()).unwrap();
    assert_eq!(dn["status"], "unhealthy", "{one}");
    let (status, route) = hc(&gw, "/routes/r1");
    assert_eq!(status, 200, "{route}");
    assert_eq!(route["name"], "/apisix/routes/r1", "{route}");
    assert_eq!(route["type"], "tcp", "{route}");

    // unknown ids, upstream without checks
    for path in ["/upstreams/nope", "/upstreams/plain", "/routes/nope"] {
        let (status, body) = hc(&gw, path);
        assert_eq!(status, 404, "GET /v1/healthcheck{path}: {body}");
    }

    // auth: key required; a viewer key reads
    for path in ["", "/upstreams/1"] {
        let (status, body) = hc_with_key(&gw, path, None);
        assert_eq!(status, 401, "no key on /v1/healthcheck{path}: {body}");
        let (status, body) = hc_with_key(&gw, path, Some("wrong-key"));
        assert_eq!(status, 401, "wrong key on /v1/healthcheck{path}: {body}");
        let viewer = gw.viewer_key.clone();
        let (status, body) = hc_with_key(&gw, path, Some(&viewer));
        assert_eq!(status, 200, "viewer key on /v1/healthcheck{path}: {body}");
    }
    // control API is on the admin listener, not the proxy
    let r = gw.proxy_get("/v1/healthcheck");
    assert_eq!(r.status, 404, "proxy listener: {r:?}");

    // metrics
    let (an, dn) = (a.node(), d.node());
    wait_metric(
        &gw,
        "portico_upstream_node_healthy",
        &[("upstream", "1"), ("node", an.as_str())],
        "healthy node is 1",
        |v| v == 1.0,
    );
    wait_metric(
        &gw,
        "portico_upstream_node_healthy",
        &[("upstream", "1"), ("node", dn.as_str())],
        "unhealthy node is 0",
        |v| v == 0.0,
    );
    wait_metric(
        &gw,
        "portico_upstream_health_transitions_total",
        &[
            ("upstream", "1"),
            ("node", dn.as_str()),
            ("to", "unhealthy"),
        ],
        "one transition to unhealthy",
        |v| v == 1.0,
    );
    let s = scrape(&gw);
    assert!(
        crate::support::prom::select(
            &s,
            "portico_upstream_node_healthy",
            &[("upstream", "plain")]
        )
        .is_empty(),
        "no health series for an upstream without checks"
    );
    assert!(
        crate::support::prom::select(
            &s,
            "portico_upstream_health_transitions_total",
            &[
                ("upstream", "1"),
                ("node", an.as_str()),
                ("to", "unhealthy")
            ]
        )
        .iter()
        .all(|x| x.value == 0.0),
        "a never transitioned"
    );

    // the upstream goes away: so do its entry and its gauge series
    gw.put("/upstreams/1", json!({"nodes": {a.node(): 1}}));
    gw.sync();
    let (status, body) = hc(&gw, "/upstreams/1");
    assert_eq!(status, 404, "{body}");
    let (_, list) = hc(&gw, "");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let ok = wait_until(WAIT, || {
        metric(&gw, "portico_upstream_node_healthy", &[("upstream", "1")]).is_none()
    });
    assert!(
        ok,
        "node_healthy series of a no-longer-checked upstream are dropped"
    );
}
