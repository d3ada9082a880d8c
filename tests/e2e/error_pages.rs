//! Responses the gateway writes itself (issue 16): a JSON `{"error_msg": ...}` body with
//! the right status for each case, the `Server` header (default, custom, none),
//! malformed requests counted and logged, and an unreachable node logged once per
//! interval rather than once per request.

use std::io::{Read, Write};
use std::time::Duration;

use crate::lua_common::{lua_route, pre};
use crate::support::prom;
use crate::support::*;

const SERVER: &str = concat!("Portico/", env!("CARGO_PKG_VERSION"));

/// Asserts a gateway-written JSON error: status, `error_msg` text, JSON content type,
/// and the `Server` header.
fn assert_error(r: &Response, status: u16, msg: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.json()["error_msg"], msg, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
    assert_eq!(r.header("server"), Some(SERVER), "{r:?}");
}

/// Sends raw bytes and returns the whole answer (the gateway closes after it).
fn raw(gw: &Gateway, bytes: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(gw.proxy_addr()).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(bytes).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn raw_body_json(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or(("", ""));
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()))
}

#[test]
fn every_gateway_written_error_is_json_with_the_server_header() {
    let gw = Gateway::start(GatewayOpts {
        lua: Some(LuaOpts {
            max_slice_ms: Some(200),
            ..Default::default()
        }),
        ..Default::default()
    });
    let ok = Backend::start("ok");
    let slow = Backend::start_with("slow", 200, Duration::from_secs(6));
    gw.put(
        "/routes/dead",
        json!({"uri": "/dead", "upstream": {"nodes": {dead_addr(): 1}}}),
    );
    gw.put(
        "/routes/slow",
        json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1},
               "timeout": {"connect": 1, "send": 1, "read": 1}}}),
    );
    gw.put(
        "/routes/zero",
        json!({"uri": "/zero", "upstream": {"nodes": {ok.node(): 0}}}),
    );
    gw.put(
        "/routes/ok",
        json!({"uri": "/ok", "upstream": {"nodes": {ok.node(): 1}}}),
    );
    lua_route(&gw, "noup", "/noup", None, pre("access", "local x = 1"));
    lua_route(
        &gw,
        "boom",
        "/boom",
        Some(&ok),
        pre("access", "error('boom')"),
    );
    lua_route(
        &gw,
        "spin",
        "/spin",
        Some(&ok),
        pre("access", "while true do end"),
    );
    lua_route(
        &gw,
        "hf",
        "/hf",
        Some(&ok),
        pre("balancer", "error('bad balancer')"),
    );
    gw.sync();

    assert_error(&gw.proxy_get("/no-such-route"), 404, "404 Route Not Found");
    assert_error(&gw.proxy_get("/dead"), 502, "502 Bad Gateway");
    assert_error(
        &gw.proxy_get("/zero"),
        503,
        "503 Service Temporarily Unavailable",
    );
    assert_error(
        &gw.proxy_get("/noup"),
        503,
        "missing upstream configuration in Route or Service",
    );
    assert_error(&gw.proxy_get("/slow"), 504, "504 Gateway Time-out");
    // The connection closes after a proxying error, and the answer says so.
    for path in ["/dead", "/slow"] {
        let r = gw.proxy_get(path);
        assert_eq!(r.header("connection"), Some("close"), "{path}: {r:?}");
    }
    assert_error(&gw.proxy_get("/boom"), 500, "500 Internal Server Error");
    assert_error(&gw.proxy_get("/spin"), 500, "500 Internal Server Error");
    assert_error(&gw.proxy_get("/hf"), 500, "500 Internal Server Error");

    // A proxied response carries the gateway's Server header too.
    let r = gw.proxy_get("/ok");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("server"), Some(SERVER), "{r:?}");
}

#[test]
fn malformed_requests_get_json_and_are_counted_and_logged() {
    let gw = Gateway::start_default();
    let answer = raw(&gw, b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains(&format!("Server: {SERVER}\r\n")),
        "{answer}"
    );
    assert_eq!(
        raw_body_json(&answer)["error_msg"],
        "400 Bad Request",
        "{answer}"
    );

    let answer = raw(
        &gw,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    assert!(!answer.contains("Pingora"), "{answer}");
    assert_eq!(
        raw_body_json(&answer)["error_msg"],
        "405 Not Allowed",
        "{answer}"
    );

    assert!(
        wait_until(WAIT, || {
            let s = prom::parse(&gw.metrics_text()).expect("metrics parse");
            prom::sum(
                &s,
                "portico_http_requests_total",
                &[("route", ""), ("code", "400")],
            ) == 1.0
                && prom::sum(
                    &s,
                    "portico_http_requests_total",
                    &[("route", ""), ("code", "405")],
                ) == 1.0
        }),
        "the edge's answers are counted\n{}",
        gw.metrics_text()
    );
    let log = gw.dir_path().join("logs").join("access.log");
    let lines = wait_for(WAIT, "two access log lines", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= 2).then_some(lines)
    });
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("] - \"-\" 400 0 ")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("] - \"-\" 405 0 ")),
        "{lines:?}"
    );
}

#[test]
fn server_header_can_be_changed_or_removed() {
    let b = Backend::start("b");
    for (setting, expected) in [("\"Edge/7\"", Some("Edge/7")), ("false", None)] {
        let gw = Gateway::start(GatewayOpts {
            extra_yaml: format!("server_header: {setting}\n"),
            ..Default::default()
        });
        gw.put(
            "/routes/r",
            json!({"uri": "/r", "upstream": {"nodes": {b.node(): 1}}}),
        );
        gw.sync();
        let proxied = gw.proxy_get("/r");
        assert_eq!(proxied.status, 200);
        assert_eq!(proxied.header("server"), expected, "{setting}: {proxied:?}");
        let local = gw.proxy_get("/none");
        assert_eq!(local.status, 404);
        assert_eq!(local.header("server"), expected, "{setting}: {local:?}");
        let answer = raw(&gw, b"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n");
        match expected {
            Some(v) => assert!(answer.contains(&format!("Server: {v}\r\n")), "{answer}"),
            None => assert!(!answer.to_ascii_lowercase().contains("server:"), "{answer}"),
        }
    }
}

#[test]
fn an_unreachable_node_is_logged_once_per_interval_not_per_request() {
    let gw = Gateway::start_default();
    let dead = dead_addr();
    gw.put(
        "/routes/dead",
        json!({"uri": "/dead", "upstream": {"nodes": {dead.clone(): 1}}}),
    );
    gw.sync();
    for _ in 0..10 {
        assert_eq!(gw.proxy_get("/dead").status, 502);
    }
    let logs = wait_for(WAIT, "the unreachable-node line", || {
        let logs = gw.logs();
        logs.contains("upstream unreachable").then_some(logs)
    });
    let mentions = logs
        .lines()
        .filter(|l| l.contains(&dead) && (l.contains("ERROR") || l.contains("WARN")))
        .count();
    assert_eq!(mentions, 1, "one line for ten refused requests:\n{logs}");
}
