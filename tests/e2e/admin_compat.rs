//! Admin API details APISIX clients rely on (issue 16): the DELETE envelope, `PUT` on the
//! collection with `id` in the body, schema defaults on reads.

use crate::support::*;

fn bodies() -> Vec<(&'static str, Value)> {
    let up = json!({"nodes": {"127.0.0.1:1980": 1}});
    vec![
        ("upstreams", up.clone()),
        ("services", json!({"upstream": up.clone()})),
        ("routes", json!({"uri": "/compat", "upstream": up})),
        ("global_rules", json!({"plugins": {}})),
    ]
}

#[test]
fn delete_answers_the_etcd_delete_count_for_every_kind() {
    let gw = Gateway::start_default();
    for (res, body) in bodies() {
        let path = format!("/{res}/abc-{res}");
        gw.put(&path, body);
        let (status, _, resp) = gw.admin("DELETE", &path, None);
        assert_eq!(status, 200, "DELETE {path}: {resp}");
        assert_eq!(
            resp,
            json!({"deleted": "1", "key": format!("/apisix/{res}/abc-{res}")}),
            "DELETE {path}"
        );
    }
}

#[test]
fn put_on_the_collection_uses_the_body_id_for_every_kind() {
    let gw = Gateway::start_default();
    for (res, mut body) in bodies() {
        body["id"] = json!(format!("b-{res}"));
        let (status, _, resp) = gw.admin("PUT", &format!("/{res}"), Some(body.clone()));
        assert_eq!(status, 201, "PUT /{res} creates: {resp}");
        assert_eq!(resp["key"], format!("/apisix/{res}/b-{res}"), "{resp}");
        // global rules have no `desc`; a changed `plugins` is the change there.
        let (field, new) = if res == "global_rules" {
            (
                "plugins",
                json!({"serverless-pre-function": {"functions": ["return function() end"]}}),
            )
        } else {
            ("desc", json!("replaced"))
        };
        body[field] = new.clone();
        let (status, _, resp) = gw.admin("PUT", &format!("/{res}"), Some(body));
        assert_eq!(status, 200, "PUT /{res} replaces: {resp}");
        assert_eq!(resp["value"][field], new, "{resp}");
        let got = gw.get(&format!("/{res}/b-{res}"));
        assert_eq!(got["value"][field], new, "{got}");
    }
    // An integer id is the id's text, as APISIX stores it.
    let (status, _, resp) = gw.admin(
        "PUT",
        "/upstreams",
        Some(json!({"id": 7, "nodes": {"127.0.0.1:1980": 1}})),
    );
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["key"], "/apisix/upstreams/7", "{resp}");
    // Without an id it is a 400 that says where the id goes.
    let (status, _, resp) = gw.admin("PUT", "/routes", Some(json!({"uri": "/x"})));
    assert_eq!(status, 400, "{resp}");
    let msg = resp["error_msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("missing route id") && msg.contains("`id`"),
        "{resp}"
    );
}

#[test]
fn reads_show_schema_defaults() {
    let gw = Gateway::start_default();
    for (res, body) in bodies() {
        gw.put(&format!("/{res}/d"), body);
    }
    let route = gw.get("/routes/d")["value"].clone();
    assert_eq!(route["priority"], 0, "{route}");
    assert_eq!(route["status"], 1, "{route}");
    let upstream = gw.get("/upstreams/d")["value"].clone();
    let service = gw.get("/services/d")["value"].clone();
    for up in [&upstream, &route["upstream"], &service["upstream"]] {
        assert_eq!(up["type"], "roundrobin", "{up}");
        assert_eq!(up["scheme"], "http", "{up}");
        assert_eq!(up["pass_host"], "pass", "{up}");
        assert_eq!(up["hash_on"], "vars", "{up}");
    }
    // Lists and write answers show them too; a value that was given wins.
    let list = gw.get("/routes");
    assert_eq!(list["list"][0]["value"]["status"], 1, "{list}");
    let written = gw.put(
        "/routes/d",
        json!({"uri": "/compat", "priority": 5, "status": 0, "upstream_id": "d"}),
    );
    assert_eq!(written["value"]["priority"], 5, "{written}");
    assert_eq!(written["value"]["status"], 0, "{written}");
}

#[test]
fn configs_accepts_the_api_driven_standalone_body() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    let put = |body: Value, digest: &str| {
        let req = Request::new("PUT", "/apisix/admin/configs")
            .header("X-API-KEY", &gw.admin_key)
            .header("Content-Type", "application/json")
            .header("X-Digest", digest)
            .body(body.to_string().into_bytes());
        let r = http::send(gw.admin_addr(), &req).expect("PUT /configs");
        (r.status, r.json())
    };
    let body = |up_node: &str, routes_v: u64, ups_v: u64| {
        json!({
            "routes_conf_version": routes_v,
            "upstreams_conf_version": ups_v,
            "consumers_conf_version": 1,
            "routes": [{"modifiedIndex": routes_v, "id": "r1", "uri": "/sa", "upstream_id": "u1"}],
            "upstreams": [{"modifiedIndex": ups_v, "id": "u1", "type": "roundrobin", "nodes": {up_node: 1}}],
            "consumers": [],
            "ssls": [],
        })
    };
    let backend = |gw: &Gateway| -> String {
        let v: Value = gw.proxy_get("/sa").json();
        v["backend"].as_str().unwrap_or_default().to_string()
    };

    let (status, resp) = put(body(&a.node(), 1000, 1000), "d1");
    assert_eq!(status, 200, "{resp}");
    assert_eq!(backend(&gw), "a");
    let cfg = gw.get("/configs");
    assert_eq!(cfg["routes_conf_version"], 1000, "{cfg}");
    assert_eq!(cfg["upstreams_conf_version"], 1000, "{cfg}");
    assert!(cfg["routes"][0].get("modifiedIndex").is_none(), "{cfg}");

    // Same digest: skipped even with a different body.
    let (status, resp) = put(body(&b.node(), 1000, 1001), "d1");
    assert_eq!(status, 200, "{resp}");
    assert_eq!(backend(&gw), "a", "a repeated X-Digest is not applied");

    // Upstreams at a higher version: replaced; routes at the same version: kept as
    // they run, whatever the body says about them.
    let mut next = body(&b.node(), 1000, 1001);
    next["routes"][0]["uri"] = json!("/ignored");
    let (status, resp) = put(next, "d2");
    assert_eq!(status, 200, "{resp}");
    assert_eq!(backend(&gw), "b");
    assert_eq!(gw.get("/routes/r1")["value"]["uri"], "/sa");

    // A stale version is refused and changes nothing.
    let (status, resp) = put(body(&a.node(), 1000, 999), "d3");
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("upstreams_conf_version"),
        "{resp}"
    );
    assert_eq!(backend(&gw), "b");

    // A foreign kind with content is refused, naming it.
    let mut foreign = body(&a.node(), 1001, 1002);
    foreign["stream_routes"] = json!([{"id": "s1"}]);
    let (status, resp) = put(foreign, "d4");
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error_msg"]
            .as_str()
            .unwrap_or_default()
            .starts_with("stream_routes:"),
        "{resp}"
    );
    assert_eq!(backend(&gw), "b");

    // Kinds Portico has (consumers since issue 14) are resource lists like routes.
    let mut ours = body(&a.node(), 1001, 1002);
    ours["consumers"] = json!([{"username": "jack"}]);
    ours["consumers_conf_version"] = json!(2);
    let (status, resp) = put(ours, "d5");
    assert_eq!(status, 200, "{resp}");
    assert_eq!(gw.get("/consumers/jack")["value"]["username"], "jack");
}
