//! What the compression plugins (`gzip`, `brotli`) share: their `types` field, reading
//! `Accept-Encoding` and a response's MIME type, and the headers of a response they
//! compress (its ETag included).

use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::Value;

/// The `types` field: `"*"` (any type: `None`) or a non-empty list of MIME types,
/// lower-cased.
pub fn parse_types(types: &Value) -> Result<Option<Vec<String>>, String> {
    match types {
        Value::String(s) if s == "*" => Ok(None),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_ascii_lowercase())
                    .ok_or(format!("types[{i}]: must be a MIME type"))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        _ => Err("types: must be \"*\" or a non-empty array of MIME types".to_string()),
    }
}

/// The headers of a response about to be compressed with `coding`: no
/// `Content-Length` (the length changes), `Content-Encoding`, `Vary: Accept-Encoding`
/// when configured, and a weak ETag.
pub fn mark_encoded(resp: &mut ResponseHeader, coding: &'static str, vary: bool) {
    resp.remove_header(&http::header::CONTENT_LENGTH);
    let _ = resp.insert_header(
        http::header::CONTENT_ENCODING,
        HeaderValue::from_static(coding),
    );
    if vary {
        let _ = resp.append_header(
            http::header::VARY,
            HeaderValue::from_static("Accept-Encoding"),
        );
    }
    weaken_etag(resp);
}

/// Whether one `Accept-Encoding` value accepts `coding`: listed by name or as `*`, and
/// not with `q=0`.
pub fn accepts(value: &str, coding: &str) -> bool {
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case(coding) && name != "*" {
            return false;
        }
        !parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        })
    })
}

/// Whether the request's `Accept-Encoding` fields accept `coding`.
pub fn request_accepts(req: &RequestHeader, coding: &str) -> bool {
    req.headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| accepts(v, coding))
}

/// The response's MIME type, lower-cased and without parameters (`text/html`), if it
/// has a `Content-Type`.
pub fn mime_type(resp: &ResponseHeader) -> Option<String> {
    let ct = resp
        .headers
        .get(http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(
        ct.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Whether the response is already encoded (a `Content-Encoding` other than identity).
pub fn already_encoded(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_ENCODING)
        .is_some_and(|v| !v.is_empty() && v.as_bytes() != b"identity")
}

/// The response's `Content-Length`, when it has a valid one.
pub fn content_length(resp: &ResponseHeader) -> Option<u64> {
    resp.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// A compressed body is not byte-identical to the original: a strong ETag becomes weak
/// (`"x"` -> `W/"x"`), and one that is not a quoted string is dropped (nginx and
/// APISIX do the same).
pub fn weaken_etag(resp: &mut ResponseHeader) {
    let Some(etag) = resp.headers.get(http::header::ETAG) else {
        return;
    };
    let quoted = |s: &[u8]| s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"';
    let bytes = etag.as_bytes();
    if bytes.starts_with(b"W/") && quoted(&bytes[2..]) {
        return;
    }
    if quoted(bytes) {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(bytes);
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            let _ = resp.insert_header(http::header::ETAG, v);
            return;
        }
    }
    resp.remove_header(&http::header::ETAG);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_with_q_values() {
        assert!(accepts("br", "br"));
        assert!(accepts("gzip, deflate, br;q=0.5", "br"));
        assert!(accepts("*", "br"));
        assert!(!accepts("br;q=0", "br"));
        assert!(!accepts("gzip, deflate", "br"));
        assert!(accepts("GZIP", "gzip"));
        assert!(!accepts("brotli", "br"));
    }

    #[test]
    fn etags_become_weak_or_go() {
        let run = |etag: &str| {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header("ETag", etag).unwrap();
            weaken_etag(&mut resp);
            resp.headers
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(run("\"abc\"").as_deref(), Some("W/\"abc\""));
        assert_eq!(run("W/\"abc\"").as_deref(), Some("W/\"abc\""));
        assert_eq!(run("abc"), None);
    }
}
