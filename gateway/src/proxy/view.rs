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
        scheme: scheme(session),
        consumer_name: None,
    }
}

/// Whether the client connection is TLS (a `proxy.ssl.listen` listener).
pub fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// `$scheme`: `https` on a TLS listener, else `http`.
pub fn scheme(session: &Session) -> &'static str {
    if is_tls(session) {
        "https"
    } else {
        "http"
    }
}

/// `$ssl_server_name`: the SNI the client sent on a TLS listener.
pub fn ssl_server_name(session: &Session) -> Option<String> {
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    ssl.extension
        .get::<crate::tls_accept::TlsConnInfo>()?
        .server_name
        .clone()
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
