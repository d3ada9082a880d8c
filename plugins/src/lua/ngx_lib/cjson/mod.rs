//! `cjson` and `cjson.safe` with lua-cjson's (OpenResty fork) behaviour and
//! error messages.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use mlua::{LightUserData, Lua, Table, Value, Variadic};

mod decode;
mod encode;

use decode::decode;
use encode::encode;

/// The address behind `cjson.empty_array`.
static EMPTY_ARRAY_TAG: u8 = 0;

fn empty_array() -> Value {
    Value::LightUserData(LightUserData(
        std::ptr::addr_of!(EMPTY_ARRAY_TAG) as *mut c_void
    ))
}

fn is_empty_array(p: &LightUserData) -> bool {
    std::ptr::eq(p.0 as *const u8, std::ptr::addr_of!(EMPTY_ARRAY_TAG))
}

const ARRAY_MT_KEY: &str = "portico.ngx_lib.cjson.array_mt";
const EMPTY_ARRAY_MT_KEY: &str = "portico.ngx_lib.cjson.empty_array_mt";

/// Per-instance settings, as lua-cjson keeps them per module instance.
#[derive(Clone)]
struct Config {
    encode_empty_table_as_object: bool,
    encode_max_depth: usize,
    decode_max_depth: usize,
    precision: usize,
    escape_slash: bool,
    decode_array_with_array_mt: bool,
    sparse_convert: bool,
    sparse_ratio: usize,
    sparse_safe: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            encode_empty_table_as_object: true,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            precision: 14,
            escape_slash: true,
            decode_array_with_array_mt: false,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
        }
    }
}

fn bool_option(v: &Value) -> mlua::Result<Option<bool>> {
    match v {
        Value::Nil => Ok(None),
        Value::Boolean(b) => Ok(Some(*b)),
        Value::String(s) if &*s.as_bytes() == b"on" => Ok(Some(true)),
        Value::String(s) if &*s.as_bytes() == b"off" => Ok(Some(false)),
        Value::Integer(_) | Value::Number(_) => Ok(super::to_number(v).map(|n| n != 0.0)),
        _ => Err(mlua::Error::runtime("bad argument #1 (invalid option)")),
    }
}

fn with_cfg<R>(cfg: &Mutex<Config>, f: impl FnOnce(&mut Config) -> R) -> mlua::Result<R> {
    let mut g = cfg
        .lock()
        .map_err(|_| mlua::Error::runtime("cjson settings poisoned"))?;
    Ok(f(&mut g))
}

fn shared_table(lua: &Lua, key: &str) -> mlua::Result<Table> {
    if let Some(t) = lua.named_registry_value::<Option<Table>>(key)? {
        return Ok(t);
    }
    let t = lua.create_table()?;
    t.set_readonly(true);
    lua.set_named_registry_value(key, &t)?;
    Ok(t)
}

