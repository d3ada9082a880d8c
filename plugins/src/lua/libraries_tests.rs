//! `require` of uploaded library modules (`lua_modules`).

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use super::*;

fn vm() -> LuaVm {
    let limits = LuaLimits {
        max_slice: Duration::from_secs(2),
        max_memory: 32 * 1024 * 1024,
        max_pending_timers: 1024,
    };
    LuaVm::new(limits, (0, 1), &SharedDicts::default()).unwrap()
}

fn libs(mods: &[(&str, &str)]) -> Arc<LuaLibraries> {
    Arc::new(LuaLibraries::new(
        mods.iter()
            .map(|(n, src)| Arc::new(compile_library(n, src).unwrap())),
    ))
}

fn req(libraries: &Arc<LuaLibraries>) -> SharedRequest {
    let mut r = LuaRequest::new(
        "GET".into(),
        "/".into(),
        None,
        HeaderMap::new(),
        ConnVars::default(),
    );
    r.libraries = Arc::clone(libraries);
    r.shared()
}

/// Runs `f` and returns the body of its `return 200, body`.
fn body(vm: &LuaVm, f: &CompiledFunction, libraries: &Arc<LuaLibraries>) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(vm.call(f, &req(libraries))) {
        Ok(CallOutcome::Respond { body: Some(b), .. }) => {
            Ok(String::from_utf8_lossy(&b).into_owned())
        }
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.message().to_string()),
    }
}

const COUNTER: &str =
    "local n = 0\nlocal _M = {}\nfunction _M.next() n = n + 1; return n end\nreturn _M";

#[test]
fn module_state_persists_per_vm_and_modules_require_modules() {
    let l = libs(&[
        ("my.counter", COUNTER),
        ("my.wrap", "local c = require('my.counter')\nreturn { twice = function() c.next(); return c.next() end }"),
    ]);
    let vm = vm();
    let f = compile(
        "f",
        "return function() return 200, tostring(require('my.wrap').twice()) end",
        None,
    )
    .unwrap();
    assert_eq!(body(&vm, &f, &l).unwrap(), "2");
    assert_eq!(body(&vm, &f, &l).unwrap(), "4");
    // A snippet's outer chunk requiring it shares the same module value.
    let g = compile(
        "g",
        "local c = require 'my.counter'\nreturn function() return 200, tostring(c.next()) end",
        None,
    )
    .unwrap();
    assert_eq!(body(&vm, &g, &l).unwrap(), "5");
    let p = compile(
        "p",
        "return function() return 200, tostring(package.loaded['my.counter'] ~= nil) end",
        None,
    )
    .unwrap();
    assert_eq!(body(&vm, &p, &l).unwrap(), "true");
}

#[test]
fn a_new_version_replaces_the_module_and_what_holds_it() {
    let v1 = libs(&[("m", "return { v = 'one' }")]);
    let v2 = libs(&[("m", "return { v = 'two' }")]);
    let vm = vm();
    let inner = compile(
        "inner",
        "return function() return 200, require('m').v end",
        None,
    )
    .unwrap();
    let outer = compile(
        "outer",
        "local m = require 'm'\nreturn function() return 200, m.v end",
        None,
    )
    .unwrap();
    assert_eq!(body(&vm, &inner, &v1).unwrap(), "one");
    assert_eq!(body(&vm, &outer, &v1).unwrap(), "one");
    assert_eq!(body(&vm, &inner, &v2).unwrap(), "two");
    assert_eq!(body(&vm, &outer, &v2).unwrap(), "two");
    // Removed: a function that required it loads again and fails clearly.
    let none = libs(&[]);
    let e = body(&vm, &outer, &none).unwrap_err();
    assert!(e.contains("module 'm' not found"), "{e}");
}

#[test]
fn cycles_and_globals_give_clear_errors() {
    let l = libs(&[
        ("a", "local b = require 'b'\nreturn {}"),
        ("b", "local a = require 'a'\nreturn {}"),
        ("g", "return { set = function() leaked = 1 end }"),
    ]);
    let vm = vm();
    let f = compile("f", "return function() require 'a' end", None).unwrap();
    let e = body(&vm, &f, &l).unwrap_err();
    assert!(e.contains("require cycle a -> b -> a"), "{e}");
    let f = compile("f2", "return function() require('g').set() end", None).unwrap();
    let e = body(&vm, &f, &l).unwrap_err();
    assert!(e.contains("writing a global variable (leaked)"), "{e}");
}

#[test]
fn compile_refuses_reserved_names_goto_and_ffi() {
    assert!(compile_library("ngx.re", "return {}").is_err());
    let e = compile_library("m", "local x\n\nlocal y = = 2").unwrap_err();
    assert!(e.contains("lua_modules.m") && e.contains("line 3"), "{e}");
    let e =
        compile_library("m", "for i = 1, 2 do\n goto continue\n ::continue::\nend").unwrap_err();
    assert!(e.contains("line 2") && e.contains("goto"), "{e}");
    let e =
        compile_library("m", "local ffi = require 'ffi'\nffi.cdef[[int f(void);]]").unwrap_err();
    assert!(e.contains("line 2") && e.contains("FFI"), "{e}");
    // Every kind of code is checked, not only library modules.
    let e = compile(
        "routes[id=1].plugins",
        "return function()\n  goto done\nend",
        None,
    )
    .unwrap_err();
    assert!(
        e.contains("routes[id=1].plugins: line 2") && e.contains("goto"),
        "{e}"
    );
    let lib = compile_library(
        "m",
        "local a = require 'x.y'\nlocal ok, b = pcall(require, 'z')",
    )
    .unwrap();
    assert_eq!(lib.requires, vec!["x.y".to_string(), "z".to_string()]);
}

/// Chunk environments are "safe": Luau resolves import paths once, when a chunk loads.
/// A module required during a request must not keep that request's `ngx.var` or
/// `ngx.ctx`, nor a function `loadstring` compiled during one.
#[test]
fn code_loaded_during_a_request_reads_later_requests_own_fields() {
    let l = libs(&[(
        "m",
        "return { get = function() return ngx.var.uri .. ' ' .. tostring(ngx.ctx.tag) .. ' ' .. ngx.status end }",
    )]);
    let vm = vm();
    let f = compile(
        "f",
        "local g\nreturn function()\n\
         g = g or loadstring(\"return ngx.var.uri .. ' ' .. tostring(ngx.ctx.tag) .. ' ' .. ngx.status\")\n\
         ngx.ctx.tag = ngx.var.arg_t\n\
         ngx.status = tonumber(ngx.var.arg_t)\n\
         return 200, require('m').get() .. '|' .. g() end",
        None,
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (uri, t) in [("/a", "201"), ("/b", "202")] {
        let mut r = LuaRequest::new(
            "GET".into(),
            uri.into(),
            Some(format!("t={t}")),
            HeaderMap::new(),
            ConnVars::default(),
        );
        r.libraries = Arc::clone(&l);
        let got = match rt.block_on(vm.call(&f, &r.shared())) {
            Ok(CallOutcome::Respond { body: Some(b), .. }) => {
                String::from_utf8_lossy(&b).into_owned()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(got, format!("{uri} {t} {t}|{uri} {t} {t}"));
    }
}
