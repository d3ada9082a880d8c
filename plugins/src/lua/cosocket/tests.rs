//! Cosockets against real loopback listeners, on a VM as requests use it.

use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::lua::{
    compile, CallOutcome, ConnVars, LuaLimits, LuaRequest, LuaVm, SharedDicts, SharedRequest,
};
use crate::phase::Phase;

fn vm() -> LuaVm {
    let limits = LuaLimits {
        max_slice: Duration::from_secs(2),
        max_memory: 32 * 1024 * 1024,
        max_pending_timers: 4,
    };
    LuaVm::new(limits, (0, 1), &SharedDicts::default()).expect("vm")
}

fn req(phase: Phase) -> SharedRequest {
    let mut r = LuaRequest::new(
        "GET".into(),
        "/".into(),
        None,
        HeaderMap::new(),
        ConnVars::default(),
    );
    r.phase = phase;
    r.shared()
}

/// Runs `body` as a phase function; its returned body as text.
async fn run(vm: &LuaVm, body: &str, r: &SharedRequest) -> String {
    let f = compile("test", &format!("return function()\n{body}\nend"), None).expect("compiles");
    match vm.call(&f, r).await {
        Ok(CallOutcome::Respond { body: Some(b), .. }) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("unexpected outcome {other:?}"),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A listener that writes `reply` to every connection, then closes it (or keeps it
/// open with `hold`).
async fn serve(reply: &'static [u8], hold: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(reply).await;
                if hold {
                    let mut sink = [0u8; 1024];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                }
            });
        }
    });
    port
}

