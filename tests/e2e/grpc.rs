//! gRPC proxying (issue 12): upstream `scheme` `grpc` (h2c) and `grpcs` (h2 over TLS),
//! clients over h2c on a plain listener with `proxy.h2c: true` and over h2 on the TLS
//! listener; a real Python gRPC client and server (unary, server and bidirectional
//! streaming, an error status and trailing metadata passed through).

use std::net::{SocketAddr, TcpStream};

use crate::support::backend::{tls_cert_path, tls_key_path};
use crate::support::grpc::{call_all, GrpcServer};
use crate::support::tls::{issue, Algo};
use crate::support::*;

fn grpc_route(gw: &Gateway, scheme: &str, node: &str) {
    gw.put(
        "/routes/grpc",
        json!({
            "uri": "/test.Echo/*",
            "upstream": {"type": "roundrobin", "scheme": scheme, "nodes": {node: 1}},
        }),
    );
    gw.sync();
}

/// Everything the client's three calls must show.
fn assert_calls(got: &Value) {
    assert_eq!(got["unary"], "echo:hello", "{got}");
    assert_eq!(
        got["trailers"]["x-trailer"], "t1",
        "trailers reach the client: {got}"
    );
    assert_eq!(
        got["stream"],
        json!(["part-0", "part-1", "part-2"]),
        "{got}"
    );
    assert_eq!(
        got["error"],
        json!({"code": "NOT_FOUND", "message": "no such thing"}),
        "grpc-status and grpc-message pass through: {got}"
    );
}

#[test]
fn grpc_h2c_client_to_a_grpc_upstream() {
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: "  h2c: true\n".into(),
        ..Default::default()
    });
    let server = GrpcServer::start(None);
    grpc_route(&gw, "grpc", &server.node());
    assert_calls(&call_all(&gw.proxy_addr().to_string(), &[]));

    // A node without a port gets 80, as APISIX gives `grpc` (443 for `grpcs`).
    let (status, _, body) = gw.admin(
        "PUT",
        "/upstreams/u",
        Some(json!({"scheme": "grpc", "nodes": {"127.0.0.1": 1}})),
    );
    assert_eq!(status, 201, "{body}");
    let u = gw.get("/upstreams/u");
    assert_eq!(u["value"]["scheme"], "grpc", "{u}");
    let (status, _, body) = gw.admin(
        "PUT",
        "/upstreams/bad",
        Some(json!({"scheme": "grpcx", "nodes": {"127.0.0.1": 1}})),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap_or_default();
    assert!(msg.contains("scheme"), "the field is named: {msg}");
}

#[test]
fn grpc_h2_client_on_the_tls_listener_to_grpcs_and_grpc_upstreams() {
    let port = free_port();
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: format!("  ssl:\n    listen: [\"127.0.0.1:{port}\"]\n"),
        ..Default::default()
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(wait_until(WAIT, || TcpStream::connect(addr).is_ok()));
    let cert = issue(&["grpc.test"], Algo::Ecdsa, false);
    gw.put(
        "/ssls/1",
        json!({"cert": cert.cert_pem, "key": cert.key_pem, "snis": ["grpc.test"]}),
    );
    // The client trusts the gateway's (self-signed) certificate.
    let ca = gw.dir_path().join("gateway-cert.pem");
    std::fs::write(&ca, &cert.cert_pem).expect("write the gateway certificate");
    let ca = ca.to_string_lossy().into_owned();
    let client_args = ["--tls", ca.as_str(), "--sni", "grpc.test"];

    // grpcs: h2 over TLS to the node (its certificate is not verified: `tls.verify`
    // is off by default, as in APISIX).
    let tls_server = GrpcServer::start(Some((&tls_cert_path(), &tls_key_path())));
    grpc_route(&gw, "grpcs", &tls_server.node());
    assert_calls(&call_all(&addr.to_string(), &client_args));

    // grpc: the same client, h2c to the node.
    let plain_server = GrpcServer::start(None);
    grpc_route(&gw, "grpc", &plain_server.node());
    assert_calls(&call_all(&addr.to_string(), &client_args));
}
