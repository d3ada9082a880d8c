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
        (
            "local ffi = require \"ffi\"\nffi.cdef[[int getpid(void);]]\nreturn {}",
            "line 2",
        ),
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

#[test]
fn plugin_modules_require_library_modules() {
    let gw = one_worker();
    let b = Backend::start("b");
    gw.put("/lua_modules/my.counter", json!({"code": COUNTER}));
    // The plugin module requires the library at load time (validated at apply time).
    let plugin = r#"
local counter = require "my.counter"
local _M = { name = "counted", priority = 100 }
function _M.access(conf, ctx) ngx.req.set_header("X-Count", counter.next()) end
return _M
"#;
    let (status, _, body) = gw.admin("PUT", "/lua_plugins/counted", Some(json!({"code": plugin})));
    assert_eq!(status, 201, "{body}");
    gw.put(
        "/routes/p",
        json!({"uri": "/p", "upstream": {"nodes": {b.node(): 1}}, "plugins": {"counted": {}}}),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/p").json()["headers"]["x-count"], "1");
    assert_eq!(gw.proxy_get("/p").json()["headers"]["x-count"], "2");
    let (status, _, body) = gw.admin("DELETE", "/lua_modules/my.counter", None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("Lua plugin [counted]"),
        "{body}"
    );
}

#[test]
fn the_etcd_provider_carries_modules_between_gateways() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gw = |threads| {
        Gateway::start(GatewayOpts {
            extra_yaml: etcd.gateway_yaml(),
            threads,
            ..GatewayOpts::default()
        })
    };
    let (writer, reader) = (gw(1), gw(1));
    writer.put("/lua_modules/my.counter", json!({"code": COUNTER}));
    writer.put(
        "/routes/c",
        json!({"uri": "/c", "upstream": {"nodes": {b.node(): 1}},
               "plugins": snippet("return function() return 200, tostring(require('my.counter').next()) end")}),
    );
    let (value, _, _) = etcd.get("/apisix/lua_modules/my.counter").expect("in etcd");
    assert!(value.contains("local n = 0"), "{value}");
    assert!(
        wait_until(std::time::Duration::from_secs(10), || reader
            .try_proxy(Request::get("/c"))
            .is_ok_and(|r| r.status == 200 && r.text() == "1")),
        "{}",
        reader.logs()
    );
}

/// A library written the way lua-resty-* libraries are (written for this test): a
/// class with `new`, `pcall(require, "table.new")`, `bit`, `ngx.re`, `resty.*` digests,
/// module-level upvalues, `package.loaded` checks.
const CLASSY: &str = r#"
local bit = require "bit"
local ngx_re = require "ngx.re"
local sha1 = require "resty.sha1"
local to_hex = require("resty.string").to_hex
local ok, new_tab = pcall(require, "table.new")
if not ok or type(new_tab) ~= "function" then
    new_tab = function(narr, nrec) return {} end
end
local setmetatable = setmetatable

local _M = new_tab(0, 4)
_M._VERSION = "0.01"
local mt = { __index = _M }
local instances = 0

function _M.new(self, opts)
    instances = instances + 1
    return setmetatable({ sep = opts and opts.sep or "," }, mt)
end

function _M.fields(self, s)
    local res, err = ngx_re.split(s, self.sep, "jo")
    if not res then return nil, err end
    return res
end

function _M.digest(self, s)
    local h = sha1:new()
    h:update(s)
    return to_hex(h:final())
end

function _M.flags(self, a, b) return bit.bor(bit.lshift(a, 4), b) end
function _M.instances() return instances end
_M.loaded = package.loaded["my.classy"] == nil
return _M
"#;

#[test]
fn a_library_in_the_lua_resty_style_runs_unmodified() {
    let gw = one_worker();
    let (status, _, body) = gw.admin(
        "PUT",
        "/lua_modules/my.classy",
        Some(json!({"code": CLASSY})),
    );
    assert_eq!(status, 201, "{body}");
    gw.put(
        "/routes/k",
        json!({"uri": "/k", "plugins": snippet(r#"local classy = require "my.classy"
return function(conf, ctx)
    local c = classy:new({ sep = ";" })
    local f = c:fields(ngx.var.arg_s)
    return 200, table.concat({ #f, tostring(f[2]), c:digest("abc"):sub(1, 8), c:flags(1, 2),
        classy.instances(), tostring(classy.loaded), classy._VERSION }, " ")
end"#)}),
    );
    gw.sync();
    let r = gw.proxy_get("/k?s=a;b;c");
    assert_eq!(r.status, 200, "{}", gw.logs());
    assert_eq!(r.text(), "3 b a9993e36 18 1 true 0.01");
    assert_eq!(
        gw.proxy_get("/k?s=x").text(),
        "1 nil a9993e36 18 2 true 0.01"
    );
    // The upload is in the history, under the module's key.
    let module_rev = gw.get("/lua_modules/my.classy")["modifiedIndex"]
        .as_u64()
        .unwrap();
    let diff = gw.get(&format!("/configs/history/{module_rev}/diff"));
    assert_eq!(
        diff["changes"][0]["key"], "/apisix/lua_modules/my.classy",
        "{diff}"
    );
}
