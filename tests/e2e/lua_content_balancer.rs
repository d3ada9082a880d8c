//! The two phases Portico adds to APISIX's serverless plugins: `content` answers without
//! an upstream; `balancer` chooses the node with `ngx.balancer`.

use crate::lua_common::*;
use crate::support::*;

#[test]
fn content_phase_answers_without_an_upstream() {
    let gw = Gateway::start_default();
    lua_route(
        &gw,
        "c",
        "/hello",
        None,
        pre(
            "content",
            r#"ngx.status = 201; ngx.header["X-Made-By"] = "lua"; ngx.say("hello ", ngx.var.arg_name)"#,
        ),
    );
    lua_route(&gw, "e", "/teapot", None, pre("content", "ngx.exit(418)"));
    gw.sync();
    let r = gw.proxy_get("/hello?name=world");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.text(), "hello world\n");
    assert_eq!(r.header("x-made-by"), Some("lua"));
    let r = gw.proxy_get("/teapot");
    assert_eq!(r.status, 418);
    assert!(r.text().contains("418"), "default page: {}", r.text());
}

#[test]
fn balancer_phase_overrides_the_node_and_adds_tries() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    // The upstream lists only `a`; the balancer sends requests with ?to=b to `b`.
    let code = format!(
        r#"local balancer = require("ngx.balancer")
        if ngx.var.arg_to == "b" then
            assert(balancer.set_current_peer("127.0.0.1", {}))
        end"#,
        b.port()
    );
    lua_route(&gw, "bal", "/pick", Some(&a), pre("balancer", &code));
    gw.sync();
    assert_eq!(gw.proxy_get("/pick").backend().as_deref(), Some("a"));
    assert_eq!(gw.proxy_get("/pick?to=b").backend().as_deref(), Some("b"));

    // set_more_tries lets a one-node upstream with retries 0 try again: the first attempt
    // goes to a dead port, the retry to the live node.
    let dead = dead_addr();
    let (dead_host, dead_port) = dead.rsplit_once(':').unwrap();
    let code = format!(
        r#"local balancer = require("ngx.balancer")
        ngx.ctx.tries = (ngx.ctx.tries or 0) + 1
        if ngx.ctx.tries == 1 then
            balancer.set_more_tries(1)
            assert(balancer.set_current_peer("{dead_host}", {dead_port}))
        end"#
    );
    gw.put(
        "/routes/retry",
        json!({"uri": "/retry", "upstream": {"nodes": {a.node(): 1}, "retries": 0},
               "plugins": pre("balancer", &code)}),
    );
    gw.sync();
    let r = gw.proxy_get("/retry");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend().as_deref(), Some("a"));
}

#[test]
fn balancer_phase_errors_fail_the_request() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    lua_route(
        &gw,
        "bad",
        "/bad",
        Some(&a),
        pre(
            "balancer",
            r#"require("ngx.balancer").set_current_peer("not-an-ip", 80)"#,
        ),
    );
    lua_route(
        &gw,
        "sleepy",
        "/sleepy",
        Some(&a),
        pre("balancer", "ngx.sleep(0.01)"),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/bad").status, 500);
    // The balancer cannot yield, as in OpenResty.
    assert_eq!(gw.proxy_get("/sleepy").status, 500);
    assert_eq!(a.hits(), 0);
}
