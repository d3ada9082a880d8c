//! `ngx.re.match`, `find`, `gmatch`, `sub`, `gsub` on fancy-regex (PCRE-like:
//! backreferences, lookaround, atomic groups).
//!
//! Subjects and patterns that are valid UTF-8 are matched as UTF-8 text (what
//! OpenResty does with the `u` flag; identical to its default for ASCII). A
//! subject or pattern that is not valid UTF-8 is matched byte by byte (each
//! byte mapped to one character), as PCRE does without `u`. All offsets
//! reported to Lua are byte offsets into the original subject.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use fancy_regex::Regex;
use lru::LruCache;
use mlua::{Function, Lua, Table, Value, Variadic};

/// Compiled regexes kept per VM.
const CACHE_SIZE: usize = 1024;
/// Backtracking steps allowed per match attempt (fancy-regex's default).
const BACKTRACK_LIMIT: usize = 1_000_000;

struct Compiled {
    re: Regex,
    /// Number of capture groups, not counting group 0.
    ncaps: usize,
    /// Named groups: (index, name).
    names: Vec<(usize, String)>,
}

#[derive(Clone, Copy, Default)]
struct Opts {
    caseless: bool,
    multiline: bool,
    dotall: bool,
    extended: bool,
    anchored: bool,
    dupnames: bool,
}

impl Opts {
    fn parse(opts: Option<&[u8]>) -> mlua::Result<Opts> {
        let mut o = Opts::default();
        let Some(bytes) = opts else { return Ok(o) };
        for &c in bytes {
            match c {
                b'i' => o.caseless = true,
                b'm' => o.multiline = true,
                b's' => o.dotall = true,
                b'x' => o.extended = true,
                b'a' => o.anchored = true,
                b'D' => o.dupnames = true,
                // utf8, no-utf8-check, jit, compile-once, dfa,
                // javascript-compat: accepted, nothing to do.
                b'u' | b'U' | b'j' | b'o' | b'd' | b'J' => {}
                _ => {
                    return Err(mlua::Error::runtime(format!(
                        "unknown flag \"{}\" (flags \"{}\")",
                        c as char,
                        String::from_utf8_lossy(bytes)
                    )))
                }
            }
        }
        Ok(o)
    }

    fn key_byte(&self) -> u8 {
        (self.caseless as u8)
            | (self.multiline as u8) << 1
            | (self.dotall as u8) << 2
            | (self.extended as u8) << 3
    }
}

type Cache = Arc<Mutex<LruCache<Vec<u8>, Arc<Compiled>>>>;

fn compile(
    cache: &Cache,
    pattern: &[u8],
    opts: Opts,
    latin1: bool,
) -> Result<Arc<Compiled>, String> {
    let mut key = Vec::with_capacity(pattern.len() + 2);
    key.extend_from_slice(pattern);
    key.push(opts.key_byte());
    key.push(latin1 as u8);
    if let Ok(mut c) = cache.lock() {
        if let Some(hit) = c.get(&key) {
            return Ok(hit.clone());
        }
    }
    let pat: Cow<'_, str> = if latin1 {
        Cow::Owned(pattern.iter().map(|&b| b as char).collect())
    } else {
        String::from_utf8_lossy(pattern)
    };
    let mut src = String::with_capacity(pat.len() + 8);
    if opts.caseless || opts.multiline || opts.dotall || opts.extended {
        src.push_str("(?");
        for (on, f) in [
            (opts.caseless, 'i'),
            (opts.multiline, 'm'),
            (opts.dotall, 's'),
            (opts.extended, 'x'),
        ] {
            if on {
                src.push(f);
            }
        }
        src.push(')');
    }
    let scanned = translate_pcre(&pat, &mut src);
    let re = fancy_regex::RegexBuilder::new(&src)
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
        .map_err(|e| {
            format!(
                "failed to compile regex \"{}\": {e}",
                String::from_utf8_lossy(pattern)
            )
        })?;
    let ncaps = re.captures_len().saturating_sub(1);
    let names = if scanned.iter().all(|(i, _)| *i <= ncaps) {
        scanned
    } else {
        re.capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.to_string())))
            .collect()
    };
    let compiled = Arc::new(Compiled { re, ncaps, names });
    if let Ok(mut c) = cache.lock() {
        c.put(key, compiled.clone());
    }
    Ok(compiled)
}