/// A fresh module instance (what lua-cjson's `cjson.new()` returns).
pub(super) fn create_module(lua: &Lua, safe: bool) -> mlua::Result<Table> {
    let cfg = Arc::new(Mutex::new(Config::default()));
    let m = lua.create_table()?;
    m.raw_set("_NAME", if safe { "cjson.safe" } else { "cjson" })?;
    m.raw_set("_VERSION", "2.1.0.11")?;
    m.raw_set("null", Value::NULL)?;
    m.raw_set("empty_array", empty_array())?;
    m.raw_set("array_mt", shared_table(lua, ARRAY_MT_KEY)?)?;
    m.raw_set("empty_array_mt", shared_table(lua, EMPTY_ARRAY_MT_KEY)?)?;

    let c = cfg.clone();
    m.raw_set(
        "encode",
        lua.create_function(
            move |lua, args: Variadic<Value>| -> mlua::Result<Variadic<Value>> {
                if args.len() != 1 {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'encode' (expected 1 argument)",
                    ));
                }
                let cfg = with_cfg(&c, |c| c.clone())?;
                match encode(lua, &cfg, &args[0]) {
                    Ok(out) => Ok(Variadic::from_iter([Value::String(
                        lua.create_string(out)?,
                    )])),
                    Err(e) if safe => Ok(Variadic::from_iter([
                        Value::Nil,
                        Value::String(lua.create_string(error_text(&e))?),
                    ])),
                    Err(e) => Err(e),
                }
            },
        )?,
    )?;
    let c = cfg.clone();
    m.raw_set(
        "decode",
        lua.create_function(
            move |lua, args: Variadic<Value>| -> mlua::Result<Variadic<Value>> {
                if args.len() != 1 {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'decode' (expected 1 argument)",
                    ));
                }
                let src = match &args[0] {
                    Value::String(s) => s.as_bytes().to_vec(),
                    other => {
                        let e = format!(
                            "bad argument #1 to 'decode' (string expected, got {})",
                            super::type_name(other)
                        );
                        if safe {
                            return Ok(Variadic::from_iter([
                                Value::Nil,
                                Value::String(lua.create_string(e)?),
                            ]));
                        }
                        return Err(mlua::Error::runtime(e));
                    }
                };
                let cfg = with_cfg(&c, |c| c.clone())?;
                match decode(lua, &cfg, &src) {
                    Ok(v) => Ok(Variadic::from_iter([v])),
                    Err(e) if safe => Ok(Variadic::from_iter([
                        Value::Nil,
                        Value::String(lua.create_string(error_text(&e))?),
                    ])),
                    Err(e) => Err(e),
                }
            },
        )?,
    )?;

    type BoolField = fn(&mut Config) -> &mut bool;
    let bool_settings: [(&str, BoolField); 3] = [
        ("encode_empty_table_as_object", |c| {
            &mut c.encode_empty_table_as_object
        }),
        ("decode_array_with_array_mt", |c| {
            &mut c.decode_array_with_array_mt
        }),
        ("encode_escape_forward_slash", |c| &mut c.escape_slash),
    ];
    for (name, field) in bool_settings {
        let c = cfg.clone();
        m.raw_set(
            name,
            lua.create_function(move |_, v: Value| {
                let set = bool_option(&v)?;
                with_cfg(&c, |cfg| {
                    if let Some(b) = set {
                        *field(cfg) = b;
                    }
                    *field(cfg)
                })
            })?,
        )?;
    }
    type NumField = fn(&mut Config) -> &mut usize;
    let num_settings: [(&str, NumField, usize, usize); 3] = [
        (
            "encode_max_depth",
            |c| &mut c.encode_max_depth,
            1,
            i32::MAX as usize,
        ),
        (
            "decode_max_depth",
            |c| &mut c.decode_max_depth,
            1,
            i32::MAX as usize,
        ),
        ("encode_number_precision", |c| &mut c.precision, 1, 16),
    ];
    for (name, field, lo, hi) in num_settings {
        let c = cfg.clone();
        m.raw_set(
            name,
            lua.create_function(move |_, v: Option<f64>| {
                if let Some(n) = v {
                    if n < lo as f64 || n > hi as f64 {
                        return Err(mlua::Error::runtime(format!(
                            "bad argument #1 to '{name}' (expected integer between {lo} and {hi})"
                        )));
                    }
                }
                with_cfg(&c, |cfg| {
                    if let Some(n) = v {
                        *field(cfg) = n as usize;
                    }
                    *field(cfg) as f64
                })
            })?,
        )?;
    }
    let c = cfg.clone();
    m.raw_set(
        "encode_sparse_array",
        lua.create_function(
            move |_, (convert, ratio, safe_n): (Value, Option<f64>, Option<f64>)| {
                let convert = bool_option(&convert)?;
                with_cfg(&c, |cfg| {
                    if let Some(b) = convert {
                        cfg.sparse_convert = b;
                    }
                    if let Some(r) = ratio {
                        cfg.sparse_ratio = r.max(0.0) as usize;
                    }
                    if let Some(s) = safe_n {
                        cfg.sparse_safe = s.max(0.0) as usize;
                    }
                    (
                        cfg.sparse_convert,
                        cfg.sparse_ratio as f64,
                        cfg.sparse_safe as f64,
                    )
                })
            },
        )?,
    )?;
    // Accepted for compatibility; they change nothing here.
    for name in [
        "encode_keep_buffer",
        "encode_invalid_numbers",
        "decode_invalid_numbers",
    ] {
        m.raw_set(
            name,
            lua.create_function(|_, v: Value| Ok(bool_option(&v)?.unwrap_or(false)))?,
        )?;
    }
    m.raw_set(
        "new",
        lua.create_function(move |lua, ()| create_module(lua, safe))?,
    )?;
    Ok(m)
}

/// The message of an error as Lua code would see it.
fn error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(s) => s.clone(),
        other => other.to_string(),
    }
}
