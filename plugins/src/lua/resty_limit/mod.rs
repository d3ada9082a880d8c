//! `require "resty.limit.req"`, `"resty.limit.count"`, `"resty.limit.conn"` and
//! `"resty.limit.traffic"`: lua-resty-limit-traffic's API on `ngx.shared` dictionaries.
//!
//! The object API is Lua (`*.lua` here, loaded once per VM). `count` and `conn` only
//! need the dictionary's `incr` with `init`/`init_ttl`, which is one locked step;
//! `req`'s leaky bucket is a read-modify-write, done in Rust under the dictionary's
//! lock (`leaky.rs`), so workers never lose each other's updates.

mod leaky;

#[cfg(test)]
mod tests;

use mlua::{AnyUserData, Lua, LuaString, MultiValue, Table, Value};

use super::shared_dict_lua::DictHandle;
use leaky::Verdict;

const REQ: &str = include_str!("req.lua");
const COUNT: &str = include_str!("count.lua");
const CONN: &str = include_str!("conn.lua");
const TRAFFIC: &str = include_str!("traffic.lua");

/// The module table for `name`, or `None` when `name` is not one of these modules.
/// Built once per VM; the table is read-only, like the other built-in modules.
pub(super) fn module(lua: &Lua, name: &str) -> mlua::Result<Option<Table>> {
    let source = match name {
        "resty.limit.req" => REQ,
        "resty.limit.count" => COUNT,
        "resty.limit.conn" => CONN,
        "resty.limit.traffic" => TRAFFIC,
        _ => return Ok(None),
    };
    let key = format!("portico.{name}");
    if let Value::Table(t) = lua.named_registry_value::<Value>(&key)? {
        return Ok(Some(t));
    }
    let chunk = lua
        .load(source)
        .set_name(format!("={name}"))
        .into_function()?;
    let module: Table = if name == "resty.limit.req" {
        chunk.call((bucket_step(lua)?, bucket_uncommit(lua)?))?
    } else {
        chunk.call(())?
    };
    module.set_readonly(true);
    lua.set_named_registry_value(&key, &module)?;
    Ok(Some(module))
}

/// `nil, message` as Lua returns it.
fn failure(lua: &Lua, message: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(message)?),
    ]))
}

/// `step(dict, key, rate, burst, commit)` → `excess` | `nil, "rejected"` | `nil, err`.
fn bucket_step(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(
        |lua, (dict, key, rate, burst, commit): (AnyUserData, LuaString, f64, f64, bool)| {
            let dict = dict.borrow::<DictHandle>()?;
            match leaky::incoming(
                &dict.0,
                &key.as_bytes(),
                rate,
                burst,
                commit,
                leaky::now_ms(),
            ) {
                Ok(Verdict::Accepted(excess)) => {
                    Ok(MultiValue::from_vec(vec![Value::Number(excess)]))
                }
                Ok(Verdict::Rejected) => failure(lua, "rejected"),
                Err(e) => failure(lua, e),
            }
        },
    )
}

/// `uncommit(dict, key, rate)` → `true` | `nil, "not found"` | `nil, err`.
fn bucket_uncommit(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, (dict, key, rate): (AnyUserData, LuaString, f64)| {
        let dict = dict.borrow::<DictHandle>()?;
        match leaky::uncommit(&dict.0, &key.as_bytes(), rate) {
            Ok(true) => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
            Ok(false) => failure(lua, "not found"),
            Err(e) => failure(lua, e),
        }
    })
}
