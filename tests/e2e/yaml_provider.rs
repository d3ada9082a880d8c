//! `config_provider: yaml`: resources from an APISIX standalone-style file,
//! reloaded on change; an invalid file keeps the last good config; admin
//! writes are refused.

use crate::support::prom;
use crate::support::*;

fn standalone(routes: &[(&str, &str)], upstream_node: &str) -> String {
    let mut s = String::from("routes:\n");
    for (id, uri) in routes {
        s += &format!("  - id: {id}\n    uri: {uri}\n    upstream_id: u1\n");
    }
    s += &format!(
        "upstreams:\n  - id: u1\n    type: roundrobin\n    nodes:\n      \"{upstream_node}\": 1\n"
    );
    s += "#END\n";
    s
}

/// Sum of every `portico_config_applies_total` sample: grows with each apply
/// attempt, successful or not.
fn applies(gw: &Gateway) -> f64 {
    let samples = prom::parse(&gw.metrics_text()).expect("metrics parse");
    prom::sum(&samples, "portico_config_applies_total", &[])
}

fn wait_status(gw: &Gateway, path: &str, status: u16) {
    let ok = wait_until(WAIT, || {
        gw.try_proxy(Request::get(path))
            .is_ok_and(|r| r.status == status)
    });
    assert!(ok, "{path} never answered {status}");
}

#[test]
fn yaml_file_is_served_reloaded_and_bad_files_are_ignored() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let gw = Gateway::start(GatewayOpts {
        yaml_provider: Some(standalone(&[("r1", "/hello")], &a.node())),
        ..Default::default()
    });

    wait_status(&gw, "/hello", 200);
    assert_eq!(gw.proxy_get("/hello").backend().as_deref(), Some("a"));
    assert_eq!(gw.proxy_get("/new").status, 404);

    // a new route and a changed upstream
    gw.write_yaml_config(&standalone(&[("r1", "/hello"), ("r2", "/new")], &b.node()));
    wait_status(&gw, "/new", 200);
    assert_eq!(gw.proxy_get("/new").backend().as_deref(), Some("b"));
    assert_eq!(gw.proxy_get("/hello").backend().as_deref(), Some("b"));

    // invalid files: the last good config keeps serving
    let node = a.node();
    let invalid_files = [
        // not YAML
        "routes:\n  - id: r1\n    uri: [unclosed\n#END\n".to_owned(),
        // unknown field
        format!(
            "routes:\n  - id: r1\n    uri: /hello\n    upstream_id: u1\n  - id: r3\n    uri: /bad\n    upstream_id: u1\n    bogus_field: 1\nupstreams:\n  - id: u1\n    nodes:\n      \"{node}\": 1\n#END\n"
        ),
        // dangling reference
        format!(
            "routes:\n  - id: r1\n    uri: /hello\n    upstream_id: u1\n  - id: r4\n    uri: /bad\n    upstream_id: missing\nupstreams:\n  - id: u1\n    nodes:\n      \"{node}\": 1\n#END\n"
        ),
    ];
    for bad in &invalid_files {
        let before = applies(&gw);
        gw.write_yaml_config(bad);
        assert!(
            wait_until(WAIT, || applies(&gw) > before),
            "the reloader picked the file up (portico_config_applies_total grows)\n{bad}"
        );
        for _ in 0..5 {
            let r = gw.proxy_get("/hello");
            assert_eq!(r.status, 200, "old route still served: {r:?}");
            assert_eq!(r.backend().as_deref(), Some("b"), "old upstream kept");
        }
        assert_eq!(gw.proxy_get("/new").status, 200);
        assert_eq!(
            gw.proxy_get("/bad").status,
            404,
            "nothing of the bad file applied"
        );
    }

    // fixing the file works again
    gw.write_yaml_config(&standalone(&[("r5", "/fixed")], &a.node()));
    wait_status(&gw, "/fixed", 200);
    wait_status(&gw, "/hello", 404);
}

#[test]
fn admin_writes_are_refused() {
    let a = Backend::start("a");
    let gw = Gateway::start(GatewayOpts {
        yaml_provider: Some(standalone(&[("r1", "/hello")], &a.node())),
        ..Default::default()
    });
    wait_status(&gw, "/hello", 200);
    let up = json!({"uri": "/x", "upstream": {"nodes": {a.node(): 1}}});
    for (method, path, body) in [
        ("PUT", "/routes/r9", Some(up.clone())),
        ("POST", "/routes", Some(up)),
        ("PATCH", "/routes/r1", Some(json!({"uri": "/changed"}))),
        ("DELETE", "/routes/r1", None),
    ] {
        let (status, _, resp) = gw.admin(method, path, body);
        assert!(
            status == 400 || status == 405,
            "{method} {path} in yaml mode: {status} {resp}"
        );
    }
    assert_eq!(gw.proxy_get("/hello").status, 200);
    assert_eq!(gw.proxy_get("/x").status, 404);
}