#[test]
fn receive_patterns_and_receiveuntil_iterators() {
    rt().block_on(async {
        let port = serve(b"line1\r\nline2\nABCDEFG--END--tail", false).await;
        let vm = vm();
        let out = run(
            &vm,
            &format!(
                r#"local s = ngx.socket.tcp()
                assert(s:connect("127.0.0.1", {port}))
                local out = {{}}
                out[#out + 1] = s:receive()
                out[#out + 1] = s:receive("*l")
                out[#out + 1] = s:receive(3)
                local reader = s:receiveuntil("--END--")
                out[#out + 1] = reader(2)
                out[#out + 1] = reader(2)
                out[#out + 1] = tostring(reader(2))
                out[#out + 1] = s:receive("*a")
                local data, err, partial = s:receive()
                out[#out + 1] = tostring(data) .. err .. "[" .. tostring(partial) .. "]"
                return 200, table.concat(out, ",")"#
            ),
            &req(Phase::Content),
        )
        .await;
        assert_eq!(out, "line1,line2,ABC,DE,FG,nil,tail,nilclosed[nil]");
    });
}

#[test]
fn udp_sockets_and_ngx_socket_connect() {
    rt().block_on(async {
        let echo = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let udp_port = echo.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let mut b = [0u8; 1500];
            while let Ok((n, from)) = echo.recv_from(&mut b).await {
                let _ = echo.send_to(&b[..n], from).await;
            }
        });
        let tcp_port = serve(b"hello\n", false).await;
        let vm = vm();
        let out = run(
            &vm,
            &format!(
                r#"local u = ngx.socket.udp()
                u:settimeout(1000)
                assert(u:setpeername("127.0.0.1", {udp_port}))
                assert(u:send({{"pi", "ng"}}))
                local got = assert(u:receive())
                assert(u:close())
                local s = assert(ngx.socket.connect("127.0.0.1", {tcp_port}))
                return 200, got .. " " .. s:receive()"#
            ),
            &req(Phase::Content),
        )
        .await;
        assert_eq!(out, "ping hello");
    });
}

#[test]
fn failures_use_openresty_words() {
    rt().block_on(async {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let silent = serve(b"partial", true).await;
        let vm = vm();
        let out = run(
            &vm,
            &format!(
                r#"local s = ngx.socket.tcp()
                local ok, err = s:connect("127.0.0.1", {closed})
                local s2 = ngx.socket.tcp()
                s2:settimeout(50)
                assert(s2:connect("127.0.0.1", {silent}))
                local data, err2, partial = s2:receive()
                -- a read timeout keeps the connection
                local again, err3, partial3 = s2:receive(3)
                local ok4, err4 = s:send("x")
                return 200, table.concat({{tostring(ok), err, tostring(data), err2, partial, tostring(again), err3, partial3, tostring(ok4), err4}}, ",")"#
            ),
            &req(Phase::Access),
        )
        .await;
        assert_eq!(
            out,
            "nil,connection refused,nil,timeout,partial,nil,timeout,,nil,closed"
        );
    });
}

#[test]
fn setkeepalive_pools_the_connection_for_the_next_connect() {
    rt().block_on(async {
        let port = serve(b"", true).await;
        let vm = vm();
        let body = format!(
            r#"local s = ngx.socket.tcp()
            assert(s:connect("127.0.0.1", {port}))
            local n = s:getreusedtimes()
            assert(s:setkeepalive(1000, 2))
            local ok, err = s:send("x")
            return 200, n .. " " .. tostring(ok) .. " " .. err"#
        );
        assert_eq!(run(&vm, &body, &req(Phase::Access)).await, "0 nil closed");
        assert_eq!(run(&vm, &body, &req(Phase::Access)).await, "1 nil closed");
        assert_eq!(run(&vm, &body, &req(Phase::Access)).await, "2 nil closed");
        let pool = super::Pool::of(&vm.lua);
        assert_eq!(pool.idle(&format!("127.0.0.1:{port}")), 1);
        // A named pool is a pool of its own.
        let named = format!(
            r#"local s = ngx.socket.tcp()
            assert(s:connect("127.0.0.1", {port}, {{pool = "other"}}))
            return 200, tostring(s:getreusedtimes())"#
        );
        assert_eq!(run(&vm, &named, &req(Phase::Access)).await, "0");
    });
}

#[test]
fn a_pooled_connection_the_peer_closed_is_not_handed_out() {
    rt().block_on(async {
        let port = serve(b"", false).await;
        let vm = vm();
        let body = format!(
            r#"local s = ngx.socket.tcp()
            assert(s:connect("127.0.0.1", {port}))
            local n = s:getreusedtimes()
            s:setkeepalive()
            return 200, tostring(n)"#
        );
        assert_eq!(run(&vm, &body, &req(Phase::Access)).await, "0");
        let key = format!("127.0.0.1:{port}");
        let pool = super::Pool::of(&vm.lua);
        for _ in 0..100 {
            if pool.idle(&key) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.idle(&key), 0, "the closed connection left the pool");
        assert_eq!(run(&vm, &body, &req(Phase::Access)).await, "0");
    });
}

#[test]
fn sockets_left_open_close_when_the_request_ends() {
    rt().block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let vm = vm();
        let r = req(Phase::Access);
        // Kept in an upvalue, so only the end of the request can close it.
        let f = compile(
            "test",
            &format!(
                r#"local keep = {{}}
                return function()
                    local s = ngx.socket.tcp()
                    assert(s:connect("127.0.0.1", {port}))
                    keep[1] = s
                end"#
            ),
            None,
        )
        .expect("compiles");
        assert_eq!(vm.call(&f, &r).await, Ok(CallOutcome::Continue));
        let (mut peer, _) = l.accept().await.expect("accept");
        drop(r);
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut b))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(n, 0, "the gateway side closed the socket");
    });
}

#[test]
fn cosockets_are_disabled_where_openresty_disables_them() {
    let vm = vm();
    let r = req(Phase::HeaderFilter);
    let f = compile(
        "test",
        "return function() local ok, err = pcall(ngx.socket.tcp) error(err, 0) end",
        None,
    )
    .expect("compiles");
    let e = vm.call_sync(&f, &r).unwrap_err();
    assert!(
        e.message()
            .contains("API disabled in the context of header_filter_by_lua*"),
        "{e}"
    );
}

#[test]
fn timers_run_on_the_vm_and_pending_timers_are_bounded() {
    rt().block_on(async {
        let vm = vm();
        let f = compile(
            "test",
            r#"local seen = {}
            return function()
                if #seen > 0 then return 200, table.concat(seen, ",") end
                local out = {}
                for i = 1, 5 do
                    local ok, err = ngx.timer.at(0.01, function(premature, n)
                        seen[#seen + 1] = n .. ":" .. tostring(premature)
                    end, i)
                    out[#out + 1] = ok and "ok" or err
                end
                return 200, table.concat(out, ",") .. "|" .. ngx.timer.pending_count()
            end"#,
            None,
        )
        .expect("compiles");
        let body = |o: Result<CallOutcome, crate::lua::LuaFailure>| match o {
            Ok(CallOutcome::Respond { body: Some(b), .. }) => {
                String::from_utf8_lossy(&b).into_owned()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            body(vm.call(&f, &req(Phase::Access)).await),
            "ok,ok,ok,ok,too many pending timers|4"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            body(vm.call(&f, &req(Phase::Access)).await),
            "1:false,2:false,3:false,4:false"
        );
    });
}

/// `ngx.now()` is cached per slice: a timer and a light thread resumed after
/// `ngx.sleep` get a fresh time, as in OpenResty (where the sleep's event-loop pass
/// updates the cache).
#[test]
fn ngx_now_advances_across_a_sleep_in_timers_and_light_threads() {
    rt().block_on(async {
        let vm = vm();
        let f = compile(
            "test",
            r#"local slept = {}
            local function measure(kind)
                local t0 = ngx.now()
                ngx.sleep(0.05)
                slept[kind] = ngx.now() - t0
            end
            return function()
                if slept.timer and slept.thread then
                    return 200, string.format("%.3f,%.3f", slept.timer, slept.thread)
                end
                if not slept.started then
                    slept.started = true
                    ngx.timer.at(0, function() measure("timer") end)
                    ngx.thread.spawn(measure, "thread")
                end
                return 200, "waiting"
            end"#,
            None,
        )
        .expect("compiles");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let body = loop {
            let b = match vm.call(&f, &req(Phase::Access)).await {
                Ok(CallOutcome::Respond { body: Some(b), .. }) => {
                    String::from_utf8_lossy(&b).into_owned()
                }
                other => panic!("{other:?}"),
            };
            if b != "waiting" {
                break b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the timer never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        for (kind, slept) in ["timer", "thread"].iter().zip(body.split(',')) {
            let slept: f64 = slept.parse().expect("a number");
            assert!(
                slept >= 0.04,
                "{kind}: ngx.now() moved {slept}s over a 0.05s sleep"
            );
        }
    });
}

#[test]
fn light_threads_run_first_and_the_handler_waits_for_them() {
    rt().block_on(async {
        let vm = vm();
        let f = compile(
            "test",
            r#"local log = {}
            return function()
                if #log > 0 then return 200, table.concat(log, ",") end
                ngx.thread.spawn(function()
                    log[#log + 1] = "child"
                    ngx.sleep(0.02)
                    log[#log + 1] = "child-late"
                end)
                log[#log + 1] = "parent"
            end"#,
            None,
        )
        .expect("compiles");
        assert_eq!(
            vm.call(&f, &req(Phase::Access)).await,
            Ok(CallOutcome::Continue)
        );
        assert_eq!(
            vm.call(&f, &req(Phase::Access)).await,
            Ok(CallOutcome::Respond {
                status: 200,
                body: Some(b"child,parent,child-late".to_vec())
            }),
            "the child ran first, and the handler ended only after it"
        );
    });
}

#[test]
fn a_runaway_light_thread_is_stopped_by_the_budget() {
    rt().block_on(async {
        let limits = LuaLimits {
            max_slice: Duration::from_millis(50),
            max_memory: 32 * 1024 * 1024,
            max_pending_timers: 4,
        };
        let vm = LuaVm::new(limits, (0, 1), &SharedDicts::default()).expect("vm");
        let out = run(
            &vm,
            r#"local t = ngx.thread.spawn(function() ngx.sleep(0) while true do end end)
            local ok, err = ngx.thread.wait(t)
            return 200, tostring(ok) .. " " .. tostring(err):match("max_slice_ms")"#,
            &req(Phase::Content),
        )
        .await;
        assert_eq!(out, "false max_slice_ms");
    });
}

#[test]
fn user_coroutines_wait_on_cosockets_as_in_ngx_lua() {
    // lua-resty-http's body reader is a `coroutine.wrap` around socket reads: the
    // request waits with it, and the coroutine continues where it waited.
    rt().block_on(async {
        let port = serve(b"hello\r\n", true).await;
        let vm = vm();
        let out = run(
            &vm,
            &format!(
                r#"local sock = ngx.socket.tcp()
                assert(sock:connect("127.0.0.1", {port}))
                local reader = coroutine.wrap(function()
                    ngx.sleep(0.01)
                    local line = sock:receive("*l")
                    coroutine.yield(line)
                    ngx.sleep(0.01)
                    coroutine.yield("second")
                    return "done"
                end)
                local a, b, c = reader(), reader(), reader()
                local co = coroutine.create(function() ngx.sleep(0.005) return "r" end)
                local ok, v = coroutine.resume(co)
                local okx, e = xpcall(function() error({{code = 7}}) end, debug.traceback)
                local oky, tb = xpcall(function() require("no.such.module") end, debug.traceback)
                ngx.log(ngx.WARN, "logged as text: ", select(2, pcall(require, "no.such.module")))
                return 200, table.concat({{a, b, c, tostring(ok), v, coroutine.status(co),
                    tostring(okx), tostring(e.code), tostring(oky), tostring(tb:find("no.such.module", 1, true) ~= nil)}}, ",")"#
            ),
            &req(Phase::Access),
        )
        .await;
        assert_eq!(out, "hello,second,done,true,r,dead,false,7,false,true");
    });
}
