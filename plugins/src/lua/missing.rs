//! OpenResty APIs Portico does not provide: calling one raises a Lua error that names it,
//! instead of Luau's bare "attempt to call a nil value". Plus `ngx.config`, which
//! snippets commonly read to detect their environment.

use mlua::{Lua, MultiValue, Table, Value};

/// Namespaces of `ngx` that do not exist in Portico.
const MISSING_NAMESPACES: [&str; 6] = ["location", "pipe", "ssl", "ocsp", "process", "errlog"];

/// Functions of `ngx.req` that do not exist in Portico.
const MISSING_REQ: [&str; 5] = [
    "get_body_file",
    "socket",
    "raw_header",
    "init_body",
    "append_body",
];

fn missing(lua: &Lua, name: String) -> mlua::Result<mlua::Function> {
    lua.create_function(move |_, _: MultiValue| -> mlua::Result<()> {
        Err(mlua::Error::runtime(format!(
            "{name} is not supported by Portico (see docs/lua-api.md for what is)"
        )))
    })
}

/// A table whose every field is a function raising "ngx.NS.FIELD is not supported".
fn missing_namespace(lua: &Lua, ns: &'static str) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.raw_set(
        "__index",
        lua.create_function(move |lua, (_t, k): (Value, String)| {
            missing(lua, format!("ngx.{ns}.{k}"))
        })?,
    )?;
    mt.raw_set("__metatable", format!("ngx.{ns}"))?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}

/// Installs the stubs and `ngx.config` into `ngx` (before the VM is sandboxed).
pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    for ns in MISSING_NAMESPACES {
        ngx.raw_set(ns, missing_namespace(lua, ns)?)?;
    }
    if let Value::Table(req) = ngx.raw_get::<Value>("req")? {
        for f in MISSING_REQ {
            if req.raw_get::<Value>(f)?.is_nil() {
                req.raw_set(f, missing(lua, format!("ngx.req.{f}"))?)?;
            }
        }
    }
    if let Value::Table(re) = ngx.raw_get::<Value>("re")? {
        let was_readonly = re.is_readonly();
        re.set_readonly(false);
        for f in ["split", "opt"] {
            if re.raw_get::<Value>(f)?.is_nil() {
                re.raw_set(f, missing(lua, format!("ngx.re.{f}"))?)?;
            }
        }
        re.set_readonly(was_readonly);
    }
    let config = lua.create_table()?;
    config.raw_set("subsystem", "http")?;
    config.raw_set("debug", false)?;
    config.raw_set("is_console", false)?;
    config.raw_set("ngx_lua_version", 10026)?;
    config.raw_set("nginx_version", 1_025_003)?;
    config.raw_set("prefix", lua.create_function(|_, ()| Ok(""))?)?;
    config.raw_set("nginx_configure", lua.create_function(|_, ()| Ok(""))?)?;
    ngx.raw_set("config", config)?;
    Ok(())
}
