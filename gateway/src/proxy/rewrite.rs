//! The upstream request rewrite: what Lua changed in the request (method, uri, args,
//! headers) carried into the request that goes upstream, and kept in step with what
//! native plugins change.

use pingora::prelude::*;
use pingora::proxy::Session;

use portico_plugins::lua::LuaRequest;

use super::ctx::RequestCtx;

/// Writes what Lua changed in the request so far into the session's request header, so
/// a native step sees it; Lua's later changes are applied upstream as usual.
pub fn flush_request_changes(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let Some(lua) = &ctx.lua else {
        return Ok(());
    };
    if !lua.req.lock().request_changed() {
        return Ok(());
    }
    apply_request_changes(ctx, session.req_header_mut())?;
    let mut r = lua.req.lock();
    r.line_changed = false;
    r.changed_headers.clear();
    Ok(())
}

/// Lua's view of the request headers, after a native step changed them.
pub fn reload_request_headers(session: &Session, ctx: &RequestCtx) {
    if let Some(lua) = &ctx.lua {
        lua.req.lock().headers = session.req_header().headers.clone();
    }
}

/// Applies what Lua changed in the request (method, uri, args, headers) to the request
/// that goes upstream: the request line when Lua changed it, and only the headers Lua
/// set or cleared (headers it never touched keep what native steps made of them).
pub fn apply_request_changes(ctx: &RequestCtx, upstream: &mut RequestHeader) -> Result<()> {
    let Some(lua) = &ctx.lua else {
        return Ok(());
    };
    let r = lua.req.lock();
    if !r.request_changed() {
        return Ok(());
    }
    if r.line_changed {
        apply_request_line(&r, upstream)?;
    }
    for name in &r.changed_headers {
        // Values already what Lua left are not rewritten (the same result, cheaper).
        if same_values(&upstream.headers, &r.headers, name) {
            continue;
        }
        upstream.remove_header(name);
        for v in r.headers.get_all(name) {
            upstream.append_header(name.clone(), v.clone())?;
        }
    }
    Ok(())
}

/// The method and the path with its query, as Lua left them.
fn apply_request_line(r: &LuaRequest, upstream: &mut RequestHeader) -> Result<()> {
    if r.method() != upstream.method.as_str() {
        let method = http::Method::from_bytes(r.method().as_bytes())
            .or_err(InternalError, "Lua set an invalid method")?;
        upstream.set_method(method);
    }
    let path_and_query = match r.args() {
        Some(a) => format!("{}?{a}", r.uri()),
        None => r.uri().to_string(),
    };
    if upstream.uri.path_and_query().map(|p| p.as_str()) != Some(path_and_query.as_str()) {
        let uri = http::Uri::builder()
            .path_and_query(path_and_query)
            .build()
            .or_err(InternalError, "Lua set an invalid uri")?;
        upstream.set_uri(uri);
    }
    Ok(())
}

/// Whether `name` has the same values, in the same order, in both maps.
pub(super) fn same_values(
    a: &http::HeaderMap,
    b: &http::HeaderMap,
    name: &http::HeaderName,
) -> bool {
    a.get_all(name).iter().eq(b.get_all(name).iter())
}
