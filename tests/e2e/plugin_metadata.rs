//! `/apisix/admin/plugin_metadata/{plugin_name}` (issue 14) through the admin API, with
//! APISIX's `cors` metadata (`allow_origins` sets used by `allow_origins_by_metadata`,
//! the objects of APISIX's own cors tests).

use crate::lua_common::*;
use crate::support::*;

/// APISIX's `t/plugin/cors3.t` metadata, extra field included (its schema allows them).
fn cors_metadata() -> Value {
    json!({
        "allow_origins": {
            "key_1": "https://domain.com",
            "key_2": "https://sub.domain.com,https://sub2.domain.com",
            "key_3": "*"
        },
        "inactive_timeout": 1
    })
}

fn allowed_origin(gw: &Gateway, origin: &str) -> Option<String> {
    let resp = gw.proxy("GET", "/hello", &[("Origin", origin)]);
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.header("access-control-allow-origin")
        .map(str::to_string)
}

#[test]
fn plugin_metadata_crud_has_apisix_envelopes() {
    let gw = Gateway::start_default();
    let (status, _, body) = gw.admin("PUT", "/plugin_metadata/cors", Some(cors_metadata()));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"], "/apisix/plugin_metadata/cors");
    assert_eq!(body["value"]["id"], "cors");
    assert_eq!(
        body["value"]["allow_origins"]["key_1"],
        "https://domain.com"
    );
    assert_eq!(body["value"]["inactive_timeout"], 1);
    assert!(body["value"].get("create_time").is_none(), "{body}");
    let first = body["modifiedIndex"].as_u64().unwrap();

    let (status, _, body) = gw.admin("PUT", "/plugin_metadata/cors", Some(cors_metadata()));
    assert_eq!(status, 200, "{body}");
    assert!(body["modifiedIndex"].as_u64().unwrap() > first);

    let got = gw.get("/plugin_metadata/cors");
    assert_eq!(got["value"]["allow_origins"]["key_3"], "*");
    let list = gw.get("/plugin_metadata");
    assert_eq!(list["total"], 1);
    assert_eq!(list["list"][0]["key"], "/apisix/plugin_metadata/cors");

    let (status, _, body) = gw.admin("PUT", "/plugin_metadata", Some(cors_metadata()));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_msg"], "missing plugin name");

    for method in ["POST", "PATCH"] {
        let path = if method == "POST" {
            "/plugin_metadata"
        } else {
            "/plugin_metadata/cors"
        };
        let (status, _, body) = gw.admin(method, path, Some(json!({})));
        assert_eq!(status, 405, "{method}: {body}");
        assert_eq!(
            body["error_msg"],
            format!("not supported `{method}` method for plugin_metadata")
        );
    }

    // `?all=true` lists the metadata schema of the plugins that take metadata.
    let all = gw.get("/plugins?all=true");
    assert_eq!(
        all["cors"]["metadata_schema"]["properties"]["allow_origins"]["type"],
        "object"
    );
    assert!(all["key-auth"].get("metadata_schema").is_none());

    let (status, _, body) = gw.admin("DELETE", "/plugin_metadata/cors", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["key"], "/apisix/plugin_metadata/cors");
    let (status, _, _) = gw.admin("GET", "/plugin_metadata/cors", None);
    assert_eq!(status, 404);
    let (status, _, _) = gw.admin("DELETE", "/plugin_metadata/cors", None);
    assert_eq!(status, 404);
}

