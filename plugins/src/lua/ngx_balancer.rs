//! `ngx.balancer`, for the balancer phase.

use std::sync::Arc;

use mlua::{Lua, MultiValue, Table};

use super::current::{err, CurrentRequest};
use crate::phase::Phase;

/// `ngx.balancer`: override the node of this attempt, or allow more tries.
pub fn balancer_module(lua: &Lua, current: Arc<CurrentRequest>) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    let cur = Arc::clone(&current);
    m.raw_set(
        "set_current_peer",
        lua.create_function(move |_, (host, port): (String, Option<u16>)| {
            let r = cur.get()?;
            let mut r = r.lock();
            if r.phase != Phase::Balancer {
                return Err(err("API disabled in the current context: set_current_peer works in the balancer phase"));
            }
            let (host, port) = match port {
                Some(p) => (host, p),
                None => match host.rsplit_once(':') {
                    Some((h, p)) => (h.to_string(), p.parse().map_err(|_| err("bad port"))?),
                    None => (host, 80),
                },
            };
            r.balancer_peer = Some((host, port));
            Ok(true)
        })?,
    )?;
    let cur = current;
    m.raw_set(
        "set_more_tries",
        lua.create_function(move |_, n: u32| {
            cur.get()?.lock().balancer_more_tries = Some(n);
            Ok(true)
        })?,
    )?;
    m.raw_set(
        "set_timeouts",
        lua.create_function(|_, _: MultiValue| Ok(true))?,
    )?;
    Ok(m)
}
