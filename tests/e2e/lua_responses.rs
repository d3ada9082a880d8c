//! Responses shaped by Lua: every response the gateway writes goes through the filters,
//! a filtered body is sent chunked on a reusable connection, `before_proxy` can answer,
//! and per-request variables hold their nginx meaning in every phase.

use crate::lua_common::*;
use crate::support::*;

#[test]
fn error_pages_and_before_proxy_answers_go_through_the_filters() {
    let gw = Gateway::start_default();
    gw.put(
        "/global_rules/cors",
        json!({"plugins": post("header_filter", r#"ngx.header["Access-Control-Allow-Origin"] = "*""#)}),
    );
    // No node answers: the 502 page still gets the global header_filter.
    gw.put(
        "/routes/dead",
        json!({"uri": "/dead", "upstream": {"nodes": {dead_addr(): 1}}}),
    );
    let b = Backend::start("b");
    lua_route(
        &gw,
        "bp",
        "/bp",
        Some(&b),
        pre("before_proxy", r#"return 403, {reason = "before_proxy"}"#),
    );
    gw.sync();
    let r = gw.proxy_get("/dead");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = gw.proxy_get("/bp");
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"reason":"before_proxy"}"#);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn filtered_body_is_chunked_and_the_connection_stays_usable() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "up",
        "/up",
        Some(&b),
        pre("body_filter", "ngx.arg[1] = string.upper(ngx.arg[1])"),
    );
    gw.sync();
    let mut conn = Conn::new(gw.proxy_addr());
    for i in 0..3 {
        let r = conn.send(&Request::get("/up")).unwrap();
        assert_eq!(r.status, 200, "request {i}");
        assert!(
            r.text().contains("\"BACKEND\":\"B\""),
            "upper-cased: {}",
            r.text()
        );
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.header("content-length"), None);
    }
}

#[test]
fn request_time_and_upstream_addr_hold_in_every_phase() {
    let gw = Gateway::start_default();
    let b = Backend::start_with("b", 200, std::time::Duration::from_millis(60));
    lua_route(
        &gw,
        "vars",
        "/vars",
        Some(&b),
        pre(
            "header_filter",
            r#"ngx.header["X-Request-Time"] = ngx.var.request_time
               ngx.header["X-Upstream"] = ngx.var.upstream_addr"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/vars");
    let t: f64 = r.header("x-request-time").unwrap().parse().unwrap();
    assert!(t >= 0.05, "request_time counts from arrival: {t}");
    assert_eq!(r.header("x-upstream"), Some(b.addr().to_string().as_str()));
}

#[test]
fn identical_code_on_two_routes_keeps_separate_state() {
    let gw = Gateway::start(GatewayOpts {
        threads: 1,
        ..Default::default()
    });
    let code = "local n = 0\nreturn function() n = n + 1; return 200, tostring(n) end";
    for id in ["r1", "r2"] {
        gw.put(
            &format!("/routes/{id}"),
            json!({"uri": format!("/{id}"), "plugins": {PRE: serverless("access", code)}}),
        );
    }
    gw.sync();
    assert_eq!(gw.proxy_get("/r1").text(), "1");
    assert_eq!(gw.proxy_get("/r1").text(), "2");
    assert_eq!(gw.proxy_get("/r2").text(), "1", "r2 has its own closure");
}

#[test]
fn pcall_does_not_swallow_ngx_exit() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "p",
        "/p",
        Some(&b),
        pre("access", "pcall(ngx.exit, 403)"),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/p").status, 403);
    assert_eq!(b.hits(), 0);
}

#[test]
fn read_body_gives_lua_the_body_and_still_forwards_it() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "body",
        "/body",
        Some(&b),
        pre(
            "access",
            r#"ngx.req.read_body()
               local data = ngx.req.get_body_data() or ""
               local args = ngx.req.get_post_args()
               ngx.req.set_header("X-Lua-Body-Len", #data)
               ngx.req.set_header("X-Lua-Name", args.name or "none")"#,
        ),
    );
    gw.sync();
    let req = Request::new("POST", "/body")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=portico&x=1");
    let r = http::send(gw.proxy_addr(), &req).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.json();
    assert_eq!(echo["headers"]["x-lua-body-len"], "16");
    assert_eq!(echo["headers"]["x-lua-name"], "portico");
    assert_eq!(
        echo["body_len"], 16,
        "the body read by Lua still reaches the backend"
    );

    // Over 64 KiB (Pingora's replay buffer) a body read by Lua cannot be forwarded: 413.
    let big = Request::new("POST", "/body").body(vec![b'x'; 70 * 1024]);
    let r = http::send(gw.proxy_addr(), &big).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(b.hits(), 1);
}
