//! Native plugins on the plugin seam (issue 11): `request-id`, alone and in one chain
//! with Lua plugins, ordered by priority across both kinds.

use crate::lua_common::*;
use crate::support::*;

#[test]
fn request_id_adds_the_header_upstream_and_in_the_response() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/routes/r",
        json!({"uri": "/r", "plugins": {"request-id": {}}, "upstream": upstream(&b)}),
    );
    gw.sync();
    let resp = gw.proxy_get("/r");
    assert_eq!(resp.status, 200);
    let id = resp
        .header("x-request-id")
        .expect("echoed to the client")
        .to_string();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(
        resp.json()["headers"]["x-request-id"],
        id.as_str(),
        "and sent upstream"
    );
    let other = gw.proxy_get("/r");
    assert_ne!(
        other.header("x-request-id"),
        Some(id.as_str()),
        "one per request"
    );

    // An incoming id is kept, upstream and back.
    let resp = gw.proxy("GET", "/r", &[("X-Request-Id", "given-1")]);
    assert_eq!(resp.header("x-request-id"), Some("given-1"));
    assert_eq!(resp.json()["headers"]["x-request-id"], "given-1");

    // Configuration: another header, not echoed; a bad conf is a 400 naming it.
    gw.put(
        "/routes/r",
        json!({"uri": "/r", "upstream": upstream(&b),
               "plugins": {"request-id": {"header_name": "X-Trace", "include_in_response": false}}}),
    );
    gw.sync();
    let resp = gw.proxy_get("/r");
    assert!(resp.header("x-trace").is_none());
    assert_eq!(
        resp.json()["headers"]["x-trace"].as_str().unwrap().len(),
        36
    );
    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(json!({"uri": "/bad", "upstream": upstream(&b),
                    "plugins": {"request-id": {"algorithm": "snowflake"}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("plugins.request-id"),
        "{body}"
    );

    // Listed with its schema.
    let list = gw.get("/plugins/list");
    assert!(
        list.as_array().unwrap().iter().any(|n| n == "request-id"),
        "{list}"
    );
    let schema = gw.get("/plugins/request-id");
    assert_eq!(
        schema["properties"]["header_name"]["default"],
        "X-Request-Id"
    );
}

#[test]
fn native_and_lua_steps_run_in_priority_order() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // serverless-pre-function (10000) runs after request-id (12015) in rewrite: it sees
    // the id; serverless-post-function (-2000) in header_filter runs after request-id's
    // header_filter and sees the echoed header.
    gw.put(
        "/routes/r",
        json!({"uri": "/r", "upstream": upstream(&b), "plugins": {
            "request-id": {},
            PRE: serverless("rewrite", &func(
                "ngx.req.set_header('X-Seen-Id', ngx.req.get_headers()['x-request-id'] or 'none')")),
            POST: serverless("header_filter", &func(
                "ngx.header['X-Echoed'] = ngx.header['X-Request-Id'] or 'none'")),
        }}),
    );
    gw.sync();
    let resp = gw.proxy_get("/r");
    assert_eq!(resp.status, 200);
    let id = resp.header("x-request-id").unwrap().to_string();
    let seen = resp.json()["headers"]["x-seen-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(seen, id, "Lua after the native rewrite saw its header");
    assert_eq!(resp.json()["headers"]["x-request-id"], id.as_str());
    assert_eq!(resp.header("x-echoed"), Some(id.as_str()));
}
