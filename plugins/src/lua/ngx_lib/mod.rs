//! The request-independent ("pure") part of the OpenResty `ngx` API and the
//! built-in modules `cjson`, `cjson.safe` and `bit`, for a Luau VM.
//!
//! Everything here works without a request: constants, `ngx.re.*`, codecs,
//! digests, time helpers. Per-VM state (the compiled-regex cache and the cached
//! time) is created by [`install`] and captured by the installed functions or
//! kept in the VM's app data, so every installed function is `Send`.

mod bit;
mod cjson;
pub(crate) mod codec;
mod digest;
mod re;
mod resty_string;
mod table_ext;
mod time;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ext;

use mlua::{Lua, Table, Value};

pub use time::refresh_time;
pub(crate) use time::TimeCache;

/// Adds the pure functions and constants to an existing `ngx` table.
pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    install_constants(ngx)?;
    ngx.raw_set("null", Value::NULL)?;
    re::install(lua, ngx)?;
    codec::install(lua, ngx)?;
    digest::install(lua, ngx)?;
    time::install(lua, ngx)?;
    Ok(())
}

/// Built-in modules available to `require`: returns the module table for
/// "cjson", "cjson.safe", "bit", or None.
///
/// The table is created once per VM and the same table is returned on later
/// calls, so settings such as `cjson.encode_empty_table_as_object(false)` stick
/// across `require`s (as with `package.loaded` in OpenResty). `cjson` and
/// `cjson.safe` have separate settings, as in lua-cjson. The tables are
/// read-only (Luau), so plugins sharing a VM cannot replace each other's
/// functions.
pub fn builtin_module(lua: &Lua, name: &str) -> mlua::Result<Option<Value>> {
    let key = match name {
        "cjson" | "cjson.safe" | "bit" => format!("portico.ngx_lib.module.{name}"),
        "ngx.re" => return re::module(lua).map(Some),
        "ffi" => return ffi_stub(lua).map(|t| Some(Value::Table(t))),
        _ if name.starts_with("table.") => {
            return Ok(table_ext::module(lua, name)?.map(Value::Function))
        }
        _ if name.starts_with("resty.") => {
            return Ok(resty_string::create_module(lua, name)?.map(Value::Table))
        }
        _ => return Ok(None),
    };
    if let Value::Table(t) = lua.named_registry_value::<Value>(&key)? {
        return Ok(Some(Value::Table(t)));
    }
    let module = match name {
        "cjson" => cjson::create_module(lua, false)?,
        "cjson.safe" => cjson::create_module(lua, true)?,
        _ => bit::create_module(lua)?,
    };
    // Shared by every plugin on the VM: read-only so one plugin cannot
    // replace functions another one uses (settings live in Rust).
    module.set_readonly(true);
    lua.set_named_registry_value(&key, &module)?;
    Ok(Some(Value::Table(module)))
}

/// `require "ffi"`: Luau has no FFI. Libraries that keep references to FFI helpers for
/// an optional path still load (the scan refuses code that binds C at apply time);
/// calling any of them raises an error that says why.
fn ffi_stub(lua: &Lua) -> mlua::Result<Table> {
    const KEY: &str = "portico.ngx_lib.module.ffi";
    if let Value::Table(t) = lua.named_registry_value::<Value>(KEY)? {
        return Ok(t);
    }
    let t = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.raw_set(
        "__index",
        lua.create_function(|lua, (_t, k): (Value, String)| {
            lua.create_function(move |_, _: mlua::MultiValue| -> mlua::Result<()> {
                Err(mlua::Error::runtime(format!(
                    "ffi.{k} is not available: Portico runs Lua on Luau, which has no FFI (see docs/lua-api.md)"
                )))
            })
        })?,
    )?;
    mt.raw_set("__metatable", "ffi")?;
    t.set_metatable(Some(mt))?;
    t.set_readonly(true);
    lua.set_named_registry_value(KEY, &t)?;
    Ok(t)
}

/// Globals LuaJIT code expects besides `ngx`: `bit`, and `table.new`/`clear`/`nkeys`
/// (call before the VM is sandboxed).
pub fn install_globals(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    if let Some(bit) = builtin_module(lua, "bit")? {
        globals.raw_set("bit", bit)?;
    }
    if let Value::Table(table) = globals.raw_get::<Value>("table")? {
        table_ext::install(lua, &table)?;
    }
    Ok(())
}

/// Largest string `ngx.re.sub`/`gsub` and `cjson.encode` build in Rust
/// memory (which the Luau memory limit does not see) before failing.
pub(crate) const MAX_RESULT_LEN: usize = 256 * 1024 * 1024;

