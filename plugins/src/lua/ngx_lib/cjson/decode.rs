//! JSON decoding for `cjson.decode`.

use mlua::{Lua, Table, Value};

use super::{Config, ARRAY_MT_KEY};

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

pub(super) fn decode(lua: &Lua, cfg: &Config, src: &[u8]) -> mlua::Result<Value> {
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
