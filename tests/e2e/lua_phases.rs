//! Lua phases and the `ngx` API against real backends, checked against what
//! OpenResty does (issue 4, "The ngx API" and "Must show").

use crate::lua_common::*;
use crate::support::*;

fn gw() -> Gateway {
    lua_gateway(2, LuaOpts::default())
}

/// `ngx.exit(403)` in access: 403 with nginx's default HTML page, backend not
/// contacted. `ngx.say` + `ngx.exit(200)`: the said body. `return 401, {..}`:
/// a JSON body. `ngx.exit(ngx.OK)`: the request goes on to the backend.
#[test]
fn lua_access_exit_say_and_return() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "r403",
        "/exit403",
        Some(&b),
        pre("access", "ngx.exit(403)"),
    );
    lua_route(
        &gw,
        "rsay",
        "/say",
        Some(&b),
        pre(
            "access",
            r#"ngx.say("hello ", "world", " ", 10/2) ngx.print("tail") ngx.exit(200)"#,
        ),
    );
    lua_route(
        &gw,
        "r401",
        "/json401",
        Some(&b),
        pre("access", r#"return 401, {message = "x"}"#),
    );
    lua_route(
        &gw,
        "rconst",
        "/const",
        Some(&b),
        pre("access", "ngx.exit(ngx.HTTP_FORBIDDEN)"),
    );
    lua_route(
        &gw,
        "rok",
        "/ok",
        Some(&b),
        pre("access", "ngx.exit(ngx.OK)"),
    );
    lua_route(
        &gw,
        "rstr",
        "/str",
        Some(&b),
        pre("access", r#"return 418, "short and stout""#),
    );
    gw.sync();

    let r = gw.proxy_get("/exit403");
    assert_eq!(r.status, 403, "{r:?}");
    let t = r.text();
    assert!(
        t.contains("<title>403 Forbidden</title>")
            && t.contains("<center><h1>403 Forbidden</h1></center>"),
        "nginx default 403 page expected: {r:?}"
    );
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{r:?}"
    );

    let r = gw.proxy_get("/const");
    assert_eq!(r.status, 403, "ngx.HTTP_FORBIDDEN: {r:?}");

    let r = gw.proxy_get("/say");
    assert_eq!(r.status, 200, "{r:?}");
    // OpenResty: ngx.say appends "\n", numbers print as LuaJIT prints them (5, not 5.0).
    assert_eq!(r.text(), "hello world 5\ntail", "{r:?}");

    let r = gw.proxy_get("/json401");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json(), json!({"message": "x"}), "{r:?}");
    assert!(
        r.header("content-type").unwrap_or("").contains("json"),
        "{r:?}"
    );

    let r = gw.proxy_get("/str");
    assert_eq!(
        (r.status, r.text().as_str()),
        (418, "short and stout"),
        "{r:?}"
    );

    let r = gw.proxy_get("/ok");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.backend().as_deref(),
        Some("b"),
        "ngx.exit(ngx.OK) continues: {r:?}"
    );

    assert_eq!(b.path_hits("/exit403"), 0);
    assert_eq!(b.path_hits("/say"), 0);
    assert_eq!(b.path_hits("/json401"), 0);
    assert_eq!(b.path_hits("/ok"), 1);
}

