//! The error page: maps a proxy error to a status and writes it; and which errors are
//! logged (a client that went away is not an error; a refused upstream is logged once
//! per node per interval).

use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};

use super::ctx::RequestCtx;
use super::local::CLOSE_WITHOUT_RESPONSE;
use crate::logging::throttle::Throttle;

/// nginx's status for a request whose client closed the connection before the
/// response was sent.
pub const CLIENT_CLOSED: u16 = 499;

/// The status a failed request gets: 504 for upstream timeouts, 502 for other upstream
/// failures, an explicit `HTTPStatus` as given, 400 for downstream protocol errors, 408
/// when the client stopped sending its body (`client_body_timeout`, as nginx), 499 when
/// the client went away.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        HTTPStatus(code) => *code,
        ReadTimedout if matches!(e.esource(), ErrorSource::Downstream) => 408,
        ConnectTimedout | ReadTimedout | WriteTimedout => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => CLIENT_CLOSED,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// Writes the error response (when the client can still receive one), through the
/// route's header and body filters like every response the gateway writes.
///
/// The client connection closes after an error (`can_reuse_downstream: false`: what is
/// left of the request or the response on it is unknown), and the response says so
/// (`Connection: close`), as nginx's does.
pub async fn respond_error(
    session: &mut Session,
    e: &Error,
    ctx: &mut RequestCtx,
    env: &super::phases::LuaEnv<'_>,
) -> FailToProxy {
    let code = status_for(e);
    let answers = code > 0 && code != CLIENT_CLOSED && code != CLOSE_WITHOUT_RESPONSE;
    if answers && session.response_written().is_none() {
        session.set_keepalive(None);
        let body = bytes::Bytes::from_static(super::local::error_body(code).as_bytes());
        if let Err(err) =
            super::local::respond(session, ctx, code, "application/json", body, env).await
        {
            tracing::debug!("cannot write the {code} error page: {err}");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// Whether the error is the client going away (not a gateway error).
pub fn is_client_gone(e: &Error) -> bool {
    matches!(e.esource(), ErrorSource::Downstream)
        && matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
}

/// Whether the upstream could not be reached at all (refused, unreachable, connect
/// timeout): logged once per node per interval, not per request.
fn is_connect_failure(e: &Error) -> bool {
    matches!(e.esource(), ErrorSource::Upstream)
        && matches!(
            e.etype(),
            ConnectRefused | ConnectTimedout | ConnectError | ConnectNoRoute | TLSHandshakeFailure
        )
}

/// Decides for Pingora's error log line: `true` keeps Pingora's line out. A client that
/// went away is logged at debug level; an unreachable node once per interval (with how
/// many were held back), here.
pub fn suppress_log(e: &Error, ctx: &RequestCtx, throttle: &Throttle) -> bool {
    if is_client_gone(e) {
        tracing::debug!("client closed the connection: {e}");
        return true;
    }
    if matches!(e.etype(), HTTPStatus(CLOSE_WITHOUT_RESPONSE)) {
        return true;
    }
    if !is_connect_failure(e) {
        return false;
    }
    let node = ctx
        .upstream_addrs
        .last()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string());
    if let Some(held) = throttle.allow(&node) {
        let route = ctx.route.as_ref().map_or("", |r| r.id.as_str());
        tracing::error!(
            node,
            route,
            suppressed = held,
            "upstream unreachable: {e} (logged once per node per interval)"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_504_and_connect_errors_502() {
        let mut e = Error::new(ConnectTimedout);
        e.as_up();
        assert_eq!(status_for(&e), 504);
        let mut e = Error::new(ReadTimedout);
        e.as_up();
        assert_eq!(status_for(&e), 504);
        let mut e = Error::new(ConnectRefused);
        e.as_up();
        assert_eq!(status_for(&e), 502);
        assert_eq!(status_for(&Error::new(HTTPStatus(503))), 503);
        let mut e = Error::new(ReadTimedout);
        e.as_down();
        assert_eq!(status_for(&e), 408, "client_body_timeout");
        let mut e = Error::new(ConnectionClosed);
        e.as_down();
        assert_eq!(status_for(&e), CLIENT_CLOSED);
        assert!(is_client_gone(&e));
    }
}
