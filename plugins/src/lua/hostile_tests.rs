//! Hostile input and faults (issue 10): runtime-compiled code, memory recovery,
//! bounded built-ins.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;

use super::*;

fn vm_with(max_slice_ms: u64, max_memory_mb: usize) -> LuaVm {
    LuaVm::new(
        limits(max_slice_ms, max_memory_mb),
        (0, 1),
        &SharedDicts::default(),
    )
    .unwrap()
}

fn limits(max_slice_ms: u64, max_memory_mb: usize) -> LuaLimits {
    LuaLimits {
        max_slice: Duration::from_millis(max_slice_ms),
        max_memory: max_memory_mb * 1024 * 1024,
        max_pending_timers: 1024,
    }
}

fn req() -> SharedRequest {
    let mut h = HeaderMap::new();
    h.insert("authorization", "Bearer secret-token".parse().unwrap());
    LuaRequest::new("GET".into(), "/p".into(), None, h, ConnVars::default()).shared()
}

fn func(label: &str, body: &str) -> CompiledFunction {
    compile(
        label,
        &format!("return function(conf, ctx)\n{body}\nend"),
        None,
    )
    .unwrap()
}

fn run(vm: &LuaVm, f: &CompiledFunction) -> Result<CallOutcome, LuaFailure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(vm.call(f, &req()))
}

fn body(r: Result<CallOutcome, LuaFailure>) -> String {
    match r {
        Ok(CallOutcome::Respond { body: Some(b), .. }) => String::from_utf8(b).unwrap(),
        other => panic!("no body: {other:?}"),
    }
}

#[test]
fn loadstring_code_cannot_write_globals_across_routes() {
    let vm = vm_with(2000, 32);
    let a = func(
        "route_a",
        r#"local ok, err = pcall(function() loadstring("STOLEN = ...")(ngx.var.http_authorization) end)
           return 200, tostring(ok) .. " " .. tostring(err)"#,
    );
    let b = func(
        "route_b",
        r#"return 200, tostring(loadstring("return STOLEN")()) .. " " .. tostring(rawget(_G, "STOLEN"))"#,
    );
    let out = body(run(&vm, &a));
    assert!(
        out.starts_with("false") && out.contains("writing a global variable (STOLEN)"),
        "{out}"
    );
    assert_eq!(body(run(&vm, &b)), "nil nil");
    // Through pcall, and with the global table reached as `_G`: the same rules.
    let c = func(
        "route_c",
        r#"local f = select(2, pcall(loadstring, "X = 1")) local ok = pcall(f)
           local g = _G.loadstring("Y = 2") local ok2 = pcall(g)
           return 200, tostring(ok) .. tostring(ok2)"#,
    );
    assert_eq!(body(run(&vm, &c)), "falsefalse");
}

#[test]
fn loadstring_code_shares_its_chunks_environment() {
    let vm = vm_with(2000, 32);
    // Globals the outer chunk writes at load time are the chunk's own; code compiled at
    // runtime sees them, in the outer chunk and in the function.
    let f = compile(
        "route",
        r#"loadstring("GREETING = 'hi'")()
           return function() return 200, loadstring("return GREETING")() end"#,
        None,
    )
    .unwrap();
    assert_eq!(body(run(&vm, &f)), "hi");
    let other = func(
        "other",
        r#"return 200, tostring(loadstring("return GREETING")())"#,
    );
    assert_eq!(body(run(&vm, &other)), "nil");
    // Lua 5.1: a syntax error is `nil, message`; bytecode is refused.
    let bad = func(
        "bad",
        r#"local f, err = loadstring("x = = 1") local g = loadstring("\27Lua")
           return 200, tostring(f) .. " " .. tostring(err ~= nil) .. " " .. tostring(g)"#,
    );
    assert_eq!(body(run(&vm, &bad)), "nil true nil");
}

