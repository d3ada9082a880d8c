//! `ip-restriction` and `real-ip` (issue 14) through the admin API, with APISIX's
//! documentation objects: who the client is, and whether it may in.

use crate::lua_common::*;
use crate::support::*;

fn route(gw: &Gateway, b: &Backend, plugins: Value) {
    gw.put(
        "/routes/r",
        json!({"uri": "/r", "plugins": plugins, "upstream": upstream(b)}),
    );
    gw.sync();
}

#[test]
fn ip_restriction_whitelist_and_blacklist() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's example: the client (127.0.0.1) is listed.
    route(
        &gw,
        &b,
        json!({"ip-restriction": {"whitelist": ["127.0.0.1", "113.74.26.106/24"]}}),
    );
    assert_eq!(gw.proxy_get("/r").status, 200);

    route(
        &gw,
        &b,
        json!({"ip-restriction": {"whitelist": ["192.168.0.1/24"]}}),
    );
    let resp = gw.proxy_get("/r");
    assert_eq!(resp.status, 403);
    assert_eq!(
        resp.json(),
        json!({"message": "Your IP address is not allowed"})
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));

    route(
        &gw,
        &b,
        json!({"ip-restriction": {"blacklist": ["127.0.0.0/8", "::1"],
                                  "message": "Do you want to do something bad?",
                                  "response_code": 404}}),
    );
    let resp = gw.proxy_get("/r");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.json()["message"], "Do you want to do something bad?");
    let hits = b.hits();
    assert_eq!(gw.proxy_get("/r").status, 404);
    assert_eq!(
        b.hits(),
        hits,
        "a refused request never reaches the upstream"
    );

    // Both lists, or an address that is not one: 400 naming the field.
    for (conf, field) in [
        (
            json!({"whitelist": ["1.1.1.1"], "blacklist": ["2.2.2.2"]}),
            "whitelist",
        ),
        (json!({"whitelist": ["1.1.1.300"]}), "whitelist[0]"),
        (
            json!({"blacklist": ["1.1.1.1"], "response_code": 500}),
            "response_code",
        ),
    ] {
        let (status, _, body) = gw.admin(
            "PUT",
            "/routes/bad",
            Some(json!({"uri": "/bad", "upstream": upstream(&b),
                        "plugins": {"ip-restriction": conf}})),
        );
        assert_eq!(status, 400, "{body}");
        let msg = body["error_msg"].as_str().unwrap();
        assert!(
            msg.contains("ip-restriction") && msg.contains(field),
            "{body}"
        );
    }
}

#[test]
fn real_ip_sets_the_client_for_later_plugins_lua_and_the_upstream() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(
        &gw,
        &b,
        json!({
            "real-ip": {"source": "http_x_real_ip", "trusted_addresses": ["127.0.0.0/24"]},
            "ip-restriction": {"blacklist": ["1.2.3.4"]},
            POST: serverless("access", &func(
                "ngx.req.set_header('X-Lua-Addr', ngx.var.remote_addr)")),
        }),
    );
    // The address from the header replaces the peer's.
    let resp = gw.proxy("GET", "/r", &[("X-Real-IP", "5.6.7.8")]);
    assert_eq!(resp.status, 200, "{resp:?}");
    let headers = &resp.json()["headers"];
    assert_eq!(headers["x-lua-addr"], "5.6.7.8", "ngx.var.remote_addr");
    assert_eq!(headers["x-forwarded-for"], "5.6.7.8");
    // And ip-restriction judges it.
    let resp = gw.proxy("GET", "/r", &[("X-Real-IP", "1.2.3.4")]);
    assert_eq!(resp.status, 403);
    // Without the header, or with junk, the peer stays the client.
    let resp = gw.proxy("GET", "/r", &[("X-Real-IP", "not-an-ip")]);
    assert_eq!(resp.json()["headers"]["x-lua-addr"], "127.0.0.1");

    // An untrusted peer's header is not believed.
    route(
        &gw,
        &b,
        json!({
            "real-ip": {"source": "http_x_real_ip", "trusted_addresses": ["10.0.0.0/8"]},
            "ip-restriction": {"blacklist": ["1.2.3.4"]},
        }),
    );
    let resp = gw.proxy("GET", "/r", &[("X-Real-IP", "1.2.3.4")]);
    assert_eq!(resp.status, 200);

    // X-Forwarded-For, recursively past the trusted proxies.
    route(
        &gw,
        &b,
        json!({
            "real-ip": {"source": "http_x_forwarded_for", "recursive": true,
                        "trusted_addresses": ["127.0.0.1", "10.0.0.0/8"]},
            "ip-restriction": {"whitelist": ["9.9.9.9"]},
        }),
    );
    let resp = gw.proxy("GET", "/r", &[("X-Forwarded-For", "9.9.9.9, 10.0.0.5")]);
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = gw.proxy("GET", "/r", &[("X-Forwarded-For", "8.8.8.8, 10.0.0.5")]);
    assert_eq!(resp.status, 403);

    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(json!({"uri": "/bad", "upstream": upstream(&b),
                    "plugins": {"real-ip": {"source": "no_such_var"}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("source"),
        "{body}"
    );
}
