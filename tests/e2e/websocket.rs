//! Websockets (issue 12): APISIX's `enable_websocket` on routes and services, with a
//! real websocket client and echo backend (`tokio-tungstenite`), on the plain and the
//! TLS listener; timeouts, metrics and the drain on shutdown with a websocket open.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Message;

use crate::support::tls::{issue, Algo, ClientOpts};
use crate::support::ws::{Handshake, WsBackend, WsClient};
use crate::support::*;

fn route(gw: &Gateway, id: &str, uri: &str, backend: &WsBackend, extra: Value) {
    let mut body = json!({
        "uri": uri,
        "upstream": {"type": "roundrobin", "nodes": {backend.node(): 1}},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    gw.put(&format!("/routes/{id}"), body);
}

fn open(h: Handshake) -> WsClient {
    match h {
        Handshake::Open(c) => *c,
        Handshake::Refused(status, body) => panic!("handshake refused: {status} {body}"),
    }
}

/// The status the gateway answered a handshake with when it was not proxied as one.
fn refused(h: Handshake) -> u16 {
    match h {
        Handshake::Open(_) => panic!("the websocket opened"),
        Handshake::Refused(status, _) => status,
    }
}

const HANDSHAKE: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

#[test]
fn ws_upgrade_is_forwarded_only_when_the_route_or_its_service_enables_it() {
    let gw = Gateway::start_default();
    let backend = WsBackend::start();
    gw.put("/services/on", json!({"enable_websocket": true}));
    route(
        &gw,
        "on",
        "/on",
        &backend,
        json!({"enable_websocket": true}),
    );
    route(&gw, "off", "/off", &backend, json!({}));
    route(&gw, "svc", "/svc", &backend, json!({"service_id": "on"}));
    // The route's own value wins over its service's.
    route(
        &gw,
        "svc-off",
        "/svc-off",
        &backend,
        json!({"service_id": "on", "enable_websocket": false}),
    );
    let addr = gw.proxy_addr();

    // On: 101, frames both ways (text, binary), the handshake forwarded normalised.
    let mut ws = open(WsClient::connect(addr, "ws.test", "/on"));
    ws.echo("hello");
    ws.send("ping-pong");
    assert_eq!(ws.recv(), Some(Message::text("ping-pong")));
    assert_eq!(backend.upgrades(), 1);
    assert_eq!(backend.last_header("upgrade").as_deref(), Some("websocket"));
    assert!(backend.last_header("x-forwarded-for").is_some());
    // The client closes: the backend sees its websocket end.
    ws.close();
    assert!(
        wait_until(WAIT, || backend.ended() == 1),
        "the backend's websocket ended after the client's close"
    );

    // Inherited from the service.
    let mut ws = open(WsClient::connect(addr, "ws.test", "/svc"));
    ws.echo("from the service");
    // The backend closes: the client gets its close frame, then the end of the stream.
    ws.send("close");
    match ws.recv() {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.reason.as_str(), "bye"),
        other => panic!("expected the backend's close frame, got {other:?}"),
    }
    assert_eq!(ws.recv(), None, "the stream ends after the close");
    assert_eq!(backend.upgrades(), 2);

    // Off (the default, and the route's `false` over its service's `true`): the request
    // is proxied as plain HTTP, without `Upgrade` and `Connection`.
    let plain_before = backend.plain();
    assert_eq!(refused(WsClient::connect(addr, "ws.test", "/off")), 200);
    assert_eq!(refused(WsClient::connect(addr, "ws.test", "/svc-off")), 200);
    let r = gw.proxy("GET", "/off", &HANDSHAKE);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "upgrade=;connection=", "{r:?}");
    assert_eq!(backend.plain(), plain_before + 3);
    assert_eq!(backend.upgrades(), 2, "no handshake reached the backend");

    // A switch on takes effect with the next request.
    route(
        &gw,
        "off",
        "/off",
        &backend,
        json!({"enable_websocket": true}),
    );
    gw.sync();
    open(WsClient::connect(addr, "ws.test", "/off")).echo("now on");

    // Each websocket is one request in the metrics, counted when it ends.
    let counted = wait_until(WAIT, || {
        let text = gw.metrics_text();
        let s = prom::parse(&text).expect("metrics parse");
        prom::sum(
            &s,
            "portico_http_requests_total",
            &[("route", "on"), ("code", "101")],
        ) == 1.0
    });
    assert!(counted, "one 101 for route on\n{}", gw.metrics_text());
}

/// A route's body filters (Lua `body_filter`, native ones such as `response-rewrite`'s
/// body) do not see the tunnel's bytes after a 101, as nginx passes an upgraded
/// connection around its output filters: frames reach both sides unchanged.
#[test]
fn ws_body_filters_do_not_touch_the_tunnel() {
    let gw = Gateway::start_default();
    let backend = WsBackend::start();
    let mut plugins = crate::lua_common::pre("body_filter", "ngx.arg[1] = 'changed'");
    plugins["response-rewrite"] = json!({"body": "replaced"});
    route(
        &gw,
        "f",
        "/f",
        &backend,
        json!({"enable_websocket": true, "plugins": plugins}),
    );
    let mut ws = open(WsClient::connect(gw.proxy_addr(), "ws.test", "/f"));
    ws.echo("first");
    ws.echo("second");
    ws.close();
}

