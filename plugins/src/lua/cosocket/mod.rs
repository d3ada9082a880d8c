//! `ngx.socket`: cosockets (`tcp`, `udp`, `connect`), OpenResty's non-blocking sockets.
//!
//! They work where Lua may yield and OpenResty allows them (rewrite, access, content,
//! timers); elsewhere every call raises OpenResty's "API disabled in the context of
//! ..." error. Sockets belong to the request or timer that created them
//! ([`crate::lua::owned`]): what is neither closed nor pooled when it ends is closed.
//! Network failures return `nil, err[, partial]` with OpenResty's words.

mod conn;
mod io_values;
mod pool;
mod reader;
mod slot;
mod tcp;
mod tls;
mod udp;

use mlua::{Lua, Table};

use super::slice::yieldable_context;

pub(crate) use io_values::{payload, Failure, DEFAULT_TIMEOUT};
pub use pool::Pool;

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
