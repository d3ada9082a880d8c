//! The balancer phase: choosing a node per attempt, and deciding retries.
//!
//! Pingora calls `upstream_peer` again for every retry; `ctx.tried` records the nodes
//! used so far, so each retry goes to an untried node (nginx `proxy_next_upstream`).

use std::time::Instant;

use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora::RetryType;

use portico_healthcheck::{HealthRegistry, Outcome};

use super::ctx::RequestCtx;
use crate::metrics::Metrics;
use crate::snapshot::{Timeouts, UpstreamRuntime};

/// Picks the node for this attempt and builds its peer.
pub fn select_peer(
    ctx: &mut RequestCtx,
    metrics: &Metrics,
    lua_choice: Option<super::phases::BalancerChoice>,
) -> Result<HttpPeer> {
    let route = ctx
        .route
        .clone()
        .ok_or_else(|| Error::explain(InternalError, "upstream_peer without a matched route"))?;
    let upstream = route
        .upstream
        .as_ref()
        .ok_or_else(|| Error::explain(HTTPStatus(503), "route has no upstream"))?;
    ctx.attempts += 1;
    if let Some(choice) = lua_choice {
        if let Some(n) = choice.more_tries {
            ctx.extra_tries = n as usize;
        }
        if let Some(addr) = choice.peer {
            // `ngx.balancer.set_current_peer`: this attempt goes where Lua said. A node of
            // the upstream at that address counts as tried (for retries and passive checks).
            if let Some(i) = upstream.nodes.iter().position(|n| n.addr == addr) {
                ctx.tried.push(i);
            }
            let now = Instant::now();
            ctx.attempt_started = Some(now);
            ctx.first_attempt.get_or_insert(now);
            let timeouts = route.timeouts.unwrap_or(upstream.timeouts);
            ctx.upstream_addrs.push(addr);
            let mut peer = HttpPeer::new(addr, upstream.tls, addr.ip().to_string());
            apply_timeouts(&mut peer, upstream, &timeouts);
            apply_transport(&mut peer, upstream);
            peer.options.http_upstream_request_policy = request_policy(route.websocket);
            return Ok(peer);
        }
    }
    let key = ctx.hash_key.as_deref().unwrap_or("").as_bytes();
    let tried = &ctx.tried;
    let mut picked = upstream
        .picker
        .pick(key, |i| !tried.contains(&i) && upstream.is_healthy(i));
    if picked.is_none() && upstream.all_unhealthy() {
        // APISIX: with every node unhealthy, balance over all of them rather than none.
        picked = upstream.picker.pick(key, |i| !tried.contains(&i));
        if picked.is_some() {
            metrics.count_all_unhealthy(&upstream.id);
        }
    }
    let Some(index) = picked else {
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
    ctx.upstream_addrs.push(node.addr);
    ctx.attempt_started = Some(now);
    ctx.first_attempt.get_or_insert(now);
    let timeouts = route.timeouts.unwrap_or(upstream.timeouts);
    let mut peer = peer_for(upstream, node, &timeouts);
    peer.options.http_upstream_request_policy = request_policy(route.websocket);
    Ok(peer)
}

/// How Pingora forwards the client's hop-by-hop headers: always stripped, and the
/// `Upgrade` handshake forwarded only on a route with `enable_websocket` (APISIX sets
/// nginx's `Upgrade` and `Connection` to the client's only then, and to empty, so not
/// sent, otherwise). Pingora forwards a WebSocket handshake only (`Upgrade: websocket`),
/// normalised; any other upgrade goes upstream as a plain request either way. Pingora
/// refuses a 101 that answers a request whose handshake was not forwarded, so no
/// tunnel opens behind the route's back.
fn request_policy(websocket: bool) -> HttpUpstreamRequestPolicy {
    if websocket {
        HttpUpstreamRequestPolicy::standard()
    } else {
        HttpUpstreamRequestPolicy::deny_upgrades()
    }
}

fn peer_for(
    upstream: &UpstreamRuntime,
    node: &crate::snapshot::NodeRuntime,
    timeouts: &Timeouts,
) -> HttpPeer {
    // SNI (and the verified name): `upstream_host` when the Host is rewritten to it,
    // else the node's host.
    let sni = match (upstream.pass_host, &upstream.upstream_host) {
        (crate::config::PassHost::Rewrite, Some(host)) => host.clone(),
        _ => node.sni.clone(),
    };
    let mut peer = HttpPeer::new(node.addr, upstream.tls, sni);
    apply_timeouts(&mut peer, upstream, timeouts);
    apply_transport(&mut peer, upstream);
    peer
}

/// `tls.verify` (off by default, as in APISIX) and the client certificate. Both are in
/// Pingora's pool key, so a pooled connection is never reused across different settings.
/// `grpc`/`grpcs`: HTTP/2 only. Over TLS, Pingora offers only `h2` by ALPN; without TLS,
/// a minimum version of 2 makes it speak h2c by prior knowledge (there is no ALPN to
/// ask with), as nginx's `grpc_pass grpc://` does.
fn apply_transport(peer: &mut HttpPeer, upstream: &UpstreamRuntime) {
    peer.options.verify_cert = upstream.verify;
    peer.options.verify_hostname = upstream.verify;
    peer.client_cert_key = upstream.client_cert.clone();
    if upstream.scheme.http2() {
        peer.options.set_http_version(2, 2);
    }
}

fn apply_timeouts(peer: &mut HttpPeer, upstream: &UpstreamRuntime, timeouts: &Timeouts) {
    peer.options.connection_timeout = Some(timeouts.connect);
    peer.options.read_timeout = Some(timeouts.read);
    peer.options.write_timeout = Some(timeouts.send);
    peer.options.idle_timeout = upstream.idle_timeout;
}

/// Whether another attempt may start: retries left, an untried node left, and still
/// within `retry_timeout`.
pub fn may_retry(ctx: &RequestCtx) -> bool {
    let Some(upstream) = ctx.route.as_ref().and_then(|r| r.upstream.as_ref()) else {
        return false;
    };
    if ctx.response_started || ctx.attempts > upstream.retries + ctx.extra_tries {
        return false;
    }
    if let (Some(limit), Some(first)) = (upstream.retry_timeout, ctx.first_attempt) {
        if first.elapsed() >= limit {
            return false;
        }
    }
    let all_unhealthy = upstream.all_unhealthy();
    upstream.nodes.iter().enumerate().any(|(i, n)| {
        n.weight > 0 && !ctx.tried.contains(&i) && (all_unhealthy || upstream.is_healthy(i))
    })
}

/// Passive health check: reports the outcome of the current attempt on its node.
fn report(health_registry: &HealthRegistry, ctx: &RequestCtx, outcome: Outcome) {
    let Some(upstream) = ctx.route.as_ref().and_then(|r| r.upstream.as_ref()) else {
        return;
    };
    let (Some(health), Some(i)) = (&upstream.health, ctx.tried.last()) else {
        return;
    };
    if let Some(node) = health.nodes.get(*i) {
        health_registry.report(node, &health.spec, outcome);
    }
}

/// How a failed attempt counts for passive health checks.
fn outcome_of(e: &Error) -> Outcome {
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => Outcome::Timeout,
        _ => Outcome::TcpFailure,
    }
}

