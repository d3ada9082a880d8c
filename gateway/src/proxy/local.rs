//! Responses the gateway writes itself (no route, no upstream, a Lua exit, a Lua
//! failure). They go through the route's `header_filter` and `body_filter` like proxied
//! responses, and carry a Content-Length so the connection stays reusable.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::filters;
use super::phases::{self, LuaEnv};

/// The status Lua set with `ngx.status`, if any.
fn lua_status(ctx: &RequestCtx) -> Option<u16> {
    ctx.lua
        .as_ref()
        .map(|l| l.req.lock().status)
        .filter(|s| *s >= 100)
}

/// The JSON body of an error the gateway answers itself.
pub fn error_body(code: u16) -> &'static str {
    match code {
        400 => r#"{"error_msg":"400 Bad Request"}"#,
        404 => r#"{"error_msg":"404 Not Found"}"#,
        405 => r#"{"error_msg":"405 Not Allowed"}"#,
        408 => r#"{"error_msg":"408 Request Time-out"}"#,
        502 => r#"{"error_msg":"502 Bad Gateway"}"#,
        503 => r#"{"error_msg":"503 Service Temporarily Unavailable"}"#,
        504 => r#"{"error_msg":"504 Gateway Time-out"}"#,
        _ => r#"{"error_msg":"500 Internal Server Error"}"#,
    }
}

/// nginx's default page for an error or redirect status with no body.
pub fn default_page(status: u16) -> Bytes {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    Bytes::from(format!(
        "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>portico</center>\r\n</body>\r\n</html>\r\n"
    ))
}

/// Writes a complete response: status, `content_type`, headers Lua set, the filters.
pub async fn respond(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    content_type: &str,
    body: Bytes,
    env: &LuaEnv<'_>,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    if let Some(extra) = phases::lua_response_headers(ctx) {
        for name in extra.keys() {
            header.remove_header(name);
            for v in extra.get_all(name) {
                header.append_header(name.clone(), v.clone())?;
            }
        }
    }
    let body_filters = filters::filter_response_header(session, ctx, &mut header, env)?;
    let mut body = Some(body);
    if body_filters {
        filters::filter_body(session, ctx, &mut body, true, env);
    }
    let body = body.unwrap_or_default();
    // The whole body is known here, so it goes with a length, not chunked.
    header.remove_header(&http::header::TRANSFER_ENCODING);
    header.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    ctx.local_status = Some(header.status.as_u16());
    session
        .write_response_header(Box::new(header), body.is_empty())
        .await?;
    if !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The 500 a request gets when its Lua failed or ran out of time or memory (the
/// gateway's JSON error body, through the filters).
pub async fn respond_lua_failure(
    session: &mut Session,
    ctx: &mut RequestCtx,
    env: &LuaEnv<'_>,
) -> Result<()> {
    let body = Bytes::from_static(error_body(500).as_bytes());
    respond(session, ctx, 500, "application/json", body, env).await
}

/// Answers as a Lua function asked (`ngx.exit`, `return status, body`): its body, or its
/// `ngx.say` output, or nginx's default page for an error status.
pub async fn respond_from_lua(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Option<Vec<u8>>,
    env: &LuaEnv<'_>,
) -> Result<()> {
    // nginx's 444 closes the connection without a response: the error makes Pingora
    // drop the connection, and the error page skips this status (see `error.rs`).
    if status == super::error::CLOSE_WITHOUT_RESPONSE {
        ctx.local_status = Some(status);
        return Error::e_explain(
            HTTPStatus(status),
            "Lua closed the connection without a response (444)",
        );
    }
    // OpenResty: `ngx.exit(200)` after `ngx.status = 201` sends the status Lua set; an
    // error or redirect status replaces it.
    let status = match (status, lua_status(ctx)) {
        (200, Some(set)) => set,
        _ => status,
    };
    let json = body
        .as_ref()
        .is_some_and(|b| b.first() == Some(&b'{') || b.first() == Some(&b'['));
    let mut body = phases::take_output(ctx, body);
    let mut content_type = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    if body.is_empty() && (status >= 400 || (300..400).contains(&status)) {
        body = default_page(status);
        content_type = "text/html";
    }
    respond(session, ctx, status, content_type, body, env).await
}
