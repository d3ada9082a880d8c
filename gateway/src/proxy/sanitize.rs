//! What `request_filter` does to the downstream request before anything reads it: the
//! normalised path ([`crate::uri_path`]) and no header fields with `_` in their name.
//!
//! Both change the downstream request header itself, once, so the router, `vars`,
//! hash keys, Lua (`ngx.var.uri`, `ngx.req.get_headers`) and the upstream request (a copy
//! made later by Pingora) all see the same request.

use std::borrow::Cow;

use pingora::http::RequestHeader;

use crate::uri_path::{self, PathError};

/// Replaces the request's path with its normal form; the query string is kept byte for
/// byte. No allocation when the path is already normal.
pub fn normalize_path(req: &mut RequestHeader) -> Result<(), PathError> {
    let normal = match uri_path::normalize(req.uri.path())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(p) => p,
    };
    let path_and_query = match req.uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri.clone().into_parts();
    // Every byte of `normal` is a pchar, `/` or `%XX`, and the query came out of a
    // parsed URI, so this parses; a failure would be a normaliser bug, answered 400.
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| PathError::BadEscape)?);
    let uri = http::Uri::from_parts(parts).map_err(|_| PathError::BadEscape)?;
    req.set_uri(uri);
    Ok(())
}

/// Removes every header field whose name contains `_`, as nginx does by default
/// (`underscores_in_headers off` ignores them). Such a name is a way around header
/// checks that compare `-` names: `X_Forwarded_For` or `X_Real_IP` would reach an
/// upstream (a CGI/WSGI/PHP one maps `-` and `_` to the same variable) next to the
/// `X-Forwarded-*` and `X-Real-IP` headers the gateway sets, and `$http_x_user` could
/// not tell `X-User` from `X_User`. Returns how many fields were dropped.
pub fn drop_underscore_headers(req: &mut RequestHeader) -> usize {
    if !req.headers.keys().any(|k| k.as_str().contains('_')) {
        return 0;
    }
    let names: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    let mut dropped = 0;
    for name in names {
        dropped += req.headers.get_all(&name).iter().count();
        req.remove_header(&name);
    }
    dropped
}

/// True when the connection must close after this request: an `Upgrade` request. The
/// edge's gate passes a tunnel through unbounded ([`crate::edge::gate`]), so it closes
/// the connection after one; this makes a refused upgrade (any status but 101) say
/// `Connection: close` instead of closing unannounced. A 101 closes it anyway.
pub fn must_close_after(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::UPGRADE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> RequestHeader {
        RequestHeader::build("GET", target.as_bytes(), None).unwrap()
    }

    #[test]
    fn path_is_normalised_and_query_kept() {
        let mut r = req("/public/../admin/%2e/x?a=%2e%2e&b=/../c");
        normalize_path(&mut r).unwrap();
        assert_eq!(r.uri.path(), "/admin/x");
        assert_eq!(r.uri.query(), Some("a=%2e%2e&b=/../c"));
        assert_eq!(r.raw_path(), b"/admin/x?a=%2e%2e&b=/../c");
    }

    #[test]
    fn normal_path_is_untouched() {
        let mut r = req("/a/b?x=1");
        normalize_path(&mut r).unwrap();
        assert_eq!(r.raw_path(), b"/a/b?x=1");
    }

    #[test]
    fn above_root_is_an_error() {
        assert_eq!(normalize_path(&mut req("/..")), Err(PathError::AboveRoot));
    }

    #[test]
    fn upgrade_requests_close_the_connection() {
        let mut r = req("/");
        r.append_header("Transfer-Encoding", "chunked").unwrap();
        assert!(!must_close_after(&r));
        r.append_header("Upgrade", "websocket").unwrap();
        assert!(must_close_after(&r));
    }

    #[test]
    fn underscore_headers_are_dropped() {
        let mut r = req("/");
        r.append_header("X_Forwarded_For", "1.2.3.4").unwrap();
        r.append_header("x_real_ip", "5.6.7.8").unwrap();
        r.append_header("x_real_ip", "9.9.9.9").unwrap();
        r.append_header("X-Forwarded-For", "10.0.0.1").unwrap();
        assert_eq!(drop_underscore_headers(&mut r), 3);
        assert_eq!(r.headers.len(), 1);
        assert!(r.headers.get("x-forwarded-for").is_some());
        assert_eq!(drop_underscore_headers(&mut r), 0);
    }
}
