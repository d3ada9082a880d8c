//! Lua plugin modules as resources (`/apisix/admin/lua_plugins/{name}`): used by name
//! like any plugin, each use's conf checked against the module's schema, code replaced
//! atomically under load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::*;

fn module(version: &str) -> Value {
    let code = format!(
        r#"local _M = {{ version = 0.1, priority = 1000, name = "my-auth",
            schema = {{ type = "object",
                        properties = {{ header = {{ type = "string" }},
                                        status = {{ type = "integer", default = 401 }} }},
                        required = {{ "header" }} }} }}
        function _M.access(conf, ctx)
            local name = "http_" .. string.lower(string.gsub(conf.header, "-", "_"))
            if not ngx.var[name] then
                return conf.status, {{ message = "missing " .. conf.header }}
            end
        end
        function _M.header_filter(conf, ctx)
            ngx.header["X-Module-Version"] = "{version}"
        end
        return _M"#
    );
    json!({"code": code, "desc": "checks that a header is present"})
}

#[test]
fn a_module_serves_two_routes_with_their_own_confs() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let (status, _, body) = gw.admin("PUT", "/lua_plugins/my-auth", Some(module("v1")));
    assert_eq!(status, 201, "{body}");
    gw.put(
        "/routes/a",
        json!({"uri": "/a", "upstream": {"nodes": {b.node(): 1}},
        "plugins": {"my-auth": {"header": "X-Token"}}}),
    );
    gw.put(
        "/routes/b",
        json!({"uri": "/b", "upstream": {"nodes": {b.node(): 1}},
        "plugins": {"my-auth": {"header": "X-Key", "status": 403}}}),
    );
    gw.sync();
    let r = gw.proxy_get("/a");
    assert_eq!(r.status, 401, "schema default applied");
    assert_eq!(r.json()["message"], "missing X-Token");
    assert_eq!(gw.proxy_get("/b").status, 403);
    let r = gw.proxy("GET", "/a", &[("x-token", "t")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-module-version"), Some("v1"));
    assert_eq!(b.hits(), 1);

    // Schema violations name the field; nothing changes.
    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/c",
        Some(json!({"uri": "/c", "plugins": {"my-auth": {"header": 5}}})),
    );
    assert_eq!(status, 400);
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("plugins.my-auth.header"),
        "{body}"
    );
    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/c",
        Some(json!({"uri": "/c", "plugins": {"my-auth": {}}})),
    );
    assert_eq!(status, 400);
    assert!(
        body["error_msg"].as_str().unwrap().contains("header"),
        "{body}"
    );

    // APISIX's plugin endpoints list it and serve its schema.
    let (_, _, list) = gw.admin("GET", "/plugins/list", None);
    assert!(
        list.as_array().unwrap().iter().any(|n| n == "my-auth"),
        "{list}"
    );
    let (status, _, schema) = gw.admin("GET", "/plugins/my-auth", None);
    assert_eq!(status, 200);
    assert_eq!(schema["required"], json!(["header"]));

    // A module in use cannot be deleted unless forced; forced, its uses are skipped.
    let (status, _, body) = gw.admin("DELETE", "/lua_plugins/my-auth", None);
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = gw.admin("DELETE", "/lua_plugins/my-auth?force=true", None);
    assert_eq!(status, 200);
    gw.sync();
    assert_eq!(gw.proxy_get("/a").status, 200);
}

#[test]
fn bad_modules_are_rejected_with_the_reason() {
    let gw = Gateway::start_default();
    for (code, needle) in [
        ("local _M = {", "syntax error at line"),
        ("return 42", "must return a table"),
        ("return { priority = 1 }", "no phase function"),
        (
            "return { name = 'other', access = function() end }",
            "differs from the plugin id",
        ),
        (
            "return { schema = { type = 'strin' }, access = function() end }",
            "schema",
        ),
    ] {
        let (status, _, body) = gw.admin("PUT", "/lua_plugins/m", Some(json!({"code": code})));
        assert_eq!(status, 400, "{code}: {body}");
        assert!(
            body["error_msg"].as_str().unwrap().contains(needle),
            "{code}: {body}"
        );
    }
    let (status, _, _) = gw.admin(
        "PUT",
        "/lua_plugins/serverless-pre-function",
        Some(json!({"code": "return { access = function() end }"})),
    );
    assert_eq!(status, 400, "built-in names are taken");
}

#[test]
fn replacing_the_code_under_load_fails_no_request() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.admin("PUT", "/lua_plugins/my-auth", Some(module("v0")));
    gw.put(
        "/routes/a",
        json!({"uri": "/a", "upstream": {"nodes": {b.node(): 1}},
        "plugins": {"my-auth": {"header": "X-Token"}}}),
    );
    gw.sync();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let addr = gw.proxy_addr();
    let client = {
        let (stop, failed, ok) = (stop.clone(), failed.clone(), ok.clone());
        std::thread::spawn(move || {
            let mut conn = Conn::new(addr);
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(Ordering::SeqCst) {
                match conn.send(&Request::get("/a").header("x-token", "t")) {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if let Some(v) = r.header("x-module-version") {
                            versions.insert(v.to_string());
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            versions
        })
    };
    for i in 1..=30 {
        let before = ok.load(Ordering::SeqCst);
        assert!(wait_until(WAIT, || ok.load(Ordering::SeqCst) > before + 2));
        let (status, _, body) = gw.admin(
            "PUT",
            "/lua_plugins/my-auth",
            Some(module(&format!("v{i}"))),
        );
        assert_eq!(status, 200, "{body}");
    }
    let before = ok.load(Ordering::SeqCst);
    assert!(wait_until(WAIT, || ok.load(Ordering::SeqCst) > before + 2));
    stop.store(true, Ordering::SeqCst);
    let versions = client.join().unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(versions.len() > 10, "many versions served: {versions:?}");
    assert!(versions.contains("v30"));
}