/// Rewrites the few PCRE escapes fancy-regex lacks: `\Z` (end or before a
/// final newline), `\h`/`\H` (horizontal space) and `\Q...\E` quoting.
/// A literal `[` inside a character class is escaped (Rust's syntax would
/// read it as a nested class). Everything else passes through unchanged.
///
/// Returns the named groups in pattern order, with their group numbers
/// (fancy-regex keeps only one group per name; PCRE's `D` needs them all).
fn translate_pcre(pat: &str, out: &mut String) -> Vec<(usize, String)> {
    const HSPACE: &str = "\\t\\x20\\xA0";
    let mut chars = pat.chars().peekable();
    let mut in_class = false;
    let mut group = 0usize;
    let mut names = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '(' if !in_class => {
                out.push('(');
                if chars.peek() != Some(&'?') {
                    group += 1;
                    continue;
                }
                chars.next();
                out.push('?');
                let mut rest = chars.clone();
                let named = match (rest.next(), rest.next()) {
                    (Some('<'), Some(n)) if n != '=' && n != '!' => Some('>'),
                    (Some('P'), Some('<')) => Some('>'),
                    (Some('\''), _) => Some('\''),
                    _ => None,
                };
                let Some(close) = named else { continue };
                if chars.peek() == Some(&'P') {
                    chars.next();
                    out.push('P');
                }
                chars.next(); // '<' or quote
                out.push('<');
                let mut name = String::new();
                for n in chars.by_ref() {
                    if n == close {
                        break;
                    }
                    name.push(n);
                }
                out.push_str(&name);
                out.push('>');
                group += 1;
                names.push((group, name));
            }
            '\\' => match chars.next() {
                Some('Q') => {
                    let mut lit = String::new();
                    while let Some(q) = chars.next() {
                        if q == '\\' && chars.peek() == Some(&'E') {
                            chars.next();
                            break;
                        }
                        lit.push(q);
                    }
                    out.push_str(&fancy_regex::escape(&lit));
                }
                Some('E') => {}
                Some('Z') if !in_class => out.push_str("(?=\\n?\\z)"),
                Some('h') if in_class => out.push_str(HSPACE),
                Some('h') => {
                    out.push('[');
                    out.push_str(HSPACE);
                    out.push(']');
                }
                Some('H') if !in_class => {
                    out.push_str("[^");
                    out.push_str(HSPACE);
                    out.push(']');
                }
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
                if chars.peek() == Some(&']') {
                    // A leading ']' is a literal.
                    chars.next();
                    out.push_str("\\]");
                }
            }
            '[' if chars.peek() == Some(&':') => {
                // POSIX class such as [:alpha:] inside a bracket expression.
                out.push('[');
                for p in chars.by_ref() {
                    out.push(p);
                    if p == ']' {
                        break;
                    }
                }
            }
            // PCRE has no nested classes: a '[' inside one is a literal.
            '[' => out.push_str("\\["),
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            _ => out.push(c),
        }
    }
    names
}

/// The subject as text the regex engine can run on, with offset mapping.
enum Text<'a> {
    Utf8(Cow<'a, str>),
    /// One char per byte; `offs[i]` is the text offset of byte `i`.
    Latin1 {
        s: String,
        offs: Vec<usize>,
    },
}