#[test]
fn plugin_metadata_is_checked_against_the_plugin() {
    let gw = Gateway::start_default();
    let before = gw.get("/plugin_metadata");
    // An unknown plugin: APISIX's 400 "invalid plugin name".
    let (status, _, body) = gw.admin("PUT", "/plugin_metadata/no-such-plugin", Some(json!({})));
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("invalid plugin name") && msg.contains("no-such-plugin"),
        "{msg}"
    );
    // A plugin without a metadata schema: refused, naming it.
    let (status, _, body) = gw.admin("PUT", "/plugin_metadata/key-auth", Some(json!({"a": 1})));
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("`key-auth` has no metadata schema"), "{msg}");
    // A value against the schema: the JSON path of every bad field.
    let (status, _, body) = gw.admin(
        "PUT",
        "/plugin_metadata/cors",
        Some(json!({"allow_origins": {"a": "x.com", "b": "*,http://y.com", "c": "*"}})),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("allow_origins.a") && msg.contains("allow_origins.b"),
        "{msg}"
    );
    assert!(!msg.contains("allow_origins.c"), "{msg}");
    let (status, _, body) = gw.admin(
        "PUT",
        "/plugin_metadata/cors",
        Some(json!({"allow_origins": "https://a.com"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error_msg"]
        .as_str()
        .unwrap()
        .contains("allow_origins"));
    // Nothing of it was stored.
    assert_eq!(gw.get("/plugin_metadata"), before);
}

#[test]
fn cors_allow_origins_by_metadata_follows_the_metadata() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let route = json!({
        "uri": "/hello",
        "plugins": {"cors": {
            "allow_origins": "https://test.com",
            "allow_origins_by_metadata": ["key_1"]
        }},
        "upstream": upstream(&b)
    });
    // A route naming a set before the metadata exists: 400 naming the field, nothing
    // stored.
    let (status, _, body) = gw.admin("PUT", "/routes/1", Some(route.clone()));
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("allow_origins_by_metadata[0]") && msg.contains("key_1"),
        "{msg}"
    );
    let (status, _, _) = gw.admin("GET", "/routes/1", None);
    assert_eq!(status, 404);

    gw.put("/plugin_metadata/cors", cors_metadata());
    gw.put("/routes/1", route);
    gw.sync();
    assert_eq!(allowed_origin(&gw, "http://foo.example.org"), None);
    assert_eq!(
        allowed_origin(&gw, "https://test.com").as_deref(),
        Some("https://test.com")
    );
    assert_eq!(
        allowed_origin(&gw, "https://domain.com").as_deref(),
        Some("https://domain.com")
    );
    assert_eq!(allowed_origin(&gw, "https://sub.domain.com"), None);

    // A metadata change reaches the running route without touching it.
    gw.put(
        "/plugin_metadata/cors",
        json!({"allow_origins": {"key_1": "https://sub.domain.com,https://other.com"}}),
    );
    gw.sync();
    assert_eq!(allowed_origin(&gw, "https://domain.com"), None);
    assert_eq!(
        allowed_origin(&gw, "https://other.com").as_deref(),
        Some("https://other.com")
    );

    // Removing a set the route uses is refused (the route would lose it), and so is
    // deleting the metadata; the running configuration is untouched.
    let (status, _, body) = gw.admin(
        "PUT",
        "/plugin_metadata/cors",
        Some(json!({"allow_origins": {"key_2": "*"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("routes[id=1]"),
        "{body}"
    );
    let (status, _, body) = gw.admin("DELETE", "/plugin_metadata/cors", None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        allowed_origin(&gw, "https://other.com").as_deref(),
        Some("https://other.com")
    );

    // A `*` set echoes any origin (APISIX's `match_origins`).
    gw.put("/plugin_metadata/cors", cors_metadata());
    gw.put(
        "/routes/1",
        json!({"uri": "/hello", "upstream": upstream(&b), "plugins": {"cors": {
            "allow_origins": "https://test.com",
            "allow_origins_by_metadata": ["key_2", "key_3"]}}}),
    );
    gw.sync();
    assert_eq!(
        allowed_origin(&gw, "http://anything.example").as_deref(),
        Some("http://anything.example")
    );
}

#[test]
fn plugin_metadata_survives_a_restart_and_reads_from_configs() {
    let mut gw = Gateway::start_default();
    gw.put("/plugin_metadata/cors", cors_metadata());
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "k-jack"}}}),
    );
    gw.restart();
    let got = gw.get("/plugin_metadata/cors");
    assert_eq!(
        got["value"]["allow_origins"]["key_2"],
        cors_metadata()["allow_origins"]["key_2"]
    );
    let configs = gw.get("/configs");
    assert_eq!(configs["plugin_metadata"][0]["id"], "cors");
    assert_eq!(configs["consumers"][0]["username"], "jack");
    // The configs document takes it back as it is, consumers included.
    let (status, _, body) = gw.admin("PUT", "/configs", Some(configs));
    assert!(status < 300, "{status} {body}");
    assert_eq!(gw.get("/plugin_metadata")["total"], 1);
    assert_eq!(gw.get("/consumers")["total"], 1);
}

/// APISIX's `t/config-center-yaml/plugin-metadata.t` shape: `plugin_metadata` as a list
/// with `id`s in a standalone yaml file, used by a route's cors.
#[test]
fn plugin_metadata_from_a_yaml_file() {
    let b = Backend::start("b");
    let yaml = |origin: &str| {
        format!(
            "routes:\n  - id: r1\n    uri: /hello\n    upstream_id: u1\n    plugins:\n      cors:\n        \
             allow_origins: https://test.com\n        allow_origins_by_metadata:\n          - local\n\
             upstreams:\n  - id: u1\n    type: roundrobin\n    nodes:\n      \"{}\": 1\n\
             plugin_metadata:\n  - id: cors\n    allow_origins:\n      local: {origin}\n#END\n",
            b.node()
        )
    };
    let gw = Gateway::start(GatewayOpts {
        yaml_provider: Some(yaml("https://local.example")),
        ..Default::default()
    });
    let ok = wait_until(WAIT, || {
        gw.try_proxy(Request::get("/hello").header("Origin", "https://local.example"))
            .is_ok_and(|r| r.header("access-control-allow-origin") == Some("https://local.example"))
    });
    assert!(ok, "the yaml file's metadata never allowed its origin");
    assert_eq!(gw.get("/plugin_metadata/cors")["value"]["id"], "cors");

    gw.write_yaml_config(&yaml("https://changed.example"));
    let ok = wait_until(WAIT, || {
        gw.try_proxy(Request::get("/hello").header("Origin", "https://changed.example"))
            .is_ok_and(|r| {
                r.header("access-control-allow-origin") == Some("https://changed.example")
            })
    });
    assert!(ok, "a metadata change in the file never reached the route");
    assert_eq!(allowed_origin(&gw, "https://local.example"), None);
}
