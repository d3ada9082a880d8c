//! The error page: maps a proxy error to a status and writes it.

use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};

use super::ctx::RequestCtx;

/// The status a failed request gets: 504 for upstream timeouts, 502 for other upstream
/// failures, an explicit `HTTPStatus` as given, 400 for downstream protocol errors, 408
/// when the client stopped sending its body (`client_body_timeout`, as nginx).
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        HTTPStatus(code) => *code,
        ReadTimedout if matches!(e.esource(), ErrorSource::Downstream) => 408,
        ConnectTimedout | ReadTimedout | WriteTimedout => 504,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

fn body_for(code: u16) -> &'static str {
    match code {
        400 => r#"{"error_msg":"400 Bad Request"}"#,
        408 => r#"{"error_msg":"408 Request Time-out"}"#,
        502 => r#"{"error_msg":"502 Bad Gateway"}"#,
        503 => r#"{"error_msg":"503 Service Temporarily Unavailable"}"#,
        504 => r#"{"error_msg":"504 Gateway Time-out"}"#,
        _ => r#"{"error_msg":"500 Internal Server Error"}"#,
    }
}

/// Writes the error response (when the client can still receive one), through the
/// route's header and body filters like every response the gateway writes.
pub async fn respond_error(
    session: &mut Session,
    e: &Error,
    ctx: &mut RequestCtx,
    env: &super::phases::LuaEnv<'_>,
) -> FailToProxy {
    let code = status_for(e);
    if code > 0 && session.response_written().is_none() {
        let body = bytes::Bytes::from_static(body_for(code).as_bytes());
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
    }
}
