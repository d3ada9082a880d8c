//! Conversions between JSON and Lua values done in Rust: plugin configuration into Lua
//! (`json_to_lua`), a table a function returns as its body, or a module's schema, into
//! JSON (`lua_to_json`).
//!
//! Both are bounded. Configuration comes from serde_json (nesting limited to 128 by its
//! parser), but a `Value` built another way must not overflow the stack. A returned
//! table is user data of any shape: a cycle, or a small table shared many times
//! (`local a = {} for i = 1, 40 do a = {a, a} end`), expands to an exponential number
//! of JSON nodes. So it stops at a depth, and fails when the JSON it builds passes a
//! size or when its time runs out (a body gets one slice budget of its own).

use mlua::{Lua, Value};
use serde_json::Value as J;

/// Deepest configuration turned into Lua: serde_json's own parser limit, so any
/// configuration that parsed converts; the recursion stays far from the stack's end.
pub(crate) const MAX_CONF_DEPTH: usize = 128;
/// Tables nested deeper than this become `null` (cycles end there).
const MAX_BODY_DEPTH: usize = 100;
/// Size bound of a converted module schema: values plus string bytes.
pub(crate) const MAX_BODY_UNITS: usize = 4 * 1024 * 1024;
/// Values converted between two looks at the clock.
const CHECK_EVERY: usize = 1024;

/// Converts plugin configuration JSON into a Lua value (`null` → `ngx.null`).
pub fn json_to_lua(lua: &Lua, v: &J) -> mlua::Result<Value> {
    to_lua(lua, v, 0)
}

fn to_lua(lua: &Lua, v: &J, depth: usize) -> mlua::Result<Value> {
    if depth > MAX_CONF_DEPTH {
        return Err(mlua::Error::runtime(format!(
            "configuration nested deeper than {MAX_CONF_DEPTH} levels"
        )));
    }
    Ok(match v {
        J::Null => Value::NULL,
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i as _),
            None => Value::Number(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Value::String(lua.create_string(s)?),
        J::Array(items) => {
            let t = lua.create_table()?;
            for item in items {
                t.raw_push(to_lua(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
        J::Object(map) => {
            let t = lua.create_table()?;
            for (k, item) in map {
                t.raw_set(k.as_str(), to_lua(lua, item, depth + 1)?)?;
            }
            Value::Table(t)
        }
    })
}

/// A Lua value as JSON, the way APISIX's `core.response.exit` encodes a table body;
/// `None` if the JSON would pass the default size bound.
pub fn lua_to_json(v: &Value) -> Option<J> {
    lua_to_json_bounded(v, MAX_BODY_UNITS, &|| false)
}

/// As [`lua_to_json`], failing once the JSON built holds more than `max_units` (one per
/// value, plus the bytes of each string) or once `expired()` says so (checked every
/// `CHECK_EVERY` values).
pub fn lua_to_json_bounded(v: &Value, max_units: usize, expired: &dyn Fn() -> bool) -> Option<J> {
    let mut bound = Bound {
        left: max_units,
        seen: 0,
        expired,
    };
    to_json(v, 0, &mut bound)
}

struct Bound<'a> {
    left: usize,
    seen: usize,
    expired: &'a dyn Fn() -> bool,
}

impl Bound<'_> {
    fn take(&mut self, units: usize) -> Option<()> {
        self.left = self.left.checked_sub(units)?;
        self.seen += 1;
        if self.seen % CHECK_EVERY == 0 && (self.expired)() {
            return None;
        }
        Some(())
    }
}

fn to_json(v: &Value, depth: usize, left: &mut Bound<'_>) -> Option<J> {
    left.take(1)?;
    if depth > MAX_BODY_DEPTH {
        return Some(J::Null);
    }
    Some(match v {
        Value::Nil => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::Integer(i) => J::from(*i),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => J::from(*n as i64),
        Value::Number(n) => serde_json::Number::from_f64(*n)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::String(s) => {
            left.take(s.as_bytes().len())?;
            J::String(s.to_string_lossy())
        }
        Value::Table(t) => {
            let len = t.raw_len();
            let count = t.clone().pairs::<Value, Value>().count();
            if len > 0 && count == len {
                let mut items = Vec::with_capacity(len);
                for v in t.clone().sequence_values::<Value>().flatten() {
                    items.push(to_json(&v, depth + 1, left)?);
                }
                J::Array(items)
            } else {
                let mut map = serde_json::Map::new();
                for (k, v) in t.clone().pairs::<Value, Value>().flatten() {
                    let key = match &k {
                        Value::String(s) => s.to_string_lossy(),
                        other => other.to_string().unwrap_or_default(),
                    };
                    left.take(key.len())?;
                    map.insert(key, to_json(&v, depth + 1, left)?);
                }
                J::Object(map)
            }
        }
        _ => J::Null,
    })
}

/// Numbers print as LuaJIT prints them: integral values without a fraction (`5`, not `5.0`).
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else if n.is_nan() {
        "nan".into()
    } else if n.is_infinite() {
        if n > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{n}")
    }
}

/// Lua's own name for a value's type (mlua splits numbers into integer and number).
pub fn lua_type_name(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "number",
        other => other.type_name(),
    }
}
