//! `ngx.socket`: cosockets (`tcp`, `udp`, `connect`), OpenResty's non-blocking sockets.
//!
//! They work where Lua may yield and OpenResty allows them (rewrite, access, content,
//! timers); elsewhere every call raises OpenResty's "API disabled in the context of
//! ..." error. Sockets belong to the request or timer that created them
//! ([`crate::lua::owned`]): what is neither closed nor pooled when it ends is closed.
//! Network failures return `nil, err[, partial]` with OpenResty's words.

mod conn;
mod pool;
mod reader;
mod tcp;
mod tls;
mod udp;

use std::time::Duration;

use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, Value};

use super::current::Running;
use super::slice::Slicer;

pub use pool::Pool;

/// `lua_socket_connect_timeout`/`send`/`read` defaults.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The request or timer running now, when cosockets (and other yielding APIs: light
/// threads, semaphore waits) are allowed in its context.
pub(crate) fn yieldable_context(lua: &Lua, api: &str) -> mlua::Result<Running> {
    let running = Slicer::of(lua)?.current.running().ok_or_else(|| {
        mlua::Error::runtime(format!(
            "{api}: API disabled in the context of this code: no request is running"
        ))
    })?;
    match running.context() {
        "rewrite" | "access" | "content" | "timer" => Ok(running),
        other => {
            let context = if other == "before_proxy" { "balancer" } else { other };
            Err(mlua::Error::runtime(format!(
                "API disabled in the context of {context}_by_lua*"
            )))
        }
    }
}

/// `nil, err[, partial]`.
pub(crate) struct Failure {
    err: String,
    partial: Option<Bytes>,
}

impl Failure {
    pub(crate) fn new(err: impl Into<String>) -> Failure {
        Failure {
            err: err.into(),
            partial: None,
        }
    }

    pub(crate) fn partial(err: impl Into<String>, partial: Bytes) -> Failure {
        Failure {
            err: err.into(),
            partial: Some(partial),
        }
    }

    pub(crate) fn into_lua(self, lua: &Lua) -> mlua::Result<MultiValue> {
        let mut v = vec![Value::Nil, Value::String(lua.create_string(&self.err)?)];
        if let Some(p) = self.partial {
            v.push(Value::String(lua.create_string(&p)?));
        }
        Ok(MultiValue::from_vec(v))
    }
}

/// Most nested levels of a `send` table.
const MAX_PAYLOAD_DEPTH: usize = 64;

/// `send`'s data: a string, a number, or an array (nested) of those, as OpenResty takes.
pub(crate) fn payload(lua: &Lua, v: &Value, api: &str) -> mlua::Result<Vec<u8>> {
    let mut out = Vec::new();
    collect(lua, v, api, &mut out, 0)?;
    Ok(out)
}

fn collect(lua: &Lua, v: &Value, api: &str, out: &mut Vec<u8>, depth: usize) -> mlua::Result<()> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Number(n) => out.extend_from_slice(super::convert::format_number(*n).as_bytes()),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Table(t) if depth < MAX_PAYLOAD_DEPTH => {
            let guard = super::budget::WorkGuard::new(lua);
            for item in t.clone().sequence_values::<Value>() {
                collect(lua, &item?, api, out, depth + 1)?;
                guard.check(lua, out.len(), api)?;
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #1 to '{api}' (bad data type {} found)",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// Installs `ngx.socket`.
pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let socket = lua.create_table()?;
    let tcp = lua.create_function(|lua, ()| {
        let running = yieldable_context(lua, "ngx.socket.tcp")?;
        lua.create_userdata(tcp::TcpSocket::new(&running.owned()))
    })?;
    socket.raw_set("tcp", tcp.clone())?;
    socket.raw_set("stream", tcp.clone())?;
    socket.raw_set(
        "udp",
        lua.create_function(|lua, ()| {
            let running = yieldable_context(lua, "ngx.socket.udp")?;
            lua.create_userdata(udp::UdpSocket::new(&running.owned()))
        })?,
    )?;
    // `ngx.socket.connect(host, port)`: a new TCP socket, connected.
    let connect: mlua::Function = lua
        .load(
            r#"
local tcp = ...
return function(...)
    local sock = tcp()
    local ok, err = sock:connect(...)
    if not ok then return nil, err end
    return sock
end
"#,
        )
        .set_name("=ngx.socket.connect")
        .call(tcp)?;
    socket.raw_set("connect", connect)?;
    ngx.raw_set("socket", socket)?;
    Ok(())
}

#[cfg(test)]
mod tests;
