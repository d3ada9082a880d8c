//! Router semantics (APISIX radixtree): matching, precedence, filters,
//! route -> service -> upstream resolution, forwarded headers, pass_host.

use crate::support::*;

fn up(b: &Backend) -> Value {
    json!({"type": "roundrobin", "nodes": {b.node(): 1}})
}

/// Which backend answered (None: not proxied), with the status for messages.
fn hit(gw: &Gateway, req: Request) -> (u16, Option<String>) {
    let r = gw.proxy_req(req);
    (r.status, r.backend())
}

fn expect(gw: &Gateway, req: Request, backend: Option<&str>) {
    let desc = format!("{} {} {:?}", req.method, req.path, req.headers);
    let (status, got) = hit(gw, req);
    match backend {
        Some(name) => {
            assert_eq!(status, 200, "{desc}: expected backend {name}");
            assert_eq!(got.as_deref(), Some(name), "{desc}");
        }
        None => assert_eq!(status, 404, "{desc}: expected no route, got {got:?}"),
    }
}

#[test]
fn proxies_path_and_query_and_404_without_route() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put("/routes/1", json!({"uri": "/hello", "upstream": up(&b)}));
    gw.sync();

    let r = gw.proxy_get("/hello?x=1&y=two%20words");
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json();
    assert_eq!(echo["backend"], "b");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/hello");
    assert_eq!(echo["query"], "x=1&y=two%20words");

    let r = gw.proxy("POST", "/hello", &[("X-Custom", "v1")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(
        r.json()["headers"]["x-custom"],
        "v1",
        "request headers forwarded"
    );

    for path in ["/nothing-here", "/hello/x", "/hell", "/"] {
        let r = gw.proxy_get(path);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert_eq!(
            r.json(),
            json!({"error_msg": "404 Route Not Found"}),
            "{path}"
        );
    }
    assert_eq!(b.hits(), 2, "404s never reach the backend");
}

#[test]
fn uri_precedence_exact_then_longest_prefix_then_priority() {
    let gw = Gateway::start_default();
    let exact = Backend::start("exact");
    let long = Backend::start("long");
    let short = Backend::start("short");
    let lo = Backend::start("lo");
    let hi = Backend::start("hi");
    // priority only orders routes of the same uri; it never beats a better uri match
    gw.put(
        "/routes/exact",
        json!({"uri": "/a/b", "upstream": up(&exact)}),
    );
    gw.put(
        "/routes/short",
        json!({"uri": "/a/*", "priority": 100, "upstream": up(&short)}),
    );
    gw.put(
        "/routes/long",
        json!({"uri": "/a/b/*", "priority": 50, "upstream": up(&long)}),
    );
    gw.put(
        "/routes/lo",
        json!({"uri": "/p/*", "priority": 1, "upstream": up(&lo)}),
    );
    gw.put(
        "/routes/hi",
        json!({"uri": "/p/*", "priority": 5, "upstream": up(&hi)}),
    );
    gw.sync();

    expect(&gw, Request::get("/a/b"), Some("exact"));
    expect(&gw, Request::get("/a/b/c"), Some("long"));
    expect(&gw, Request::get("/a/b/c/d?q=1"), Some("long"));
    expect(&gw, Request::get("/a/x"), Some("short"));
    expect(&gw, Request::get("/a/bc"), Some("short"));
    expect(&gw, Request::get("/p/x"), Some("hi"));

    // flip the priorities
    gw.write_ok("PATCH", "/routes/lo", json!({"priority": 10}));
    gw.sync();
    expect(&gw, Request::get("/p/x"), Some("lo"));

    // uris: any of the list
    gw.put(
        "/routes/multi",
        json!({"uris": ["/m1", "/m2/*"], "upstream": up(&exact)}),
    );
    gw.sync();
    expect(&gw, Request::get("/m1"), Some("exact"));
    expect(&gw, Request::get("/m2/z"), Some("exact"));
    expect(&gw, Request::get("/m3"), None);
}

#[test]
fn host_exact_beats_wildcard() {
    let gw = Gateway::start_default();
    let exact = Backend::start("exact");
    let wild = Backend::start("wild");
    let any = Backend::start("any");
    gw.put(
        "/routes/exact",
        json!({"uri": "/h", "host": "api.example.com", "upstream": up(&exact)}),
    );
    gw.put(
        "/routes/wild",
        json!({"uri": "/h", "hosts": ["*.example.com"], "upstream": up(&wild)}),
    );
    gw.put(
        "/routes/hostless",
        json!({"uri": "/only-host", "hosts": ["only.example.org"], "upstream": up(&any)}),
    );
    gw.sync();

    let host = |h: &str| Request::get("/h").header("Host", h);
    expect(&gw, host("api.example.com"), Some("exact"));
    let with_port = format!("api.example.com:{}", gw.proxy_port);
    expect(&gw, host(&with_port), Some("exact"));
    expect(&gw, host("foo.example.com"), Some("wild"));
    expect(&gw, host("a.b.example.com"), Some("wild"));
    expect(&gw, host("example.com"), None);
    expect(&gw, host("other.org"), None);
    expect(
        &gw,
        Request::get("/only-host").header("Host", "only.example.org"),
        Some("any"),
    );
    expect(
        &gw,
        Request::get("/only-host").header("Host", "else.example.org"),
        None,
    );
}

#[test]
fn methods_vars_and_remote_addrs_filter() {
    let gw = Gateway::start_default();
    let g = Backend::start("get");
    let p = Backend::start("post");
    let v = Backend::start("vars");
    let local = Backend::start("local");
    gw.put(
        "/routes/get",
        json!({"uri": "/m", "methods": ["GET"], "upstream": up(&g)}),
    );
    gw.put(
        "/routes/post",
        json!({"uri": "/m", "methods": ["POST", "PUT"], "upstream": up(&p)}),
    );
    gw.put(
        "/routes/arg",
        json!({"uri": "/v", "vars": [["arg_v", "==", "1"]], "upstream": up(&v)}),
    );
    gw.put(
        "/routes/re",
        json!({"uri": "/w", "vars": [["http_x_a", "~~", "^ab"]], "upstream": up(&v)}),
    );
    gw.put(
        "/routes/local",
        json!({"uri": "/local", "remote_addrs": ["127.0.0.1/32", "::1"], "upstream": up(&local)}),
    );
    gw.put(
        "/routes/remote",
        json!({"uri": "/remote", "remote_addrs": ["10.0.0.0/8"], "upstream": up(&local)}),
    );
    gw.sync();

    expect(&gw, Request::get("/m"), Some("get"));
    expect(&gw, Request::new("POST", "/m"), Some("post"));
    expect(&gw, Request::new("PUT", "/m"), Some("post"));
    expect(&gw, Request::new("DELETE", "/m"), None);

    expect(&gw, Request::get("/v?v=1"), Some("vars"));
    expect(&gw, Request::get("/v?a=b&v=1"), Some("vars"));
    expect(&gw, Request::get("/v?v=2"), None);
    expect(&gw, Request::get("/v"), None);

    expect(&gw, Request::get("/w").header("X-A", "abc"), Some("vars"));
    expect(&gw, Request::get("/w").header("X-A", "xab"), None);
    expect(&gw, Request::get("/w"), None);

    expect(&gw, Request::get("/local"), Some("local"));
    expect(&gw, Request::get("/remote"), None);
}

#[test]
fn upstream_id_service_id_and_status() {
    let gw = Gateway::start_default();
    let u = Backend::start("by-upstream-id");
    let s = Backend::start("by-service");
    let si = Backend::start("by-service-upstream-id");
    gw.put("/upstreams/u1", up(&u));
    gw.put("/upstreams/u2", up(&si));
    gw.put("/services/s1", json!({"upstream": up(&s)}));
    gw.put("/services/s2", json!({"upstream_id": "u2"}));
    gw.put("/routes/1", json!({"uri": "/u", "upstream_id": "u1"}));
    gw.put("/routes/2", json!({"uri": "/s", "service_id": "s1"}));
    gw.put("/routes/3", json!({"uri": "/s2", "service_id": "s2"}));
    gw.put(
        "/routes/off",
        json!({"uri": "/off", "status": 0, "upstream_id": "u1"}),
    );
    gw.sync();

    expect(&gw, Request::get("/u"), Some("by-upstream-id"));
    expect(&gw, Request::get("/s"), Some("by-service"));
    expect(&gw, Request::get("/s2"), Some("by-service-upstream-id"));
    expect(&gw, Request::get("/off"), None);

    // enabling the route, and editing the upstream the route points at
    gw.write_ok("PATCH", "/routes/off", json!({"status": 1}));
    gw.put("/upstreams/u1", up(&s));
    gw.sync();
    expect(&gw, Request::get("/off"), Some("by-service"));
    expect(&gw, Request::get("/u"), Some("by-service"));

    // disabling again
    gw.write_ok("PATCH", "/routes/2", json!({"status": 0}));
    gw.sync();
    expect(&gw, Request::get("/s"), None);
}

#[test]
fn forwarded_headers() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put("/routes/1", json!({"uri": "/f", "upstream": up(&b)}));
    gw.sync();

    let h = gw.proxy_get("/f").json()["headers"].clone();
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");

    let h = gw
        .proxy("GET", "/f", &[("X-Forwarded-For", "1.2.3.4")])
        .json()["headers"]
        .clone();
    let xff = h["x-forwarded-for"]
        .as_str()
        .unwrap_or_default()
        .replace(' ', "");
    assert_eq!(xff, "1.2.3.4,127.0.0.1", "client address appended: {h}");
    assert_eq!(h["x-real-ip"], "127.0.0.1", "{h}");
}

#[test]
fn pass_host_modes() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let node = b.node();
    gw.put(
        "/routes/pass",
        json!({"uri": "/pass", "upstream": {"nodes": {&node: 1}, "pass_host": "pass"}}),
    );
    gw.put(
        "/routes/node",
        json!({"uri": "/node", "upstream": {"nodes": {&node: 1}, "pass_host": "node"}}),
    );
    gw.put(
        "/routes/rewrite",
        json!({"uri": "/rewrite", "upstream": {"nodes": {&node: 1}, "pass_host": "rewrite",
               "upstream_host": "rewritten.example"}}),
    );
    gw.put(
        "/routes/default",
        json!({"uri": "/default", "upstream": {"nodes": {&node: 1}}}),
    );
    gw.sync();

    let host_seen = |path: &str| -> String {
        let r = gw.proxy("GET", path, &[("Host", "client.example")]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        r.json()["headers"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(host_seen("/pass"), "client.example");
    assert_eq!(
        host_seen("/default"),
        "client.example",
        "pass is the default"
    );
    let h = host_seen("/node");
    assert!(
        h == node || h == "127.0.0.1",
        "pass_host node sends the node's host, got {h:?}"
    );
    assert_eq!(host_seen("/rewrite"), "rewritten.example");
}