#[test]
fn ws_an_active_websocket_outlives_the_route_read_timeout_an_idle_one_does_not() {
    let gw = Gateway::start_default();
    let backend = WsBackend::start();
    route(
        &gw,
        "t",
        "/t",
        &backend,
        json!({"enable_websocket": true, "timeout": {"connect": 2, "send": 2, "read": 2}}),
    );
    let mut ws = open(WsClient::connect(gw.proxy_addr(), "ws.test", "/t"));
    let start = Instant::now();
    let mut n = 0;
    // Frames every 250 ms for 2.5 times the read timeout.
    while start.elapsed() < Duration::from_secs(5) {
        ws.echo(&format!("message {n}"));
        n += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    // Idle (no frame either way) past the read timeout: closed, as nginx's
    // `proxy_read_timeout` closes an idle websocket.
    let idle = Instant::now();
    assert!(
        matches!(ws.recv(), None | Some(Message::Close(_))),
        "an idle websocket is closed after the read timeout"
    );
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "closed by the 2 s read timeout, not before: {waited:?}"
    );
}

#[test]
fn wss_on_the_tls_listener() {
    let port = free_port();
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: format!("  ssl:\n    listen: [\"127.0.0.1:{port}\"]\n"),
        ..Default::default()
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_until(WAIT, || TcpStream::connect(addr).is_ok()));
    let cert = issue(&["wss.test"], Algo::Ecdsa, false);
    gw.put(
        "/ssls/1",
        json!({"cert": cert.cert_pem, "key": cert.key_pem, "snis": ["wss.test"]}),
    );
    let backend = WsBackend::start();
    route(
        &gw,
        "on",
        "/on",
        &backend,
        json!({"enable_websocket": true}),
    );
    route(&gw, "off", "/off", &backend, json!({}));
    gw.sync();

    let opts = ClientOpts::sni("wss.test");
    let mut ws = open(WsClient::connect_tls(addr, "wss.test", "/on", &opts));
    ws.echo("over tls");
    assert_eq!(
        backend.last_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    ws.close();
    assert!(wait_until(WAIT, || backend.ended() == 1));

    // The backend closes a wss websocket.
    let mut ws = open(WsClient::connect_tls(addr, "wss.test", "/on", &opts));
    ws.send("close");
    assert!(matches!(ws.recv(), Some(Message::Close(_))));
    assert_eq!(ws.recv(), None);

    assert_eq!(
        refused(WsClient::connect_tls(addr, "wss.test", "/off", &opts)),
        200
    );
}

/// SIGTERM without waiting for the exit.
fn sigterm(gw: &Gateway) {
    let st = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(st.success());
}

#[test]
fn ws_an_open_websocket_is_served_while_draining_and_the_exit_follows_its_close() {
    let mut gw = Gateway::start(GatewayOpts {
        extra_yaml: "shutdown_grace_seconds: 30\n".into(),
        ..Default::default()
    });
    let backend = WsBackend::start();
    route(
        &gw,
        "on",
        "/on",
        &backend,
        json!({"enable_websocket": true}),
    );
    let mut ws = open(WsClient::connect(gw.proxy_addr(), "ws.test", "/on"));
    ws.echo("before");
    // A client that goes away without a close frame is not counted past its end.
    let mut gone = open(WsClient::connect(gw.proxy_addr(), "ws.test", "/on"));
    gone.echo("then gone");
    drop(gone);
    assert!(wait_until(WAIT, || backend.ended() == 1));
    sigterm(&gw);
    assert!(
        wait_until(WAIT, || TcpStream::connect(gw.proxy_addr()).is_err()),
        "the listener closes on SIGTERM"
    );
    // Still open while draining: in flight, like a slow request.
    ws.echo("while draining");
    assert!(gw.is_running(), "waits for the open websocket");
    let closed = Instant::now();
    ws.close();
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the websocket is closed");
    assert!(status.success(), "{status}");
    assert!(
        closed.elapsed() < Duration::from_secs(10),
        "exit within seconds of the close, not at the 30 s grace"
    );
}

#[test]
fn ws_a_websocket_left_open_does_not_hold_the_exit_past_the_grace_period() {
    let mut gw = Gateway::start(GatewayOpts {
        extra_yaml: "shutdown_grace_seconds: 2\n".into(),
        ..Default::default()
    });
    let backend = WsBackend::start();
    route(
        &gw,
        "on",
        "/on",
        &backend,
        json!({"enable_websocket": true}),
    );
    let mut ws = open(WsClient::connect(gw.proxy_addr(), "ws.test", "/on"));
    ws.echo("before");
    let signalled = Instant::now();
    sigterm(&gw);
    let status = gw.wait_exit(Duration::from_secs(20));
    assert!(status.is_some(), "exits although the websocket stays open");
    assert!(
        signalled.elapsed() < Duration::from_secs(15),
        "grace (2 s) + Pingora's shutdown timeout (5 s), with slack: {:?}",
        signalled.elapsed()
    );
    // The client sees its connection end.
    assert!(matches!(ws.recv(), None | Some(Message::Close(_))));
}
