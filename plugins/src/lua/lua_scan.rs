//! A light static scan of Lua source at apply time: the modules it `require`s by string
//! literal, and the LuaJIT-only constructs Luau cannot run (`goto`/labels, the FFI's C
//! bindings), so they are refused with the line instead of failing at run time.
//!
//! It is a tokenizer, not a parser: comments and strings are skipped properly, then
//! short token patterns are matched (`require "x"`, `require("x")`, `require, "x"` as in
//! `pcall(require, "x")`, `goto name`, `::name::`). A require through a variable is not
//! seen; the docs say so.

/// What the scan found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Module names required by string literal, with their lines, in source order.
    pub requires: Vec<(String, u32)>,
    /// The first LuaJIT-only construct: (line, what).
    pub incompatible: Option<(u32, &'static str)>,
    /// The code names an API that may yield (a cosocket, `ngx.sleep`, a light thread, a
    /// semaphore, `read_body`, a coroutine) or requires a module that may: its functions
    /// run as coroutines. Code that names none runs as a plain call, which costs less.
    pub may_yield: bool,
    /// The code names `...` somewhere (conservatively: in any function). A vararg
    /// function without it cannot reach the arguments past its parameters, so it is
    /// not handed `ngx.ctx` (`vm.rs`, `LoadedCode::takes_ctx`).
    pub names_varargs: bool,
    /// Every function defined with two parameters or more never names its second
    /// one (`function(conf, ctx)` whose body never says `ctx`), and every parameter
    /// list was a plain one. Conservative: the name used anywhere else, a method
    /// (`function m:f`) or a typed or generic parameter list makes this false. Such
    /// a function is not handed `ngx.ctx` (`vm.rs`, `LoadedCode::takes_ctx`).
    pub second_params_unused: bool,
}

/// Names that reach a yielding API. Cosocket and semaphore methods are listed too, for
/// objects handed over in `ngx.ctx` by code that created them.
const YIELDING_NAMES: &[&str] = &[
    "sleep",
    "socket",
    "thread",
    "semaphore",
    "read_body",
    "coroutine",
    "connect",
    "sslhandshake",
    "send",
    "receive",
    "receiveany",
    "receiveuntil",
    "setkeepalive",
    "wait",
    "request_uri",
    "loadstring",
    "load",
];

