//! Read-only views of the downstream request: the host, and the variables the router and
//! hash keys read.

use std::borrow::Cow;

use pingora::proxy::Session;

use crate::vars::RequestView;

/// Builds the read-only view of the downstream request the router and hash keys use.
pub fn request_view<'a>(session: &'a Session, host: &'a str) -> RequestView<'a> {
    let req = session.req_header();
    let client = session.client_addr().and_then(|a| a.as_inet());
    let server = session.server_addr().and_then(|a| a.as_inet());
    RequestView {
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query(),
        host,
        headers: &req.headers,
        remote_addr: client.map(|a| a.ip()),
        remote_port: client.map(|a| a.port()),
        server_port: server.map(|a| a.port()),
        scheme: "http",
    }
}

/// The request's host: the Host header (or the URI authority), without port, lowercase.
/// Borrowed from the request unless it had to be lowercased.
pub fn request_host(session: &Session) -> Cow<'_, str> {
    let req = session.req_header();
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    let host = strip_port(raw);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}
