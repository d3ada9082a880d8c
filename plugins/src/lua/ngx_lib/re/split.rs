//! `ngx.re.split` (lua-resty-core's `ngx.re` module): `split(subject, regex, opts?, ctx?,
//! max?, res?)`, to its documented behaviour: the first capture of the separator is put
//! between the pieces, `""` splits into characters, `ctx.pos` starts later, `max > 0`
//! bounds the number of pieces (the last holds the rest), a trailing empty piece is not
//! added, and a given `res` table is filled and ended with a `nil`.

use mlua::{Lua, Table, Value, Variadic};

use super::cache::{compile, Cache};
use super::exec::{exec, Text};
use super::translate::Opts;
use super::{ctx_pos, nil_err, opts_bytes, subject_bytes};
use crate::lua::budget::WorkGuard;

type SplitArgs = (
    Value,
    mlua::LuaString,
    Option<mlua::LuaString>,
    Option<Table>,
    Option<f64>,
    Option<Table>,
);

pub(super) fn re_split(
    lua: &Lua,
    cache: &Cache,
    (subj, regex, opts, ctx, max, res): SplitArgs,
) -> mlua::Result<Variadic<Value>> {
    let subject = subject_bytes(lua, &subj, "split")?;
    let opts = Opts::parse(opts_bytes(&opts).as_deref())?;
    let pattern = regex.as_bytes().to_vec();
    let start = ctx_pos(&ctx)?;
    let max = match max {
        Some(m) if m > 0.0 => m as usize,
        _ => usize::MAX,
    };
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut count = 0usize;
    let text = Text::new(&subject, &pattern, start);
    let guard = WorkGuard::new(lua);
    if start < subject.len() && pattern.is_empty() {
        let mut at = start;
        while at < subject.len() {
            if count + 1 == max {
                pieces.push(&subject[at..]);
                break;
            }
            let next = text.next_char(at).min(subject.len());
            pieces.push(&subject[at..next]);
            count += 1;
            at = next;
        }
    } else if start < subject.len() {
        let c = match compile(cache, &pattern, opts, text.latin1()) {
            Ok(c) => c,
            Err(e) => return nil_err(lua, 1, e),
        };
        let mut piece_start = start;
        let mut pos = start;
        while count + 1 < max {
            guard.check(lua, 0, "ngx.re.split")?;
            let spans = match exec(&c, &text, pos, opts.anchored, c.ncaps > 0) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => return nil_err(lua, 1, e),
            };
            let Some((a, b)) = spans.first().copied().flatten() else {
                break;
            };
            if a == b {
                // An empty separator splits between characters, never before the piece.
                if a >= subject.len() {
                    break;
                }
                if a == piece_start {
                    pos = text.next_char(a);
                    continue;
                }
            }
            pieces.push(&subject[piece_start..a]);
            count += 1;
            if let Some(Some((x, y))) = spans.get(1) {
                pieces.push(&subject[*x..*y]);
            }
            piece_start = b;
            pos = b;
        }
        if piece_start < subject.len() {
            pieces.push(&subject[piece_start..]);
        }
    }
    let t = match res {
        Some(t) => t,
        None => lua.create_table_with_capacity(pieces.len(), 0)?,
    };
    for (i, p) in pieces.iter().enumerate() {
        t.raw_set(i + 1, lua.create_string(p)?)?;
    }
    t.raw_set(pieces.len() + 1, Value::Nil)?;
    Ok(Variadic::from_iter([Value::Table(t)]))
}

/// `ngx.re.opt(option, value)`: fancy-regex has no PCRE JIT stack or match limit to
/// tune; accepted and ignored so libraries that set them at load time run.
pub(super) fn re_opt(_: &Lua, (name, _value): (String, Value)) -> mlua::Result<()> {
    match name.as_str() {
        "jit_stack_size" | "match_limit" => Ok(()),
        other => Err(mlua::Error::runtime(format!(
            "unrecognized option name: {other}"
        ))),
    }
}
