//! `proxy.request_driver`: Portico's own driver (the default) and `pingora-proxy`'s
//! answer the same requests alike. Every other e2e test runs on the default, so the
//! driver serves their bodyless requests; this one sets the two side by side.

use crate::support::*;

/// What a client and the backend saw of one request.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    /// Response header fields a gateway adds or passes on (not `Date` or ports).
    response: Vec<(String, String)>,
    /// The request's header fields as the backend echoed them, without the port the
    /// client connected to.
    upstream: Option<Value>,
    body_len: usize,
}

fn seen(r: &Response) -> Seen {
    let keep = [
        "content-type",
        "content-length",
        "transfer-encoding",
        "x-backend",
        "connection",
    ];
    let upstream = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get("headers").cloned())
        .map(|mut h| {
            if let Some(map) = h.as_object_mut() {
                map.remove("x-forwarded-port");
            }
            h
        });
    Seen {
        status: r.status,
        response: r
            .headers
            .iter()
            .filter(|(k, _)| keep.contains(&k.as_str()))
            .cloned()
            .collect(),
        upstream,
        body_len: r.body.len(),
    }
}

fn gateway(driver: &str, live: &Backend) -> Gateway {
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: format!("  request_driver: {driver}\n"),
        ..GatewayOpts::default()
    });
    gw.put(
        "/routes/r",
        json!({"uri": "/r/*", "upstream": {"nodes": {live.node(): 1}}}),
    );
    gw.put(
        "/routes/retry",
        json!({"uri": "/retry", "upstream": {"type": "roundrobin", "retries": 1,
               "nodes": {dead_addr(): 1, live.node(): 1}}}),
    );
    gw.put(
        "/routes/dead",
        json!({"uri": "/dead", "upstream": {"nodes": {dead_addr(): 1}}}),
    );
    gw.put(
        "/routes/rewrite",
        json!({"uri": "/rewrite", "plugins": {"proxy-rewrite": {"uri": "/r/rewritten",
               "headers": {"set": {"X-Set": "yes"}, "remove": ["X-Drop"]}}},
               "upstream": {"nodes": {live.node(): 1}, "pass_host": "rewrite",
               "upstream_host": "upstream.test"}}),
    );
    gw.sync();
    gw
}

fn requests() -> Vec<Request> {
    let host = ("Host", "example.test");
    vec![
        Request::get("/r/plain").headers(&[host, ("Accept", "*/*")]),
        // Hop-by-hop fields and the ones `Connection` names stay on this hop.
        Request::get("/r/hop").headers(&[
            host,
            ("Connection", "keep-alive, X-Secret"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret", "1"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("X_Underscored", "dropped"),
        ]),
        // A client may not have the gateway's own fields deleted.
        Request::get("/r/protected").headers(&[host, ("Connection", "X-Forwarded-For")]),
        Request::get("/r/quoted").headers(&[host, ("Connection", "\"x-a\"")]),
        Request::new("HEAD", "/r/head").headers(&[host]),
        Request::new("DELETE", "/r/delete").headers(&[host]),
        Request::get("/r/query?a=1&b=%20").headers(&[host]),
        Request::get("/r/%2e%2e/r/dots").headers(&[host]),
        Request::get("/nothing-here").headers(&[host]),
        Request::get("/retry").headers(&[host]),
        Request::get("/dead").headers(&[host]),
        Request::get("/rewrite").headers(&[host, ("X-Drop", "1")]),
        // A body: pingora-proxy's path on both.
        Request::new("POST", "/r/post")
            .headers(&[host])
            .body("hello"),
        Request::get("/r/http10").headers(&[host, ("Connection", "close")]),
    ]
}

#[test]
fn both_drivers_answer_alike() {
    let live = Backend::start("live");
    let own = gateway("portico", &live);
    let pingora = gateway("pingora", &live);
    for req in requests() {
        let a = seen(&own.proxy_req(req.clone()));
        let b = seen(&pingora.proxy_req(req.clone()));
        assert_eq!(a, b, "{} {}", req.method, req.path);
    }
    // And on one kept-alive connection, in order (without the requests after which
    // either driver closes the connection: `Connection: close`, and the errors).
    let closing = ["/r/http10", "/r/protected", "/r/quoted", "/dead"];
    let mut conns = [own.proxy_conn(), pingora.proxy_conn()];
    for req in requests()
        .iter()
        .filter(|r| !closing.contains(&r.path.as_str()))
    {
        let [a, b] = &mut conns;
        let a = seen(&a.send(req).expect("portico driver"));
        let b = seen(&b.send(req).expect("pingora driver"));
        assert_eq!(a, b, "kept alive: {} {}", req.method, req.path);
    }
}

#[test]
fn hop_by_hop_fields_do_not_reach_the_upstream() {
    let live = Backend::start("live");
    let gw = gateway("portico", &live);
    let r = gw.proxy_req(Request::get("/r/hop").headers(&[
        ("Connection", "keep-alive, X-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret", "1"),
        ("TE", "trailers"),
        ("Proxy-Authorization", "Basic eDp5"),
        ("X-Kept", "1"),
    ]));
    assert_eq!(r.status, 200, "{r:?}");
    let headers = &r.json()["headers"];
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            headers.get(gone).is_none(),
            "{gone} reached the upstream: {headers}"
        );
    }
    assert_eq!(headers["x-kept"], "1");
    let r = gw.proxy_req(Request::get("/r/x").header("Connection", "X-Forwarded-For"));
    assert_eq!(r.status, 400, "{r:?}");
}