/// Calls that each hit the memory cap, then an ordinary call that needs a few MB.
#[test]
fn memory_is_collected_after_a_call_hits_the_cap() {
    let vm = vm_with(5000, 32);
    let bomb = func(
        "bomb",
        r#"local t = {} while true do t[#t+1] = string.rep("x", 1e5) .. #t end"#,
    );
    let ok = func(
        "ok",
        "local t = {} for i = 1, 100000 do t[i] = i end return 200, tostring(#t)",
    );
    for i in 0..5 {
        let e = run(&vm, &bomb).unwrap_err();
        assert_eq!(e.kind(), "memory", "#{i}: {e:?}");
        assert_eq!(body(run(&vm, &ok)), "100000", "#{i}");
        assert!(
            !vm.is_retired(),
            "#{i}: garbage alone must not retire the VM"
        );
    }
    assert!(
        vm.lua.used_memory() < 8 * 1024 * 1024,
        "{}",
        vm.lua.used_memory()
    );
}

/// Ordinary calls that each build a large table never end in a memory error.
#[test]
fn large_garbage_of_ordinary_calls_is_collected() {
    let vm = vm_with(5000, 16);
    let big = func(
        "big",
        "local t = {} for i = 1, 300000 do t[i] = i end return 200, tostring(#t)",
    );
    for i in 0..40 {
        assert_eq!(body(run(&vm, &big)), "300000", "#{i}");
    }
}

