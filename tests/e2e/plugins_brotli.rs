//! `brotli` (issue 14) through the admin API: bodies decoded with the `brotli` crate,
//! and the negotiation with `gzip` on the same route.

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

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096)
        .read_to_end(&mut out)
        .expect("a brotli body");
    out
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[test]
fn brotli_compresses_what_the_client_accepts() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // APISIX's documentation fields, with the backend's type.
    route(
        &gw,
        &b,
        json!({"brotli": {"types": ["application/json"], "min_length": 20, "comp_level": 6,
                          "mode": 1, "lgwin": 19, "lgblock": 0, "http_version": 1.1,
                          "vary": true}}),
    );
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "gzip, deflate, br")]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), Some("br"), "{resp:?}");
    assert_eq!(resp.header("vary"), Some("Accept-Encoding"));
    let plain: Value = serde_json::from_slice(&unbrotli(&resp.body)).unwrap();
    assert_eq!(plain["backend"], "b");
    assert_eq!(plain["path"], "/r");

    // A chunked upstream body streams through the encoder.
    b.set_chunked(true);
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "br")]);
    assert_eq!(resp.header("content-encoding"), Some("br"));
    let plain: Value = serde_json::from_slice(&unbrotli(&resp.body)).unwrap();
    assert_eq!(plain["path"], "/r");
    b.set_chunked(false);

    // Not accepted, refused with q=0, or HEAD: untouched.
    for accept in [None, Some("br;q=0"), Some("gzip")] {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("Accept-Encoding", a)).into_iter().collect();
        let resp = gw.proxy("GET", "/r", &headers);
        assert_eq!(resp.header("content-encoding"), None, "{accept:?}");
        let plain: Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(plain["path"], "/r");
    }
    let resp = gw.proxy("HEAD", "/r", &[("Accept-Encoding", "br")]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-encoding"), None);

    // A type not listed: untouched.
    route(&gw, &b, json!({"brotli": {}}));
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "br")]);
    assert_eq!(resp.header("content-encoding"), None);
}

#[test]
fn brotli_is_preferred_over_gzip_when_both_are_accepted() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    route(
        &gw,
        &b,
        json!({"gzip": {"types": "*"}, "brotli": {"types": "*"}}),
    );
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(resp.header("content-encoding"), Some("br"), "{resp:?}");
    let plain: Value = serde_json::from_slice(&unbrotli(&resp.body)).unwrap();
    assert_eq!(plain["path"], "/r");
    let resp = gw.proxy("GET", "/r", &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"), "{resp:?}");
    let plain: Value = serde_json::from_slice(&gunzip(&resp.body)).unwrap();
    assert_eq!(plain["path"], "/r");
}

#[test]
fn brotli_configuration_errors_name_the_field() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    for (conf, field) in [
        (json!({"comp_level": 12}), "comp_level"),
        (json!({"lgwin": 9}), "lgwin"),
        (json!({"mode": 3}), "mode"),
    ] {
        let (status, _, body) = gw.admin(
            "PUT",
            "/routes/r",
            Some(json!({"uri": "/r", "plugins": {"brotli": conf}, "upstream": upstream(&b)})),
        );
        assert_eq!(status, 400, "{body}");
        let msg = body["error_msg"].as_str().unwrap();
        assert!(
            msg.contains("plugins.brotli") && msg.contains(field),
            "{msg}"
        );
    }
    let (status, _, _) = gw.admin("GET", "/routes/r", None);
    assert_eq!(status, 404);
    let schema = gw.get("/plugins/brotli");
    assert_eq!(schema["properties"]["comp_level"]["default"], 6);
}
