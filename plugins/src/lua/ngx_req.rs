//! The request-bound half of the `ngx` API. Every function finds its request through the
//! VM's current-request slot, which the executor sets around each resume of a request's
//! coroutine, so requests interleaved on one VM never see each other.

use std::sync::Arc;

use mlua::{Either, Lua, Table, Value};

use super::budget::WorkGuard;
use super::convert::format_number;
use super::current::{err, CurrentRequest};
use super::ngx_lib::codec;
use super::request::BodyState;
use crate::phase::Phase;

fn lua_string_list(lua: &Lua, v: Value) -> mlua::Result<Vec<String>> {
    let utf8 = |b: Vec<u8>| String::from_utf8(b).map_err(|_| err("bad value: invalid utf-8"));
    // The common case, one string, without the list of byte vectors.
    if let Value::String(s) = &v {
        return Ok(vec![utf8(s.as_bytes().to_vec())?]);
    }
    lua_bytes_list(lua, v)?.into_iter().map(utf8).collect()
}

/// Like [`lua_string_list`], for values that may be binary (body chunks).
fn lua_bytes_list(lua: &Lua, v: Value) -> mlua::Result<Vec<Vec<u8>>> {
    let guard = WorkGuard::new(lua);
    let mut len = 0;
    string_list(lua, &guard, v, 0, &mut len)
}

/// Nested tables are joined, as OpenResty does. A table that contains itself recursed
/// until the process's stack overflowed, and one shared many times could expand
/// without end, so the depth is bounded and each table checks the budget and the
/// memory cap (`len` counts the bytes collected so far).
fn string_list(
    lua: &Lua,
    guard: &WorkGuard,
    v: Value,
    depth: usize,
    len: &mut usize,
) -> mlua::Result<Vec<Vec<u8>>> {
    let out = match v {
        Value::Nil => Vec::new(),
        Value::String(s) => vec![s.as_bytes().to_vec()],
        Value::Integer(i) => vec![i.to_string().into_bytes()],
        Value::Number(n) => vec![format_number(n).into_bytes()],
        Value::Boolean(b) => vec![b.to_string().into_bytes()],
        Value::Table(t) => {
            if depth >= MAX_VALUE_DEPTH {
                return Err(err(format!(
                    "bad value: tables nested deeper than {MAX_VALUE_DEPTH} (a table that contains itself?)"
                )));
            }
            guard.check(lua, *len, "string value")?;
            t.sequence_values::<Value>()
                .map(|v| string_list(lua, guard, v?, depth + 1, len).map(|l| l.concat()))
                .collect::<mlua::Result<Vec<_>>>()?
        }
        other => return Err(err(format!("bad header value: {}", other.type_name()))),
    };
    *len += out.iter().map(Vec::len).sum::<usize>();
    Ok(out)
}

/// The table a `__index`/`__newindex` function is called with (`ngx.var`, `ngx.header`,
/// `ngx`). It is never used: reading it as a boolean (always true) spares mlua a reference
/// on its auxiliary stack, which `Value` or `Table` take and release on every call.
/// String arguments are read as Rust `String`s for the same reason.
type ProxySelf = bool;

/// A value returned to Lua as a string. Valid UTF-8 is pushed straight onto Lua's stack;
/// other bytes (a binary variable) go through a Lua string handle.
fn pushed_bytes(lua: &Lua, v: &[u8]) -> mlua::Result<Either<Option<String>, Value>> {
    Ok(match std::str::from_utf8(v) {
        Ok(s) => Either::Left(Some(s.to_owned())),
        Err(_) => Either::Right(Value::String(lua.create_string(v)?)),
    })
}

/// Deepest nesting of a table given as a header, variable or body-chunk value.
const MAX_VALUE_DEPTH: usize = 100;