impl<'a> Text<'a> {
    fn new(subject: &'a [u8], pattern: &[u8], pos: usize) -> Text<'a> {
        if let (Ok(s), true) = (
            std::str::from_utf8(subject),
            std::str::from_utf8(pattern).is_ok(),
        ) {
            if s.is_char_boundary(pos.min(s.len())) {
                return Text::Utf8(Cow::Borrowed(s));
            }
        }
        let mut s = String::with_capacity(subject.len() + subject.len() / 4);
        let mut offs = Vec::with_capacity(subject.len() + 1);
        for &b in subject {
            offs.push(s.len());
            s.push(b as char);
        }
        offs.push(s.len());
        Text::Latin1 { s, offs }
    }

    fn into_owned(self) -> Text<'static> {
        match self {
            Text::Utf8(s) => Text::Utf8(Cow::Owned(s.into_owned())),
            Text::Latin1 { s, offs } => Text::Latin1 { s, offs },
        }
    }

    fn latin1(&self) -> bool {
        matches!(self, Text::Latin1 { .. })
    }

    fn as_str(&self) -> &str {
        match self {
            Text::Utf8(s) => s,
            Text::Latin1 { s, .. } => s,
        }
    }

    fn to_text(&self, orig: usize) -> usize {
        match self {
            Text::Utf8(_) => orig,
            Text::Latin1 { offs, .. } => offs.get(orig).copied().unwrap_or(usize::MAX),
        }
    }

    fn to_orig(&self, t: usize) -> usize {
        match self {
            Text::Utf8(_) => t,
            Text::Latin1 { offs, .. } => offs.binary_search(&t).unwrap_or_else(|i| i),
        }
    }

    /// The original offset just past the character at `orig`.
    fn next_char(&self, orig: usize) -> usize {
        match self {
            Text::Utf8(s) => match s.get(orig..).and_then(|r| r.chars().next()) {
                Some(c) => orig + c.len_utf8(),
                None => orig + 1,
            },
            Text::Latin1 { .. } => orig + 1,
        }
    }
}

/// Group spans in original byte offsets; index 0 is the whole match.
type Spans = Vec<Option<(usize, usize)>>;

/// Runs the regex from original offset `pos`; `want_groups` false only fills
/// group 0.
fn exec(
    c: &Compiled,
    text: &Text<'_>,
    pos: usize,
    anchored: bool,
    want_groups: bool,
) -> Result<Option<Spans>, String> {
    let t = text.to_text(pos);
    let hay = text.as_str();
    if t > hay.len() {
        return Ok(None);
    }
    let err = |e: fancy_regex::Error| format!("regex execution failed: {e}");
    let spans: Spans = if want_groups {
        let Some(caps) = c.re.captures_from_pos(hay, t).map_err(err)? else {
            return Ok(None);
        };
        (0..=c.ncaps)
            .map(|i| {
                caps.get(i)
                    .map(|m| (text.to_orig(m.start()), text.to_orig(m.end())))
            })
            .collect()
    } else {
        let Some(m) = c.re.find_from_pos(hay, t).map_err(err)? else {
            return Ok(None);
        };
        vec![Some((text.to_orig(m.start()), text.to_orig(m.end())))]
    };
    if anchored && spans.first().copied().flatten().map(|s| s.0) != Some(pos) {
        return Ok(None);
    }
    Ok(Some(spans))
}

/// Fills (or creates) the OpenResty captures table.
fn captures_table(
    lua: &Lua,
    c: &Compiled,
    subject: &[u8],
    spans: &Spans,
    res: Option<Table>,
    dupnames: bool,
) -> mlua::Result<Table> {
    let t = match res {
        Some(t) => t,
        None => lua.create_table_with_capacity(c.ncaps, c.names.len() + 1)?,
    };
    let value = |i: usize| -> mlua::Result<Value> {
        match spans.get(i).copied().flatten() {
            Some((a, b)) => Ok(Value::String(lua.create_string(&subject[a..b])?)),
            None => Ok(Value::Boolean(false)),
        }
    };
    for i in 0..=c.ncaps {
        t.raw_set(i, value(i)?)?;
    }
    if !dupnames {
        for (i, name) in &c.names {
            t.raw_set(name.as_str(), value(*i)?)?;
        }
        return Ok(t);
    }
    // `D`: each name maps to the list of its groups that matched.
    for (i, name) in &c.names {
        let v = value(*i)?;
        if v == Value::Boolean(false) {
            continue;
        }
        match t.raw_get::<Value>(name.as_str())? {
            Value::Table(list) => list.raw_push(v)?,
            _ => t.raw_set(name.as_str(), lua.create_sequence_from([v])?)?,
        }
    }
    Ok(t)
}

