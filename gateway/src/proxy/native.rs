//! Running native plugin steps on the request and the response header. Native steps
//! change Pingora's headers directly; where Lua runs in the same request, its pending
//! request changes are written first and its view of the headers follows afterwards, so
//! both kinds see each other's changes in chain order.

use std::sync::Arc;

use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use portico_plugins::{NativeCtx, NativeOutcome, Phase, Plugin};

use super::ctx::RequestCtx;
use super::rewrite;

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// One native step of rewrite, access or log, on the request as it will go upstream.
pub fn request_step(
    session: &mut Session,
    ctx: &mut RequestCtx,
    phase: Phase,
    plugin: &Arc<dyn Plugin>,
) -> NativeOutcome {
    if let Err(e) = rewrite::flush_request_changes(session, ctx) {
        tracing::error!("cannot apply Lua's request changes before a native plugin: {e}");
    }
    let mut cx = NativeCtx {
        state: &mut ctx.plugin_state,
        client_ip: client_ip(session),
    };
    let req = session.req_header_mut();
    let outcome = match phase {
        Phase::Rewrite => plugin.rewrite(req, &mut cx),
        Phase::Access => plugin.access(req, &mut cx),
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
    let mut cx = NativeCtx {
        state: &mut ctx.plugin_state,
        client_ip: client_ip(session),
    };
    plugin.header_filter(header, &mut cx);
}
