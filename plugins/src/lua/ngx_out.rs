//! Output and control functions of the request-bound `ngx` API (`say`, `print`, `flush`,
//! `eof`, `exit`, `redirect`, `sleep`, `get_phase`, `log`) and `ngx.worker`.

use std::sync::Arc;

use mlua::{Lua, MultiValue, Table, Value, Variadic};

use super::budget::WorkGuard;
use super::convert::format_number;
use super::current::{err, CurrentRequest};
use super::signal::Exit;

/// Deepest table nesting `ngx.say`/`ngx.print` render (a table that contains itself
/// recursed until the process's stack overflowed).
const MAX_RENDER_DEPTH: usize = 100;

/// Renders the arguments of `ngx.say`/`ngx.print` as OpenResty does: strings, numbers,
/// booleans, `nil`/`ngx.null`, and (nested) arrays of those.
///
/// The output is buffered in Rust, outside the VM, so it counts against the VM's
/// memory cap, and rendering a table checks the slice budget: a table shared many times
/// (`a = {a, a}`, 60 times) would otherwise render for ever outside Lua.
fn render(
    lua: &Lua,
    guard: &WorkGuard,
    out: &mut Vec<u8>,
    v: &Value,
    depth: usize,
) -> mlua::Result<()> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Number(n) => out.extend_from_slice(format_number(*n).as_bytes()),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::LightUserData(p) if p.0.is_null() => out.extend_from_slice(b"null"),
        // An error raised by Portico's Rust side is a userdata to Lua; in OpenResty the
        // same error would be a string, which libraries pass to `ngx.log` as it is.
        Value::Error(e) => out.extend_from_slice(e.to_string().as_bytes()),
        Value::Table(t) => {
            if depth >= MAX_RENDER_DEPTH {
                return Err(err(format!(
                    "bad argument to 'say': tables nested deeper than {MAX_RENDER_DEPTH} (a table that contains itself?)"
                )));
            }
            guard.check(lua, out.len(), "ngx.say")?;
            for item in t.clone().sequence_values::<Value>() {
                render(lua, guard, out, &item?, depth + 1)?;
            }
        }
        other => {
            return Err(err(format!(
                "bad argument to 'say': {} not allowed",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// Installs the output and control functions and `ngx.worker` into `ngx`.
pub(super) fn install(
    lua: &Lua,
    ngx: &Table,
    current: Arc<CurrentRequest>,
    worker: (usize, usize),
) -> mlua::Result<()> {
    // output and control
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "say",
        lua.create_function(move |lua, args: Variadic<Value>| {
            let r = cur.get()?;
            let mut r = r.lock();
            let guard = WorkGuard::new(lua);
            for a in args.iter() {
                render(lua, &guard, &mut r.output, a, 0)?;
            }
            r.output.push(b'\n');
            guard.check(lua, r.output.len(), "ngx.say")?;
            Ok(1)
        })?,
    )?;
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "print",
        lua.create_function(move |lua, args: Variadic<Value>| {
            let r = cur.get()?;
            let mut r = r.lock();
            let guard = WorkGuard::new(lua);
            for a in args.iter() {
                render(lua, &guard, &mut r.output, a, 0)?;
            }
            guard.check(lua, r.output.len(), "ngx.print")?;
            Ok(1)
        })?,
    )?;
    ngx.raw_set("flush", lua.create_function(|_, _: MultiValue| Ok(1))?)?;
    // Yields: other requests on this worker run while this one sleeps. In header and
    // body filters (run without a coroutine) it fails, as in OpenResty.
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "sleep",
        lua.create_async_function(move |_, secs: f64| {
            let plain = cur.get().is_ok_and(|r| r.lock().plain_call);
            sleep(plain, secs)
        })?,
    )?;
    ngx.raw_set("eof", lua.create_function(|_, ()| Ok(1))?)?;
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "exit",
        lua.create_function(move |_, code: i64| -> mlua::Result<()> {
            cur.get()?.lock().exit_code = Some(code);
            Err(mlua::Error::external(Exit(code)))
        })?,
    )?;
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "redirect",
        lua.create_function(move |_, (uri, status): (String, Option<i64>)| -> mlua::Result<()> {
            let status = status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(err(format!("only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed, got {status}")));
            }
            let r = cur.get()?;
            let mut r = r.lock();
            r.set_response_header("location", &[uri]).map_err(err)?;
            r.exit_code = Some(status);
            Err(mlua::Error::external(Exit(status)))
        })?,
    )?;
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "get_phase",
        lua.create_function(move |_, ()| Ok(cur.running().map_or("init", |r| r.context())))?,
    )?;
    let cur = Arc::clone(&current);
    ngx.raw_set(
        "log",
        lua.create_function(move |lua, (level, args): (i64, Variadic<Value>)| {
            let mut msg = Vec::new();
            let guard = WorkGuard::new(lua);
            for a in args.iter() {
                render(lua, &guard, &mut msg, a, 0)?;
            }
            let msg = String::from_utf8_lossy(&msg);
            let plugin = cur
                .get()
                .map(|r| r.lock().plugin.clone())
                .unwrap_or_else(|_| std::sync::Arc::from(""));
            let plugin = &*plugin;
            match level {
                0..=4 => tracing::error!(plugin, "{msg}"),
                5 => tracing::warn!(plugin, "{msg}"),
                6 | 7 => tracing::info!(plugin, "{msg}"),
                _ => tracing::debug!(plugin, "{msg}"),
            }
            Ok(())
        })?,
    )?;

    // ngx.worker
    let w = lua.create_table()?;
    w.raw_set("id", lua.create_function(move |_, ()| Ok(worker.0))?)?;
    w.raw_set("count", lua.create_function(move |_, ()| Ok(worker.1))?)?;
    w.raw_set("pid", lua.create_function(|_, ()| Ok(std::process::id()))?)?;
    w.raw_set(
        "exiting",
        lua.create_function(|_, ()| Ok(super::timer::exiting()))?,
    )?;
    ngx.raw_set("worker", w)?;
    Ok(())
}

/// `ngx.sleep(secs)`: other requests on this worker run meanwhile.
async fn sleep(plain_call: bool, secs: f64) -> mlua::Result<()> {
    if plain_call {
        return Err(super::slice::plain_call_error("ngx.sleep"));
    }
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(err(format!(
            "bad argument #1 to 'sleep': invalid sleeping time {secs}"
        )));
    }
    if secs == 0.0 {
        tokio::task::yield_now().await;
    } else {
        // A huge finite time sleeps "forever" (tokio clamps far deadlines);
        // `from_secs_f64` would panic above u64::MAX seconds.
        let d = std::time::Duration::try_from_secs_f64(secs).unwrap_or(std::time::Duration::MAX);
        tokio::time::sleep(d).await;
    }
    Ok(())
}