/// `ngx.redirect(uri)` answers 302 with Location; `ngx.redirect(uri, 301)` 301.
/// nginx sends its default page for redirects too.
#[test]
fn lua_redirect() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "r1",
        "/old",
        Some(&b),
        pre("access", r#"return ngx.redirect("/new-place?x=1")"#),
    );
    lua_route(
        &gw,
        "r2",
        "/moved",
        Some(&b),
        pre(
            "access",
            r#"return ngx.redirect("https://example.test/", ngx.HTTP_MOVED_PERMANENTLY)"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/old");
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(r.header("location"), Some("/new-place?x=1"), "{r:?}");
    let r2 = gw.proxy_get("/moved");
    assert_eq!(r2.status, 301, "{r2:?}");
    assert_eq!(
        r2.header("location"),
        Some("https://example.test/"),
        "{r2:?}"
    );
    assert_eq!(b.hits(), 0);
    // nginx (ngx_http_special_response) answers a redirect with its default page.
    assert!(
        r.text().contains("302 Found") && r2.text().contains("301 Moved Permanently"),
        "OpenResty sends nginx's default page with a redirect; got 302 body {:?}, 301 body {:?}",
        r.text(),
        r2.text()
    );
}

/// `ngx.req.set_header`/`clear_header`/`set_uri`/`set_uri_args` and `ngx.var.args`
/// in rewrite, access and before_proxy reach the backend.
#[test]
fn lua_request_changes_reach_the_backend() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "ra",
        "/ra/*",
        Some(&b),
        pre_post(
            (
                "rewrite",
                r#"ngx.req.set_header("X-Rewrite", "r1")
                   ngx.req.clear_header("X-Drop")
                   ngx.req.set_header("X-Multi", {"m1", "m2"})"#,
            ),
            (
                "access",
                r#"ngx.req.set_uri("/changed/path")
                   ngx.req.set_uri_args({a = "1"})
                   ngx.req.set_header("X-Access", ngx.req.get_headers()["x-rewrite"] .. "+a")"#,
            ),
        ),
    );
    lua_route(
        &gw,
        "rb",
        "/rb",
        Some(&b),
        pre_post(
            ("access", r#"ngx.var.args = "from=var&x=%20y""#),
            (
                "before_proxy",
                r#"ngx.req.set_header("X-Before", ngx.get_phase())
                   ngx.req.set_uri("/bp/" .. ngx.var.arg_from)
                   ngx.req.set_uri_args("k=v")
                   ngx.req.clear_header("user-agent")"#,
            ),
        ),
    );
    gw.sync();

    let r = gw.proxy_req(
        Request::get("/ra/orig?q=1")
            .header("X-Drop", "gone")
            .header("X-Keep", "kept"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["path"], "/changed/path", "{j}");
    assert_eq!(j["query"], "a=1", "{j}");
    assert_eq!(j["headers"]["x-rewrite"], "r1", "{j}");
    assert_eq!(j["headers"]["x-access"], "r1+a", "{j}");
    assert_eq!(
        j["headers"]["x-multi"], "m1, m2",
        "two X-Multi headers: {j}"
    );
    assert_eq!(j["headers"]["x-keep"], "kept", "{j}");
    assert!(j["headers"].get("x-drop").is_none(), "X-Drop cleared: {j}");

    let r = gw.proxy_req(Request::get("/rb?orig=1").header("User-Agent", "ua/1"));
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["path"], "/bp/var", "{j}");
    assert_eq!(j["query"], "k=v", "{j}");
    assert_eq!(j["headers"]["x-before"], "before_proxy", "{j}");
    assert!(j["headers"].get("user-agent").is_none(), "{j}");
    assert_eq!(b.path_hits("/bp/var"), 1);
}