/// A header map as the Lua table OpenResty returns: lowercase names, repeated headers as
/// arrays, and a metatable so `h["X-Foo"]` and `h.x_foo` find `x-foo`.
fn headers_table(lua: &Lua, headers: &http::HeaderMap, max: usize) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (i, name) in headers.keys().enumerate() {
        if max > 0 && i >= max {
            break;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if values.len() == 1 {
            t.raw_set(name.as_str(), values[0].as_str())?;
        } else {
            t.raw_set(name.as_str(), values)?;
        }
    }
    let mt = lua.create_table()?;
    mt.raw_set(
        "__index",
        lua.create_function(|_, (t, k): (Table, String)| {
            t.raw_get::<Value>(k.replace('_', "-").to_ascii_lowercase())
        })?,
    )?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}

/// A table whose reads and writes go to `get`/`set` (`ngx.var`, `ngx.header`, `ngx.arg`):
/// it stays empty, so every access reaches the metamethods.
fn proxy_table(
    lua: &Lua,
    get: mlua::Function,
    set: mlua::Function,
    name: &str,
) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.raw_set("__index", get)?;
    mt.raw_set("__newindex", set)?;
    mt.raw_set("__metatable", name)?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}

/// Installs `ngx.req`, the dynamic fields of `ngx` (`var`, `ctx`, `status`, `header`,
/// `arg`), output and control functions, into `ngx` (the real table behind the
/// read-only proxy users see). Returns the metatable functions for the proxy.
pub fn install(lua: &Lua, ngx: &Table, current: Arc<CurrentRequest>) -> mlua::Result<()> {
    // ngx.req
    let req = lua.create_table()?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "get_method",
        lua.create_function(move |_, ()| Ok(cur.get()?.lock().method().to_string()))?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "set_method",
        lua.create_function(move |_, m: Value| {
            let method = match m {
                Value::String(s) => s.to_str()?.to_ascii_uppercase(),
                Value::Integer(i) => method_of_code(i)?,
                Value::Number(n) => method_of_code(n as i64)?,
                other => return Err(err(format!("bad method: {}", other.type_name()))),
            };
            cur.get()?.lock().set_method(method);
            Ok(())
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "get_uri_args",
        lua.create_function(move |lua, max: Option<usize>| {
            let args = cur.get()?.lock().args().map(str::to_string);
            codec::decode_args(lua, args.unwrap_or_default().as_bytes(), max.unwrap_or(100))
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "get_headers",
        lua.create_function(move |lua, (max, _raw): (Option<usize>, Option<bool>)| {
            let r = cur.get()?;
            let r = r.lock();
            headers_table(lua, &r.headers, max.unwrap_or(100))
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "set_header",
        lua.create_function(move |lua, (name, value): (String, Value)| {
            let values = lua_string_list(lua, value)?;
            cur.get()?
                .lock()
                .set_request_header(&name, &values)
                .map_err(err)
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "clear_header",
        lua.create_function(move |_, name: String| {
            cur.get()?
                .lock()
                .set_request_header(&name, &[])
                .map_err(err)
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "set_uri",
        lua.create_function(move |_, (uri, _jump): (String, Option<bool>)| {
            if uri.is_empty() {
                return Err(err("attempt to use zero-length uri"));
            }
            cur.get()?.lock().set_uri(uri);
            Ok(())
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "set_uri_args",
        lua.create_function(move |lua, args: Value| {
            let query = match args {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Table(t) => {
                    String::from_utf8_lossy(&codec::encode_args(lua, &t)?).into_owned()
                }
                other => {
                    return Err(err(format!(
                        "bad argument #1 to 'set_uri_args' (string or table expected, got {})",
                        other.type_name()
                    )))
                }
            };
            cur.get()?.lock().set_args(Some(query));
            Ok(())
        })?,
    )?;
    // Yields until the gateway has read the body (it holds the connection).
    let cur = Arc::clone(&current);
    req.raw_set(
        "read_body",
        lua.create_async_function(move |_, ()| {
            let r = cur.get();
            async move {
                let r = r?;
                let signals = {
                    let mut g = r.lock();
                    if g.plain_call {
                        return Err(super::slice::plain_call_error("ngx.req.read_body"));
                    }
                    if !matches!(g.phase, Phase::Rewrite | Phase::Access | Phase::Content) {
                        return Err(err(format!(
                            "ngx.req.read_body is not allowed in the {} phase",
                            g.phase
                        )));
                    }
                    if g.body != BodyState::NotRead {
                        return Ok(());
                    }
                    g.body = BodyState::Wanted;
                    g.body_signals()
                };
                signals.wanted.notify_one();
                signals.ready.notified().await;
                Ok(())
            }
        })?,
    )?;
    // OpenResty returns nil when the body is in memory (or not read); Portico never
    // buffers a body to a file, so it always is.
    req.raw_set(
        "get_body_file",
        lua.create_function(|_, ()| Ok(Value::Nil))?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "get_body_data",
        lua.create_function(move |lua, ()| {
            Ok(match &cur.get()?.lock().body {
                BodyState::Read(b) if !b.is_empty() => Value::String(lua.create_string(b)?),
                _ => Value::Nil,
            })
        })?,
    )?;
    let cur = Arc::clone(&current);
    req.raw_set(
        "get_post_args",
        lua.create_function(move |lua, max: Option<usize>| {
            let body = match &cur.get()?.lock().body {
                BodyState::Read(b) => b.clone(),
                _ => {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("request body not read")?),
                    ))
                }
            };
            let t = codec::decode_args(lua, &body, max.unwrap_or(100))?;
            Ok((Value::Table(t), Value::Nil))
        })?,
    )?;
    req.raw_set("discard_body", lua.create_function(|_, ()| Ok(()))?)?;
    req.raw_set("http_version", lua.create_function(|_, ()| Ok(1.1))?)?;
    req.raw_set("start_time", {
        let cur = Arc::clone(&current);
        lua.create_function(move |_, ()| {
            let r = cur.get()?;
            let elapsed = r.lock().started.elapsed().as_secs_f64();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            Ok(((now - elapsed) * 1000.0).floor() / 1000.0)
        })?
    })?;
    ngx.raw_set("req", req)?;

    // ngx.var
    let cur = Arc::clone(&current);
    let get = lua.create_function(move |lua, (_t, name): (ProxySelf, String)| {
        let r = cur.get()?;
        let r = r.lock();
        match r.var_bytes(&name) {
            Some(v) => pushed_bytes(lua, &v),
            None => Ok(Either::Left(None)),
        }
    })?;
    let cur = Arc::clone(&current);
    let set = lua.create_function(move |lua, (_t, name, value): (ProxySelf, String, Value)| {
        let value = match value {
            Value::Nil => None,
            v => Some(lua_string_list(lua, v)?.join("")),
        };
        cur.get()?.lock().set_var(&name, value).map_err(err)
    })?;
    ngx.raw_set("var", proxy_table(lua, get, set, "ngx.var")?)?;

    // ngx.header
    let cur = Arc::clone(&current);
    let get = lua.create_function(move |lua, (_t, name): (ProxySelf, String)| {
        let r = cur.get()?;
        let r = r.lock();
        let Ok(name) = super::request::header_name(&name) else {
            return Ok(Either::Left(None));
        };
        let mut values: Vec<String> = r
            .response_headers
            .get_all(&name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        Ok(match values.len() {
            0 | 1 => Either::Left(values.pop()),
            _ => Either::Right(lua.create_sequence_from(values)?),
        })
    })?;
    let cur = Arc::clone(&current);
    let set = lua.create_function(move |lua, (_t, name, value): (ProxySelf, String, Value)| {
        let values = lua_string_list(lua, value)?;
        let r = cur.get()?;
        let mut r = r.lock();
        if matches!(r.phase, Phase::BodyFilter | Phase::Log) {
            return Err(err(
                "attempt to set ngx.header.HEADER after sending out response headers",
            ));
        }
        r.set_response_header(&name, &values).map_err(err)
    })?;
    ngx.raw_set("header", proxy_table(lua, get, set, "ngx.header")?)?;

    // ngx.arg (body_filter)
    let cur = Arc::clone(&current);
    let get = lua.create_function(move |lua, (_t, i): (Table, i64)| {
        let r = cur.get()?;
        let r = r.lock();
        Ok(match i {
            1 => Value::String(lua.create_string(r.chunk.as_deref().unwrap_or_default())?),
            2 => Value::Boolean(r.eof),
            _ => Value::Nil,
        })
    })?;
    let cur = Arc::clone(&current);
    let set = lua.create_function(move |lua, (_t, i, v): (Table, i64, Value)| {
        let r = cur.get()?;
        let mut r = r.lock();
        match (i, v) {
            (1, Value::Nil) => r.chunk = Some(bytes::Bytes::new()),
            (1, v) => r.chunk = Some(bytes::Bytes::from(lua_bytes_list(lua, v)?.concat())),
            (2, v) => r.eof = !matches!(v, Value::Nil | Value::Boolean(false)),
            _ => return Err(err("ngx.arg: only [1] (chunk) and [2] (eof) may be set")),
        }
        Ok(())
    })?;
    ngx.raw_set("arg", proxy_table(lua, get, set, "ngx.arg")?)?;
    Ok(())
}

/// The dynamic fields of `ngx` (`ngx.ctx`, `ngx.status`): a getter and a setter for the
/// proxy table users see.
pub fn dynamic_fields(
    lua: &Lua,
    current: Arc<CurrentRequest>,
) -> mlua::Result<(mlua::Function, mlua::Function)> {
    let cur = Arc::clone(&current);
    let get = lua.create_function(
        move |lua, (_t, key): (ProxySelf, String)| -> mlua::Result<Value> {
            match key.as_str() {
                "ctx" => {
                    let r = cur.get()?;
                    let mut r = r.lock();
                    if r.ctx.is_none() {
                        r.ctx = Some(Arc::new(lua.create_table()?));
                    }
                    Ok(r.ctx
                        .as_deref()
                        .cloned()
                        .map(Value::Table)
                        .unwrap_or(Value::Nil))
                }
                "status" => {
                    let r = cur.get()?;
                    let status = r.lock().status;
                    Ok(Value::Integer(status.into()))
                }
                _ => Ok(Value::Nil),
            }
        },
    )?;
    let cur = current;
    let set = lua.create_function(
        move |_, (_t, key, value): (ProxySelf, String, Value)| -> mlua::Result<()> {
            match key.as_str() {
                "ctx" => match value {
                    Value::Table(t) => {
                        cur.get()?.lock().ctx = Some(Arc::new(t));
                        Ok(())
                    }
                    _ => Err(err("ngx.ctx must be a table")),
                },
                "status" => {
                    let code = match value {
                        Value::Integer(i) => i,
                        Value::Number(n) => n as i64,
                        other => return Err(err(format!("bad ngx.status: {}", other.type_name()))),
                    };
                    let r = cur.get()?;
                    let mut r = r.lock();
                    if matches!(r.phase, Phase::BodyFilter | Phase::Log) {
                        return Err(err(
                            "attempt to set ngx.status after sending out response headers",
                        ));
                    }
                    r.status = u16::try_from(code)
                        .ok()
                        .filter(|c| (100..=999).contains(c))
                        .ok_or_else(|| err(format!("bad ngx.status {code}")))?;
                    r.response_changed = true;
                    Ok(())
                }
                other => Err(err(format!(
                    "the ngx table is read-only (assigning ngx.{other}); use a local or ngx.ctx"
                ))),
            }
        },
    )?;
    Ok((get, set))
}

/// The method of an `ngx.HTTP_*` method constant (`ngx.req.set_method(ngx.HTTP_POST)`).
fn method_of_code(code: i64) -> mlua::Result<String> {
    Ok(match code {
        2 => "GET",
        4 => "HEAD",
        8 => "POST",
        16 => "PUT",
        32 => "DELETE",
        512 => "OPTIONS",
        16384 => "PATCH",
        32768 => "TRACE",
        _ => return Err(err(format!("unsupported HTTP method: {code}"))),
    }
    .to_string())
}
