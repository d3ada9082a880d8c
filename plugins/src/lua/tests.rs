use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

use super::*;
use crate::phase::Phase;

fn limits() -> LuaLimits {
    LuaLimits {
        max_slice: Duration::from_millis(50),
        max_memory: 32 * 1024 * 1024,
        max_pending_timers: 1024,
    }
}

/// A VM for tests that are not about the CPU budget: the budget is wall-clock time, and
/// a loaded test machine must not trip it.
fn vm() -> LuaVm {
    let relaxed = LuaLimits {
        max_slice: Duration::from_secs(2),
        ..limits()
    };
    LuaVm::new(relaxed, (0, 1), &SharedDicts::default()).unwrap()
}

/// A VM with the tight budget, for the tests that exercise it.
fn strict_vm() -> LuaVm {
    LuaVm::new(limits(), (0, 1), &SharedDicts::default()).unwrap()
}

fn req() -> SharedRequest {
    let mut h = HeaderMap::new();
    h.insert("x-user", "alice".parse().unwrap());
    LuaRequest::new(
        "GET".into(),
        "/p".into(),
        Some("a=1&b=two".into()),
        h,
        ConnVars::default(),
    )
    .shared()
}

fn func(src: &str) -> CompiledFunction {
    compile("test", src, None).unwrap()
}

fn run(vm: &LuaVm, src: &str, r: &SharedRequest) -> Result<CallOutcome, LuaFailure> {
    futures_block(vm.call(&func(src), r))
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn syntax_errors_name_the_line() {
    let e = compile(
        "routes[1].plugins.serverless-pre-function.functions[0]",
        "return function()\n  local x = = 1\nend",
        None,
    )
    .unwrap_err();
    assert!(e.contains("functions[0]") && e.contains("line 2"), "{e}");
}

#[test]
fn code_must_return_a_function() {
    let v = Validator::new(limits(), &SharedDicts::default()).unwrap();
    assert!(v.check(&func("return function() end")).is_ok());
    let e = v.check(&func("return 42")).unwrap_err();
    assert!(
        e.contains("must return a function") && e.contains("number"),
        "{e}"
    );
    let e = v.check(&func("error('boom')")).unwrap_err();
    assert!(e.contains("boom"), "{e}");
    let e = v.check(&func("while true do end")).unwrap_err();
    assert!(e.contains("max_slice_ms"), "{e}");
}

#[test]
fn request_api_reads_and_changes_the_request() {
    let vm = vm();
    let r = req();
    let out = run(
        &vm,
        r#"return function(conf, ctx)
            ngx.req.set_header("X-Added", "yes")
            ngx.req.clear_header("x-user")
            local args = ngx.req.get_uri_args()
            ngx.say(ngx.var.uri, " ", ngx.var.arg_b, " ", args.a, " ", ngx.req.get_method(), " ", 10/2)
            ngx.header["X-Resp"] = "r"
            ngx.header["x_resp"] = {"r", "s"}
            ngx.header["X-Gone"] = nil
            ngx.status = 201
        end"#,
        &r,
    )
    .unwrap();
    assert_eq!(out, CallOutcome::Continue);
    let r = r.lock();
    assert_eq!(String::from_utf8_lossy(&r.output), "/p two 1 GET 5\n");
    assert_eq!(r.headers.get("x-added").unwrap(), "yes");
    assert!(r.headers.get("x-user").is_none());
    assert!(r.request_changed() && r.response_changed);
    assert_eq!(r.status, 201);
    let values: Vec<_> = r.response_headers.get_all("x-resp").iter().collect();
    assert_eq!(values, ["r", "s"]);
    // Each name Lua set or cleared is listed once: the gateway rewrites only these.
    let changed: Vec<&str> = r
        .changed_response_headers
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(changed, ["x-resp", "x-gone"]);
}

#[test]
fn exit_and_return_answer_the_request() {
    let vm = vm();
    assert_eq!(
        run(&vm, "return function() ngx.exit(403) end", &req()).unwrap(),
        CallOutcome::Respond {
            status: 403,
            body: None
        }
    );
    assert_eq!(
        run(&vm, "return function() ngx.exit(ngx.OK) end", &req()).unwrap(),
        CallOutcome::Continue
    );
    assert_eq!(
        run(
            &vm,
            "return function() return 401, {message = 'no'} end",
            &req()
        )
        .unwrap(),
        CallOutcome::Respond {
            status: 401,
            body: Some(br#"{"message":"no"}"#.to_vec())
        }
    );
    let r = req();
    assert_eq!(
        run(&vm, "return function() ngx.redirect('/login') end", &r).unwrap(),
        CallOutcome::Respond {
            status: 302,
            body: None
        }
    );
    assert_eq!(r.lock().response_headers.get("location").unwrap(), "/login");
}

#[test]
fn ctx_lives_for_the_request_and_upvalues_for_the_worker() {
    let vm = vm();
    let counter = func(
        "local n = 0\nreturn function(conf, ctx) n = n + 1; ngx.ctx.seen = n; ctx.other = 'x' end",
    );
    let reader = func("return function() ngx.say(ngx.ctx.seen, ngx.ctx.other) end");
    let r1 = req();
    futures_block(vm.call(&counter, &r1)).unwrap();
    r1.lock().phase = Phase::Log;
    futures_block(vm.call(&reader, &r1)).unwrap();
    assert_eq!(String::from_utf8_lossy(&r1.lock().output), "1x\n");
    let r2 = req();
    futures_block(vm.call(&counter, &r2)).unwrap();
    futures_block(vm.call(&reader, &r2)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r2.lock().output),
        "2x\n",
        "upvalue kept, ctx per request"
    );
}

/// `ngx.ctx` is made only for functions that can use their second argument; the
/// others see the same table through `ngx.ctx` when they ask for it.
#[test]
fn ctx_is_made_only_for_functions_that_can_use_it() {
    let vm = vm();
    let r = req();
    let unused = [
        "return function(conf) ngx.say(conf == nil) end",
        "return function() end",
        "return function(conf, ctx) ngx.say(ngx.var.uri) end",
    ];
    for src in unused {
        run(&vm, src, &r).unwrap();
        assert!(r.lock().ctx.is_none(), "{src}");
    }
    let snippet = compile_statements("snippet", "ngx.say(ngx.var.uri)").unwrap();
    futures_block(vm.call(&snippet, &r)).unwrap();
    assert!(r.lock().ctx.is_none(), "a snippet without `...`");
    // Asking for `ngx.ctx` makes it, and a later function using `ctx` gets it.
    run(&vm, "return function() ngx.ctx.a = 1 end", &r).unwrap();
    run(
        &vm,
        "return function(conf, ctx) ngx.say(ctx.a, rawequal(ctx, ngx.ctx)) end",
        &r,
    )
    .unwrap();
    let with_varargs = compile_statements(
        "snippet",
        "local conf, ctx = ...\nngx.say(ctx.a, select('#', ...))",
    )
    .unwrap();
    futures_block(vm.call(&with_varargs, &r)).unwrap();
    run(
        &vm,
        "return function(...) local _, ctx = ... ngx.say(ctx.a) end",
        &r,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.lock().output),
        "true\n/p\n/p\n1true\n12\n1\n"
    );
    for src in [
        "return function(conf, ctx) ctx.b = 2 end",
        // The scan saw only this chunk: a function made elsewhere gets `ctx`.
        "return loadstring('return function(conf, c) end')()",
        // A Rust function may print or keep its arguments.
        "return print",
    ] {
        let r = req();
        run(&vm, src, &r).unwrap();
        assert!(r.lock().ctx.is_some(), "made for {src}");
    }
}

