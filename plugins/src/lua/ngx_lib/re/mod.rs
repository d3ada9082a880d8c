//! `ngx.re.match`, `find`, `gmatch`, `sub`, `gsub` on fancy-regex (PCRE-like:
//! backreferences, lookaround, atomic groups).
//!
//! Subjects and patterns that are valid UTF-8 are matched as UTF-8 text (what
//! OpenResty does with the `u` flag; identical to its default for ASCII). A
//! subject or pattern that is not valid UTF-8 is matched byte by byte (each
//! byte mapped to one character), as PCRE does without `u`. All offsets
//! reported to Lua are byte offsets into the original subject.

mod cache;
mod captures;
mod exec;
mod split;
mod translate;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use mlua::{Lua, Table, Value, Variadic};

use crate::lua::budget::WorkGuard;
use cache::{compile, Cache, CACHE_SIZE};
use captures::{captures_table, parse_template, Piece, Replacement};
use exec::{exec, Text};
use translate::Opts;

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
        WorkGuard::new(lua).check(lua, 0, "ngx.re.gmatch")?;
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
    // A gsub can run long without Lua running (many matches, or a replacement that
    // amplifies the subject): the slice budget and the memory cap are checked per match.
    let guard = WorkGuard::new(lua);
    let what = format!("ngx.re.{fname}");
    loop {
        guard.check(lua, out.len(), &what)?;
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
        guard.check(lua, out.len(), &what)?;
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
    let c = cache.clone();
    re.raw_set(
        "gsub",
        lua.create_function(move |lua, a| re_sub(lua, &c, a, true))?,
    )?;
    // lua-resty-core's `ngx.re` module (`require "ngx.re"`): `split` and `opt`; also
    // reachable as `ngx.re.split`/`ngx.re.opt`.
    let module = lua.create_table()?;
    let c = cache;
    let split = lua.create_function(move |lua, a| split::re_split(lua, &c, a))?;
    let opt = lua.create_function(split::re_opt)?;
    for t in [&re, &module] {
        t.raw_set("split", split.clone())?;
        t.raw_set("opt", opt.clone())?;
    }
    module.set_readonly(true);
    lua.set_named_registry_value(MODULE_KEY, &module)?;
    re.set_readonly(true);
    ngx.raw_set("re", re)?;
    Ok(())
}

/// Registry key of the `ngx.re` module table (see [`module`]).
const MODULE_KEY: &str = "portico.ngx_lib.module.ngx.re";

/// The table `require "ngx.re"` returns.
pub(super) fn module(lua: &Lua) -> mlua::Result<Value> {
    lua.named_registry_value::<Value>(MODULE_KEY)
}
