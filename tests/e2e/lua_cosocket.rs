//! Cosockets, timers, light threads and semaphores (issue 18, part B), used the way
//! pure-Lua OpenResty libraries use them: a Redis client speaking RESP with a keepalive
//! pool against a real `redis-server`, an HTTP/1.1 client decoding a chunked response
//! with `receiveuntil` against a real backend, timers, threads, and descriptors that
//! do not leak.

use std::time::{Duration, Instant};

use crate::lua_common::*;
use crate::support::*;

/// A small RESP client written for these tests (lua-resty-redis's usage: connect,
/// commands, `setkeepalive`), as Lua source defining `redis_cmd(sock, ...)`.
const RESP: &str = r#"
local function redis_cmd(sock, ...)
    local args = {...}
    local req = {"*", #args, "\r\n"}
    for _, a in ipairs(args) do
        a = tostring(a)
        req[#req + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
    end
    local ok, err = sock:send(req)
    if not ok then return nil, err end
    local line, err = sock:receive()
    if not line then return nil, err end
    local kind = line:sub(1, 1)
    if kind == "+" then return line:sub(2) end
    if kind == "-" then return nil, line:sub(2) end
    if kind == ":" then return tonumber(line:sub(2)) end
    if kind == "$" then
        local n = tonumber(line:sub(2))
        if n < 0 then return ngx.null end
        local data, err = sock:receive(n + 2)
        if not data then return nil, err end
        return data:sub(1, n)
    end
    return nil, "unexpected reply " .. line
end
"#;

fn fd_count(gw: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_resp_client_on_a_cosocket_reuses_pooled_connections() {
    let redis = RedisServer::start();
    let gw = lua_gateway(1, LuaOpts::default());
    let body = format!(
        r#"{RESP}
local sock = ngx.socket.tcp()
sock:settimeout(2000)
local ok, err = sock:connect("127.0.0.1", {port})
if not ok then return 500, "connect: " .. err end
local n = redis_cmd(sock, "INCR", "hits")
assert(redis_cmd(sock, "SET", "cosock", "v" .. n))
local v = assert(redis_cmd(sock, "GET", "cosock"))
local missing = redis_cmd(sock, "GET", "nothing-here")
local reused = sock:getreusedtimes()
assert(sock:setkeepalive(10000, 10))
return 200, v .. " " .. reused .. " " .. tostring(missing == ngx.null)"#,
        port = redis.port
    );
    lua_route(&gw, "redis", "/redis", None, pre("access", &body));
    gw.sync();
    let first = gw.proxy_get("/redis");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.text(), "v1 0 true");
    let second = gw.proxy_get("/redis");
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        second.text(),
        "v2 1 true",
        "the second request reuses the pooled connection"
    );
    assert_eq!(
        redis.command(&["GET", "cosock"]).trim_end(),
        "$2\r\nv2".trim_end()
    );
}

#[test]
fn an_http_client_decodes_a_chunked_response_with_receiveuntil() {
    let b = Backend::start("chunky");
    b.set_chunked(true);
    let gw = lua_gateway(1, LuaOpts::default());
    let body = format!(
        r#"
local sock = ngx.socket.tcp()
sock:settimeout(2000)
assert(sock:connect("127.0.0.1", {port}))
assert(sock:send({{"GET /chunky HTTP/1.1\r\n", "Host: b\r\n", "\r\n"}}))
local status = assert(sock:receive("*l"))
local chunked = false
while true do
    local line = assert(sock:receive())
    if line == "" then break end
    if line:lower():find("transfer-encoding: chunked", 1, true) then chunked = true end
end
local read_line = sock:receiveuntil("\r\n")
local parts = {{}}
while true do
    local size_line, err = read_line()
    if not size_line then return 500, "size line: " .. err end
    local size = tonumber(size_line, 16)
    if size == 0 then assert(sock:receive(2)) break end
    parts[#parts + 1] = assert(sock:receive(size))
    assert(sock:receive(2))
end
assert(sock:setkeepalive())
return 200, status .. "|" .. tostring(chunked) .. "|" .. #parts .. "|" .. table.concat(parts)"#,
        port = b.port()
    );
    lua_route(&gw, "http", "/http", None, pre("content", &body));
    gw.sync();
    let r = gw.proxy_get("/http");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let fields: Vec<&str> = text.splitn(4, '|').collect();
    assert_eq!(fields[0], "HTTP/1.1 200 X");
    assert_eq!(fields[1], "true");
    assert!(fields[2].parse::<usize>().unwrap() >= 2, "{text}");
    let echo: Value = serde_json::from_str(fields[3]).expect("the decoded body is the JSON echo");
    assert_eq!(echo["path"], "/chunky");
}

#[test]
fn sockets_are_refused_where_openresty_disables_them() {
    let b = Backend::start("b");
    let gw = lua_gateway(1, LuaOpts::default());
    lua_route(
        &gw,
        "ctx",
        "/ctx",
        Some(&b),
        post(
            "header_filter",
            "local ok, err = pcall(ngx.socket.tcp) ngx.header['x-err'] = tostring(err):match('API disabled[^\\n]*')",
        ),
    );
    gw.sync();
    let r = gw.proxy_get("/ctx");
    assert_eq!(r.status, 200);
    let err = r.header("x-err").unwrap_or_default();
    assert!(
        err.contains("API disabled in the context of header_filter_by_lua*"),
        "{err}"
    );
}

#[test]
fn timers_run_later_with_their_arguments_and_counts() {
    let gw = lua_gateway(
        1,
        LuaOpts {
            shared_dicts: vec![("t".into(), "1m".into())],
            max_pending_timers: Some(3),
            ..Default::default()
        },
    );
    lua_route(
        &gw,
        "start",
        "/start",
        None,
        pre(
            "access",
            r#"
local dict = ngx.shared.t
local ok, err = ngx.timer.at(0.05, function(premature, a, b)
    dict:set("at", a .. b .. tostring(premature) .. ngx.get_phase() .. ngx.timer.running_count())
end, "x", "y")
if not ok then return 500, err end
ok, err = ngx.timer.every(0.05, function() dict:set("every", (dict:get("every") or 0) + 1) end)
if not ok then return 500, err end
return 200, "started""#,
        ),
    );
    lua_route(
        &gw,
        "read",
        "/read",
        None,
        pre(
            "access",
            r#"local d = ngx.shared.t return 200, tostring(d:get("at")) .. "|" .. tostring(d:get("every"))"#,
        ),
    );
    lua_route(
        &gw,
        "pending",
        "/pending",
        None,
        pre(
            "access",
            r#"
local out = {}
for i = 1, 4 do
    local ok, err = ngx.timer.at(30, function() end)
    out[#out + 1] = ok and "ok" or err
end
return 200, table.concat(out, ",") .. "|" .. ngx.timer.pending_count()"#,
        ),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/start").status, 200);
    let mut last = String::new();
    let ran = wait_until(WAIT, || {
        last = gw.proxy_get("/read").text();
        let mut it = last.split('|');
        it.next() == Some("xyfalsetimer1")
            && it.next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= 3
    });
    assert!(ran, "timers did not run as expected: {last}");
    // The `every` timer is pending between its runs: one slot of three is taken.
    let r = gw.proxy_get("/pending").text();
    assert_eq!(r, "ok,ok,too many pending timers,too many pending timers|3");
}

#[test]
fn a_runaway_timer_is_stopped_and_a_timer_leaking_sockets_has_them_closed() {
    let b = Backend::start("b");
    let gw = lua_gateway(
        1,
        LuaOpts {
            max_slice_ms: Some(200),
            ..Default::default()
        },
    );
    lua_route(
        &gw,
        "runaway",
        "/runaway",
        None,
        pre(
            "access",
            "ngx.timer.at(0, function() while true do end end) return 200, 'ok'",
        ),
    );
    // `keep` outlives the timer (a module-level upvalue): only the end of the timer's
    // run can close its sockets, not the garbage collector.
    let leak = format!(
        r#"local keep = {{}}
return function(conf, ctx)
    local ok, err = ngx.timer.at(0, function()
        for i = 1, 20 do
            local s = ngx.socket.tcp()
            assert(s:connect("127.0.0.1", {port}))
            keep[#keep + 1] = s
        end
        ngx.sleep(0.5)
    end)
    return 200, tostring(ok) .. tostring(err)
end"#,
        port = b.port()
    );
    gw.put(
        "/routes/leak",
        json!({"uri": "/leak", "plugins": {PRE: serverless("access", &leak)}}),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/runaway").status, 200);
    wait_log_line(&gw, &["lua timer failed", "max_slice_ms"]);
    // The worker is free again.
    assert_eq!(gw.proxy_get("/runaway").text(), "ok");

    let before = fd_count(&gw);
    assert_eq!(gw.proxy_get("/leak").text(), "truenil");
    let mut seen = Vec::new();
    let opened = wait_until(WAIT, || {
        seen.push(fd_count(&gw));
        // ± the test client's own connection to the proxy, closing meanwhile.
        *seen.last().unwrap() >= before + 19
    });
    assert!(
        opened,
        "the timer's 20 sockets never opened: {before} before, then {:?}",
        &seen[..seen.len().min(60)]
    );
    assert!(
        wait_until(WAIT, || fd_count(&gw) <= before),
        "the timer's sockets stayed open after it ended: {} fds, {} before",
        fd_count(&gw),
        before
    );
}

#[test]
fn light_threads_and_semaphores() {
    let gw = lua_gateway(1, LuaOpts::default());
    lua_route(
        &gw,
        "threads",
        "/threads",
        None,
        pre(
            "content",
            r#"
local function work(n, d) ngx.sleep(d) return n * 2 end
local t1 = ngx.thread.spawn(work, 1, 0.05)
local t2 = ngx.thread.spawn(work, 2, 0.01)
local t3 = ngx.thread.spawn(function() ngx.sleep(10) return "late" end)
local out = {}
local ok, r = ngx.thread.wait(t1) out[#out + 1] = tostring(ok) .. r
ok, r = ngx.thread.wait(t2) out[#out + 1] = tostring(ok) .. r
out[#out + 1] = tostring(ngx.thread.kill(t3))
local sema = require("ngx.semaphore").new(0)
local t4 = ngx.thread.spawn(function() local ok, err = sema:wait(1) return ok and "posted" or err end)
sema:post(1)
ok, r = ngx.thread.wait(t4) out[#out + 1] = r
local ok2, err2 = sema:wait(0.05) out[#out + 1] = tostring(ok2) .. err2
out[#out + 1] = tostring(sema:count())
return 200, table.concat(out, ",")"#,
        ),
    );
    gw.sync();
    let t = Instant::now();
    let r = gw.proxy_get("/threads");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "true2,true4,true,posted,niltimeout,0");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the killed thread was waited for"
    );
}

#[test]
fn ten_thousand_cosocket_round_trips_leave_no_descriptor_behind() {
    let redis = RedisServer::start();
    let gw = lua_gateway(2, LuaOpts::default());
    // Requests pool, close, or simply drop their socket: all three must end closed or
    // in the bounded pool.
    let body = format!(
        r#"{RESP}
local sock = ngx.socket.tcp()
sock:settimeout(2000)
assert(sock:connect("127.0.0.1", {port}))
assert(redis_cmd(sock, "PING") == "PONG")
local how = math.random(3)
if how == 1 then sock:setkeepalive(10000, 5) elseif how == 2 then sock:close() end
return 200, "ok""#,
        port = redis.port
    );
    lua_route(&gw, "ping", "/ping", None, pre("access", &body));
    gw.sync();
    const CLIENTS: usize = 4;
    const EACH: usize = 2500;
    let run = |n: usize| {
        let addr = gw.proxy_addr();
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut conn = Conn::new(addr);
                    for _ in 0..n {
                        let r = conn.send(&Request::get("/ping")).expect("request");
                        assert_eq!(r.status, 200, "{}", r.text());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("client thread");
        }
    };
    run(50);
    let before = fd_count(&gw);
    assert!(before > 0, "cannot read /proc/{}/fd", gw.pid());
    run(EACH);
    // Pools hold at most 5 idle connections per worker; allow for them settling.
    let mut after = fd_count(&gw);
    let settled = wait_until(WAIT, || {
        after = fd_count(&gw);
        after <= before + 10
    });
    assert!(settled, "descriptors grew from {before} to {after}");
}

#[test]
fn sslhandshake_speaks_tls_to_a_real_backend() {
    let b = Backend::start_tls("tls");
    let gw = lua_gateway(1, LuaOpts::default());
    let body = format!(
        r#"
local sock = ngx.socket.tcp()
sock:settimeout(2000)
assert(sock:connect("127.0.0.1", {port}))
local session, err = sock:sslhandshake(nil, "localhost", false)
if not session then return 500, "handshake: " .. err end
assert(sock:send("GET /over-tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"))
local status = assert(sock:receive())
local verified = ngx.socket.tcp()
assert(verified:connect("127.0.0.1", {port}))
local ok, verr = verified:sslhandshake(nil, "localhost", true)
return 200, status .. "|" .. tostring(ok) .. "|" .. tostring(verr)"#,
        port = b.port()
    );
    lua_route(&gw, "tls", "/tls", None, pre("content", &body));
    gw.sync();
    let r = gw.proxy_get("/tls");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let fields: Vec<&str> = text.splitn(3, '|').collect();
    assert_eq!(fields[0], "HTTP/1.1 200 X", "{text}");
    // The test certificate is self-signed: verification refuses it.
    assert_eq!(fields[1], "nil", "{text}");
    assert!(fields[2].contains("certificate"), "{text}");
}

#[test]
fn pending_timers_run_prematurely_on_shutdown() {
    let mut gw = lua_gateway(1, LuaOpts::default());
    lua_route(
        &gw,
        "later",
        "/later",
        None,
        pre(
            "access",
            r#"assert(ngx.timer.at(3600, function(premature)
    ngx.log(ngx.ERR, "timer ran, premature=", tostring(premature), " exiting=", tostring(ngx.worker.exiting()))
end))
return 200, "scheduled""#,
        ),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/later").text(), "scheduled");
    gw.terminate();
    let logs = gw.logs();
    assert!(
        logs.contains("timer ran, premature=true exiting=true"),
        "{}",
        tail(&logs, 30)
    );
}