#[test]
fn globals_do_not_leak_and_libraries_are_read_only() {
    let vm = vm();
    let e = run(&vm, "return function() leaked = 1 end", &req()).unwrap_err();
    assert!(e.message().contains("writing a global variable"), "{e}");
    let e = run(&vm, "return function() string.upper = nil end", &req()).unwrap_err();
    assert!(e.message().contains("readonly"), "{e}");
    let e = run(&vm, "return function() ngx.say = nil end", &req()).unwrap_err();
    assert!(e.message().contains("read-only"), "{e}");
    let e = run(&vm, "return function() return require('os') end", &req()).unwrap_err();
    assert!(e.message().contains("not found"), "{e}");
    for name in ["io", "getfenv", "setfenv"] {
        let out = run(
            &vm,
            &format!("return function() if {name} ~= nil then return 500 end end"),
            &req(),
        )
        .unwrap();
        assert_eq!(out, CallOutcome::Continue, "{name} must be absent");
    }
    let out = run(
        &vm,
        "return function() if os.execute ~= nil then return 500 end end",
        &req(),
    )
    .unwrap();
    assert_eq!(out, CallOutcome::Continue);
}

#[test]
fn runaway_code_is_stopped_and_the_vm_stays_usable() {
    let vm = strict_vm();
    for src in [
        "return function() while true do end end",
        "local function f(n) return f(n + 1) + 1 end return function() f(1) end",
        "return function() local s = string.rep('a', 30) .. 'b'; while true do string.find(s, '(a*)*b') end end",
    ] {
        let started = Instant::now();
        let e = run(&vm, src, &req()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{src}: stopped late");
        assert!(matches!(e, LuaFailure::Timeout(_) | LuaFailure::Error(_)), "{src}: {e:?}");
    }
    let e = run(&vm, "return function() while true do end end", &req()).unwrap_err();
    assert_eq!(e.kind(), "timeout");
    let out = run(&vm, "return function() return 200, 'alive' end", &req()).unwrap();
    assert_eq!(
        out,
        CallOutcome::Respond {
            status: 200,
            body: Some(b"alive".to_vec())
        }
    );
}

#[test]
fn memory_bombs_fail_the_call_not_the_vm() {
    let vm = strict_vm();
    let e = run(&vm, "return function() local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end end", &req()).unwrap_err();
    assert!(
        matches!(e, LuaFailure::Memory(_) | LuaFailure::Timeout(_)),
        "{e:?}"
    );
    let e = run(
        &vm,
        "return function() local s = string.rep('a', 1e9) end",
        &req(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), "memory", "{e:?}");
    let out = run(&vm, "return function() return 200, 'alive' end", &req()).unwrap();
    assert_eq!(
        out,
        CallOutcome::Respond {
            status: 200,
            body: Some(b"alive".to_vec())
        }
    );
}

#[test]
fn body_filter_sees_and_replaces_chunks_synchronously() {
    let vm = vm();
    let r = req();
    {
        let mut g = r.lock();
        g.phase = Phase::BodyFilter;
        g.chunk = Some(bytes::Bytes::from_static(b"hello"));
        g.eof = true;
    }
    let f = func(
        "return function() if ngx.arg[2] then ngx.arg[1] = string.upper(ngx.arg[1]) .. '!' end end",
    );
    assert_eq!(vm.call_sync(&f, &r).unwrap(), CallOutcome::Continue);
    assert_eq!(r.lock().chunk.as_deref(), Some(&b"HELLO!"[..]));
}

#[test]
fn many_requests_share_one_vm_safely() {
    let vm = Arc::new(vm());
    let f = func("return function() ngx.ctx.id = ngx.var.arg_a; ngx.say(ngx.ctx.id) end");
    for i in 0..50 {
        let r = LuaRequest::new(
            "GET".into(),
            "/".into(),
            Some(format!("a={i}")),
            HeaderMap::new(),
            ConnVars::default(),
        )
        .shared();
        futures_block(vm.call(&f, &r)).unwrap();
        assert_eq!(String::from_utf8_lossy(&r.lock().output), format!("{i}\n"));
    }
}

#[test]
fn pcall_cannot_swallow_ngx_exit() {
    let vm = vm();
    let out = run(
        &vm,
        "return function() pcall(ngx.exit, 403); ngx.say('after') end",
        &req(),
    )
    .unwrap();
    assert_eq!(
        out,
        CallOutcome::Respond {
            status: 403,
            body: None
        }
    );
    let out = run(
        &vm,
        "return function() local ok = pcall(ngx.redirect, '/x') end",
        &req(),
    )
    .unwrap();
    assert_eq!(
        out,
        CallOutcome::Respond {
            status: 302,
            body: None
        }
    );
}

#[test]
fn missing_apis_name_themselves() {
    let vm = vm();
    for (code, name) in [
        ("ngx.location.capture('/x')", "ngx.location.capture"),
        ("ngx.pipe.spawn({'ls'})", "ngx.pipe.spawn"),
        ("ngx.ssl.server_name()", "ngx.ssl.server_name"),
        ("ngx.req.socket()", "ngx.req.socket"),
    ] {
        let e = run(&vm, &format!("return function() {code} end"), &req()).unwrap_err();
        assert!(
            e.message().contains(name) && e.message().contains("not supported"),
            "{code}: {e}"
        );
    }
    let out = run(
        &vm,
        "return function() return 200, ngx.config.subsystem end",
        &req(),
    )
    .unwrap();
    assert_eq!(
        out,
        CallOutcome::Respond {
            status: 200,
            body: Some(b"http".to_vec())
        }
    );
}

#[test]
fn code_naming_no_yielding_api_runs_as_a_plain_call_and_says_so_if_it_yields() {
    let vm = vm();
    let r = req();
    r.lock().phase = Phase::Access;
    let counts = func("return function(conf, ctx) ctx.n = (ctx.n or 0) + 1 return 200 + ctx.n end");
    assert!(!counts.may_yield);
    futures_block(vm.call(&counts, &r)).unwrap();
    assert_eq!(
        futures_block(vm.call(&counts, &r)).unwrap(),
        CallOutcome::Respond {
            status: 202,
            body: None
        },
        "ngx.ctx is kept across plain calls"
    );
    // A yielding function reached through a value another function stored: the plain
    // call cannot yield, and the error says why.
    let stores = func("return function(conf, ctx) ctx.nap = function() ngx.sleep(0.001) end end");
    assert!(stores.may_yield);
    futures_block(vm.call(&stores, &r)).unwrap();
    let calls = func("return function(conf, ctx) ctx.nap() end");
    assert!(!calls.may_yield);
    let e = futures_block(vm.call(&calls, &r)).unwrap_err();
    assert!(
        format!("{e:?}").contains("runs without a coroutine"),
        "{e:?}"
    );
    // The flag does not stick: the next yielding call sleeps as before.
    let sleeps = func("return function() ngx.sleep(0.001) return 201 end");
    assert_eq!(
        futures_block(vm.call(&sleeps, &r)).unwrap(),
        CallOutcome::Respond {
            status: 201,
            body: None
        }
    );
}