/// Built-in modules whose functions never yield: requiring them keeps code plain.
const PLAIN_MODULES: &[&str] = &[
    "ngx",
    "cjson",
    "cjson.safe",
    "ngx.re",
    "ngx.base64",
    "resty.string",
    "resty.md5",
    "resty.sha1",
    "resty.sha224",
    "resty.sha256",
    "resty.sha384",
    "resty.sha512",
    "resty.random",
    "table.new",
    "table.clear",
    "table.nkeys",
    "bit",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Punct(&'static str),
    Other,
}

/// Scans `source`; never fails (text it cannot tokenize is skipped).
pub fn scan(source: &str) -> ScanReport {
    let toks = tokens(source.as_bytes());
    let mut report = ScanReport {
        second_params_unused: second_params_unused(&toks),
        ..ScanReport::default()
    };
    for (i, (tok, line)) in toks.iter().enumerate() {
        let next = |k: usize| toks.get(i + k).map(|(t, l)| (t, *l));
        match tok {
            Tok::Name(n) if YIELDING_NAMES.contains(&n.as_str()) => report.may_yield = true,
            Tok::Punct("...") => report.names_varargs = true,
            Tok::Name(n) if n == "require" => {
                let name = match (next(1), next(2), next(3)) {
                    (Some((Tok::Str(s), _)), _, _) => Some(s.clone()),
                    (
                        Some((Tok::Punct("("), _)),
                        Some((Tok::Str(s), _)),
                        Some((Tok::Punct(")"), _)),
                    ) => Some(s.clone()),
                    (Some((Tok::Punct(","), _)), Some((Tok::Str(s), _)), _) => Some(s.clone()),
                    _ => None,
                };
                match name {
                    Some(name) => {
                        report.may_yield |= !PLAIN_MODULES.contains(&name.as_str());
                        report.requires.push((name, *line));
                    }
                    // `require` through a variable: anything may come back.
                    None => report.may_yield = true,
                }
            }
            // The FFI's C bindings: `ffi.cdef`, `ffi.load`, `ffi.C`. Code that only
            // requires `ffi` and keeps references to its functions for an optional path
            // (lua-resty-http's `ffi.gc`/`ffi.cast` for mTLS) loads, and that path
            // raises a clear error if it runs; code that binds C cannot work at all and
            // is refused here with its line.
            Tok::Name(n) if n == "ffi" => {
                if let (Some((Tok::Punct("."), _)), Some((Tok::Name(f), l))) = (next(1), next(2)) {
                    if matches!(f.as_str(), "cdef" | "load" | "C") && report.incompatible.is_none()
                    {
                        report.incompatible = Some((
                            l,
                            "the LuaJIT FFI's C bindings (`ffi.cdef`, `ffi.load`, `ffi.C`) are not available in Luau",
                        ));
                    }
                }
            }
            Tok::Name(n) if n == "goto" => {
                // `goto` is no keyword in Luau; `goto name` on one line is LuaJIT's goto.
                if let Some((Tok::Name(_), l)) = next(1) {
                    if l == *line && report.incompatible.is_none() {
                        report.incompatible = Some((*line, "`goto` is not available in Luau (use `continue`, a flag or a function)"));
                    }
                }
            }
            Tok::Punct("::") => {
                // `::name::` is a goto label; Luau's `::` type assertion never has this shape.
                if let (Some((Tok::Name(_), _)), Some((Tok::Punct("::"), _))) = (next(1), next(2)) {
                    if report.incompatible.is_none() {
                        report.incompatible = Some((*line, "goto labels (`::name::`) are not available in Luau (use `continue`, a flag or a function)"));
                    }
                }
            }
            _ => {}
        }
    }
    report
}

/// See `ScanReport::second_params_unused`.
fn second_params_unused(toks: &[(Tok, u32)]) -> bool {
    let tok = |j: usize| toks.get(j).map(|(t, _)| t);
    let mut declared: Vec<&str> = Vec::new();
    for (i, (t, _)) in toks.iter().enumerate() {
        if !matches!(t, Tok::Name(n) if n == "function") {
            continue;
        }
        // The name path (`_M.access`, `f`, none), then a plain parameter list:
        // names and `...` separated by commas.
        let mut j = i + 1;
        while matches!(tok(j), Some(Tok::Name(_) | Tok::Punct("."))) {
            j += 1;
        }
        if tok(j) != Some(&Tok::Punct("(")) {
            return false;
        }
        let mut params = Vec::new();
        j += 1;
        if tok(j) != Some(&Tok::Punct(")")) {
            loop {
                match tok(j) {
                    Some(Tok::Name(n)) => params.push(n.as_str()),
                    Some(Tok::Punct("...")) => {}
                    _ => return false,
                }
                match tok(j + 1) {
                    Some(Tok::Punct(",")) => j += 2,
                    Some(Tok::Punct(")")) => break,
                    _ => return false,
                }
            }
        }
        if let Some(second) = params.get(1) {
            declared.push(second);
        }
    }
    declared.iter().all(|name| {
        let named = |t: &Tok| matches!(t, Tok::Name(n) if n == name);
        let uses = toks.iter().filter(|(t, _)| named(t)).count();
        uses == declared.iter().filter(|d| *d == name).count()
    })
}

/// `Err` names the label and line of the first LuaJIT-only construct of `source`.
pub fn check_luau_compatible(label: &str, source: &str) -> Result<ScanReport, String> {
    let report = scan(source);
    match report.incompatible {
        Some((line, what)) => Err(format!(
            "{label}: line {line}: {what}; Portico runs Lua code on Luau, see docs/lua-api.md"
        )),
        None => Ok(report),
    }
}

/// Tokens with their lines.
fn tokens(s: &[u8]) -> Vec<(Tok, u32)> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    while i < s.len() {
        let c = s[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'-' if s.get(i + 1) == Some(&b'-') => {
                i += 2;
                if let Some(level) = long_bracket(s, i) {
                    let (end, lines) = skip_long(s, i + level + 2, level);
                    line += lines;
                    i = end;
                } else {
                    while i < s.len() && s[i] != b'\n' {
                        i += 1;
                    }
                }
            }
            b'[' if long_bracket(s, i).is_some() => {
                let level = long_bracket(s, i).unwrap_or(0);
                let start = i + level + 2;
                let (end, lines) = skip_long(s, start, level);
                let body_end = end.saturating_sub(level + 2).max(start);
                let mut body = &s[start..body_end.min(s.len())];
                if body.first() == Some(&b'\n') {
                    body = &body[1..];
                }
                out.push((Tok::Str(String::from_utf8_lossy(body).into_owned()), line));
                line += lines;
                i = end;
            }
            b'"' | b'\'' | b'`' => {
                let start_line = line;
                let mut text = Vec::new();
                i += 1;
                while i < s.len() && s[i] != c {
                    if s[i] == b'\\' && i + 1 < s.len() {
                        if s[i + 1] == b'\n' {
                            line += 1;
                        }
                        text.push(s[i + 1]);
                        i += 2;
                        continue;
                    }
                    if s[i] == b'\n' {
                        line += 1;
                    }
                    text.push(s[i]);
                    i += 1;
                }
                i += 1;
                out.push((
                    Tok::Str(String::from_utf8_lossy(&text).into_owned()),
                    start_line,
                ));
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let start = i;
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
                    i += 1;
                }
                let name = String::from_utf8_lossy(&s[start..i]).into_owned();
                out.push((Tok::Name(name), line));
            }
            b':' if s.get(i + 1) == Some(&b':') => {
                out.push((Tok::Punct("::"), line));
                i += 2;
            }
            b'(' => {
                out.push((Tok::Punct("("), line));
                i += 1;
            }
            b')' => {
                out.push((Tok::Punct(")"), line));
                i += 1;
            }
            b',' => {
                out.push((Tok::Punct(","), line));
                i += 1;
            }
            b'.' if s.get(i + 1) == Some(&b'.') && s.get(i + 2) == Some(&b'.') => {
                out.push((Tok::Punct("..."), line));
                i += 3;
            }
            // A field access (`ffi.cdef`); `..` is another token.
            b'.' if s.get(i + 1) != Some(&b'.') && (i == 0 || s[i - 1] != b'.') => {
                out.push((Tok::Punct("."), line));
                i += 1;
            }
            _ => {
                out.push((Tok::Other, line));
                i += 1;
            }
        }
    }
    out
}

