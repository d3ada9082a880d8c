//! Regex option flags and the PCRE to fancy-regex syntax translation.

#[derive(Clone, Copy, Default)]
pub(super) struct Opts {
    pub(super) caseless: bool,
    pub(super) multiline: bool,
    pub(super) dotall: bool,
    pub(super) extended: bool,
    pub(super) anchored: bool,
    pub(super) dupnames: bool,
}

impl Opts {
    pub(super) fn parse(opts: Option<&[u8]>) -> mlua::Result<Opts> {
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

    pub(super) fn key_byte(&self) -> u8 {
        (self.caseless as u8)
            | (self.multiline as u8) << 1
            | (self.dotall as u8) << 2
            | (self.extended as u8) << 3
    }
}

/// Rewrites the few PCRE escapes fancy-regex lacks: `\Z` (end or before a
/// final newline), `\h`/`\H` (horizontal space) and `\Q...\E` quoting.
/// A literal `[` inside a character class is escaped (Rust's syntax would
/// read it as a nested class). Everything else passes through unchanged.
///
/// Returns the named groups in pattern order, with their group numbers
/// (fancy-regex keeps only one group per name; PCRE's `D` needs them all).
pub(super) fn translate_pcre(pat: &str, out: &mut String) -> Vec<(usize, String)> {
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
