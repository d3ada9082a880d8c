//! Consumers and authentication (issue 14): the `consumers` resource, `key-auth`,
//! `basic-auth`, `consumer-restriction`, `$consumer_name` and the consumer's own plugins,
//! driven through the admin API with APISIX's documentation examples.

use crate::lua_common::*;
use crate::support::*;

#[test]
fn consumers_resource_put_get_list_delete() {
    let gw = Gateway::start_default();
    // APISIX's documented form: PUT /consumers with the username in the body.
    let (status, _, body) = gw.admin(
        "PUT",
        "/consumers",
        Some(json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["key"], "/apisix/consumers/jack");
    assert_eq!(body["value"]["username"], "jack");
    // And by URL; a second PUT replaces (200).
    let (status, _, body) = gw.admin(
        "PUT",
        "/consumers/rose",
        Some(json!({"plugins": {"key-auth": {"key": "auth-two"}}, "desc": "r"})),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["value"]["username"], "rose");
    let (status, _, _) = gw.admin(
        "PUT",
        "/consumers",
        Some(json!({"username": "rose", "plugins": {"key-auth": {"key": "auth-2"}}})),
    );
    assert_eq!(status, 200);
    let one = gw.get("/consumers/rose");
    assert_eq!(one["value"]["plugins"]["key-auth"]["key"], "auth-2");
    let list = gw.get("/consumers");
    assert_eq!(list["total"], 2, "{list}");

    // The same key twice: 400 naming the field; a bad username; no POST/PATCH.
    let (status, _, body) = gw.admin(
        "PUT",
        "/consumers",
        Some(json!({"username": "tom", "plugins": {"key-auth": {"key": "auth-one"}}})),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("plugins.key-auth.key") && msg.contains("`jack`"),
        "{msg}"
    );
    let (status, _, body) = gw.admin("PUT", "/consumers", Some(json!({"username": "a b"})));
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = gw.admin("PUT", "/consumers", Some(json!({"desc": "x"})));
    assert_eq!(status, 400);
    let (status, _, _) = gw.admin(
        "PUT",
        "/consumers",
        Some(json!({"username": "tom", "plugins": {"no-such-plugin": {}}})),
    );
    assert_eq!(status, 400);
    let (status, _, _) = gw.admin("POST", "/consumers", Some(json!({"username": "x"})));
    assert_eq!(status, 405);
    let (status, _, _) = gw.admin("PATCH", "/consumers/jack", Some(json!({"desc": "x"})));
    assert_eq!(status, 405);

    let (status, _, body) = gw.admin("DELETE", "/consumers/jack", None);
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = gw.admin("GET", "/consumers/jack", None);
    assert_eq!(status, 404);
    assert_eq!(gw.get("/consumers")["total"], 1);
}

#[test]
fn key_auth_authenticates_by_header_and_query() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/anything/*", "plugins": {"key-auth": {}}, "upstream": upstream(&b)}),
    );
    gw.put(
        "/routes/2",
        json!({"uri": "/hidden/*", "plugins": {"key-auth": {"hide_credentials": true, "header": "X-Key"}},
               "upstream": upstream(&b)}),
    );
    gw.sync();

    let r = gw.proxy_get("/anything/a");
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "Missing API key in request"}));
    let r = gw.proxy("GET", "/anything/a", &[("apikey", "wrong")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "Invalid API key in request"}));

    let r = gw.proxy("GET", "/anything/a", &[("apikey", "auth-one")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["apikey"], "auth-one");
    assert_eq!(r.json()["headers"]["x-consumer-username"], "jack");
    let r = gw.proxy_get("/anything/a?apikey=auth-one");
    assert_eq!(r.status, 200);

    // hide_credentials: neither the header nor the argument reaches the upstream.
    let r = gw.proxy("GET", "/hidden/a", &[("X-Key", "auth-one")]);
    assert_eq!(r.status, 200);
    assert!(r.json()["headers"].get("x-key").is_none(), "{}", r.text());
    let r = gw.proxy_get("/hidden/a?apikey=auth-one&x=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["query"], "x=1", "{}", r.text());

    // A consumer deleted: its key stops working at the next request.
    gw.admin("DELETE", "/consumers/jack", None);
    gw.sync();
    let r = gw.proxy("GET", "/anything/a", &[("apikey", "auth-one")]);
    assert_eq!(r.status, 401);
}

#[test]
fn basic_auth_and_consumer_restriction() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/consumers",
        json!({"username": "foo", "plugins": {"basic-auth": {"username": "foo", "password": "bar"}}}),
    );
    gw.put(
        "/consumers",
        json!({"username": "baz", "plugins": {"basic-auth": {"username": "baz", "password": "qux"}}}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/hello", "upstream": upstream(&b), "plugins": {
            "basic-auth": {},
            "consumer-restriction": {"whitelist": ["foo"]}
        }}),
    );
    gw.sync();
    let r = gw.proxy_get("/hello");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm='.'"));
    assert_eq!(
        r.json(),
        json!({"message": "Missing authorization in request"})
    );
    // foo:bar
    let r = gw.proxy("GET", "/hello", &[("Authorization", "Basic Zm9vOmJhcg==")]);
    assert_eq!(r.status, 200, "{r:?}");
    // foo:wrong
    let r = gw.proxy("GET", "/hello", &[("Authorization", "Basic Zm9vOndyb25n")]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "Invalid user authorization"}));
    // baz:qux authenticates but is not on the whitelist.
    let r = gw.proxy("GET", "/hello", &[("Authorization", "Basic YmF6OnF1eA==")]);
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        json!({"message": "The consumer_name is forbidden."})
    );
}

#[test]
fn consumer_name_reaches_lua_and_the_consumers_own_plugins_run() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // The consumer's own plugin: a Lua function in access that tags the request.
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {
            "key-auth": {"key": "auth-one"},
            POST: serverless("access", &func("ngx.req.set_header('X-Via-Consumer', 'yes')"))
        }}),
    );
    gw.put(
        "/consumers",
        json!({"username": "rose", "plugins": {"key-auth": {"key": "auth-two"}}}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/r", "upstream": upstream(&b), "plugins": {
            "key-auth": {},
            PRE: serverless("access", &func(
                "ngx.req.set_header('X-Consumer-Seen', ngx.var.consumer_name or 'none')"))
        }}),
    );
    gw.sync();
    let r = gw.proxy("GET", "/r", &[("apikey", "auth-one")]);
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-seen"], "jack", "{h}");
    assert_eq!(h["x-via-consumer"], "yes", "{h}");
    let r = gw.proxy("GET", "/r", &[("apikey", "auth-two")]);
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-seen"], "rose", "{h}");
    assert!(h.get("x-via-consumer").is_none(), "only jack's plugin: {h}");
}

#[test]
fn the_access_log_names_the_consumer() {
    let gw = Gateway::start(GatewayOpts {
        extra_yaml: "log:\n  access:\n    path: stdout\n    json: true\n    format: \"$uri $consumer_name\"\n"
            .to_owned(),
        ..Default::default()
    });
    let b = Backend::start("b");
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/logged/*", "plugins": {"key-auth": {}}, "upstream": upstream(&b)}),
    );
    gw.sync();
    let marker = random_string(10);
    let r = gw.proxy(
        "GET",
        &format!("/logged/{marker}"),
        &[("apikey", "auth-one")],
    );
    assert_eq!(r.status, 200);
    let line = wait_for(WAIT, "the access line", || {
        gw.logs()
            .lines()
            .find(|l| l.starts_with('{') && l.contains(&marker))
            .map(str::to_owned)
    });
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["consumer_name"], "jack", "{line}");
}

#[test]
fn plugins_all_and_reload() {
    let gw = Gateway::start_default();
    let all = gw.get("/plugins?all=true");
    assert_eq!(all["key-auth"]["priority"], 2500, "{all}");
    assert_eq!(all["key-auth"]["type"], "auth");
    assert_eq!(all["basic-auth"]["priority"], 2520);
    assert_eq!(all["consumer-restriction"]["priority"], 2400);
    assert_eq!(all["limit-count"]["type"], "other");
    assert_eq!(
        all["key-auth"]["schema"]["properties"]["header"]["default"],
        "apikey"
    );
    let list = gw.get("/plugins/list");
    for name in ["key-auth", "basic-auth", "consumer-restriction"] {
        assert!(list.as_array().unwrap().iter().any(|n| n == name), "{list}");
    }
    let resp = gw
        .admin_raw("PUT", "/plugins/reload", None, Some(&gw.admin_key))
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "done");
}

/// HS256 over `{"key":"user-key","exp":4102444800}` (year 2100) with `my-secret-key`.
const JWT_VALID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJ1c2VyLWtleSIsImV4cCI6NDEwMjQ0NDgwMH0.Vvic3mhd6gbgARxkxqhMpPP3ztQv08bELL9zrsGED8o";
/// The same key, expired in 2020.
const JWT_EXPIRED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJrZXkiOiJ1c2VyLWtleSIsImV4cCI6MTYwMDAwMDAwMH0.0GafznJGv8TyxVGE2H5QWmF5OtLq-k5s0z97wt2udm0";

#[test]
fn jwt_auth_hs256_from_header_query_and_cookie() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's documentation example.
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"jwt-auth": {"key": "user-key", "secret": "my-secret-key"}}}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/jwt", "plugins": {"jwt-auth": {}}, "upstream": upstream(&b)}),
    );
    gw.sync();
    let r = gw.proxy_get("/jwt");
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "Missing JWT token in request"}));
    let r = gw.proxy("GET", "/jwt", &[("Authorization", JWT_VALID)]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["headers"]["x-consumer-username"], "jack");
    let r = gw.proxy(
        "GET",
        "/jwt",
        &[("Authorization", &format!("Bearer {JWT_VALID}"))],
    );
    assert_eq!(r.status, 200);
    let r = gw.proxy_get(&format!("/jwt?jwt={JWT_VALID}"));
    assert_eq!(r.status, 200);
    let r = gw.proxy(
        "GET",
        "/jwt",
        &[("Cookie", &format!("a=1; jwt={JWT_VALID}"))],
    );
    assert_eq!(r.status, 200);
    let r = gw.proxy("GET", "/jwt", &[("Authorization", JWT_EXPIRED)]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json(), json!({"message": "failed to verify jwt"}));
    // HS256 without a secret is a 400 naming the field.
    let (status, _, body) = gw.admin(
        "PUT",
        "/consumers",
        Some(json!({"username": "rose", "plugins": {"jwt-auth": {"key": "k2"}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("jwt-auth"),
        "{body}"
    );
}

#[test]
fn plugin_configs_merge_under_the_routes_plugins_and_are_reference_checked() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/consumers",
        json!({"username": "jack", "plugins": {"key-auth": {"key": "auth-one"}}}),
    );
    gw.put(
        "/plugin_configs/1",
        json!({"desc": "auth and an id", "plugins": {
            "key-auth": {},
            "request-id": {"header_name": "X-From-Config"}
        }}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/pc", "plugin_config_id": "1", "upstream": upstream(&b),
               "plugins": {"request-id": {"header_name": "X-From-Route"}}}),
    );
    gw.sync();
    let r = gw.proxy_get("/pc");
    assert_eq!(r.status, 401, "key-auth from the plugin config runs");
    let r = gw.proxy("GET", "/pc", &[("apikey", "auth-one")]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-from-route").is_some(),
        "the route's own conf wins"
    );
    assert!(r.header("x-from-config").is_none());

    // A missing plugin config is a 400; a referenced one is not deleted without force.
    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/2",
        Some(json!({"uri": "/x", "plugin_config_id": "nope", "upstream": upstream(&b)})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("plugin_config_id"),
        "{body}"
    );
    let (status, _, body) = gw.admin("DELETE", "/plugin_configs/1", None);
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = gw.admin("DELETE", "/plugin_configs/1?force=true", None);
    assert_eq!(status, 200, "{body}");
    gw.sync();
    assert_eq!(
        gw.proxy_get("/pc").status,
        200,
        "its plugins are gone with it"
    );
}

#[test]
fn consumer_groups_plugins_run_for_their_consumers() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/consumer_groups/company_a",
        json!({"plugins": {POST: serverless("access", &func("ngx.req.set_header('X-Group', 'a')"))}}),
    );
    gw.put(
        "/consumers",
        json!({"username": "jack", "group_id": "company_a", "plugins": {"key-auth": {"key": "auth-one"}}}),
    );
    gw.put(
        "/routes/1",
        json!({"uri": "/g", "plugins": {"key-auth": {}}, "upstream": upstream(&b)}),
    );
    gw.sync();
    let r = gw.proxy("GET", "/g", &[("apikey", "auth-one")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-group"], "a", "{}", r.text());

    let (status, _, body) = gw.admin(
        "PUT",
        "/consumers",
        Some(json!({"username": "rose", "group_id": "nope"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("group_id"),
        "{body}"
    );
    let (status, _, body) = gw.admin("DELETE", "/consumer_groups/company_a", None);
    assert_eq!(status, 400, "referenced: {body}");
    let (status, _, _) = gw.admin("DELETE", "/consumer_groups/company_a?force=true", None);
    assert_eq!(status, 200);
}
