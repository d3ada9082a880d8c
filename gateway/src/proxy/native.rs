//! Running native plugin steps on the request and the response. Native steps change
//! Pingora's headers directly; where Lua runs in the same request, its pending request
//! changes are written first and its view of the headers follows afterwards, so both
//! kinds see each other's changes in chain order.

use std::sync::Arc;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use portico_plugins::{ClientAddr, ConnInfo, NativeCtx, NativeOutcome, Phase, Plugin};

use super::ctx::RequestCtx;
use super::rewrite;

/// The connection facts variables read (`remote_addr`, `server_port`, `scheme`), with the
/// client address a plugin (`real-ip`) set for the request, if any.
pub fn conn_info(session: &Session, set: Option<ClientAddr>) -> ConnInfo {
    let client = session.client_addr().and_then(|a| a.as_inet());
    let server = session.server_addr().and_then(|a| a.as_inet());
    ConnInfo {
        client_ip: client.map(|a| a.ip()),
        client_port: client.map(|a| a.port()),
        server_port: server.map(|a| a.port()),
        scheme: super::view::scheme(session),
    }
    .with_client(set)
}

/// The client's address as the request sees it: the connection's peer, or the one a
/// plugin (`real-ip`) set.
pub fn client_addr(session: &Session, ctx: &RequestCtx) -> Option<std::net::SocketAddr> {
    let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
    match ctx.client_override {
        Some(c) => Some(std::net::SocketAddr::new(
            c.ip,
            c.port.or(peer.map(|p| p.port())).unwrap_or(0),
        )),
        None => peer,
    }
}

fn native_cx<'a>(
    ctx: &'a mut RequestCtx,
    conn: ConnInfo,
    request: Option<&'a pingora::http::RequestHeader>,
) -> NativeCtx<'a> {
    NativeCtx {
        request,
        state: &mut ctx.plugin_state,
        conn,
        response_headers: &mut ctx.response_headers,
        client_override: &mut ctx.client_override,
        consumers: &ctx.snap.consumers,
        consumer: &mut ctx.consumer,
    }
}

/// One native step of rewrite, access or log, on the request as it will go upstream.
pub async fn request_step(
    session: &mut Session,
    ctx: &mut RequestCtx,
    phase: Phase,
    plugin: &Arc<dyn Plugin>,
) -> NativeOutcome {
    if let Err(e) = rewrite::flush_request_changes(session, ctx) {
        tracing::error!("cannot apply Lua's request changes before a native plugin: {e}");
    }
    let conn = conn_info(session, ctx.client_override);
    let mut cx = native_cx(ctx, conn, None);
    let req = session.req_header_mut();
    let outcome = match phase {
        Phase::Rewrite => plugin.rewrite(req, &mut cx).await,
        Phase::Access => plugin.access(req, &mut cx).await,
        Phase::Log => {
            plugin.log(&mut cx);
            NativeOutcome::Continue
        }
        _ => NativeOutcome::Continue,
    };
    rewrite::reload_request_headers(session, ctx);
    outcome
}

/// One native `header_filter` step.
pub fn header_step(
    session: &Session,
    ctx: &mut RequestCtx,
    header: &mut ResponseHeader,
    plugin: &Arc<dyn Plugin>,
) {
    let conn = conn_info(session, ctx.client_override);
    plugin.header_filter(
        header,
        &mut native_cx(ctx, conn, Some(session.req_header())),
    );
}

/// One native `body_filter` step.
pub fn body_step(
    session: &Session,
    ctx: &mut RequestCtx,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    plugin: &Arc<dyn Plugin>,
) {
    let conn = conn_info(session, ctx.client_override);
    let mut cx = native_cx(ctx, conn, Some(session.req_header()));
    plugin.body_filter(body, end_of_stream, &mut cx);
}

/// Writes the headers plugins set before the response existed onto it. A header the
/// upstream also sent is replaced, as `ngx.header` set in access replaces it.
pub fn apply_response_headers(
    ctx: &mut RequestCtx,
    header: &mut ResponseHeader,
) -> pingora::Result<()> {
    let mut replaced: Vec<http::HeaderName> = Vec::new();
    for (name, value) in ctx.response_headers.drain(..) {
        // The first value of a name replaces the upstream's; later ones add to it.
        if !replaced.contains(&name) {
            header.remove_header(&name);
            replaced.push(name.clone());
        }
        header.append_header(name, value)?;
    }
    Ok(())
}
