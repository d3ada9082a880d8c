//! The balancer phase: choosing a node per attempt, and deciding retries.
//!
//! Pingora calls `upstream_peer` again for every retry; `ctx.tried` records the nodes
//! used so far, so each retry goes to an untried node (nginx `proxy_next_upstream`).

use std::time::Instant;

use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::RetryType;

use super::ctx::RequestCtx;
use crate::snapshot::{Timeouts, UpstreamRuntime};

/// Picks the node for this attempt and builds its peer.
pub fn select_peer(ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
    let route = ctx
        .route
        .clone()
        .ok_or_else(|| Error::explain(InternalError, "upstream_peer without a matched route"))?;
    let upstream = route
        .upstream
        .as_ref()
        .ok_or_else(|| Error::explain(HTTPStatus(503), "route has no upstream"))?;
    let key = ctx.hash_key.as_deref().unwrap_or("").as_bytes();
    let tried = &ctx.tried;
    let Some(index) = upstream.picker.pick(key, |i| !tried.contains(&i)) else {
        return Err(if ctx.tried.is_empty() {
            Error::explain(
                HTTPStatus(503),
                format!("upstream {} has no node with weight > 0", upstream.id),
            )
        } else {
            Error::explain(HTTPStatus(502), "no untried node left")
        });
    };
    let node = &upstream.nodes[index];
    let now = Instant::now();
    ctx.tried.push(index);
    ctx.attempt_started = Some(now);
    ctx.first_attempt.get_or_insert(now);
    let timeouts = route.timeouts.unwrap_or(upstream.timeouts);
    Ok(Box::new(peer_for(upstream, node, &timeouts)))
}

fn peer_for(
    upstream: &UpstreamRuntime,
    node: &crate::snapshot::NodeRuntime,
    timeouts: &Timeouts,
) -> HttpPeer {
    let mut peer = HttpPeer::new(node.addr, upstream.tls, node.sni.clone());
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.send);
    peer.options.idle_timeout = upstream.idle_timeout;
    peer
}

/// Whether another attempt may start: retries left, an untried node left, and still
/// within `retry_timeout`.
pub fn may_retry(ctx: &RequestCtx) -> bool {
    let Some(upstream) = ctx.route.as_ref().and_then(|r| r.upstream.as_ref()) else {
        return false;
    };
    if ctx.response_started || ctx.tried.len() > upstream.retries {
        return false;
    }
    if let (Some(limit), Some(first)) = (upstream.retry_timeout, ctx.first_attempt) {
        if first.elapsed() >= limit {
            return false;
        }
    }
    upstream
        .nodes
        .iter()
        .enumerate()
        .any(|(i, n)| n.weight > 0 && !ctx.tried.contains(&i))
}

/// Connect failures are always safe to retry: nothing reached the upstream.
pub fn on_connect_failure(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    e.set_retry(may_retry(ctx));
    e
}

/// How many times one request may retry a pooled connection the upstream had closed.
const MAX_STALE_RETRIES: u8 = 2;

/// Errors after connecting: retry only before the response started, for requests that
/// can be replayed (idempotent method, body still in the retry buffer), as nginx's
/// `proxy_next_upstream` does by default.
///
/// A pooled keep-alive connection the upstream closed while idle (Pingora marks such
/// errors `ReusedOnly`) says nothing about the node: that retry may go to the same node
/// and does not use up one of the upstream's `retries`.
pub fn on_proxy_error(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    let replayable =
        session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated();
    if !replayable || ctx.response_started {
        e.set_retry(false);
        return e;
    }
    let stale_pooled = client_reused && matches!(e.retry, RetryType::ReusedOnly);
    if stale_pooled && ctx.stale_retries < MAX_STALE_RETRIES {
        ctx.stale_retries += 1;
        ctx.tried.pop();
        e.set_retry(true);
        return e;
    }
    e.set_retry(may_retry(ctx));
    e
}

/// The upstream's response header arrived: record the upstream time, stop retrying.
pub fn on_response_header(ctx: &mut RequestCtx) {
    ctx.response_started = true;
    ctx.upstream_duration = ctx.attempt_started.map(|t| t.elapsed());
}