/// Start offset (0-based) from `ctx.pos`.
fn ctx_pos(ctx: &Option<Table>) -> mlua::Result<usize> {
    let Some(ctx) = ctx else { return Ok(0) };
    let v: Value = ctx.raw_get("pos")?;
    Ok(match super::to_number(&v) {
        Some(p) if p > 1.0 => (p as usize) - 1,
        _ => 0,
    })
}

fn subject_bytes(lua: &Lua, v: &Value, fname: &str) -> mlua::Result<Vec<u8>> {
    super::arg_bytes(lua, v, fname, 1, false)
}

fn opts_bytes(v: &Option<mlua::LuaString>) -> Option<Vec<u8>> {
    v.as_ref().map(|s| s.as_bytes().to_vec())
}

fn nil_err(lua: &Lua, n_nils: usize, err: String) -> mlua::Result<Variadic<Value>> {
    let mut out: Variadic<Value> = (0..n_nils).map(|_| Value::Nil).collect();
    out.push(Value::String(lua.create_string(err)?));
    Ok(out)
}

fn re_match(
    lua: &Lua,
    cache: &Cache,
    (subj, regex, opts, ctx, res): (
        Value,
        mlua::LuaString,
        Option<mlua::LuaString>,
        Option<Table>,
        Option<Table>,
    ),
) -> mlua::Result<Variadic<Value>> {
    let subject = subject_bytes(lua, &subj, "match")?;
    let opts = Opts::parse(opts_bytes(&opts).as_deref())?;
    let pattern = regex.as_bytes().to_vec();
    let pos = ctx_pos(&ctx)?;
    let text = Text::new(&subject, &pattern, pos);
    let c = match compile(cache, &pattern, opts, text.latin1()) {
        Ok(c) => c,
        Err(e) => return nil_err(lua, 1, e),
    };
    let spans = match exec(&c, &text, pos, opts.anchored, true) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Variadic::from_iter([Value::Nil])),
        Err(e) => return nil_err(lua, 1, e),
    };
    if let (Some(ctx), Some(Some((_, end)))) = (&ctx, spans.first()) {
        ctx.raw_set("pos", (*end + 1) as f64)?;
    }
    let t = captures_table(lua, &c, &subject, &spans, res, opts.dupnames)?;
    Ok(Variadic::from_iter([Value::Table(t)]))
}

fn re_find(
    lua: &Lua,
    cache: &Cache,
    (subj, regex, opts, ctx, nth): (
        Value,
        mlua::LuaString,
        Option<mlua::LuaString>,
        Option<Table>,
        Option<f64>,
    ),
) -> mlua::Result<Variadic<Value>> {
    let subject = subject_bytes(lua, &subj, "find")?;
    let opts = Opts::parse(opts_bytes(&opts).as_deref())?;
    let pattern = regex.as_bytes().to_vec();
    let pos = ctx_pos(&ctx)?;
    let text = Text::new(&subject, &pattern, pos);
    let c = match compile(cache, &pattern, opts, text.latin1()) {
        Ok(c) => c,
        Err(e) => return nil_err(lua, 2, e),
    };
    let nth = match nth {
        Some(n) if n > 0.0 => n as usize,
        _ => 0,
    };
    if nth > c.ncaps {
        return nil_err(lua, 2, "nth out of bound".to_string());
    }
    let spans = match exec(&c, &text, pos, opts.anchored, nth > 0) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Variadic::from_iter([Value::Nil])),
        Err(e) => return nil_err(lua, 2, e),
    };
    if let (Some(ctx), Some(Some((_, end)))) = (&ctx, spans.first()) {
        ctx.raw_set("pos", (*end + 1) as f64)?;
    }
    match spans.get(nth).copied().flatten() {
        Some((a, b)) => Ok(Variadic::from_iter([
            Value::Number((a + 1) as f64),
            Value::Number(b as f64),
        ])),
        None => Ok(Variadic::from_iter([Value::Nil, Value::Nil])),
    }
}

