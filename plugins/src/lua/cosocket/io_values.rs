//! What crosses between Lua and a socket: `send`'s payload, and the `nil, err[,
//! partial]` of a failure.

use std::time::Duration;

use bytes::Bytes;
use mlua::{Lua, MultiValue, Value};

/// `lua_socket_connect_timeout`/`send`/`read` defaults.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

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
        Value::Number(n) => {
            out.extend_from_slice(crate::lua::convert::format_number(*n).as_bytes())
        }
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::Table(t) if depth < MAX_PAYLOAD_DEPTH => {
            let guard = crate::lua::budget::WorkGuard::new(lua);
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