/// At `[` of `[[` or `[==[`: the number of `=`.
fn long_bracket(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = i + 1;
    while s.get(j) == Some(&b'=') {
        j += 1;
    }
    (s.get(j) == Some(&b'[')).then_some(j - i - 1)
}

/// From the content start of a long bracket of `level`: (index after the closing
/// bracket, newlines inside).
fn skip_long(s: &[u8], mut i: usize, level: usize) -> (usize, u32) {
    let mut lines = 0;
    while i < s.len() {
        if s[i] == b']' {
            let mut j = i + 1;
            while s.get(j) == Some(&b'=') {
                j += 1;
            }
            if j - i - 1 == level && s.get(j) == Some(&b']') {
                return (j + 1, lines);
            }
        }
        if s[i] == b'\n' {
            lines += 1;
        }
        i += 1;
    }
    (s.len(), lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_that_names_a_yielding_api_or_an_unknown_module_may_yield() {
        let plain = [
            "return function(conf, ctx) if ngx.var.http_x == '1' then return ngx.exit(403) end end",
            "local cjson = require('cjson.safe') return function() return cjson.encode({}) end",
            "local s = 'ngx.sleep(1)' -- ngx.sleep in a comment\nreturn function() return s end",
        ];
        for src in plain {
            assert!(!scan(src).may_yield, "{src}");
        }
        let yielding = [
            "return function() ngx.sleep(0.1) end",
            "return function() local s = ngx.socket.tcp() end",
            "return function() ngx.req.read_body() end",
            "local redis = require 'resty.redis' return function() end",
            "local name = 'x' local m = require(name) return function() end",
            "return function(conf, ctx) local co = coroutine.wrap(function() end) end",
            "return function(conf, ctx) ctx.sock:receive('*l') end",
        ];
        for src in yielding {
            assert!(scan(src).may_yield, "{src}");
        }
    }

    #[test]
    fn varargs_are_seen_outside_strings_and_comments() {
        for src in [
            "local conf, ctx = ...",
            "return function(...) return select(2, ...) end",
            "local t = {...}",
            "return 'a'...",
        ] {
            assert!(scan(src).names_varargs, "{src}");
        }
        for src in [
            "ngx.say('a' .. 'b')",
            "local s = '...' -- ... in a comment\nlocal l = [[...]]",
            "--[[ ... ]] return function(conf) end",
            "local x = a..b",
        ] {
            assert!(!scan(src).names_varargs, "{src}");
        }
    }

    #[test]
    fn an_unnamed_second_parameter_is_seen_conservatively() {
        for src in [
            "return function(conf, ctx) ngx.say(ngx.var.uri) end",
            "return function(conf) end",
            "local function f(a, b) return a end\nreturn function(conf, ctx) return f(1) end",
            "local s = 'ctx' -- ctx\nreturn function(conf, ctx) return s end",
            "return function() end",
        ] {
            assert!(scan(src).second_params_unused, "{src}");
        }
        for src in [
            "return function(conf, ctx) ctx.n = 1 end",
            "return function(conf, ctx) ngx.ctx.n = 1 end",
            "local function f(ctx) return ctx end\nreturn function(conf, ctx) end",
            "local _M = {}\nfunction _M:access(conf, ctx) end\nreturn _M",
            "return function(conf: any, ctx: any) end",
            "table.sort(t, function(a, b) return a < b end)\nreturn function(conf, ctx) end",
        ] {
            assert!(!scan(src).second_params_unused, "{src}");
        }
    }

    #[test]
    fn requires_by_literal_in_every_shape() {
        let src = "local a = require \"resty.a\"\nlocal b = require('b.c')\nlocal ok, n = pcall(require, \"table.new\")\n-- require 'commented'\nlocal s = [[ require 'in.string' ]]\nlocal d = require [[long.name]]\n";
        let r = scan(src);
        let names: Vec<_> = r.requires.iter().map(|(n, l)| (n.as_str(), *l)).collect();
        assert_eq!(
            names,
            vec![
                ("resty.a", 1),
                ("b.c", 2),
                ("table.new", 3),
                ("long.name", 6)
            ]
        );
        assert_eq!(r.incompatible, None);
    }

    #[test]
    fn goto_labels_and_ffi_are_reported_with_their_line() {
        let r = scan(
            "local x = 1\nfor i = 1, 3 do\n  if i == 2 then goto continue end\n  ::continue::\nend",
        );
        assert_eq!(r.incompatible.map(|(l, _)| l), Some(3));
        let r = scan("local x = 1\n\n::top::\n");
        assert_eq!(r.incompatible.map(|(l, _)| l), Some(3));
        let r =
            scan("--[==[ multi\nline ]==]\nlocal ffi = require(\"ffi\")\nffi.cdef[[int f(void);]]");
        assert_eq!(r.incompatible.map(|(l, _)| l), Some(4));
        let r = scan("local ffi = require \"ffi\"\nlocal C = ffi.C\n");
        assert_eq!(r.incompatible.map(|(l, _)| l), Some(2));
        // Requiring the FFI and keeping references to its helpers is allowed.
        let r = scan("local ffi = require \"ffi\"\nlocal ffi_gc, ffi_cast = ffi.gc, ffi.cast\n");
        assert_eq!(r.incompatible, None);
        assert_eq!(r.requires, vec![("ffi".to_string(), 1)]);
        let e = check_luau_compatible("lua_modules.m", "\n goto done").unwrap_err();
        assert!(
            e.contains("lua_modules.m: line 2") && e.contains("goto"),
            "{e}"
        );
    }

    #[test]
    fn luau_constructs_are_not_mistaken_for_luajit_ones() {
        // `goto` as a plain name, type assertions, `continue`: all fine.
        let src = "local goto = 1\nlocal y = (goto :: number)\nfor i = 1, 2 do if i then continue end end\nlocal s = 'goto x'";
        assert_eq!(scan(src).incompatible, None);
    }
}
