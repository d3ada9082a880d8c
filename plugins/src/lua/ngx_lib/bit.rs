//! LuaJIT's `bit` module (BitOp): every result is a signed 32-bit integer.

use mlua::{Lua, Table, Value, Variadic};

use super::{to_number, type_name};

/// LuaJIT's `tobit`: round to nearest (ties to even), keep the low 32 bits.
fn tobit(x: f64) -> i32 {
    if !x.is_finite() {
        return 0;
    }
    let r = x.round_ties_even();
    (r.rem_euclid(4_294_967_296.0) as u64 as u32) as i32
}

fn arg(v: &Value, fname: &str, pos: usize) -> mlua::Result<i32> {
    match to_number(v) {
        Some(n) => Ok(tobit(n)),
        None => Err(mlua::Error::runtime(format!(
            "bad argument #{pos} to '{fname}' (number expected, got {})",
            type_name(v)
        ))),
    }
}

fn tohex(x: i32, n: Option<i32>) -> String {
    let n = n.unwrap_or(8);
    let upper = n < 0;
    let width = n.unsigned_abs().min(8) as usize;
    let s = if upper {
        format!("{:08X}", x as u32)
    } else {
        format!("{:08x}", x as u32)
    };
    s[8 - width..].to_string()
}

fn fold(args: &Variadic<Value>, fname: &'static str, op: fn(i32, i32) -> i32) -> mlua::Result<f64> {
    let Some(first) = args.first() else {
        return Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{fname}' (number expected, got no value)"
        )));
    };
    let mut acc = arg(first, fname, 1)?;
    for (i, v) in args.iter().enumerate().skip(1) {
        acc = op(acc, arg(v, fname, i + 1)?);
    }
    Ok(acc as f64)
}

pub(super) fn create_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.raw_set(
        "tobit",
        lua.create_function(|_, x: Value| Ok(arg(&x, "tobit", 1)? as f64))?,
    )?;
    m.raw_set(
        "tohex",
        lua.create_function(|_, (x, n): (Value, Option<Value>)| {
            let x = arg(&x, "tohex", 1)?;
            let n = match n {
                None | Some(Value::Nil) => None,
                Some(v) => Some(arg(&v, "tohex", 2)?),
            };
            Ok(tohex(x, n))
        })?,
    )?;
    m.raw_set(
        "bnot",
        lua.create_function(|_, x: Value| Ok(!arg(&x, "bnot", 1)? as f64))?,
    )?;
    m.raw_set(
        "bswap",
        lua.create_function(|_, x: Value| Ok(arg(&x, "bswap", 1)?.swap_bytes() as f64))?,
    )?;
    m.raw_set(
        "band",
        lua.create_function(|_, a: Variadic<Value>| fold(&a, "band", |x, y| x & y))?,
    )?;
    m.raw_set(
        "bor",
        lua.create_function(|_, a: Variadic<Value>| fold(&a, "bor", |x, y| x | y))?,
    )?;
    m.raw_set(
        "bxor",
        lua.create_function(|_, a: Variadic<Value>| fold(&a, "bxor", |x, y| x ^ y))?,
    )?;
    type ShiftOp = fn(i32, u32) -> i32;
    let shifts: [(&'static str, ShiftOp); 5] = [
        ("lshift", |x, n| ((x as u32) << n) as i32),
        ("rshift", |x, n| ((x as u32) >> n) as i32),
        ("arshift", |x, n| x >> n),
        ("rol", |x, n| (x as u32).rotate_left(n) as i32),
        ("ror", |x, n| (x as u32).rotate_right(n) as i32),
    ];
    for (name, op) in shifts {
        m.raw_set(
            name,
            lua.create_function(move |_, (x, n): (Value, Value)| {
                let x = arg(&x, name, 1)?;
                let n = (arg(&n, name, 2)? as u32) & 31;
                Ok(op(x, n) as f64)
            })?,
        )?;
    }
    Ok(m)
}
