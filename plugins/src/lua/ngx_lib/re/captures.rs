//! OpenResty capture tables and `sub`/`gsub` replacement templates.

use mlua::{Function, Lua, Table, Value};

use super::cache::Compiled;
use super::exec::Spans;

/// Fills (or creates) the OpenResty captures table.
pub(super) fn captures_table(
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

pub(super) enum Piece {
    Lit(Vec<u8>),
    Group(usize),
    Named(usize),
}

/// Parses a replacement template: `$0`, `$12`, `${1}`, `${name}`, `$$`.
pub(super) fn parse_template(tpl: &[u8], c: &Compiled) -> Option<Vec<Piece>> {
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

pub(super) enum Replacement {
    Template(Vec<Piece>),
    Func(Function),
}
