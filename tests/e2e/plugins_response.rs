//! `cors`, `gzip` and `mocking` (issue 14) through the admin API, with APISIX's
//! documentation objects.

use std::io::Read;

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
fn cors_answers_preflight_and_marks_responses() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's example: the defaults.
    route(&gw, &b, json!({"cors": {}}));
    let hits = b.hits();
    let resp = gw.proxy(
        "OPTIONS",
        "/r",
        &[
            ("Origin", "http://a.com"),
            ("Access-Control-Request-Method", "POST"),
        ],
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(b.hits(), hits, "the gateway answers the preflight");
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
    assert_eq!(resp.header("access-control-allow-methods"), Some("*"));
    assert_eq!(resp.header("access-control-allow-headers"), Some("*"));
    assert_eq!(resp.header("access-control-max-age"), Some("5"));
    let resp = gw.proxy("GET", "/r", &[("Origin", "http://a.com")]);
    assert_eq!(resp.backend().as_deref(), Some("b"));
    assert_eq!(resp.header("access-control-allow-origin"), Some("*"));

    // APISIX's customised example: listed origins are echoed, others get nothing.
    route(
        &gw,
        &b,
        json!({"cors": {
            "allow_origins": "http://sub.domain.com,http://sub2.domain.com",
            "allow_methods": "GET,POST", "allow_headers": "headr1,headr2",
            "expose_headers": "ex-headr1,ex-headr2", "max_age": 50, "allow_credential": true
        }}),
    );
    let resp = gw.proxy("GET", "/r", &[("Origin", "http://sub2.domain.com")]);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://sub2.domain.com")
    );
    assert_eq!(
        resp.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(
        resp.header("access-control-allow-headers"),
        Some("headr1,headr2")
    );
    assert_eq!(
        resp.header("access-control-expose-headers"),
        Some("ex-headr1,ex-headr2")
    );
    assert_eq!(resp.header("access-control-max-age"), Some("50"));
    assert_eq!(
        resp.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(resp.header("vary"), Some("Origin"));
    let resp = gw.proxy("GET", "/r", &[("Origin", "http://evil.com")]);
    assert_eq!(resp.status, 200);
    assert!(resp.header("access-control-allow-origin").is_none());

    route(
        &gw,
        &b,
        json!({"cors": {"allow_origins_by_regex": [".*\\.test\\.com$"]}}),
    );
    let resp = gw.proxy("GET", "/r", &[("Origin", "http://a.test.com")]);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("http://a.test.com")
    );

    // Credentials with `*` anywhere: 400.
    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(json!({"uri": "/bad", "upstream": upstream(&b),
                    "plugins": {"cors": {"allow_credential": true}}})),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(
        msg.contains("cors") && msg.contains("allow_credential"),
        "{body}"
    );
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[test]
fn gzip_compresses_what_the_client_accepts() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's example object, with the backend's type.
    route(
        &gw,
        &b,
        json!({"gzip": {"types": ["application/json"], "min_length": 20, "comp_level": 5,
                        "vary": true, "buffers": {"number": 8, "size": 16384}}}),
    );
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "gzip, deflate")]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("gzip"), "{resp:?}");
    assert_eq!(resp.header("vary"), Some("Accept-Encoding"));
    let plain: Value = serde_json::from_slice(&gunzip(&resp.body)).unwrap();
    assert_eq!(plain["backend"], "b");
    assert_eq!(plain["path"], "/r");

    // A chunked upstream body streams through the compressor.
    b.set_chunked(true);
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    let plain: Value = serde_json::from_slice(&gunzip(&resp.body)).unwrap();
    assert_eq!(plain["path"], "/r");
    b.set_chunked(false);

    // Not accepted, refused with q=0, or a type not listed: untouched.
    for accept in [None, Some("gzip;q=0"), Some("br")] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let resp = gw.proxy("GET", "/r", &headers);
        assert!(resp.header("content-encoding").is_none(), "{accept:?}");
        assert_eq!(resp.json()["backend"], "b");
    }
    route(&gw, &b, json!({"gzip": {}}));
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "gzip")]);
    assert!(
        resp.header("content-encoding").is_none(),
        "default types are text/html only"
    );

    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/bad",
        Some(json!({"uri": "/bad", "upstream": upstream(&b),
                    "plugins": {"gzip": {"comp_level": 10}}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"].as_str().unwrap().contains("comp_level"),
        "{body}"
    );
}

#[test]
fn mocking_answers_without_the_upstream() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's example object.
    route(
        &gw,
        &b,
        json!({"mocking": {
            "content_type": "application/json",
            "response_status": 201,
            "response_example": "{\"a\":1,\"b\":2}",
            "response_headers": {"X-Mock": "yes"}
        }}),
    );
    let hits = b.hits();
    let resp = gw.proxy_get("/r");
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json(), json!({"a": 1, "b": 2}));
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("x-mock"), Some("yes"));
    assert!(resp.header("x-mock-by").unwrap().starts_with("Portico/"));
    assert_eq!(b.hits(), hits);

    route(
        &gw,
        &b,
        json!({"mocking": {"with_mock_header": false, "response_schema": {
            "type": "object",
            "properties": {"id": {"type": "integer", "example": 7},
                           "tags": {"type": "array", "items": {"type": "string"}}}
        }}}),
    );
    let resp = gw.proxy_get("/r");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"id": 7, "tags": ["string"]}));
    assert!(resp.header("x-mock-by").is_none());
}