/// A VM whose memory stays in use after a full collection (here an upvalue that keeps
/// growing) is retired, and the worker hands out a fresh one with the same id.
#[test]
fn vm_that_stays_at_its_cap_is_replaced() {
    let workers = WorkerVms::new(limits(5000, 16), 1, Arc::new(SharedDicts::default()));
    let keep = compile(
        "keep",
        r#"local kept = {}
           return function() for i = 1, 20 do kept[#kept+1] = string.rep("k", 1e5) .. #kept end
             return 200, tostring(#kept) end"#,
        None,
    )
    .unwrap();
    let vm = workers.current().unwrap();
    let mut failed = false;
    for _ in 0..100 {
        if run(&vm, &keep).is_err() {
            failed = true;
            break;
        }
    }
    assert!(failed, "the VM never reached its cap");
    assert!(vm.is_retired());
    let fresh = workers.current().unwrap();
    assert!(!Arc::ptr_eq(&vm, &fresh));
    assert_eq!(fresh.worker.0, vm.worker.0);
    assert_eq!(body(run(&fresh, &keep)), "20", "fresh upvalues");
}

/// The plain search gives what Luau's own `string.find` gives.
#[test]
fn plain_string_find_matches_luau() {
    let vm = vm_with(2000, 32);
    let cases = [
        r#"("hello world"):find("o w")"#,
        r#"("hello world"):find("o", 6)"#,
        r#"("hello world"):find("o", -3)"#,
        r#"("hello world"):find("o", -100)"#,
        r#"("hello world"):find("o", 100)"#,
        r#"("hello"):find("")"#,
        r#"("hello"):find("", 6)"#,
        r#"("hello"):find("", 7)"#,
        r#"("a.b"):find(".", 1, true)"#,
        r#"("a.b"):find("%.")"#,
        r#"("a\0b"):find("\0b")"#,
        r#"string.find(12345, 34)"#,
        r#"("abc"):find("c", 1.0)"#,
    ];
    let code: Vec<String> = cases
        .iter()
        .map(|c| format!("table.insert(out, table.concat({{tostring((select(1, {c}))), tostring((select(2, {c})))}}, \",\"))"))
        .collect();
    let f = func(
        "find",
        &format!(
            "local out = {{}}\n{}\nreturn 200, table.concat(out, \" \")",
            code.join("\n")
        ),
    );
    assert_eq!(
        body(run(&vm, &f)),
        "5,7 8,8 nil,nil 5,5 nil,nil 1,0 6,5 nil,nil 2,2 2,2 2,3 3,4 3,3"
    );
}

/// A plain search that was O(subject x pattern) and could not be interrupted.
#[test]
fn plain_string_find_is_linear() {
    let vm = vm_with(5000, 64);
    let f = func(
        "plain",
        r#"local s = string.rep("a", 1e7) local p = string.rep("a", 2e4) .. "b"
           local t = os.clock()
           local found = string.find(s, p, 1, true)
           local took = os.clock() - t
           return 200, tostring(found) .. " " .. tostring(took < 0.5) .. " " .. took"#,
    );
    let out = body(run(&vm, &f));
    assert!(out.starts_with("nil true"), "{out}");
}

/// A search that backtracks without end gets PCRE's match-limit error.
#[test]
fn regex_backtracking_is_bounded() {
    let vm = vm_with(2000, 64);
    let f = func(
        "re",
        r#"local m, err = ngx.re.match(string.rep("a", 30) .. "c", [[^(\w+)+\1b]])
           return 200, tostring(m) .. " " .. tostring(err)"#,
    );
    assert_eq!(body(run(&vm, &f)), "nil pcre_exec() failed: -8");
}

/// A gsub whose result would not fit in the VM fails as a memory error before it is
/// built; one that runs past the slice budget is stopped as a timeout.
#[test]
fn gsub_output_and_time_are_bounded() {
    let vm = vm_with(2000, 32);
    let amplify = func(
        "amplify",
        r#"local r = ngx.re.gsub(string.rep("a", 2e5), "a", string.rep("b", 1000)) return 200, tostring(#r)"#,
    );
    let t = Instant::now();
    let e = run(&vm, &amplify).unwrap_err();
    assert_eq!(e.kind(), "memory", "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    let vm = vm_with(100, 128);
    let long = func(
        "long",
        r#"local r, n = ngx.re.gsub(string.rep("a", 1e6), "", "xy") return 200, tostring(n)"#,
    );
    let t = Instant::now();
    let e = run(&vm, &long).unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e:?}");
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
}

/// A body table that shares one table many times fails the call instead of expanding
/// to 2^60 JSON nodes outside the slice budget.
#[test]
fn shared_body_table_fails_fast() {
    let vm = vm_with(2000, 32);
    let f = func(
        "shared",
        "local a = {'x'} for i = 1, 60 do a = {a, a} end return 200, a",
    );
    let t = Instant::now();
    let e = run(&vm, &f).unwrap_err();
    assert!(e.message().contains("body table"), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // With the product's budget, the time runs out first.
    let vm = vm_with(100, 128);
    let t = Instant::now();
    let e = run(&vm, &f).unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// `ngx.say` of a table that contains itself, or of a table shared many times, fails
/// the call (it recursed until the process's stack overflowed, or ran for ages).
#[test]
fn say_of_cyclic_or_shared_tables_fails() {
    let vm = vm_with(100, 32);
    for (name, code) in [
        ("cyclic", "local t = {} t[1] = t ngx.say(t)"),
        (
            "shared",
            "local a = {'x'} for i = 1, 60 do a = {a, a} end ngx.say(a)",
        ),
        (
            "big",
            "local s = string.rep('x', 1e6) for i = 1, 1000 do ngx.print(s) end",
        ),
    ] {
        let t = Instant::now();
        let e = run(&vm, &func(name, code)).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t.elapsed()
        );
        eprintln!("{name}: {e:?}");
    }
}

/// Header, variable and body-chunk values given as a table that contains itself.
#[test]
fn self_containing_values_fail_the_call() {
    let vm = vm_with(100, 32);
    for code in [
        r#"local t = {} t[1] = t ngx.req.set_header("X-A", t)"#,
        r#"local t = {} t[1] = t ngx.header["X-A"] = t"#,
        r#"local t = {} t[1] = t ngx.var.foo = t"#,
        r#"local t = {} for i = 1, 50 do t[i] = t end ngx.req.set_header("X-A", t)"#,
    ] {
        let t = Instant::now();
        let e = run(&vm, &func("v", code)).unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{code}: {:?}",
            t.elapsed()
        );
        assert!(
            e.kind() == "timeout" || e.message().contains("nested deeper"),
            "{code}: {e:?}"
        );
    }
}
