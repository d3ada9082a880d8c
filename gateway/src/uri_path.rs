//! Request path normalisation, done once per request before routing (nginx's
//! `ngx_http_parse_complex_uri` with `merge_slashes on`).
//!
//! Without it `GET /public/../admin/secret` matched `/public/*` and reached the origin,
//! which resolved the `..` itself, so the `/admin/*` route's plugins never ran; `%2e%2e`
//! and `..%2f` did the same. The router, `vars` (`$uri`), Lua's `ngx.var.uri` and the
//! upstream must all see one path, so the gateway replaces the request's path with the
//! normalised one before anything reads it.
//!
//! The normal form:
//!
//! - percent-escapes are decoded, `%2F` and `%2E` included: a decoded `/` separates
//!   segments and a decoded `.` makes dot segments, as in nginx;
//! - `.` segments are dropped and `..` removes the segment before it; a `..` with
//!   nothing left to remove is an error (nginx answers 400 for a path above the root);
//! - empty segments (`//`) are merged;
//! - a trailing `/` is kept, and a path ending in a dot segment ends in `/`
//!   (`/a/b/..` is `/a/`);
//! - the result is re-encoded: a byte that may appear raw in a path segment (RFC 3986
//!   `pchar`: unreserved, sub-delims, `:` and `@`) is written raw, every other byte as
//!   `%XX` with upper-case hex. So `%41` becomes `A`, `%2F` becomes a `/` separator,
//!   and a space, `%`, `?`, `#`, a control byte or a non-ASCII byte stays escaped.
//!   Each path has exactly one spelling, which is also what the upstream receives, so
//!   the origin cannot resolve the path differently from the router (nginx forwards its
//!   normalised URI when `proxy_pass` has a URI part, the client's original target
//!   when it has none; it re-escapes fewer bytes, Portico whatever `pchar` excludes).
//!
//! Errors: a malformed escape (`%zz`, `%4`), a NUL byte (raw or `%00`), a path above the
//! root. A path that does not start with `/` (`*` of `OPTIONS *`) is left as it is.
//! A path already in normal form is returned borrowed, found by one scan without
//! allocating.

use std::borrow::Cow;

/// Why a path has no normal form; the request is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("malformed percent-escape")]
    BadEscape,
    #[error("escaped NUL byte")]
    Nul,
    #[error("path climbs above the root")]
    AboveRoot,
}

/// Bytes written raw in a normalised segment: RFC 3986 `pchar` without `%`.
const fn raw_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    t
}

static RAW: [bool; 256] = raw_table();

/// Normalises a request path (without its query string); see the module comment.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !path.starts_with('/') || is_normal(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    rebuild(path.as_bytes()).map(Cow::Owned)
}

/// True when `path` (starting with `/`) is already in normal form: every byte is raw or
/// a canonical escape (`%XX`, upper-case hex, of a byte that must stay escaped), and no
/// segment is empty (except after a trailing `/`), `.` or `..`.
fn is_normal(path: &[u8]) -> bool {
    let mut i = 1;
    let mut seg_start = 1;
    while i <= path.len() {
        if i == path.len() || path[i] == b'/' {
            let seg = &path[seg_start..i];
            let last = i == path.len();
            if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
                return false;
            }
            seg_start = i + 1;
            i += 1;
            continue;
        }
        let c = path[i];
        if c == b'%' {
            match canonical_escape(path, i) {
                Some(_) => i += 3,
                None => return false,
            }
            continue;
        }
        if !RAW[c as usize] {
            return false;
        }
        i += 1;
    }
    true
}

/// The byte of the escape at `path[i]` when it is spelled canonically and must stay
/// escaped.
fn canonical_escape(path: &[u8], i: usize) -> Option<u8> {
    let hi = upper_hex(*path.get(i + 1)?)?;
    let lo = upper_hex(*path.get(i + 2)?)?;
    let b = hi << 4 | lo;
    (b != 0 && b != b'/' && !RAW[b as usize]).then_some(b)
}

fn upper_hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn any_hex(c: u8) -> Option<u8> {
    upper_hex(c.to_ascii_uppercase())
}

/// Decodes, resolves dot segments, merges slashes and re-encodes.
fn rebuild(path: &[u8]) -> Result<String, PathError> {
    // Decoded segments as byte ranges of `decoded`.
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let c = path[i];
        if c == b'%' {
            let hi = path.get(i + 1).and_then(|&h| any_hex(h));
            let lo = path.get(i + 2).and_then(|&l| any_hex(l));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEscape);
            };
            let b = hi << 4 | lo;
            if b == 0 {
                return Err(PathError::Nul);
            }
            decoded.push(b);
            i += 3;
        } else if c == 0 {
            return Err(PathError::Nul);
        } else {
            decoded.push(c);
            i += 1;
        }
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split(|&b| b == b'/').skip(1) {
        trailing_slash = false;
        match seg {
            b"" => trailing_slash = true,
            b"." => trailing_slash = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        for &b in *seg {
            if RAW[b as usize] {
                out.push(b as char);
            } else {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
    if segments.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/.well-known/x",
            "/a..b/c.",
            "/x%20y",
            "/caf%C3%A9",
            "/a;b=c:d@e",
            "*",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p} should be borrowed"
            );
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/public/../admin/secret").unwrap(), "/admin/secret");
        assert_eq!(n("/a/./b").unwrap(), "/a/b");
        assert_eq!(n("//a///b//").unwrap(), "/a/b/");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/.").unwrap(), "/");
        assert_eq!(n("").unwrap(), "/");
    }

    #[test]
    fn escapes_are_decoded_before_dot_segments() {
        assert_eq!(n("/public/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(n("/public/..%2fadmin").unwrap(), "/admin");
        assert_eq!(n("/public/.%2e/admin").unwrap(), "/admin");
        assert_eq!(n("/public%2F..%2Fadmin").unwrap(), "/admin");
        assert_eq!(n("/%61dmin").unwrap(), "/admin");
    }

    #[test]
    fn re_encoding_is_canonical() {
        assert_eq!(n("/x%2fy").unwrap(), "/x/y");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%2ab").unwrap(), "/a*b");
        assert_eq!(n("/%c3%a9").unwrap(), "/%C3%A9");
        assert_eq!(n("/100%25").unwrap(), "/100%25");
        assert_eq!(n("/a%3Fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/a\"b").unwrap(), "/a%22b");
        assert_eq!(n("/a\\b").unwrap(), "/a%5Cb");
    }

    #[test]
    fn errors() {
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/../x"), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../../x"), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2e/x"), Err(PathError::AboveRoot));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%4"), Err(PathError::BadEscape));
        assert_eq!(n("/a%"), Err(PathError::BadEscape));
        assert_eq!(n("/a%00b"), Err(PathError::Nul));
        assert_eq!(n("/a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn idempotent_on_examples() {
        for p in ["/a/../b/./c//d/", "/%2e/%2F/x%20y", "/a%2f%2e%2e%2fb"] {
            let once = n(p).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{p}");
            assert!(matches!(normalize(&once), Ok(Cow::Borrowed(_))), "{once}");
        }
    }
}