fn re_gmatch(
    lua: &Lua,
    cache: &Cache,
    (subj, regex, opts): (Value, mlua::LuaString, Option<mlua::LuaString>),
) -> mlua::Result<Variadic<Value>> {
    let subject = subject_bytes(lua, &subj, "gmatch")?;
    let opts = Opts::parse(opts_bytes(&opts).as_deref())?;
    let pattern = regex.as_bytes().to_vec();
    let text = Text::new(&subject, &pattern, 0).into_owned();
    let c = match compile(cache, &pattern, opts, text.latin1()) {
        Ok(c) => c,
        Err(e) => return nil_err(lua, 1, e),
    };
    // `None` once the iterator is exhausted.
    let state: Mutex<Option<usize>> = Mutex::new(Some(0));
    let iter = lua.create_function(move |lua, ()| -> mlua::Result<Variadic<Value>> {
        let mut st = state
            .lock()
            .map_err(|_| mlua::Error::runtime("gmatch iterator state poisoned"))?;
        let Some(pos) = *st else {
            return Ok(Variadic::from_iter([Value::Nil]));
        };
        let spans = match exec(&c, &text, pos, opts.anchored, true) {
            Ok(Some(s)) => s,
            Ok(None) => {
                *st = None;
                return Ok(Variadic::from_iter([Value::Nil]));
            }
            Err(e) => {
                *st = None;
                return nil_err(lua, 1, e);
            }
        };
        let (start, end) = spans.first().copied().flatten().unwrap_or((pos, pos));
        let mut next = end;
        *st = Some(next);
        if end == start {
            next = text.next_char(end);
            *st = if next > subject.len() {
                None
            } else {
                Some(next)
            };
        }
        drop(st);
        let t = captures_table(lua, &c, &subject, &spans, None, opts.dupnames)?;
        Ok(Variadic::from_iter([Value::Table(t)]))
    })?;
    Ok(Variadic::from_iter([Value::Function(iter)]))
}

enum Piece {
    Lit(Vec<u8>),
    Group(usize),
    Named(usize),
}

/// Parses a replacement template: `$0`, `$12`, `${1}`, `${name}`, `$$`.
fn parse_template(tpl: &[u8], c: &Compiled) -> Option<Vec<Piece>> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < tpl.len() {
        let b = tpl[i];
        if b != b'$' {
            lit.push(b);
            i += 1;
            continue;
        }
        i += 1;
        let next = *tpl.get(i)?;
        if next == b'$' {
            lit.push(b'$');
            i += 1;
            continue;
        }
        let piece = if next.is_ascii_digit() {
            let start = i;
            while i < tpl.len() && tpl[i].is_ascii_digit() {
                i += 1;
            }
            Piece::Group(std::str::from_utf8(&tpl[start..i]).ok()?.parse().ok()?)
        } else if next == b'{' {
            let close = tpl[i..].iter().position(|&b| b == b'}')? + i;
            let name = &tpl[i + 1..close];
            i = close + 1;
            if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                Piece::Group(std::str::from_utf8(name).ok()?.parse().ok()?)
            } else {
                let idx = c
                    .names
                    .iter()
                    .find(|(_, n)| n.as_bytes() == name)
                    .map(|(i, _)| *i)?;
                Piece::Named(idx)
            }
        } else {
            return None;
        };
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        out.push(piece);
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Some(out)
}

enum Replacement {
    Template(Vec<Piece>),
    Func(Function),
}

