//! `proxy-rewrite`, `redirect` and `response-rewrite` (issue 14) through the admin API,
//! with APISIX's documentation objects: the request that goes upstream, the redirect
//! the client gets, and the response it gets.

use crate::lua_common::*;
use crate::support::*;

fn route(gw: &Gateway, b: &Backend, uri: &str, plugins: Value) {
    gw.put(
        "/routes/r",
        json!({"uri": uri, "plugins": plugins, "upstream": upstream(b)}),
    );
    gw.sync();
}

#[test]
fn proxy_rewrite_changes_the_upstream_request() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's example object.
    route(
        &gw,
        &b,
        "/test/index.html",
        json!({"proxy-rewrite": {
            "uri": "/test/home.html",
            "host": "iresty.com",
            "headers": {
                "set": {"X-Api-Version": "v1", "X-Api-Engine": "apisix"},
                "add": {"X-Request-ID": "112233"},
                "remove": ["X-Api-Remove"]
            }
        }}),
    );
    let resp = gw.proxy(
        "GET",
        "/test/index.html?a=1",
        &[("X-Api-Remove", "x"), ("X-Request-ID", "000")],
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let echo = resp.json();
    assert_eq!(echo["path"], "/test/home.html");
    assert_eq!(echo["query"], "a=1", "the query goes along");
    let h = &echo["headers"];
    assert_eq!(h["host"], "iresty.com");
    assert_eq!(h["x-api-version"], "v1");
    assert_eq!(h["x-api-engine"], "apisix");
    assert_eq!(h["x-request-id"], "000, 112233", "added to the client's");
    assert!(h.get("x-api-remove").is_none(), "{h}");

    // regex_uri with captures, method, and a $var template in a header.
    route(
        &gw,
        &b,
        "/iresty/*",
        json!({"proxy-rewrite": {
            "regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1-$2-$3"],
            "method": "POST",
            "headers": {"X-Client": "$remote_addr", "X-Id": "$arg_id"}
        }}),
    );
    let echo = gw.proxy_get("/iresty/a/b/c?id=7").json();
    assert_eq!(echo["path"], "/a-b-c");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["headers"]["x-client"], "127.0.0.1");
    assert_eq!(echo["headers"]["x-id"], "7");
    // No match: the URI goes as it came.
    assert_eq!(gw.proxy_get("/iresty/x").json()["path"], "/iresty/x");

    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(json!({"uri": "/bad", "upstream": upstream(&b),
                    "plugins": {"proxy-rewrite": {"regex_uri": ["^/(", "/x"]}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("regex_uri"),
        "{body}"
    );
}

#[test]
fn redirect_answers_with_a_location() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's example objects.
    route(
        &gw,
        &b,
        "/hello",
        json!({"redirect": {"uri": "/test/default.html", "ret_code": 301}}),
    );
    let hits = b.hits();
    let resp = gw.proxy_get("/hello");
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location"), Some("/test/default.html"));
    assert!(resp.text().contains("301"), "nginx-style page: {resp:?}");
    assert_eq!(b.hits(), hits, "answered by the gateway");

    route(
        &gw,
        &b,
        "/hello/*",
        json!({"redirect": {"uri": "$uri/index.html", "append_query_string": true}}),
    );
    let resp = gw.proxy_get("/hello/a?x=1");
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("location"), Some("/hello/a/index.html?x=1"));

    route(
        &gw,
        &b,
        "/hello",
        json!({"redirect": {"http_to_https": true}}),
    );
    let resp = gw.proxy("GET", "/hello?q=1", &[("Host", "foo.com")]);
    assert_eq!(resp.status, 301);
    assert_eq!(resp.header("location"), Some("https://foo.com/hello?q=1"));

    route(
        &gw,
        &b,
        "/old/*",
        json!({"redirect": {"regex_uri": ["^/old/(.*)", "/new/$1"], "ret_code": 308}}),
    );
    let resp = gw.proxy_get("/old/page");
    assert_eq!(resp.status, 308);
    assert_eq!(resp.header("location"), Some("/new/page"));

    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(json!({"uri": "/bad", "upstream": upstream(&b),
                    "plugins": {"redirect": {"uri": "/a", "http_to_https": true}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("redirect"),
        "{body}"
    );
}

#[test]
fn response_rewrite_changes_status_headers_and_body() {
    let gw = Gateway::start_default();
    let mut b = Backend::start("b");
    // APISIX's example object.
    route(
        &gw,
        &b,
        "/test/index.html",
        json!({"response-rewrite": {
            "body": "{\"code\":\"ok\",\"message\":\"new json body\"}",
            "headers": {"set": {"X-Server-id": 3, "X-Server-status": "on",
                                "X-Server-balancer-addr": "$remote_addr"}},
            "vars": [["status", "==", 200]]
        }}),
    );
    let resp = gw.proxy_get("/test/index.html");
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({"code": "ok", "message": "new json body"})
    );
    assert_eq!(resp.header("x-server-id"), Some("3"));
    assert_eq!(resp.header("x-server-status"), Some("on"));
    assert_eq!(resp.header("x-server-balancer-addr"), Some("127.0.0.1"));
    // vars do not match a 500: the upstream's answer goes out as it is.
    b.set_status(500);
    let resp = gw.proxy_get("/test/index.html");
    assert_eq!(resp.status, 500);
    assert_eq!(resp.backend().as_deref(), Some("b"));
    assert!(resp.header("x-server-id").is_none());
    b.set_status(200);

    // Status, add/remove, and filters on a chunked upstream body.
    b.set_chunked(true);
    route(
        &gw,
        &b,
        "/f",
        json!({"response-rewrite": {
            "status_code": 203,
            "headers": {"add": ["X-Added: $arg_v"], "remove": ["X-Backend"]},
            "filters": [{"regex": "\"backend\":\"b\"", "replace": "\"backend\":\"rewritten\""},
                        {"regex": "/f", "scope": "global", "replace": "/F"}]
        }}),
    );
    let resp = gw.proxy_get("/f?v=9");
    assert_eq!(resp.status, 203);
    assert_eq!(resp.header("x-added"), Some("9"));
    assert!(resp.header("x-backend").is_none());
    assert_eq!(resp.json()["backend"], "rewritten");
    assert_eq!(resp.json()["path"], "/F");
    b.stop();

    // Also on a response the gateway writes (the redirect's).
    gw.put(
        "/routes/r",
        json!({"uri": "/gone", "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1": 1}},
               "plugins": {
            "redirect": {"uri": "/elsewhere"},
            "response-rewrite": {"headers": {"set": {"X-Rewritten": "yes"}}}
        }}),
    );
    gw.sync();
    let resp = gw.proxy_get("/gone");
    assert_eq!(resp.status, 302);
    assert_eq!(resp.header("x-rewritten"), Some("yes"));

    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(
            json!({"uri": "/bad", "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1": 1}},
                    "plugins": {"response-rewrite": {"body": "x",
                                "filters": [{"regex": "a", "replace": "b"}]}}}),
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("filters"),
        "{body}"
    );
}