/// Connect failures are always safe to retry: nothing reached the upstream.
pub fn on_connect_failure(
    health: &HealthRegistry,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
) -> Box<Error> {
    report(health, ctx, outcome_of(&e));
    e.set_retry(may_retry(ctx));
    e
}

/// How many times one request may retry a pooled connection the upstream had closed.
const MAX_STALE_RETRIES: u8 = 2;

/// Errors after connecting: retry only before the response started, for requests that
/// can be replayed (idempotent method, body still in the retry buffer), as nginx's
/// `proxy_next_upstream` does by default.
///
/// An error on the client's side (it closed, its body stalled, its request was refused)
/// says nothing about the node and leaves nobody to answer: neither a passive health
/// report nor a retry. Otherwise a client could eject nodes by hanging up.
///
/// A pooled keep-alive connection the upstream closed while idle (Pingora marks such
/// errors `ReusedOnly`) says nothing about the node: that retry may go to the same node
/// and does not use up one of the upstream's `retries`.
pub fn on_proxy_error(
    health: &HealthRegistry,
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut e: Box<Error>,
    client_reused: bool,
) -> Box<Error> {
    if matches!(e.esource(), ErrorSource::Downstream) {
        e.set_retry(false);
        return e;
    }
    let replayable =
        session.req_header().method.is_idempotent() && !session.as_ref().retry_buffer_truncated();
    if !replayable || ctx.response_started {
        if !ctx.response_started {
            report(health, ctx, outcome_of(&e));
        }
        e.set_retry(false);
        return e;
    }
    let stale_pooled = client_reused && matches!(e.retry, RetryType::ReusedOnly);
    if stale_pooled && ctx.stale_retries < MAX_STALE_RETRIES {
        ctx.stale_retries += 1;
        ctx.attempts = ctx.attempts.saturating_sub(1);
        ctx.tried.pop();
        e.set_retry(true);
        return e;
    }
    report(health, ctx, outcome_of(&e));
    e.set_retry(may_retry(ctx));
    e
}

/// The upstream's response header arrived: record the upstream time, stop retrying,
/// report the status for passive health checks.
pub fn on_response_header(health: &HealthRegistry, ctx: &mut RequestCtx, status: u16) {
    report(health, ctx, Outcome::Status(status));
    ctx.response_started = true;
    ctx.upstream_status = Some(status);
    ctx.upstream_duration = ctx.attempt_started.map(|t| t.elapsed());
}

#[cfg(test)]
mod tests {
    use super::request_policy;
    use pingora::upstreams::peer::H1UpgradePolicy;

    #[test]
    fn upgrades_are_forwarded_only_with_enable_websocket() {
        assert_eq!(
            request_policy(true).h1_upgrade,
            H1UpgradePolicy::WebSocketOnly
        );
        assert_eq!(request_policy(false).h1_upgrade, H1UpgradePolicy::Deny);
        // Hop-by-hop headers are stripped either way.
        assert!(request_policy(true).strip_hop_by_hop && request_policy(false).strip_hop_by_hop);
    }
}
