//! Header values with `$var` templates, and the URI helpers `proxy-rewrite` and
//! `redirect` share: `regex_uri` pairs compiled at apply time and path escaping.

use std::borrow::Cow;

use http::{HeaderName, HeaderValue};
use regex::Regex;

use crate::vars::{RequestView, Template};

/// A header value: a constant (checked at apply time) or a template rendered per
/// request.
#[derive(Debug, Clone)]
pub enum HeaderTemplate {
    Constant(HeaderValue),
    Template(Template),
}

impl HeaderTemplate {
    pub fn parse(field: &str, src: &str) -> Result<HeaderTemplate, String> {
        let t = Template::parse(src).map_err(|e| format!("{field}: {e}"))?;
        if t.is_constant() {
            let v = HeaderValue::from_str(src)
                .map_err(|_| format!("{field}: `{src}` is not a header value"))?;
            return Ok(HeaderTemplate::Constant(v));
        }
        Ok(HeaderTemplate::Template(t))
    }

    /// The value for this request; `None` if the rendered text is not a header value.
    pub fn render(&self, view: &RequestView<'_>) -> Option<HeaderValue> {
        match self {
            HeaderTemplate::Constant(v) => Some(v.clone()),
            HeaderTemplate::Template(t) => HeaderValue::from_str(&t.render_lossy(view)).ok(),
        }
    }
}

/// A header name from configuration; the error names the field.
pub fn header_name(field: &str, name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{field}: `{name}` is not a header name"))
}

/// `regex_uri`: `[pattern, template, pattern, template, ...]`, tried in order; the first
/// pattern that matches has its first match replaced by its template (`$1`, `${name}`).
#[derive(Debug, Clone)]
pub struct RegexUri {
    pairs: Vec<(Regex, String)>,
}

impl RegexUri {
    pub fn parse(field: &str, items: &[String]) -> Result<RegexUri, String> {
        if items.is_empty() || items.len() % 2 != 0 {
            return Err(format!(
                "{field}: must hold pattern and template pairs (an even, non-zero count)"
            ));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        for (i, pair) in items.chunks(2).enumerate() {
            let re = Regex::new(&pair[0]).map_err(|e| format!("{field}[{}]: {e}", i * 2))?;
            pairs.push((re, capture_template(&pair[1])));
        }
        Ok(RegexUri { pairs })
    }

    /// The rewritten URI, or `None` when no pattern matches.
    pub fn apply(&self, uri: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(re, _)| re.is_match(uri))
            .map(|(re, template)| re.replacen(uri, 1, template.as_str()).into_owned())
    }
}

/// nginx's `$1` is one digit: `$1abc` is group 1 then `abc`, which the `regex` crate
/// reads as a group named `1abc`; bracing the digits keeps nginx's meaning.
pub(crate) fn capture_template(src: &str) -> String {
    let mut out = String::with_capacity(src.len() + 4);
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            out.push_str("${");
            out.push(bytes[i + 1] as char);
            out.push('}');
            i += 2;
            continue;
        }
        let ch = src[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// Percent-encodes what may not appear in a URI path (spaces, quotes, non-ASCII...),
/// keeping `/`, `%` and the characters a path may carry as they are.
pub fn escape_path(path: &str) -> Cow<'_, str> {
    fn keep(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
    }
    if path.bytes().all(keep) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// `path` (escaped) with the query of the template, if it has one, and the request's
/// own query appended (`?` or `&`), as APISIX composes a rewritten URI.
pub fn compose_uri(new: &str, original_query: Option<&str>) -> String {
    let (path, query) = match new.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (new, None),
    };
    let mut out = escape_path(path).into_owned();
    match (query, original_query.filter(|q| !q.is_empty())) {
        (Some(q), Some(orig)) => {
            out.push('?');
            out.push_str(q);
            out.push('&');
            out.push_str(orig);
        }
        (Some(q), None) => {
            out.push('?');
            out.push_str(q);
        }
        (None, Some(orig)) => {
            out.push('?');
            out.push_str(orig);
        }
        (None, None) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_uri_pairs_in_order() {
        let items: Vec<String> = [
            "^/iresty/(.*)/(.*)/(.*)",
            "/$1-$2-$3",
            "^/theothers/(.*)",
            "/x/$1abc",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = RegexUri::parse("regex_uri", &items).unwrap();
        assert_eq!(r.apply("/iresty/a/b/c").as_deref(), Some("/a-b-c"));
        assert_eq!(r.apply("/theothers/q").as_deref(), Some("/x/qabc"));
        assert_eq!(r.apply("/nothing"), None);
        let odd = vec!["^/a".to_string()];
        assert!(RegexUri::parse("regex_uri", &odd)
            .unwrap_err()
            .contains("pairs"));
        let bad = vec!["(".to_string(), "/".to_string()];
        assert!(RegexUri::parse("regex_uri", &bad)
            .unwrap_err()
            .starts_with("regex_uri[0]"));
    }

    #[test]
    fn uris_are_composed_with_the_original_query() {
        assert_eq!(compose_uri("/a b", Some("x=1")), "/a%20b?x=1");
        assert_eq!(compose_uri("/a?y=2", Some("x=1")), "/a?y=2&x=1");
        assert_eq!(compose_uri("/a?y=2", None), "/a?y=2");
        assert_eq!(compose_uri("/a", Some("")), "/a");
    }
}
