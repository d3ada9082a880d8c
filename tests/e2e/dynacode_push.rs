//! lua-resty-dynacode documents pushed through `/apisix/admin/dynacode`: the README's
//! three snippets behave as on OpenResty, against a real backend.

use crate::support::*;

/// The document of lua-resty-dynacode's README, verbatim.
pub(crate) fn readme_doc() -> Value {
    json!({
        "general": {"status": "enabled", "skip_domains": ["[\\w\\d\\.\\-]*server.local.com"]},
        "domains": [{"name": "dynamic.local.com", "plugins": [
            {"name": "dynamic content", "code": "ngx.say(\"olá mundo!\")\r\nngx.say(\"hello world!\")", "phase": "content"},
            {"name": "adding cors headers", "code": "ngx.header[\"Access-Control-Allow-Origin\"] = \"http://dynamic.local.com\"", "phase": "header_filter"},
            {"name": "authentication required", "code": "local token = ngx.var.arg_token or ngx.var.cookie_superstition\r\n\r\nif token ~= 'token' then\r\n  return ngx.exit(ngx.HTTP_FORBIDDEN)\r\nelse\r\n  ngx.header['Set-Cookie'] = {'superstition=token'}\r\nend", "phase": "access"}
        ]}]
    })
}

fn get_host(gw: &Gateway, host: &str, path: &str) -> Response {
    gw.proxy("GET", path, &[("host", host)])
}

#[test]
fn readme_snippets_behave_as_on_openresty() {
    let mut gw = Gateway::start_default();
    let (status, _, body) = gw.admin("PUT", "/dynacode", Some(readme_doc()));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["snippets"].as_array().map(Vec::len), Some(3));
    gw.sync();

    // No token: 403 from the access snippet, with the CORS header of header_filter.
    let r = get_host(&gw, "dynamic.local.com", "/");
    assert_eq!(r.status, 403);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://dynamic.local.com")
    );
    // Token in the query: the content snippet answers, the cookie is set.
    let r = get_host(&gw, "dynamic.local.com", "/?token=token");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "olá mundo!\nhello world!\n");
    assert_eq!(r.header("set-cookie"), Some("superstition=token"));
    // Token in the cookie works too.
    let r = gw.proxy(
        "GET",
        "/",
        &[
            ("host", "dynamic.local.com"),
            ("cookie", "superstition=token"),
        ],
    );
    assert_eq!(r.status, 200);
    // Other hosts are untouched; skip_domains hosts too.
    assert_eq!(get_host(&gw, "other.com", "/").status, 404);
    assert_eq!(get_host(&gw, "api.server.local.com", "/").status, 404);

    // The document is persisted: a restart serves it without any push.
    let status = gw.terminate();
    assert!(status.success());
    gw.restart();
    assert_eq!(get_host(&gw, "dynamic.local.com", "/").status, 403);
    let (status, _, body) = gw.admin("GET", "/dynacode", None);
    assert_eq!(status, 200);
    assert_eq!(body["value"], readme_doc());
}

#[test]
fn star_and_specific_domains_both_apply_in_document_order() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/routes/r",
        json!({"uri": "/*", "upstream": {"nodes": {b.node(): 1}}}),
    );
    let doc = json!({"domains": [
        {"name": "*", "plugins": [{"name": "all", "code": "ngx.header['X-Order'] = (ngx.header['X-Order'] or '') .. 'star'", "phase": "header_filter"}]},
        {"name": "shop\\.example", "plugins": [
            {"name": "specific", "code": "ngx.header['X-Order'] = ngx.header['X-Order'] .. '+shop'", "phase": "header_filter"},
            {"name": "req", "code": "ngx.req.set_header('X-Dyna', 'yes')", "phase": "rewrite"}
        ]}
    ]});
    let (status, _, body) = gw.admin("PUT", "/dynacode", Some(doc));
    assert_eq!(status, 201, "{body}");
    gw.sync();
    let r = get_host(&gw, "shop.example", "/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-order"), Some("star+shop"));
    assert_eq!(
        r.json()["headers"]["x-dyna"],
        "yes",
        "rewrite snippet reached the backend"
    );
    let r = get_host(&gw, "other.example", "/x");
    assert_eq!(r.header("x-order"), Some("star"));
    assert!(r.json()["headers"]["x-dyna"].is_null());
}

#[test]
fn disabled_status_and_compile_errors() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/routes/r",
        json!({"uri": "/*", "upstream": {"nodes": {b.node(): 1}}}),
    );
    let doc = |status: &str| {
        json!({"general": {"status": status}, "domains": [{"name": "*", "plugins": [
            {"name": "deny", "code": "if ngx.var.arg_deny then ngx.exit(403) end", "phase": "access"},
            {"name": "broken", "code": "local = 1", "phase": "access"},
            {"name": "fails at runtime", "code": "error('boom')", "phase": "rewrite"}
        ]}]})
    };
    let (status, _, body) = gw.admin("PUT", "/dynacode", Some(doc("enabled")));
    assert_eq!(status, 201, "{body}");
    let states: Vec<&str> = body["snippets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["active", "compile_error", "active"]);
    assert!(body["snippets"][1]["error"]
        .as_str()
        .unwrap()
        .contains("line 1"));
    gw.sync();
    // The broken snippet is skipped, the others run; the runtime error is contained.
    assert_eq!(gw.proxy_get("/x?deny=1").status, 403);
    assert_eq!(gw.proxy_get("/x").status, 200);
    // Disabled: nothing runs.
    let (status, _, _) = gw.admin("PUT", "/dynacode", Some(doc("disabled")));
    assert_eq!(status, 200);
    gw.sync();
    assert_eq!(gw.proxy_get("/x?deny=1").status, 200);
    // Validate is a dry run; a wrong shape is a 400 that changes nothing; DELETE removes.
    let (status, _, body) = gw.admin("POST", "/dynacode/validate", Some(doc("enabled")));
    assert_eq!((status, body["compile_error"].as_u64()), (200, Some(1)));
    let (status, _, body) = gw.admin("PUT", "/dynacode", Some(json!({"domains": "nope"})));
    assert_eq!(status, 400, "{body}");
    assert!(body["error_msg"].as_str().unwrap().contains("domains"));
    let (status, _, body) = gw.admin("GET", "/dynacode", None);
    assert_eq!(
        (status, body["value"]["general"]["status"].as_str()),
        (200, Some("disabled"))
    );
    let (status, _, _) = gw.admin("DELETE", "/dynacode", None);
    assert_eq!(status, 200);
    let (status, _, _) = gw.admin("GET", "/dynacode", None);
    assert_eq!(status, 404);
    let text = gw.metrics_text();
    assert!(
        text.contains("portico_dynacode_snippets{state=\"active\"} 0"),
        "{text}"
    );
}
