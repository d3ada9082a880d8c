//! JSON encoding for `cjson.encode`.

use crate::lua::budget::WorkGuard;
use mlua::{Lua, Table, Value};

use super::{is_empty_array, Config, ARRAY_MT_KEY, EMPTY_ARRAY_MT_KEY};

/// `printf("%.{precision}g", v)` for finite `v`.
pub(crate) fn fmt_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let p = precision.max(1);
    let e_form = format!("{:.*e}", p - 1, v);
    let (mantissa, exp) = match e_form.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (e_form.as_str(), 0),
    };
    if exp < -4 || exp >= p as i32 {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.unsigned_abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn escape_string(out: &mut Vec<u8>, s: &[u8], escape_slash: bool) {
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'/' if escape_slash => out.extend_from_slice(b"\\/"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            8 => out.extend_from_slice(b"\\b"),
            12 => out.extend_from_slice(b"\\f"),
            0..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn encode_err(what: &str, why: &str) -> mlua::Error {
    mlua::Error::runtime(format!("Cannot serialise {what}: {why}"))
}

/// One table being written: an array by index, or an object's entries.
enum EncFrame {
    Array {
        t: Table,
        i: usize,
        len: usize,
    },
    Object {
        entries: Vec<(Value, Value)>,
        i: usize,
    },
}

struct Encoder<'a> {
    cfg: &'a Config,
    array_mt: Option<Table>,
    empty_array_mt: Option<Table>,
    out: Vec<u8>,
    lua: &'a Lua,
    /// A table that references one large string many times encodes to far more than
    /// the VM holds: the budget and the memory cap are checked every `CHECK_EVERY` values.
    guard: WorkGuard,
    values: usize,
}

const CHECK_EVERY: usize = 256;

impl Encoder<'_> {
    fn number(&mut self, n: f64) -> mlua::Result<()> {
        if !n.is_finite() {
            return Err(encode_err("number", "must not be NaN or Infinity"));
        }
        self.out
            .extend_from_slice(fmt_g(n, self.cfg.precision).as_bytes());
        Ok(())
    }

    /// Writes a non-table value.
    fn scalar(&mut self, v: &Value) -> mlua::Result<()> {
        match v {
            Value::Nil => self.out.extend_from_slice(b"null"),
            Value::Boolean(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Integer(i) => self.number(*i as f64)?,
            Value::Number(n) => self.number(*n)?,
            Value::String(s) => escape_string(&mut self.out, &s.as_bytes(), self.cfg.escape_slash),
            Value::LightUserData(p) if p.0.is_null() => self.out.extend_from_slice(b"null"),
            Value::LightUserData(p) if is_empty_array(p) => self.out.extend_from_slice(b"[]"),
            other => {
                return Err(encode_err(
                    super::super::type_name(other),
                    "type not supported",
                ))
            }
        }
        Ok(())
    }

    fn key(&mut self, k: &Value) -> mlua::Result<()> {
        match k {
            Value::String(s) => escape_string(&mut self.out, &s.as_bytes(), self.cfg.escape_slash),
            Value::Integer(i) => {
                let s = fmt_g(*i as f64, self.cfg.precision);
                escape_string(&mut self.out, s.as_bytes(), false);
            }
            Value::Number(n) => {
                let s = fmt_g(*n, self.cfg.precision);
                escape_string(&mut self.out, s.as_bytes(), false);
            }
            _ => return Err(encode_err("table", "table key must be a number or string")),
        }
        self.out.push(b':');
        Ok(())
    }

    /// Opens a table: writes it whole if empty, else its opening bracket and
    /// returns the frame to continue with.
    fn open_table(&mut self, t: Table, depth: usize) -> mlua::Result<Option<EncFrame>> {
        if depth > self.cfg.encode_max_depth {
            return Err(mlua::Error::runtime(format!(
                "Cannot serialise, excessive nesting ({depth})"
            )));
        }
        if let Some(mt) = t.metatable() {
            if self.array_mt.as_ref() == Some(&mt) {
                let len = t.raw_len();
                return Ok(self.open_array(t, len));
            }
            if self.empty_array_mt.as_ref() == Some(&mt) && is_empty(&t)? {
                self.out.extend_from_slice(b"[]");
                return Ok(None);
            }
        }
        // Array detection as lua-cjson: every key a positive integer.
        let mut max = 0usize;
        let mut count = 0usize;
        let mut entries = Vec::new();
        let mut is_array = true;
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair?;
            if is_array {
                let idx = match k {
                    Value::Integer(i) if i >= 1 => Some(i as f64),
                    Value::Number(n) if n >= 1.0 && n.floor() == n => Some(n),
                    _ => None,
                };
                match idx {
                    Some(n) => {
                        max = max.max(n as usize);
                        count += 1;
                    }
                    None => is_array = false,
                }
            }
            entries.push((k, v));
        }
        if is_array && count == 0 {
            let empty: &[u8] = if self.cfg.encode_empty_table_as_object {
                b"{}"
            } else {
                b"[]"
            };
            self.out.extend_from_slice(empty);
            return Ok(None);
        }
        if is_array {
            let cfg = self.cfg;
            let sparse =
                cfg.sparse_ratio > 0 && max > count * cfg.sparse_ratio && max > cfg.sparse_safe;
            if !sparse {
                return Ok(self.open_array(t, max));
            }
            if !cfg.sparse_convert {
                return Err(encode_err("table", "excessively sparse array"));
            }
        }
        self.out.push(b'{');
        Ok(Some(EncFrame::Object { entries, i: 0 }))
    }

    fn open_array(&mut self, t: Table, len: usize) -> Option<EncFrame> {
        if len == 0 {
            self.out.extend_from_slice(b"[]");
            return None;
        }
        self.out.push(b'[');
        Some(EncFrame::Array { t, i: 0, len })
    }

    /// Encodes without recursion, so deep nesting cannot overflow the stack.
    fn encode(&mut self, root: Value) -> mlua::Result<()> {
        let mut stack: Vec<EncFrame> = Vec::new();
        let mut next = Some(root);
        loop {
            match next.take() {
                Some(Value::Table(t)) => {
                    let depth = stack.len() + 1;
                    if let Some(frame) = self.open_table(t, depth)? {
                        stack.push(frame);
                    }
                }
                Some(v) => self.scalar(&v)?,
                None => {}
            }
            self.values += 1;
            if self.values % CHECK_EVERY == 0 {
                self.guard.check(self.lua, self.out.len(), "cjson.encode")?;
            }
            if self.out.len() > super::super::MAX_RESULT_LEN {
                return Err(mlua::Error::runtime(format!(
                    "Cannot serialise: output longer than {} bytes",
                    super::super::MAX_RESULT_LEN
                )));
            }
            let Some(top) = stack.last_mut() else {
                return Ok(());
            };
            match top {
                EncFrame::Array { t, i, len } => {
                    if *i < *len {
                        if *i > 0 {
                            self.out.push(b',');
                        }
                        *i += 1;
                        next = Some(t.raw_get(*i)?);
                    } else {
                        self.out.push(b']');
                        stack.pop();
                    }
                }
                EncFrame::Object { entries, i } => {
                    if let Some((k, v)) = entries.get(*i) {
                        let (k, v) = (k.clone(), v.clone());
                        if *i > 0 {
                            self.out.push(b',');
                        }
                        *i += 1;
                        self.key(&k)?;
                        next = Some(v);
                    } else {
                        self.out.push(b'}');
                        stack.pop();
                    }
                }
            }
        }
    }
}

fn is_empty(t: &Table) -> mlua::Result<bool> {
    match t.pairs::<Value, Value>().next() {
        None => Ok(true),
        Some(r) => r.map(|_| false),
    }
}

pub(super) fn encode(lua: &Lua, cfg: &Config, v: &Value) -> mlua::Result<Vec<u8>> {
    let mut enc = Encoder {
        cfg,
        array_mt: lua.named_registry_value::<Option<Table>>(ARRAY_MT_KEY)?,
        empty_array_mt: lua.named_registry_value::<Option<Table>>(EMPTY_ARRAY_MT_KEY)?,
        out: Vec::new(),
        lua,
        guard: WorkGuard::new(lua),
        values: 0,
    };
    enc.encode(v.clone())?;
    enc.guard.check(lua, enc.out.len(), "cjson.encode")?;
    Ok(enc.out)
}
