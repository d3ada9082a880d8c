//! `string.find` with a linear-time plain search.
//!
//! Luau's interrupt fires inside Lua pattern matching (each step of its matcher calls
//! it), so slow patterns such as `string.rep("a", 1e5):find(".-.-.-.-b")` are stopped by
//! the slice budget like any Lua code. The plain search is different: `string.find`
//! with `plain = true`, or with a pattern that has no special characters, runs a naive
//! O(subject × pattern) byte comparison that never calls the interrupt. Searching a
//! 10 MB subject for `string.rep("a", 1e4) .. "b"` held a worker for over a second.
//! Portico answers those searches with memchr's two-way search (linear time) and hands
//! everything else to Luau's own `string.find`.

use mlua::{Function, Lua, MultiValue, Table, Value};

/// Luau's `SPECIALS`: a pattern without any of these is searched as plain text.
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Replaces `string.find` in `string` (call before the library becomes read-only).
pub(super) fn install(lua: &Lua, string: &Table) -> mlua::Result<()> {
    let luau_find: Function = string.raw_get("find")?;
    let find = lua.create_function(move |_, args: MultiValue| -> mlua::Result<MultiValue> {
        match plain_find(&args) {
            Some(found) => Ok(found),
            None => luau_find.call(args),
        }
    })?;
    string.raw_set("find", find)
}

/// The result of a plain search, or `None` when Luau must handle the call (a pattern
/// search, or arguments it converts or rejects with its own messages).
fn plain_find(args: &MultiValue) -> Option<MultiValue> {
    let (Some(Value::String(s)), Some(Value::String(p))) = (args.front(), args.get(1)) else {
        return None;
    };
    let init = match args.get(2) {
        None | Some(Value::Nil) => 1i64,
        Some(Value::Integer(i)) => *i,
        Some(Value::Number(n)) if n.fract() == 0.0 && n.abs() < 1e15 => *n as i64,
        Some(_) => return None,
    };
    let plain = matches!(args.get(3), Some(v) if !matches!(v, Value::Nil | Value::Boolean(false)));
    let (s, p) = (s.as_bytes(), p.as_bytes());
    if !plain && p.iter().any(|b| SPECIALS.contains(b)) {
        return None;
    }
    let len = s.len() as i64;
    // Lua's `posrelat`: a negative init counts from the end.
    let mut init = if init < 0 { len + init + 1 } else { init };
    if init < 1 {
        init = 1;
    } else if init > len + 1 {
        return Some(MultiValue::from_iter([Value::Nil]));
    }
    let from = (init - 1) as usize;
    Some(match memchr::memmem::find(&s[from..], &p) {
        Some(at) => {
            let start = (from + at + 1) as i64;
            MultiValue::from_iter([
                Value::Integer(start as _),
                Value::Integer((start + p.len() as i64 - 1) as _),
            ])
        }
        None => MultiValue::from_iter([Value::Nil]),
    })
}
