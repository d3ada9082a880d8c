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
        consumer_name: None,
    }
}

/// The request's host: the Host header (or the URI authority), without port, lowercase.
/// Borrowed from the request unless it had to be lowercased.
pub fn request_host(session: &Session) -> Cow<'_, str> {
    let host = crate::vars::host_of(session.req_header());
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}
