//! The error page: maps a proxy error to a status and writes it.

use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};

use super::ctx::RequestCtx;

/// The status a failed request gets: 504 for upstream timeouts, 502 for other upstream
/// failures, an explicit `HTTPStatus` as given, 400 for downstream protocol errors.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        HTTPStatus(code) => *code,
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
        502 => r#"{"error_msg":"502 Bad Gateway"}"#,
        503 => r#"{"error_msg":"503 Service Temporarily Unavailable"}"#,
        504 => r#"{"error_msg":"504 Gateway Time-out"}"#,
        _ => r#"{"error_msg":"500 Internal Server Error"}"#,
    }
}

/// Writes the error response (when the client can still receive one).
pub async fn respond_error(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let code = status_for(e);
    if code > 0 && session.response_written().is_none() {
        ctx.local_status = Some(code);
        let body = body_for(code);
        let header = ResponseHeader::build(code, Some(3)).and_then(|mut h| {
            h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
            h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
            h.insert_header(http::header::SERVER, crate::SERVER_NAME)?;
            Ok(h)
        });
        if let Ok(header) = header {
            let sent = session.write_response_header(Box::new(header), false).await;
            if sent.is_ok() {
                let _ = session
                    .write_response_body(Some(bytes::Bytes::from_static(body.as_bytes())), true)
                    .await;
            }
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
    }
}
