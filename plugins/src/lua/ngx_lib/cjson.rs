//! `cjson` and `cjson.safe` with lua-cjson's (OpenResty fork) behaviour and
//! error messages.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use mlua::{LightUserData, Lua, Table, Value, Variadic};

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
}

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
            other => return Err(encode_err(super::type_name(other), "type not supported")),
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
            if self.out.len() > super::MAX_RESULT_LEN {
                return Err(mlua::Error::runtime(format!(
                    "Cannot serialise: output longer than {} bytes",
                    super::MAX_RESULT_LEN
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

fn encode(lua: &Lua, cfg: &Config, v: &Value) -> mlua::Result<Vec<u8>> {
    let mut enc = Encoder {
        cfg,
        array_mt: lua.named_registry_value::<Option<Table>>(ARRAY_MT_KEY)?,
        empty_array_mt: lua.named_registry_value::<Option<Table>>(EMPTY_ARRAY_MT_KEY)?,
        out: Vec::new(),
    };
    enc.encode(v.clone())?;
    Ok(enc.out)
}

// ---------------------------------------------------------------- decoding

/// A container being decoded: an array with its next index, or an object
/// with the key whose value comes next.
enum DecFrame {
    Array(Table, usize),
    Object(Table, Vec<u8>),
}

struct Decoder<'a> {
    lua: &'a Lua,
    cfg: &'a Config,
    src: &'a [u8],
    pos: usize,
    array_mt: Option<Table>,
}

/// A token's name in lua-cjson's messages.
enum Found {
    Name(&'static str),
    Error(&'static str),
}

impl Found {
    fn text(&self) -> &'static str {
        match self {
            Found::Name(s) | Found::Error(s) => s,
        }
    }
}

impl Decoder<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    /// What lua-cjson would call the token at `pos`.
    fn found_at(&self, pos: usize) -> Found {
        match self.src.get(pos) {
            None => Found::Name("T_END"),
            Some(b'{') => Found::Name("T_OBJ_BEGIN"),
            Some(b'}') => Found::Name("T_OBJ_END"),
            Some(b'[') => Found::Name("T_ARR_BEGIN"),
            Some(b']') => Found::Name("T_ARR_END"),
            Some(b'"') => Found::Name("T_STRING"),
            Some(b':') => Found::Name("T_COLON"),
            Some(b',') => Found::Name("T_COMMA"),
            Some(b'-' | b'0'..=b'9') => Found::Name("T_NUMBER"),
            Some(_) => {
                let rest = &self.src[pos..];
                if rest.starts_with(b"true") || rest.starts_with(b"false") {
                    Found::Name("T_BOOLEAN")
                } else if rest.starts_with(b"null") {
                    Found::Name("T_NULL")
                } else {
                    Found::Error("invalid token")
                }
            }
        }
    }

    fn expected(&self, what: &str, pos: usize, found: Found) -> mlua::Error {
        mlua::Error::runtime(format!(
            "Expected {what} but found {} at character {}",
            found.text(),
            pos + 1
        ))
    }

    fn expected_here(&self, what: &str) -> mlua::Error {
        self.expected(what, self.pos, self.found_at(self.pos))
    }

    /// A scalar value at `pos`.
    fn scalar(&mut self) -> mlua::Result<Value> {
        let start = self.pos;
        match self.src.get(self.pos) {
            Some(b'"') => {
                let s = self
                    .string()
                    .map_err(|e| self.expected("value", start, e))?;
                Ok(Value::String(self.lua.create_string(s)?))
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = self
                    .number()
                    .map_err(|e| self.expected("value", start, e))?;
                Ok(Value::Number(n))
            }
            _ => {
                let rest = &self.src[self.pos..];
                for (lit, v) in [
                    (&b"true"[..], Value::Boolean(true)),
                    (&b"false"[..], Value::Boolean(false)),
                    (&b"null"[..], Value::NULL),
                ] {
                    if rest.starts_with(lit) {
                        self.pos += lit.len();
                        return Ok(v);
                    }
                }
                Err(self.expected_here("value"))
            }
        }
    }

    fn enter(&mut self, depth: usize) -> mlua::Result<()> {
        if depth > self.cfg.decode_max_depth {
            return Err(mlua::Error::runtime(format!(
                "Found too many nested data structures ({depth}) at character {}",
                self.pos + 1
            )));
        }
        Ok(())
    }

    /// An object key and its colon.
    fn key(&mut self) -> mlua::Result<Vec<u8>> {
        self.skip_ws();
        if self.src.get(self.pos) != Some(&b'"') {
            return Err(self.expected_here("object key string"));
        }
        let start = self.pos;
        let key = self
            .string()
            .map_err(|e| self.expected("object key string", start, e))?;
        self.skip_ws();
        if self.src.get(self.pos) != Some(&b':') {
            return Err(self.expected_here("colon"));
        }
        self.pos += 1;
        Ok(key)
    }

    /// Decodes one value without recursion, so deep nesting cannot overflow
    /// the stack.
    fn value(&mut self) -> mlua::Result<Value> {
        let mut stack: Vec<DecFrame> = Vec::new();
        loop {
            // Read the start of a value.
            self.skip_ws();
            let mut done = match self.src.get(self.pos) {
                Some(b'{') => {
                    self.enter(stack.len() + 1)?;
                    self.pos += 1;
                    let t = self.lua.create_table()?;
                    self.skip_ws();
                    if self.src.get(self.pos) == Some(&b'}') {
                        self.pos += 1;
                        Value::Table(t)
                    } else {
                        let key = self.key()?;
                        stack.push(DecFrame::Object(t, key));
                        continue;
                    }
                }
                Some(b'[') => {
                    self.enter(stack.len() + 1)?;
                    self.pos += 1;
                    let t = self.lua.create_table()?;
                    if let Some(mt) = &self.array_mt {
                        t.set_metatable(Some(mt.clone()))?;
                    }
                    self.skip_ws();
                    if self.src.get(self.pos) == Some(&b']') {
                        self.pos += 1;
                        Value::Table(t)
                    } else {
                        stack.push(DecFrame::Array(t, 1));
                        continue;
                    }
                }
                _ => self.scalar()?,
            };
            // Attach the finished value to its container(s).
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(done);
                };
                self.skip_ws();
                match top {
                    DecFrame::Array(t, i) => {
                        t.raw_set(*i, done)?;
                        *i += 1;
                        match self.src.get(self.pos) {
                            Some(b',') => {
                                self.pos += 1;
                                break;
                            }
                            Some(b']') => {
                                self.pos += 1;
                                let t = t.clone();
                                stack.pop();
                                done = Value::Table(t);
                            }
                            _ => return Err(self.expected_here("comma or array end")),
                        }
                    }
                    DecFrame::Object(t, key) => {
                        t.raw_set(self.lua.create_string(std::mem::take(key))?, done)?;
                        match self.src.get(self.pos) {
                            Some(b',') => {
                                self.pos += 1;
                                *key = self.key()?;
                                break;
                            }
                            Some(b'}') => {
                                self.pos += 1;
                                let t = t.clone();
                                stack.pop();
                                done = Value::Table(t);
                            }
                            _ => return Err(self.expected_here("comma or object end")),
                        }
                    }
                }
            }
        }
    }

    fn number(&mut self) -> Result<f64, Found> {
        let s = self.src;
        let start = self.pos;
        let mut i = start;
        if s.get(i) == Some(&b'-') {
            i += 1;
        }
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while let Some(b'0'..=b'9') = s.get(i) {
                    i += 1;
                }
            }
            _ => return Err(Found::Error("invalid number")),
        }
        if s.get(i) == Some(&b'.') {
            i += 1;
            if !matches!(s.get(i), Some(b'0'..=b'9')) {
                return Err(Found::Error("invalid number"));
            }
            while let Some(b'0'..=b'9') = s.get(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = s.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = s.get(i) {
                i += 1;
            }
            if !matches!(s.get(i), Some(b'0'..=b'9')) {
                return Err(Found::Error("invalid number"));
            }
            while let Some(b'0'..=b'9') = s.get(i) {
                i += 1;
            }
        }
        // A number glued to letters or digits ("01", "1x") is invalid.
        if let Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'.') = s.get(i) {
            return Err(Found::Error("invalid number"));
        }
        let text = std::str::from_utf8(&s[start..i]).map_err(|_| Found::Error("invalid number"))?;
        let n = text
            .parse::<f64>()
            .map_err(|_| Found::Error("invalid number"))?;
        self.pos = i;
        Ok(n)
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let h = self.src.get(at..at + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok()
    }

    fn string(&mut self) -> Result<Vec<u8>, Found> {
        let s = self.src;
        let mut i = self.pos + 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = s.get(i) else {
                return Err(Found::Error("unexpected end of string"));
            };
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = s.get(i + 1) else {
                        return Err(Found::Error("unexpected end of string"));
                    };
                    i += 2;
                    let c = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let bad = Found::Error("invalid unicode escape code");
                            let hi = self
                                .hex4(i)
                                .ok_or(Found::Error("invalid unicode escape code"))?;
                            i += 4;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if s.get(i..i + 2) != Some(b"\\u") {
                                    return Err(bad);
                                }
                                let lo = self
                                    .hex4(i + 2)
                                    .ok_or(Found::Error("invalid unicode escape code"))?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(bad);
                                }
                                i += 6;
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(bad);
                            } else {
                                hi
                            };
                            let ch = char::from_u32(cp).ok_or(bad)?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(Found::Error("invalid escape code")),
                    };
                    out.push(c);
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        self.pos = i + 1;
        Ok(out)
    }
}

fn decode(lua: &Lua, cfg: &Config, src: &[u8]) -> mlua::Result<Value> {
    let array_mt = if cfg.decode_array_with_array_mt {
        lua.named_registry_value::<Option<Table>>(ARRAY_MT_KEY)?
    } else {
        None
    };
    let mut d = Decoder {
        lua,
        cfg,
        src,
        pos: 0,
        array_mt,
    };
    let v = d.value()?;
    d.skip_ws();
    if d.pos < src.len() {
        return Err(d.expected_here("the end"));
    }
    Ok(v)
}

// ---------------------------------------------------------------- module

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
