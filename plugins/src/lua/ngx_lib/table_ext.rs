//! LuaJIT's table extensions OpenResty code uses: `table.new(narr, nrec)`,
//! `table.clear(t)`, `table.nkeys(t)`, as fields of `table` and as the modules
//! `table.new`, `table.clear`, `table.nkeys` (libraries do `pcall(require, "table.new")`).

use mlua::{Function, Lua, Table, Value};

/// Bound on `table.new`'s preallocation (the memory cap still applies to the table).
const MAX_PREALLOC: f64 = 1_048_576.0;

fn new_fn(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|lua, (narr, nrec): (Option<f64>, Option<f64>)| {
        let size = |n: Option<f64>| n.unwrap_or(0.0).clamp(0.0, MAX_PREALLOC) as usize;
        lua.create_table_with_capacity(size(narr), size(nrec))
    })
}

fn clear_fn(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|_, t: Table| t.clear())
}

fn nkeys_fn(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|_, t: Table| {
        let mut n = 0usize;
        t.for_each::<Value, Value>(|_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n as f64)
    })
}

/// Adds `new`, `clear` (Luau has one already: kept) and `nkeys` to the `table` library.
pub(super) fn install(lua: &Lua, table: &Table) -> mlua::Result<()> {
    table.raw_set("new", new_fn(lua)?)?;
    if table.raw_get::<Value>("clear")?.is_nil() {
        table.raw_set("clear", clear_fn(lua)?)?;
    }
    table.raw_set("nkeys", nkeys_fn(lua)?)?;
    Ok(())
}

/// `require "table.new"` etc.: the function itself, as in LuaJIT.
pub(super) fn module(lua: &Lua, name: &str) -> mlua::Result<Option<Function>> {
    Ok(Some(match name {
        "table.new" => new_fn(lua)?,
        "table.clear" => clear_fn(lua)?,
        "table.nkeys" => nkeys_fn(lua)?,
        _ => return Ok(None),
    }))
}
