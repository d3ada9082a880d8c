//! The response filters: `header_filter` on the response header (proxied or local) and
//! `body_filter` on each chunk, Lua and native steps in chain order.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use portico_plugins::{ChainEntry, Phase, Step};

use super::ctx::RequestCtx;
use super::phases::{ensure, has_phase, is_lua, run_sync_entries, LuaEnv, PhaseEntries};
use super::rewrite::same_values;

/// Runs `header_filter` on a response header (proxied or local) and writes back what
/// Lua changed. Returns whether the route has body filters (the length may change).
pub fn filter_response_header(
    session: &Session,
    ctx: &mut RequestCtx,
    header: &mut ResponseHeader,
    env: &LuaEnv<'_>,
) -> Result<bool> {
    // Before the filters, so a plugin may still change it.
    match env.server_header {
        Some(server) => header.insert_header(http::header::SERVER, server.clone())?,
        None => {
            header.remove_header(&http::header::SERVER);
        }
    }
    if !ctx.response_headers.is_empty() {
        super::native::apply_response_headers(ctx, header)?;
    }
    apply_early_lua_headers(ctx, header)?;
    let has_header_filter = has_phase(ctx, Phase::HeaderFilter);
    // After a 101 the connection is a tunnel (a websocket): its bytes are no body, so no
    // body filter sees them and the header keeps its framing, as nginx passes an
    // upgraded connection around its output filters (header filters still run).
    let has_body_filter =
        has_phase(ctx, Phase::BodyFilter) && header.status != http::StatusCode::SWITCHING_PROTOCOLS;
    if !has_header_filter && !has_body_filter {
        return Ok(false);
    }
    if has_header_filter {
        let entries = PhaseEntries::of(ctx, Phase::HeaderFilter);
        let steps: Vec<&ChainEntry> = entries.iter().collect();
        // Chain order across kinds: each run of Lua steps sees the header as the native
        // steps before it left it, and the native steps after it see Lua's changes.
        for run in steps.chunk_by(|a, b| is_lua(a) == is_lua(b)) {
            if is_lua(run[0]) {
                lua_header_filter(session, ctx, header, env, run)?;
            } else {
                for entry in run {
                    if let Step::Native(plugin) = &entry.step {
                        super::native::header_step(session, ctx, header, plugin);
                    }
                }
            }
        }
    }
    if has_body_filter {
        // The body may change size: send it chunked, as OpenResty does.
        header.remove_header(&http::header::CONTENT_LENGTH);
        header.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        ctx.body_filtered = true;
    }
    Ok(has_body_filter)
}

/// `ngx.header[...]` set in rewrite/access (before there is a response) applies to the
/// response that comes back, proxied or generated, as in OpenResty. Until the first
/// `header_filter` run, the request's response headers hold only what Lua set.
fn apply_early_lua_headers(ctx: &RequestCtx, header: &mut ResponseHeader) -> Result<()> {
    let Some(lua) = &ctx.lua else {
        return Ok(());
    };
    let r = lua.req.lock();
    if r.response_headers.is_empty() || r.phase >= Phase::HeaderFilter {
        return Ok(());
    }
    for name in r.response_headers.keys() {
        if same_values(&header.headers, &r.response_headers, name) {
            continue;
        }
        header.remove_header(name);
        for v in r.response_headers.get_all(name) {
            header.append_header(name.clone(), v.clone())?;
        }
    }
    Ok(())
}

/// Runs a run of Lua `header_filter` steps on `header` and writes back what Lua changed.
fn lua_header_filter(
    session: &Session,
    ctx: &mut RequestCtx,
    header: &mut ResponseHeader,
    env: &LuaEnv<'_>,
    entries: &[&ChainEntry],
) -> Result<()> {
    if let Ok(lua) = ensure(session, ctx, env) {
        let mut r = lua.req.lock();
        r.status = header.status.as_u16();
        r.response_headers = header.headers.clone();
        r.response_changed = false;
        r.changed_response_headers.clear();
    }
    let _ = run_sync_entries(session, ctx, Phase::HeaderFilter, env, entries);
    let Some(lua) = &ctx.lua else {
        return Ok(());
    };
    let r = lua.req.lock();
    if !r.response_changed {
        return Ok(());
    }
    if r.status != header.status.as_u16() {
        header.set_status(r.status)?;
    }
    // Only the headers Lua set or cleared, and of those only the ones whose values
    // differ, are rewritten: comparing or rewriting every header costs more than the
    // Lua that changed one.
    for name in &r.changed_response_headers {
        if same_values(&header.headers, &r.response_headers, name) {
            continue;
        }
        header.remove_header(name);
        for v in r.response_headers.get_all(name) {
            header.append_header(name.clone(), v.clone())?;
        }
    }
    Ok(())
}

/// Runs `body_filter` on one chunk.
pub fn filter_body(
    session: &Session,
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    eof: bool,
    env: &LuaEnv<'_>,
) {
    if !ctx.body_filtered || !has_phase(ctx, Phase::BodyFilter) {
        return;
    }
    let entries = PhaseEntries::of(ctx, Phase::BodyFilter);
    let steps: Vec<&ChainEntry> = entries.iter().collect();
    // Chain order across kinds, as for the header: each run of Lua steps gets the chunk
    // as the native steps before it left it.
    for run in steps.chunk_by(|a, b| is_lua(a) == is_lua(b)) {
        if is_lua(run[0]) {
            lua_body_filter(session, ctx, body, eof, env, run);
        } else {
            for entry in run {
                if let Step::Native(plugin) = &entry.step {
                    super::native::body_step(session, ctx, body, eof, plugin);
                }
            }
        }
    }
}

/// Runs a run of Lua `body_filter` steps on one chunk. Failures are logged; the chunk
/// goes on as Lua left it.
fn lua_body_filter(
    session: &Session,
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    eof: bool,
    env: &LuaEnv<'_>,
    entries: &[&ChainEntry],
) {
    if let Ok(lua) = ensure(session, ctx, env) {
        let mut r = lua.req.lock();
        r.chunk = Some(body.take().unwrap_or_default());
        r.eof = eof;
    }
    let _ = run_sync_entries(session, ctx, Phase::BodyFilter, env, entries);
    if let Some(lua) = &ctx.lua {
        *body = lua.req.lock().chunk.take();
    }
}
