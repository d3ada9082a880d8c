//! Per-call cost of the ways Lua reaches Rust, in a Luau VM set up as Portico's (a
//! memory limit, an interrupt callback), timed in a Lua loop of `N` calls, for the call
//! shapes S2's and S3's code uses (`docs/benchmarks.md`, "The Lua path: the floor under
//! mlua"):
//!
//! - an mlua function (`Lua::create_function`), as Portico's callbacks are made (with
//!   their argument types: the proxy table as a `bool`, names as `String`s, values as
//!   `Value`s, a variable returned as a `String`): every
//!   call goes through mlua's `callback_error_ext` (an unwind guard, the state lock, a
//!   preallocated error slot), its arguments are converted off the stack and its result
//!   pushed back; under a memory limit a returned string is made in a protected call;
//! - an mlua userdata method, as `ngx.shared.DICT:incr` is made;
//! - a raw Luau C function (`lua_CFunction`), the floor: it reads and pushes the stack
//!   directly. Writing Portico's callbacks this way needs `unsafe` code and care that a
//!   Lua error (a C++ exception in Luau) unwinds through no Rust frame that owns
//!   anything. This program only measures what that would buy.
//!
//! Each case runs under three interrupts: Portico's (a clock read against the slice's
//! deadline), one that reads a flag another thread would set, and none; and once more
//! with Portico's interrupt and no memory limit, where mlua pushes strings unprotected
//! (Portico keeps the limit: it is how a VM's memory is capped). Each is timed
//! `ROUNDS` times; the minimum is printed in ns per call, the empty loop subtracted.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mlua::{ffi, BString, Lua, UserData, UserDataMethods, Value, VmState};

const N: u64 = 2_000_000;
const ROUNDS: usize = 7;

/// `ngx.var.NAME`: a name in, a string out.
unsafe extern "C-unwind" fn raw_index(state: *mut ffi::lua_State) -> c_int {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(state, 2, &mut len);
    if p.is_null() {
        ffi::lua_pushnil(state);
    } else {
        ffi::lua_pushlstring(state, p, len);
    }
    1
}

/// `ngx.req.set_header(name, value)` and `ngx.header[name] = value`: two strings in.
unsafe extern "C-unwind" fn raw_two_strings(state: *mut ffi::lua_State) -> c_int {
    let top = ffi::lua_gettop(state);
    let mut len = 0usize;
    let a = ffi::lua_tolstring(state, top - 1, &mut len);
    let b = ffi::lua_tolstring(state, top, &mut len);
    std::hint::black_box((a, b));
    0
}

/// `dict:incr(key, by, init)`: a key and two numbers in, a number out.
unsafe extern "C-unwind" fn raw_incr(state: *mut ffi::lua_State) -> c_int {
    let mut len = 0usize;
    let k = ffi::lua_tolstring(state, 2, &mut len);
    let by = ffi::lua_tonumber(state, 3);
    std::hint::black_box(k);
    ffi::lua_pushnumber(state, by + 1.0);
    1
}

struct Dict;

impl UserData for Dict {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("incr", |_, _, (k, by, _init): (BString, f64, f64)| {
            std::hint::black_box(k);
            Ok(by + 1.0)
        });
    }
}

fn main() {
    for (interrupt, limit) in [
        ("clock", true),
        ("flag", true),
        ("none", true),
        ("clock", false),
    ] {
        let memory = if limit {
            "64 MB memory limit"
        } else {
            "no memory limit"
        };
        println!("-- interrupt: {interrupt}, {memory}");
        run(interrupt, limit).expect("run");
    }
}

