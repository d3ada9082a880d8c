//! Base64, URI escaping, query-string args and `quote_sql_str`.

use base64::Engine as _;
use mlua::{Lua, Table, Value};

use super::{arg_bytes, type_name};

fn encode_base64(data: &[u8], no_padding: bool) -> String {
    if no_padding {
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
    } else {
        base64::engine::general_purpose::STANDARD.encode(data)
    }
}

/// nginx's `ngx_decode_base64`: input stops at the first `=`; any other
/// character outside the alphabet, or a length of 4n+1, is an error.
fn decode_base64(src: &[u8]) -> Option<Vec<u8>> {
    fn val(b: u8) -> Option<u32> {
        match b {
            b'A'..=b'Z' => Some((b - b'A') as u32),
            b'a'..=b'z' => Some((b - b'a') as u32 + 26),
            b'0'..=b'9' => Some((b - b'0') as u32 + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let end = src.iter().position(|&b| b == b'=').unwrap_or(src.len());
    let src = &src[..end];
    if src.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(src.len() / 4 * 3 + 2);
    for chunk in src.chunks(4) {
        let mut acc = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            acc |= val(b)? << (18 - 6 * i);
        }
        out.push((acc >> 16) as u8);
        if chunk.len() > 2 {
            out.push((acc >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Whether `b` is escaped by `ngx.escape_uri` of the given type.
fn must_escape(b: u8, kind: u8) -> bool {
    match kind {
        // NGX_ESCAPE_URI: controls, space, '#', '%', '?', DEL and non-ASCII.
        0 => b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'%' | b'?'),
        // NGX_ESCAPE_ARGS: as URI, plus '+', '&', ';' ... as nginx's args table.
        1 => b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'%' | b'&' | b'+' | b'?'),
        // URI component: everything but unreserved characters.
        _ => !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')),
    }
}

pub(crate) fn escape_uri(src: &[u8], kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() + src.len() / 2);
    for &b in src {
        if must_escape(b, kind) {
            out.extend_from_slice(&[b'%', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        } else {
            out.push(b);
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `%XX` decoded, `+` to space; malformed escapes are kept as they are.
pub(crate) fn unescape_uri(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let mut i = 0;
    while i < src.len() {
        match src[i] {
            b'%' => {
                let hi = src.get(i + 1).copied().and_then(hex_val);
                let lo = src.get(i + 2).copied().and_then(hex_val);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                } else {
                    out.push(b'%');
                    i += 1;
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// One query-arg value as bytes; `None` means "bare key" (`true`), and
/// `Some(None)` means "skip" (`false`).
fn arg_value(lua: &Lua, v: &Value) -> mlua::Result<Option<Option<Vec<u8>>>> {
    match v {
        Value::Boolean(true) => Ok(None),
        Value::Boolean(false) => Ok(Some(None)),
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            Ok(Some(Some(arg_bytes(lua, v, "encode_args", 1, false)?)))
        }
        other => Err(mlua::Error::runtime(format!(
            "attempt to use {} as query arg value",
            type_name(other)
        ))),
    }
}

fn push_arg(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    if !out.is_empty() {
        out.push(b'&');
    }
    out.extend_from_slice(&escape_uri(key, 2));
    if let Some(v) = value {
        out.push(b'=');
        out.extend_from_slice(&escape_uri(v, 2));
    }
}

/// `ngx.encode_args`. Keys are sorted (OpenResty uses table order, which is
/// unspecified) so the output is deterministic.
pub(crate) fn encode_args(lua: &Lua, t: &Table) -> mlua::Result<Vec<u8>> {
    let mut entries: Vec<(Vec<u8>, Value)> = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = match &k {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(_) | Value::Number(_) => arg_bytes(lua, &k, "encode_args", 1, false)?,
            other => {
                return Err(mlua::Error::runtime(format!(
                    "attempt to use {} as query arg key",
                    type_name(other)
                )))
            }
        };
        entries.push((key, v));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, v) in entries {
        if let Value::Table(arr) = &v {
            let n = arr.raw_len();
            for i in 1..=n {
                let item: Value = arr.raw_get(i)?;
                match arg_value(lua, &item)? {
                    None => push_arg(&mut out, &key, None),
                    Some(Some(val)) => push_arg(&mut out, &key, Some(&val)),
                    Some(None) => {}
                }
            }
            continue;
        }
        match arg_value(lua, &v)? {
            None => push_arg(&mut out, &key, None),
            Some(Some(val)) => push_arg(&mut out, &key, Some(&val)),
            Some(None) => {}
        }
    }
    Ok(out)
}

/// Parses a query string into a Lua table (OpenResty's `ngx.decode_args`).
pub(crate) fn decode_args(lua: &Lua, s: &[u8], max_args: usize) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let mut count = 0usize;
    for part in s.split(|&b| b == b'&') {
        if max_args > 0 && count >= max_args {
            break;
        }
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (
                unescape_uri(&part[..eq]),
                Value::String(lua.create_string(unescape_uri(&part[eq + 1..]))?),
            ),
            None => (unescape_uri(part), Value::Boolean(true)),
        };
        if key.is_empty() {
            continue;
        }
        count += 1;
        let key = lua.create_string(&key)?;
        match t.raw_get::<Value>(&key)? {
            Value::Nil => t.raw_set(key, value)?,
            Value::Table(arr) => arr.raw_push(value)?,
            prev => {
                let arr = lua.create_sequence_from([prev, value])?;
                t.raw_set(key, arr)?;
            }
        }
    }
    Ok(t)
}

/// MySQL-style quoting: `'...'` with `\0 \b \t \n \r \Z \' \" \\` escaped.
fn quote_sql_str(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        let esc = match b {
            0 => Some(b'0'),
            8 => Some(b'b'),
            b'\t' => Some(b't'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            26 => Some(b'Z'),
            b'\\' | b'\'' | b'"' => Some(b),
            _ => None,
        };
        match esc {
            Some(e) => out.extend_from_slice(&[b'\\', e]),
            None => out.push(b),
        }
    }
    out.push(b'\'');
    out
}

pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    ngx.raw_set(
        "encode_base64",
        lua.create_function(|lua, (s, no_padding): (Value, Option<bool>)| {
            let data = arg_bytes(lua, &s, "encode_base64", 1, true)?;
            lua.create_string(encode_base64(&data, no_padding.unwrap_or(false)))
        })?,
    )?;
    ngx.raw_set(
        "decode_base64",
        lua.create_function(|lua, s: Value| {
            if !matches!(s, Value::String(_)) {
                return Err(mlua::Error::runtime("string argument only"));
            }
            let data = arg_bytes(lua, &s, "decode_base64", 1, false)?;
            match decode_base64(&data) {
                Some(d) => Ok(Value::String(lua.create_string(d)?)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    ngx.raw_set(
        "escape_uri",
        lua.create_function(|lua, (s, kind): (Value, Option<f64>)| {
            let data = arg_bytes(lua, &s, "escape_uri", 1, true)?;
            let kind = match kind {
                None => 2,
                Some(k) if k == 0.0 || k == 1.0 || k == 2.0 => k as u8,
                Some(k) => {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #2 to 'escape_uri' (unsupported escape type {k})"
                    )))
                }
            };
            lua.create_string(escape_uri(&data, kind))
        })?,
    )?;
    ngx.raw_set(
        "unescape_uri",
        lua.create_function(|lua, s: Value| {
            let data = arg_bytes(lua, &s, "unescape_uri", 1, true)?;
            lua.create_string(unescape_uri(&data))
        })?,
    )?;
    ngx.raw_set(
        "encode_args",
        lua.create_function(|lua, t: Value| match t {
            Value::Table(t) => lua.create_string(encode_args(lua, &t)?),
            other => Err(mlua::Error::runtime(format!(
                "bad argument #1 to 'encode_args' (table expected, got {})",
                type_name(&other)
            ))),
        })?,
    )?;
    ngx.raw_set(
        "decode_args",
        lua.create_function(|lua, (s, max): (Value, Option<f64>)| {
            let data = arg_bytes(lua, &s, "decode_args", 1, false)?;
            let max = match max {
                None => 100,
                Some(m) if m <= 0.0 => 0,
                Some(m) => m as usize,
            };
            decode_args(lua, &data, max)
        })?,
    )?;
    ngx.raw_set(
        "quote_sql_str",
        lua.create_function(|lua, s: Value| {
            let data = arg_bytes(lua, &s, "quote_sql_str", 1, false)?;
            lua.create_string(quote_sql_str(&data))
        })?,
    )?;
    Ok(())
}
