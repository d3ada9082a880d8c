//! Lua library modules as resources (`/apisix/admin/lua_modules/{name}`): required from
//! route snippets and from other modules, module state per worker VM, versions, upload
//! errors naming the line, deletion refused while required, persistence.

use crate::support::*;

const COUNTER: &str = r#"
local n = 0
local _M = { _VERSION = "1" }
function _M.next() n = n + 1; return n end
return _M
"#;

/// A module that requires another one.
const GREETER: &str = r#"
local counter = require "my.counter"
local _M = {}
function _M.greet(who) return "hello " .. who .. " #" .. counter.next() end
return _M
"#;

fn snippet(code: &str) -> Value {
    json!({"serverless-pre-function": {"phase": "access", "functions": [code]}})
}

fn one_worker() -> Gateway {
    // One proxy thread: one Lua VM, so module state is seen by every request.
    Gateway::start(GatewayOpts {
        threads: 1,
        ..Default::default()
    })
}

#[test]
fn modules_are_required_from_routes_and_modules_and_keep_state_per_worker() {
    let mut gw = one_worker();
    let b = Backend::start("b");
    let (status, _, body) = gw.admin(
        "PUT",
        "/lua_modules/my.counter",
        Some(json!({"code": COUNTER, "desc": "a counter"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = gw.admin(
        "PUT",
        "/lua_modules/my.greeter",
        Some(json!({"code": GREETER})),
    );
    assert_eq!(status, 201, "{body}");
    gw.put(
        "/routes/g",
        json!({"uri": "/g", "upstream": {"nodes": {b.node(): 1}},
               "plugins": snippet("local g = require 'my.greeter'\nreturn function(conf, ctx) return 200, g.greet(ngx.var.arg_who or 'x') end")}),
    );
    gw.put(
        "/routes/c",
        json!({"uri": "/c", "upstream": {"nodes": {b.node(): 1}},
               "plugins": snippet("return function() return 200, tostring(require('my.counter').next()) end")}),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/g?who=ann").text(), "hello ann #1");
    assert_eq!(gw.proxy_get("/g?who=bob").text(), "hello bob #2");
    // The same module value (and state) for every route on the worker.
    assert_eq!(gw.proxy_get("/c").text(), "3");

    let list = gw.get("/lua_modules");
    assert_eq!(list["total"], 2, "{list}");
    let one = gw.get("/lua_modules/my.counter");
    assert_eq!(one["value"]["desc"], "a counter", "{one}");

    // A new version replaces the module (and the snippet that required it at load).
    let v2 = COUNTER.replace("local n = 0", "local n = 100");
    gw.put("/lua_modules/my.counter", json!({"code": v2}));
    gw.sync();
    assert_eq!(gw.proxy_get("/g?who=cy").text(), "hello cy #101");
    assert_eq!(gw.proxy_get("/c").text(), "102");

    // In the configs export, and kept across a restart.
    let configs = gw.get("/configs");
    assert!(
        configs["lua_modules"]
            .as_array()
            .is_some_and(|l| l.len() == 2),
        "{configs}"
    );
    gw.restart();
    assert_eq!(gw.proxy_get("/g?who=dee").text(), "hello dee #101");
}

#[test]
fn upload_errors_name_the_line() {
    let gw = Gateway::start_default();
    let cases = [
        ("local x = 1\nlocal y = = 2\nreturn {}", "line 2"),
        (
            "local _M = {}\nfor i = 1, 3 do\n  if i == 2 then goto continue end\n  ::continue::\nend\nreturn _M",
            "line 3",
        ),
        ("local ffi = require \"ffi\"\nreturn {}", "line 1"),
    ];
    for (code, line) in cases {
        let (status, _, body) = gw.admin("PUT", "/lua_modules/bad", Some(json!({"code": code})));
        assert_eq!(status, 400, "{code}: {body}");
        let msg = body["error_msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(line) && msg.contains("lua_modules.bad"),
            "{code}: {msg}"
        );
    }
    let (_, _, body) = gw.admin(
        "PUT",
        "/lua_modules/bad",
        Some(json!({"code": "for i = 1, 2 do\n goto skip\nend"})),
    );
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("goto"),
        "{body}"
    );
    let (status, _, body) = gw.admin(
        "PUT",
        "/lua_modules/ngx.re",
        Some(json!({"code": "return {}"})),
    );
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = gw.admin("GET", "/lua_modules/bad", None);
    assert_eq!(status, 404);
}

#[test]
fn a_required_module_is_deleted_only_when_forced() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put("/lua_modules/my.counter", json!({"code": COUNTER}));
    gw.put("/lua_modules/my.greeter", json!({"code": GREETER}));
    gw.put(
        "/routes/g",
        json!({"uri": "/g", "upstream": {"nodes": {b.node(): 1}},
               "plugins": snippet("return function() return 200, require('my.greeter').greet('z') end")}),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/g").status, 200);

    let (status, _, body) = gw.admin("DELETE", "/lua_modules/my.counter", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("my.greeter"),
        "{body}"
    );
    let (status, _, body) = gw.admin("DELETE", "/lua_modules/my.greeter", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("route [g]"),
        "{body}"
    );

    let (status, _, _) = gw.admin("DELETE", "/lua_modules/my.greeter?force=true", None);
    assert_eq!(status, 200);
    gw.sync();
    // Forced: the snippet fails at its require, with a message naming the module.
    let r = gw.proxy_get("/g");
    assert_eq!(r.status, 500);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || gw
            .logs()
            .contains("module 'my.greeter' not found")),
        "{}",
        gw.logs()
    );
    // Nothing requires my.counter any more.
    let (status, _, body) = gw.admin("DELETE", "/lua_modules/my.counter", None);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_yaml_provider_loads_modules() {
    let b = Backend::start("b");
    let yaml = format!(
        "lua_modules:\n  - id: my.counter\n    code: |\n{}\nroutes:\n  - id: c\n    uri: /c\n    upstream:\n      nodes:\n        \"{}\": 1\n    plugins:\n      serverless-pre-function:\n        phase: access\n        functions:\n          - \"return function() return 200, tostring(require('my.counter').next()) end\"\n#END\n",
        COUNTER
            .lines()
            .map(|l| format!("      {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
        b.node()
    );
    let gw = Gateway::start(GatewayOpts {
        yaml_provider: Some(yaml),
        threads: 1,
        ..Default::default()
    });
    assert!(
        wait_until(std::time::Duration::from_secs(10), || gw
            .try_proxy(Request::get("/c"))
            .is_ok_and(|r| r.status == 200)),
        "{}",
        gw.logs()
    );
    let n: u64 = gw.proxy_get("/c").text().parse().unwrap();
    assert!(gw.proxy_get("/c").text().parse::<u64>().unwrap() == n + 1);
}