fn run(interrupt: &str, limit: bool) -> mlua::Result<()> {
    let lua = Lua::new();
    let epoch = Instant::now();
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    let d = deadline.clone();
    match interrupt {
        "clock" => lua.set_interrupt(move |_| {
            if epoch.elapsed().as_nanos() as u64 > d.load(Ordering::Relaxed) {
                return Err(mlua::Error::runtime("timeout"));
            }
            Ok(VmState::Continue)
        }),
        "flag" => lua.set_interrupt(move |_| {
            if d.load(Ordering::Relaxed) == 0 {
                return Err(mlua::Error::runtime("timeout"));
            }
            Ok(VmState::Continue)
        }),
        _ => {}
    }
    if limit {
        lua.set_memory_limit(64 << 20)?;
    }

    let g = lua.globals();
    // An empty table whose metamethod is the callback: `__index` as `ngx.var`,
    // `__newindex` as `ngx.header`.
    let proxy = |metamethod: &str, f: mlua::Function| -> mlua::Result<mlua::Table> {
        let t = lua.create_table()?;
        let mt = lua.create_table()?;
        mt.raw_set(metamethod, f)?;
        t.set_metatable(Some(mt))?;
        Ok(t)
    };
    let var = |f| proxy("__index", f);
    let header = |f| proxy("__newindex", f);
    g.set(
        "var_mlua",
        var(lua.create_function(|_, (_t, k): (bool, String)| Ok(Some(k)))?)?,
    )?;
    // SAFETY: the raw functions only read their arguments and push at most one value.
    g.set(
        "var_raw",
        var(unsafe { lua.create_c_function(raw_index) }?)?,
    )?;
    g.set(
        "set_mlua",
        lua.create_function(|_, (a, b): (String, Value)| {
            std::hint::black_box((a, b));
            Ok(())
        })?,
    )?;
    g.set("set_raw", unsafe {
        lua.create_c_function(raw_two_strings)
    }?)?;
    g.set(
        "header_mlua",
        header(lua.create_function(|_, (_t, a, b): (bool, String, Value)| {
            std::hint::black_box((a, b));
            Ok(())
        })?)?,
    )?;
    g.set(
        "header_raw",
        header(unsafe { lua.create_c_function(raw_two_strings) }?)?,
    )?;
    g.set("dict_mlua", Dict)?;
    let dict_raw = lua.create_table()?;
    dict_raw.raw_set("incr", unsafe { lua.create_c_function(raw_incr) }?)?;
    g.set("dict_raw", dict_raw)?;
    g.set(
        "lua_fn",
        lua.load("return function(a, b) return a end")
            .eval::<mlua::Function>()?,
    )?;

    let cases = [
        ("empty loop (per iteration, not subtracted)", ""),
        ("a Lua function call", "lua_fn('x-user', 'alice')"),
        (
            "ngx.var.NAME (__index, string out), mlua",
            "local v = var_mlua.http_x_user",
        ),
        (
            "ngx.var.NAME (__index, string out), raw",
            "local v = var_raw.http_x_user",
        ),
        (
            "ngx.req.set_header(name, value), mlua",
            "set_mlua('X-Lua', '1')",
        ),
        (
            "ngx.req.set_header(name, value), raw",
            "set_raw('X-Lua', '1')",
        ),
        (
            "ngx.header[name] = value (__newindex), mlua",
            "header_mlua['X-Lua'] = '1'",
        ),
        (
            "ngx.header[name] = value (__newindex), raw",
            "header_raw['X-Lua'] = '1'",
        ),
        (
            "dict:incr(key, 1, 0), mlua userdata method",
            "dict_mlua:incr('lc:x', 1, 0)",
        ),
        ("dict:incr(key, 1, 0), raw", "dict_raw:incr('lc:x', 1, 0)"),
    ];
    let mut empty = 0.0;
    for (name, body) in cases {
        let ns = time(&lua, body)?;
        if body.is_empty() {
            empty = ns;
            println!("{name:<52} {ns:6.1} ns");
        } else {
            println!("{name:<52} {:6.1} ns", ns - empty);
        }
    }
    Ok(())
}

fn time(lua: &Lua, body: &str) -> mlua::Result<f64> {
    let f: mlua::Function = lua
        .load(format!("return function(n) for i = 1, n do {body} end end"))
        .eval()?;
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f.call::<()>(N)?;
        best = best.min(t.elapsed().as_nanos() as f64 / N as f64);
    }
    Ok(best)
}