const CONSTANTS: &[(&str, i64)] = &[
    ("OK", 0),
    ("ERROR", -1),
    ("AGAIN", -2),
    ("DONE", -4),
    ("DECLINED", -5),
    // HTTP status codes, as OpenResty defines them.
    ("HTTP_CONTINUE", 100),
    ("HTTP_SWITCHING_PROTOCOLS", 101),
    ("HTTP_PROCESSING", 102),
    ("HTTP_OK", 200),
    ("HTTP_CREATED", 201),
    ("HTTP_ACCEPTED", 202),
    ("HTTP_NON_AUTHORITATIVE_INFORMATION", 203),
    ("HTTP_NO_CONTENT", 204),
    ("HTTP_PARTIAL_CONTENT", 206),
    ("HTTP_SPECIAL_RESPONSE", 300),
    ("HTTP_MOVED_PERMANENTLY", 301),
    ("HTTP_MOVED_TEMPORARILY", 302),
    ("HTTP_SEE_OTHER", 303),
    ("HTTP_NOT_MODIFIED", 304),
    ("HTTP_TEMPORARY_REDIRECT", 307),
    ("HTTP_PERMANENT_REDIRECT", 308),
    ("HTTP_BAD_REQUEST", 400),
    ("HTTP_UNAUTHORIZED", 401),
    ("HTTP_PAYMENT_REQUIRED", 402),
    ("HTTP_FORBIDDEN", 403),
    ("HTTP_NOT_FOUND", 404),
    ("HTTP_NOT_ALLOWED", 405),
    ("HTTP_NOT_ACCEPTABLE", 406),
    ("HTTP_REQUEST_TIMEOUT", 408),
    ("HTTP_CONFLICT", 409),
    ("HTTP_GONE", 410),
    ("HTTP_LENGTH_REQUIRED", 411),
    ("HTTP_PRECONDITION_FAILED", 412),
    ("HTTP_REQUEST_ENTITY_TOO_LARGE", 413),
    ("HTTP_REQUEST_URI_TOO_LARGE", 414),
    ("HTTP_UNSUPPORTED_MEDIA_TYPE", 415),
    ("HTTP_RANGE_NOT_SATISFIABLE", 416),
    ("HTTP_UPGRADE_REQUIRED", 426),
    ("HTTP_TOO_MANY_REQUESTS", 429),
    ("HTTP_CLOSE", 444),
    ("HTTP_ILLEGAL", 451),
    ("HTTP_REQUEST_HEADER_TOO_LARGE", 494),
    ("HTTP_INTERNAL_SERVER_ERROR", 500),
    ("HTTP_METHOD_NOT_IMPLEMENTED", 501),
    ("HTTP_BAD_GATEWAY", 502),
    ("HTTP_SERVICE_UNAVAILABLE", 503),
    ("HTTP_GATEWAY_TIMEOUT", 504),
    ("HTTP_VERSION_NOT_SUPPORTED", 505),
    ("HTTP_INSUFFICIENT_STORAGE", 507),
    // Request methods (bit flags, as in OpenResty).
    ("HTTP_GET", 2),
    ("HTTP_HEAD", 4),
    ("HTTP_POST", 8),
    ("HTTP_PUT", 16),
    ("HTTP_DELETE", 32),
    ("HTTP_MKCOL", 64),
    ("HTTP_COPY", 128),
    ("HTTP_MOVE", 256),
    ("HTTP_OPTIONS", 512),
    ("HTTP_PROPFIND", 1024),
    ("HTTP_PROPPATCH", 2048),
    ("HTTP_LOCK", 4096),
    ("HTTP_UNLOCK", 8192),
    ("HTTP_PATCH", 16384),
    ("HTTP_TRACE", 32768),
    // Log levels.
    ("STDERR", 0),
    ("EMERG", 1),
    ("ALERT", 2),
    ("CRIT", 3),
    ("ERR", 4),
    ("WARN", 5),
    ("NOTICE", 6),
    ("INFO", 7),
    ("DEBUG", 8),
];

fn install_constants(ngx: &Table) -> mlua::Result<()> {
    for (name, value) in CONSTANTS {
        // Luau numbers are doubles; store them as such so `math.type`-free
        // comparisons and `tostring` behave as in OpenResty.
        ngx.raw_set(*name, *value as f64)?;
    }
    Ok(())
}

/// A numeric argument as f64: numbers, and strings Lua would convert.
pub(crate) fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => {
            let b = s.as_bytes();
            let t = std::str::from_utf8(&b).ok()?.trim();
            if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                return i64::from_str_radix(hex, 16).ok().map(|i| i as f64);
            }
            t.parse::<f64>().ok()
        }
        _ => None,
    }
}

/// Lua type name of a value, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::LightUserData(_) => "userdata",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

/// Bytes of a string-like argument (strings and numbers, as `tostring` would
/// give them); `nil` becomes the empty string when `nil_as_empty`.
pub(crate) fn arg_bytes(
    lua: &Lua,
    v: &Value,
    fname: &str,
    pos: usize,
    nil_as_empty: bool,
) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => match lua.coerce_string(v.clone())? {
            Some(s) => Ok(s.as_bytes().to_vec()),
            None => Ok(Vec::new()),
        },
        Value::Nil if nil_as_empty => Ok(Vec::new()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #{pos} to '{fname}' (string expected, got {})",
            type_name(other)
        ))),
    }
}