fn re_sub(
    lua: &Lua,
    cache: &Cache,
    (subj, regex, replace, opts): (Value, mlua::LuaString, Value, Option<mlua::LuaString>),
    global: bool,
) -> mlua::Result<Variadic<Value>> {
    let fname = if global { "gsub" } else { "sub" };
    let subject = subject_bytes(lua, &subj, fname)?;
    let opts = Opts::parse(opts_bytes(&opts).as_deref())?;
    let pattern = regex.as_bytes().to_vec();
    let text = Text::new(&subject, &pattern, 0);
    let c = match compile(cache, &pattern, opts, text.latin1()) {
        Ok(c) => c,
        Err(e) => return nil_err(lua, 2, e),
    };
    let replacement = match replace {
        Value::Function(f) => Replacement::Func(f),
        other => {
            let tpl = match &other {
                Value::String(s) => s.as_bytes().to_vec(),
                v => v.to_string()?.into_bytes(),
            };
            match parse_template(&tpl, &c) {
                Some(p) => Replacement::Template(p),
                None => {
                    return nil_err(lua, 2, "failed to compile the replacement template".into())
                }
            }
        }
    };
    let want_groups = match &replacement {
        Replacement::Func(_) => true,
        Replacement::Template(p) => p.iter().any(|p| !matches!(p, Piece::Lit(_))),
    };
    let mut out: Vec<u8> = Vec::new();
    let mut count = 0usize;
    let mut pos = 0usize;
    let mut copied = 0usize;
    loop {
        let spans = match exec(&c, &text, pos, opts.anchored, want_groups) {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => return nil_err(lua, 2, e),
        };
        let Some((start, end)) = spans.first().copied().flatten() else {
            break;
        };
        count += 1;
        out.extend_from_slice(&subject[copied..start]);
        match &replacement {
            Replacement::Template(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Lit(l) => out.extend_from_slice(l),
                        Piece::Group(i) | Piece::Named(i) => {
                            if let Some(Some((a, b))) = spans.get(*i) {
                                out.extend_from_slice(&subject[*a..*b]);
                            }
                        }
                    }
                }
            }
            Replacement::Func(f) => {
                let caps = captures_table(lua, &c, &subject, &spans, None, opts.dupnames)?;
                let v: Value = f.call(caps)?;
                match v {
                    Value::String(s) => out.extend_from_slice(&s.as_bytes()),
                    other => out.extend_from_slice(other.to_string()?.as_bytes()),
                }
            }
        }
        copied = end;
        pos = end;
        if end == start {
            pos = text.next_char(end);
            if pos > subject.len() {
                break;
            }
        }
        if out.len() > super::MAX_RESULT_LEN {
            return Err(mlua::Error::runtime(format!(
                "ngx.re.{fname}: result longer than {} bytes",
                super::MAX_RESULT_LEN
            )));
        }
        if !global {
            break;
        }
    }
    if count == 0 {
        return Ok(Variadic::from_iter([
            Value::String(lua.create_string(&subject)?),
            Value::Number(0.0),
        ]));
    }
    out.extend_from_slice(&subject[copied.min(subject.len())..]);
    Ok(Variadic::from_iter([
        Value::String(lua.create_string(&out)?),
        Value::Number(count as f64),
    ]))
}

pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let cache: Cache = Arc::new(Mutex::new(LruCache::new(
        NonZeroUsize::new(CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
    )));
    let re = lua.create_table_with_capacity(0, 5)?;
    let c = cache.clone();
    re.raw_set(
        "match",
        lua.create_function(move |lua, a| re_match(lua, &c, a))?,
    )?;
    let c = cache.clone();
    re.raw_set(
        "find",
        lua.create_function(move |lua, a| re_find(lua, &c, a))?,
    )?;
    let c = cache.clone();
    re.raw_set(
        "gmatch",
        lua.create_function(move |lua, a| re_gmatch(lua, &c, a))?,
    )?;
    let c = cache.clone();
    re.raw_set(
        "sub",
        lua.create_function(move |lua, a| re_sub(lua, &c, a, false))?,
    )?;
    let c = cache;
    re.raw_set(
        "gsub",
        lua.create_function(move |lua, a| re_sub(lua, &c, a, true))?,
    )?;
    re.set_readonly(true);
    ngx.raw_set("re", re)?;
    Ok(())
}