/// `ngx.var.*` in access (returned as JSON), and `upstream_addr`/`status` in log
/// (written with `ngx.log` and read from the gateway log).
#[test]
fn lua_ngx_var_values() {
    let gw = gw();
    let b = Backend::start("b");
    let access = r#"
        local v = ngx.var
        return 200, {
          uri = v.uri, request_uri = v.request_uri, args = v.args, host = v.host,
          scheme = v.scheme, request_method = v.request_method,
          remote_addr = v.remote_addr, server_port = v.server_port,
          remote_port = v.remote_port,
          arg_x = v.arg_x, arg_y = v.arg_y, arg_missing = v.arg_missing or "NIL",
          http_x_custom_thing = v.http_x_custom_thing, http_user_agent = v.http_user_agent,
          cookie_sid = v.cookie_sid, cookie_theme = v.cookie_theme,
          cookie_none = v.cookie_none or "NIL",
          status_in_access = v.status or "NIL",
          method = ngx.req.get_method(),
          uri_args_y = ngx.req.get_uri_args().y,
          header_custom = ngx.req.get_headers()["X-Custom-Thing"],
        }"#;
    lua_route(&gw, "vars", "/vars/*", Some(&b), pre("access", access));
    lua_route(
        &gw,
        "logvars",
        "/logvars",
        Some(&b),
        pre(
            "log",
            r#"ngx.log(ngx.WARN, "LOGVARS upstream_addr=", ngx.var.upstream_addr or "nil",
                       " status=", ngx.var.status or "nil", " phase=", ngx.get_phase())"#,
        ),
    );
    // The same log function on a route whose Lua already ran in access.
    lua_route(
        &gw,
        "logvars2",
        "/logvars2",
        Some(&b),
        pre_post(
            ("access", "ngx.ctx.x = 1"),
            (
                "log",
                r#"ngx.log(ngx.WARN, "LOGVARS2 upstream_addr=", ngx.var.upstream_addr or "nil",
                           " status=", ngx.var.status or "nil", " phase=", ngx.get_phase())"#,
            ),
        ),
    );
    gw.sync();

    let r = gw.proxy_req(
        Request::get("/vars/p?x=1&y=two")
            .header("Host", "Vars.Example:8080")
            .header("X-Custom-Thing", "v")
            .header("User-Agent", "e2e/1")
            .header("Cookie", "sid=abc; theme=dark"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    let expect = json!({
        "uri": "/vars/p",
        "request_uri": "/vars/p?x=1&y=two",
        "args": "x=1&y=two",
        "host": "vars.example",
        "scheme": "http",
        "request_method": "GET",
        "remote_addr": "127.0.0.1",
        "server_port": gw.proxy_port.to_string(),
        "arg_x": "1",
        "arg_y": "two",
        "arg_missing": "NIL",
        "http_x_custom_thing": "v",
        "http_user_agent": "e2e/1",
        "cookie_sid": "abc",
        "cookie_theme": "dark",
        "cookie_none": "NIL",
        "status_in_access": "NIL",
        "method": "GET",
        "uri_args_y": "two",
        "header_custom": "v",
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&j[k], v, "ngx.var/ngx.req {k}: got {j}");
    }
    let port: u16 = j["remote_port"].as_str().unwrap_or("").parse().unwrap_or(0);
    assert!(port > 0, "remote_port: {j}");

    let r = gw.proxy_get("/logvars");
    assert_eq!(r.status, 200, "{r:?}");
    let r = gw.proxy_get("/logvars2");
    assert_eq!(r.status, 200, "{r:?}");
    let line = wait_log_line(&gw, &["LOGVARS "]);
    let line2 = wait_log_line(&gw, &["LOGVARS2 "]);
    assert!(line.contains(PRE), "ngx.log names the plugin: {line}");
    let want = format!("upstream_addr={} status=200 phase=log", b.node());
    assert!(
        line.contains(&format!("LOGVARS {want}")) && line2.contains(&format!("LOGVARS2 {want}")),
        "log phase vars, want `{want}`:\n  log-only route:       {line}\n  access+log route:     {line2}"
    );
}

/// `ngx.log` lands in the gateway log, at its level, with the plugin name.
#[test]
fn lua_ngx_log_in_gateway_log() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "l",
        "/log",
        Some(&b),
        pre_post(
            (
                "access",
                r#"ngx.log(ngx.ERR, "hello-from-lua ", 42, " ", true)"#,
            ),
            ("rewrite", r#"ngx.log(ngx.WARN, "warn-from-lua")"#),
        ),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/log").status, 200);
    let line = wait_log_line(&gw, &["hello-from-lua 42 true"]);
    assert!(line.contains(PRE), "plugin name on the line: {line}");
    assert!(
        line.contains("ERROR"),
        "ngx.ERR logs at error level: {line}"
    );
    let line = wait_log_line(&gw, &["warn-from-lua"]);
    assert!(line.contains(POST), "plugin name on the line: {line}");
    assert!(line.contains("WARN"), "ngx.WARN logs at warn level: {line}");
}

/// `ngx.ctx` set in access is seen in header_filter (as a response header) and
/// in log (in the gateway log); each request gets a fresh table.
#[test]
fn lua_ctx_from_access_to_header_filter_and_log() {
    let gw = gw();
    let b = Backend::start("b");
    gw.put(
        "/global_rules/g1",
        json!({"plugins": pre("log",
            r#"if ngx.var.uri == "/ctx" then
                 ngx.log(ngx.WARN, "CTXLOG user=", ngx.ctx.user or "none", " n=", ngx.ctx.n or -1,
                         " arg=", ctx.user or "none", " req=", ngx.var.arg_i)
               end"#)}),
    );
    lua_route(
        &gw,
        "ctx",
        "/ctx",
        Some(&b),
        pre_post(
            (
                "access",
                r#"if ngx.ctx.user then ngx.ctx.leaked = true end
                   ngx.ctx.user = "alice-" .. ngx.var.arg_i
                   ngx.ctx.n = 41"#,
            ),
            (
                "header_filter",
                r#"ngx.header["X-Ctx-User"] = ngx.ctx.user
                   ngx.header["X-Ctx-N"] = ngx.ctx.n + 1
                   ngx.header["X-Ctx-Leaked"] = tostring(ngx.ctx.leaked or false)"#,
            ),
        ),
    );
    gw.sync();
    let mut conn = gw.proxy_conn();
    for i in 0..3 {
        let r = conn.send(&Request::get(&format!("/ctx?i={i}"))).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.header("x-ctx-user"),
            Some(format!("alice-{i}").as_str()),
            "{r:?}"
        );
        assert_eq!(r.header("x-ctx-n"), Some("42"), "{r:?}");
        assert_eq!(
            r.header("x-ctx-leaked"),
            Some("false"),
            "ngx.ctx is per request: {r:?}"
        );
        let line = wait_log_line(&gw, &["CTXLOG", &format!("req={i}")]);
        assert!(
            line.contains(&format!("CTXLOG user=alice-{i} n=41 arg=alice-{i} req={i}")),
            "ngx.ctx in log: {line}"
        );
    }
}

/// A global header_filter adds CORS headers to a proxied response, to an
/// `ngx.exit(403)` from access, and to the gateway's own 404 (no route).
#[test]
fn lua_cors_header_filter_on_proxied_and_local_responses() {
    let gw = gw();
    let b = Backend::start("b");
    gw.put(
        "/global_rules/cors",
        json!({"plugins": post("header_filter",
            r#"ngx.header["Access-Control-Allow-Origin"] = "*"
               ngx.header["Access-Control-Allow-Methods"] = "GET, POST"
               ngx.header["X-HF-Phase"] = ngx.get_phase()
               ngx.header["X-HF-Status"] = ngx.status"#)}),
    );
    lua_route(&gw, "p", "/proxied", Some(&b), json!({}));
    lua_route(
        &gw,
        "d",
        "/denied",
        Some(&b),
        pre("access", "ngx.exit(403)"),
    );
    lua_route(
        &gw,
        "j",
        "/json",
        Some(&b),
        pre("access", r#"return 401, {message = "nope"}"#),
    );
    gw.sync();

    let check = |path: &str, status: u16| {
        let r = gw.proxy_get(path);
        assert_eq!(r.status, status, "{path}: {r:?}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("*"),
            "{path}: {r:?}"
        );
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, POST"),
            "{path}: {r:?}"
        );
        assert_eq!(
            r.header("x-hf-phase"),
            Some("header_filter"),
            "{path}: {r:?}"
        );
        assert_eq!(
            r.header("x-hf-status"),
            Some(status.to_string().as_str()),
            "ngx.status in header_filter: {path}: {r:?}"
        );
        r
    };
    let r = check("/proxied", 200);
    assert_eq!(r.backend().as_deref(), Some("b"));
    let r = check("/denied", 403);
    assert!(r.text().contains("403 Forbidden"), "{r:?}");
    let r = check("/json", 401);
    assert_eq!(r.json(), json!({"message": "nope"}));
    let r = check("/no/such/route", 404);
    assert!(r.text().contains("404 Route Not Found"), "{r:?}");
}

/// A route-level header_filter (not a global rule) also runs for the route's
/// locally generated responses.
#[test]
fn lua_route_header_filter_on_local_response() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "d",
        "/denied",
        Some(&b),
        pre_post(
            ("access", "ngx.exit(ngx.HTTP_FORBIDDEN)"),
            (
                "header_filter",
                r#"ngx.header["Access-Control-Allow-Origin"] = "https://app.example""#,
            ),
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/denied");
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example"),
        "{r:?}"
    );
}

/// body_filter upper-cases a chunked backend body chunk by chunk; at eof it
/// appends how many chunks it saw (ngx.arg[1]/ngx.arg[2]).
#[test]
fn lua_body_filter_uppercases_a_chunked_body() {
    let gw = gw();
    let b = Backend::start("chunky");
    b.set_chunked(true);
    lua_route(
        &gw,
        "bf",
        "/bf",
        Some(&b),
        pre_post(
            ("access", "ngx.ctx.chunks = 0"),
            (
                "body_filter",
                r#"local chunk, eof = ngx.arg[1], ngx.arg[2]
                   if chunk ~= "" then ngx.ctx.chunks = ngx.ctx.chunks + 1 end
                   if eof then
                     ngx.arg[1] = string.upper(chunk) .. "|" .. ngx.get_phase() .. "|" .. ngx.ctx.chunks
                   else
                     ngx.arg[1] = string.upper(chunk)
                   end"#,
            ),
        ),
    );
    gw.sync();
    for _ in 0..3 {
        let r = gw.proxy_get("/bf?q=abc");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            r.header("content-length").is_none(),
            "body may change size: {r:?}"
        );
        let t = r.text();
        let (body, rest) = t
            .split_once('|')
            .unwrap_or_else(|| panic!("no eof marker: {t}"));
        let (phase, chunks) = rest
            .split_once('|')
            .unwrap_or_else(|| panic!("bad marker: {t}"));
        assert_eq!(phase, "body_filter");
        let chunks: usize = chunks.parse().unwrap_or(0);
        assert!(
            chunks >= 2,
            "body_filter saw the chunks separately ({chunks}): {t}"
        );
        assert_eq!(body, body.to_uppercase(), "{t}");
        let j: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(j["BACKEND"], "CHUNKY", "{j}");
        assert_eq!(j["PATH"], "/BF", "{j}");
        assert_eq!(j["QUERY"], "Q=ABC", "{j}");
    }
}

/// `ngx.header` with a table value sends several headers; `= nil` removes one;
/// `ngx.status` set in header_filter changes the status; reading
/// `ngx.header.content_type` gives the backend's value.
#[test]
fn lua_header_filter_multi_value_headers_and_status() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "h",
        "/h",
        Some(&b),
        post(
            "header_filter",
            r#"ngx.header["X-Orig-Status"] = ngx.status
               ngx.header["X-Seen-CT"] = ngx.header.content_type
               ngx.header["X-Multi"] = {"one", "two", "three"}
               ngx.header["Set-Cookie"] = {"a=1; Path=/", "b=2"}
               ngx.header.x_underscored = "u"
               ngx.header["X-Backend"] = nil
               ngx.status = 201"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/h");
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("x-orig-status"), Some("200"), "{r:?}");
    assert_eq!(r.header("x-seen-ct"), Some("application/json"), "{r:?}");
    assert_eq!(header_all(&r, "x-multi"), ["one", "two", "three"], "{r:?}");
    assert_eq!(
        header_all(&r, "set-cookie"),
        ["a=1; Path=/", "b=2"],
        "{r:?}"
    );
    assert_eq!(r.header("x-underscored"), Some("u"), "{r:?}");
    assert!(
        r.header("x-backend").is_none(),
        "ngx.header.X = nil removes: {r:?}"
    );
    assert_eq!(r.json()["backend"], "b", "body untouched: {r:?}");
}

/// `ngx.get_phase()` in every phase a serverless function can run in.
#[test]
fn lua_get_phase_in_every_phase() {
    let gw = gw();
    let b = Backend::start("b");
    // Global rules give more plugin slots than one route's two serverless plugins.
    gw.put(
        "/global_rules/g-rewrite",
        json!({"plugins": pre("rewrite", "ngx.ctx.phases = {ngx.get_phase()}")}),
    );
    gw.put(
        "/global_rules/g-access",
        json!({"plugins": pre("access", "table.insert(ngx.ctx.phases, ngx.get_phase())")}),
    );
    gw.put(
        "/global_rules/g-before",
        json!({"plugins": pre("before_proxy",
            r#"table.insert(ngx.ctx.phases, ngx.get_phase())
               ngx.req.set_header("X-Phases", table.concat(ngx.ctx.phases, ","))"#)}),
    );
    gw.put(
        "/global_rules/g-log",
        json!({"plugins": pre("log",
            r#"ngx.log(ngx.WARN, "PHASELOG ", ngx.get_phase(), " ", ngx.var.uri)"#)}),
    );
    lua_route(
        &gw,
        "ph",
        "/phases",
        Some(&b),
        pre_post(
            (
                "header_filter",
                r#"table.insert(ngx.ctx.phases, ngx.get_phase())
                   ngx.header["X-Phases"] = table.concat(ngx.ctx.phases, ",")"#,
            ),
            (
                "body_filter",
                r#"if ngx.arg[2] then ngx.arg[1] = ngx.arg[1] .. "\n" .. ngx.get_phase() end"#,
            ),
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/phases");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-phases"),
        Some("rewrite,access,before_proxy,header_filter"),
        "{r:?}"
    );
    let t = r.text();
    let (body, last) = t.rsplit_once('\n').unwrap_or_else(|| panic!("{t}"));
    assert_eq!(last, "body_filter", "{t}");
    let j: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        j["headers"]["x-phases"], "rewrite,access,before_proxy",
        "{j}"
    );
    wait_log_line(&gw, &["PHASELOG log /phases"]);
}

/// ngx.re, base64, md5, escape_uri and cjson in a real request.
#[test]
fn lua_re_codecs_and_cjson_round_trip() {
    let gw = gw();
    let b = Backend::start("b");
    let code = r##"
        local cjson = require "cjson"
        local out = {}
        local m = ngx.re.match(ngx.var.uri, [[^/lib/(\w+)/(\d+)$]], "jo")
        out.m1, out.m2 = m[1], m[2]
        local named = ngx.re.match("key=Value", [[(?<k>\w+)=(?<v>\w+)]], "jo")
        out.named_v = named.v
        local s, n = ngx.re.gsub("a1b22c333", [[\d+]], "#", "jo")
        out.gsub, out.gsub_n = s, n
        out.gsub_fn = ngx.re.gsub("hello world", [[(\w+)]], function(mm) return string.upper(mm[1]) end, "jo")
        out.imatch = ngx.re.match("HeLLo", "hello", "i")[0]
        out.nomatch = ngx.re.match("abc", [[\d]], "jo") == nil
        out.b64 = ngx.encode_base64("hello world")
        out.unb64 = ngx.decode_base64(out.b64)
        out.md5 = ngx.md5("hello")
        out.md5_bin_len = #ngx.md5_bin("hello")
        out.esc = ngx.escape_uri("a b&c")
        local input = cjson.decode(ngx.req.get_headers()["x-json"])
        input.added = {1, 2, 3}
        input.count = #input.list
        out.null_is_ngx_null = input.nothing == ngx.null
        out.roundtrip = cjson.encode(input)
        ngx.header["Content-Type"] = "application/json"
        ngx.say(cjson.encode(out))
        return ngx.exit(200)"##;
    lua_route(&gw, "lib", "/lib/*", Some(&b), pre("access", code));
    gw.sync();
    let input = json!({"list": ["x", "y"], "obj": {"k": "v"}, "nothing": null, "num": 1.5});
    let r = gw.proxy_req(Request::get("/lib/abc/123").header("X-Json", &input.to_string()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let j = r.json();
    assert_eq!(j["m1"], "abc", "{j}");
    assert_eq!(j["m2"], "123", "{j}");
    assert_eq!(j["named_v"], "Value", "{j}");
    assert_eq!(j["gsub"], "a#b#c#", "{j}");
    assert_eq!(j["gsub_n"], 3, "{j}");
    assert_eq!(j["gsub_fn"], "HELLO WORLD", "{j}");
    assert_eq!(j["imatch"], "HeLLo", "{j}");
    assert_eq!(j["nomatch"], true, "{j}");
    assert_eq!(j["b64"], "aGVsbG8gd29ybGQ=", "{j}");
    assert_eq!(j["unb64"], "hello world", "{j}");
    assert_eq!(j["md5"], "5d41402abc4b2a76b9719d911017c592", "{j}");
    assert_eq!(j["md5_bin_len"], 16, "{j}");
    assert_eq!(j["esc"], "a%20b%26c", "{j}");
    assert_eq!(j["null_is_ngx_null"], true, "{j}");
    let rt: Value = serde_json::from_str(j["roundtrip"].as_str().unwrap_or("")).unwrap();
    let mut expect = input.clone();
    expect["added"] = json!([1, 2, 3]);
    expect["count"] = json!(2);
    assert_eq!(rt, expect, "cjson round trip");
    assert_eq!(b.hits(), 0);
}

/// Global rules run before route plugins in a phase; within each group, higher
/// priority first (serverless-pre-function 10000 before -post -2000).
#[test]
fn lua_global_rules_first_then_priority() {
    let gw = gw();
    let b = Backend::start("b");
    let step = |name: &str| format!(r#"ngx.ctx.order = (ngx.ctx.order or "") .. "{name},""#);
    // Declared post first, pre second: order must come from priority.
    gw.put(
        "/global_rules/g",
        json!({"plugins": {
            POST: serverless("access", &func(&step("g-post"))),
            PRE: serverless("access", &func(&step("g-pre"))),
        }}),
    );
    lua_route(
        &gw,
        "o",
        "/order",
        Some(&b),
        json!({
            POST: serverless("access", &func(&format!(
                r#"{} ngx.req.set_header("X-Order", ngx.ctx.order)"#, step("r-post")))),
            PRE: serverless("access", &func(&step("r-pre"))),
        }),
    );
    gw.sync();
    let r = gw.proxy_get("/order");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["headers"]["x-order"],
        "g-pre,g-post,r-pre,r-post,",
        "{r:?}"
    );
}

/// Several functions of one plugin run in order; closures keep upvalues across
/// requests of the same worker (APISIX semantics).
#[test]
fn lua_functions_in_order_and_upvalues_persist() {
    let gw = lua_gateway(1, LuaOpts::default());
    let b = Backend::start("b");
    lua_route(
        &gw,
        "f",
        "/funcs",
        Some(&b),
        json!({PRE: {"phase": "access", "functions": [
            "return function(conf, ctx) ngx.ctx.s = 'one' end",
            "local count = 0\nreturn function(conf, ctx) count = count + 1; ngx.req.set_header('X-Seq', ngx.ctx.s .. ',two,' .. count) end",
        ]}}),
    );
    gw.sync();
    let mut conn = gw.proxy_conn();
    let mut counts = Vec::new();
    for _ in 0..3 {
        let r = conn.send(&Request::get("/funcs")).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let seq = r.json()["headers"]["x-seq"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let (prefix, n) = seq.rsplit_once(',').unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(prefix, "one,two", "{r:?}");
        counts.push(n.parse::<u32>().unwrap());
    }
    assert_eq!(
        counts,
        [1, 2, 3],
        "upvalue kept across requests of one worker (threads: 1)"
    );
}

/// Plugins on a service run for every route of the service; a route's own
/// plugin of the same name overrides the service's (APISIX).
#[test]
fn lua_service_plugins_apply_to_its_routes() {
    let gw = gw();
    let b = Backend::start("b");
    gw.put(
        "/services/s1",
        json!({
            "upstream": upstream(&b),
            "plugins": pre("rewrite", r#"ngx.req.set_header("X-From-Service", "s1")"#),
        }),
    );
    gw.put("/routes/a", json!({"uri": "/svc/a", "service_id": "s1"}));
    gw.put(
        "/routes/b",
        json!({"uri": "/svc/b", "service_id": "s1",
               "plugins": post("access", r#"ngx.req.set_header("X-From-Route", "b")"#)}),
    );
    gw.put(
        "/routes/c",
        json!({"uri": "/svc/c", "service_id": "s1",
               "plugins": pre("rewrite", r#"ngx.req.set_header("X-From-Route", "c")"#)}),
    );
    gw.sync();
    let h = |path: &str| {
        let r = gw.proxy_get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let j = r.json()["headers"].clone();
        let get = |k: &str| j.get(k).and_then(Value::as_str).map(str::to_owned);
        (get("x-from-service"), get("x-from-route"))
    };
    assert_eq!(h("/svc/a"), (Some("s1".into()), None));
    assert_eq!(h("/svc/b"), (Some("s1".into()), Some("b".into())));
    assert_eq!(
        h("/svc/c"),
        (None, Some("c".into())),
        "route plugin overrides the service's"
    );
}

/// `conf` is the plugin's configuration; `ngx.worker.id/count`, `ngx.now`,
/// `ngx.time`, `ngx.today` look sane.
#[test]
fn lua_conf_worker_and_time() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "w",
        "/w",
        Some(&b),
        pre(
            "access",
            r#"return 200, {phase = conf.phase, nfuncs = #conf.functions,
                            wid = ngx.worker.id(), wcount = ngx.worker.count(),
                            now = ngx.now(), time = ngx.time(), today = ngx.today(),
                            http_time = ngx.http_time(0)}"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/w");
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["phase"], "access", "{j}");
    assert_eq!(j["nfuncs"], 1, "{j}");
    assert_eq!(j["wcount"], 2, "{j}");
    let wid = j["wid"].as_i64().unwrap_or(-1);
    assert!((0..2).contains(&wid), "{j}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let lua_now = j["now"].as_f64().unwrap_or(0.0);
    assert!((now - lua_now).abs() < 30.0, "ngx.now {lua_now} vs {now}");
    let lua_time = j["time"].as_f64().unwrap_or(0.0);
    assert!((now - lua_time).abs() < 30.0, "ngx.time {lua_time}");
    assert_eq!(j["http_time"], "Thu, 01 Jan 1970 00:00:00 GMT", "{j}");
    assert_eq!(
        j["today"].as_str().unwrap_or("").len(),
        10,
        "yyyy-mm-dd: {j}"
    );
}

/// OpenResty details: `ngx.var.request_uri` keeps the original request line
/// after `ngx.req.set_uri` (only `ngx.var.uri` changes); `ngx.var.hostname` is
/// the machine's host name, not the Host header.
#[test]
fn lua_var_request_uri_is_original_and_hostname_is_the_machine() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "ru",
        "/orig",
        Some(&b),
        pre_post(
            (
                "rewrite",
                r#"ngx.req.set_uri("/new") ngx.req.set_uri_args("z=9")"#,
            ),
            (
                "access",
                r#"return 200, {uri = ngx.var.uri, args = ngx.var.args,
                                request_uri = ngx.var.request_uri, hostname = ngx.var.hostname}"#,
            ),
        ),
    );
    gw.sync();
    let r = gw.proxy_req(Request::get("/orig?q=1").header("Host", "client.example"));
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["uri"], "/new", "{j}");
    assert_eq!(j["args"], "z=9", "{j}");
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut wrong = Vec::new();
    if j["request_uri"] != "/orig?q=1" {
        wrong.push(format!(
            "ngx.var.request_uri: nginx keeps the original \"/orig?q=1\", got {}",
            j["request_uri"]
        ));
    }
    if !machine.is_empty() && j["hostname"] != machine.as_str() {
        wrong.push(format!(
            "ngx.var.hostname: nginx gives the machine's host name {machine:?}, got {}",
            j["hostname"]
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Headers and status set before answering from access: `ngx.header` set in
/// access is on the generated response; `ngx.status = 201` + `ngx.say` +
/// `ngx.exit(ngx.HTTP_OK)` answers 201 (OpenResty sends the headers, with the
/// status, at the first `ngx.say`; the exit code then only finalizes).
#[test]
fn lua_access_headers_and_status_on_generated_response() {
    let gw = gw();
    let b = Backend::start("b");
    lua_route(
        &gw,
        "hd",
        "/hd",
        Some(&b),
        pre(
            "access",
            r#"ngx.header["X-A"] = "1"
               ngx.header.content_type = "application/x-custom"
               ngx.say("body")
               return ngx.exit(200)"#,
        ),
    );
    lua_route(
        &gw,
        "st",
        "/st",
        Some(&b),
        pre(
            "access",
            r#"ngx.status = 201
               ngx.say("created")
               return ngx.exit(ngx.HTTP_OK)"#,
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/hd");
    assert_eq!((r.status, r.text().as_str()), (200, "body\n"), "{r:?}");
    assert_eq!(r.header("x-a"), Some("1"), "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-custom"),
        "{r:?}"
    );
    let r = gw.proxy_get("/st");
    assert_eq!(r.text(), "created\n", "{r:?}");
    assert_eq!(
        r.status, 201,
        "ngx.status = 201 then ngx.say then ngx.exit(200): {r:?}"
    );
}

/// Every request-independent `ngx` function listed in the issue, run inside a real
/// request, with values checked against what OpenResty returns.
#[test]
fn every_pure_ngx_function_works_in_a_request() {
    let gw = Gateway::start_default();
    let code = r#"
        local cjson = require "cjson"
        local safe = require "cjson.safe"
        local bit = require "bit"
        ngx.update_time()
        local m = ngx.re.match("hello, 1234", "([0-9])[0-9]+")
        local from, to = ngx.re.find("hello, 1234", "[0-9]+", "jo")
        local it = ngx.re.gmatch("a1b2", "[0-9]")
        local first = it()
        local subbed = ngx.re.sub("hello world", "o", "0")
        local gsubbed, n = ngx.re.gsub("hello world", "o", "0")
        local bad, decoded_err = safe.decode("{bad")
        local out = {
            re_match = m[0] .. "/" .. m[1],
            re_find = from .. "-" .. to,
            re_gmatch = first[0],
            re_sub = subbed,
            re_gsub = gsubbed .. "/" .. n,
            b64 = ngx.encode_base64("portico"),
            unb64 = ngx.decode_base64("cG9ydGljbw=="),
            md5 = ngx.md5("portico"),
            md5_bin_len = #ngx.md5_bin("portico"),
            sha1_bin_b64 = ngx.encode_base64(ngx.sha1_bin("portico")),
            hmac_b64 = ngx.encode_base64(ngx.hmac_sha1("key", "portico")),
            crc32 = ngx.crc32_short("portico"),
            esc = ngx.escape_uri("a b/c"),
            unesc = ngx.unescape_uri("a%20b+c"),
            enc_args = ngx.encode_args({b = "2", a = "1"}),
            dec_args = ngx.decode_args("x=1&y=2").y,
            sql = ngx.quote_sql_str("it's"),
            http_time = ngx.http_time(1290079655),
            cookie_time = ngx.cookie_time(1290079655),
            today_len = #ngx.today(),
            now_ok = ngx.now() > 1.6e9 and ngx.time() > 1.6e9,
            null_is_null = cjson.encode({v = ngx.null}),
            json = cjson.decode('{"a":[1,2]}').a[2],
            safe_err = bad == nil and decoded_err ~= nil,
            bit_hex = bit.tohex(-1),
            bit_band = bit.band(0xff, 0x0f),
            worker = ngx.worker.id() .. "/" .. ngx.worker.count(),
            phase = ngx.get_phase(),
            ok_const = ngx.OK .. "," .. ngx.HTTP_FORBIDDEN .. "," .. ngx.ERR,
        }
        return 200, out"#;
    lua_route(&gw, "pure", "/pure", None, pre("access", code));
    gw.sync();
    let r = gw.proxy_get("/pure");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["re_match"], "1234/1");
    assert_eq!(v["re_find"], "8-11");
    assert_eq!(v["re_gmatch"], "1");
    assert_eq!(v["re_sub"], "hell0 world");
    assert_eq!(v["re_gsub"], "hell0 w0rld/2");
    assert_eq!(v["b64"], "cG9ydGljbw==");
    assert_eq!(v["unb64"], "portico");
    assert_eq!(v["md5"], "632c9a81581bb362b83fec1f9d98b595");
    assert_eq!(v["md5_bin_len"], 16);
    assert_eq!(v["sha1_bin_b64"], "O59wvLQFQO54XtaUduTBV8eZI1U=");
    assert_eq!(v["hmac_b64"], "fbHM5vrTCjwZ5Nuo31wKs1cUCEA=");
    assert_eq!(v["crc32"], 993166012);
    assert_eq!(v["esc"], "a%20b%2Fc");
    assert_eq!(v["unesc"], "a b c");
    assert_eq!(v["enc_args"], "a=1&b=2");
    assert_eq!(v["dec_args"], "2");
    assert_eq!(v["sql"], "'it\\'s'");
    assert_eq!(v["http_time"], "Thu, 18 Nov 2010 11:27:35 GMT");
    assert_eq!(v["cookie_time"], "Thu, 18-Nov-10 11:27:35 GMT");
    assert_eq!(v["today_len"], 10);
    assert_eq!(v["now_ok"], true);
    assert_eq!(v["null_is_null"], r#"{"v":null}"#);
    assert_eq!(v["json"], 2);
    assert_eq!(v["safe_err"], true);
    assert_eq!(v["bit_hex"], "ffffffff");
    assert_eq!(v["bit_band"], 15);
    assert_eq!(v["phase"], "access");
    assert_eq!(v["ok_const"], "0,403,4");
    assert!(
        v["worker"].as_str().is_some_and(|w| w.ends_with("/2")),
        "{}",
        v["worker"]
    );
}
