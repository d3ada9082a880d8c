//! Request phases: route matching (`request_filter`) and the upstream request
//! (`upstream_request_filter`).

use std::net::IpAddr;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::local;
use super::phases::{self, LuaEnv, PhaseResult};
use super::view::{request_host, request_view};
use crate::config::PassHost;
use portico_plugins::Phase;

/// Matches the request to a route and runs its `rewrite` and `access` phases. Writes the
/// response itself (returns `Ok(true)`) when there is nothing to proxy to or Lua answered.
pub async fn route_request(
    session: &mut Session,
    ctx: &mut RequestCtx,
    env: &LuaEnv<'_>,
) -> Result<bool> {
    // Before anything reads the request (docs/security.md, "HTTP edge").
    if let Err(e) = super::sanitize::normalize_path(session.req_header_mut()) {
        tracing::debug!("400 for path {:?}: {e}", session.req_header().uri.path());
        respond_json(session, ctx, 400, r#"{"error_msg":"400 Bad Request"}"#, env).await?;
        return Ok(true);
    }
    super::sanitize::drop_underscore_headers(session.req_header_mut());
    if super::sanitize::must_close_after(session.req_header()) {
        session.set_keepalive(None);
    }
    let host = request_host(session);
    if let Some(why) = super::mtls::refusal(session, &ctx.snap, &host) {
        tracing::warn!("400 on a mutual-TLS connection: {why}");
        drop(host);
        respond_json(session, ctx, 400, r#"{"error_msg":"400 Bad Request"}"#, env).await?;
        return Ok(true);
    }
    let (route, hash_key) = {
        let view = request_view(session, &host);
        let route = ctx
            .snap
            .router
            .find(&view)
            .and_then(|i| ctx.snap.routes.get(i))
            .cloned();
        let hash_key = route
            .as_ref()
            .and_then(|r| r.upstream.as_ref())
            .and_then(|u| u.hash_key.as_ref())
            .map(|k| match k.extract(&view) {
                Some(key) => key.into_owned(),
                // APISIX falls back to the client address when the key is missing.
                None => view.remote_addr.map(|a| a.to_string()).unwrap_or_default(),
            });
        (route, hash_key)
    };
    if let Some(dynacode) = &ctx.snap.dynacode {
        ctx.dynacode = dynacode.matching(&host);
    }
    drop(host);
    // With no route, the global rules and the dynacode snippets still run (APISIX runs
    // global rules before its 404); a content snippet may answer the request.
    let Some(route) = route else {
        if let Some(answered) = lua_phases(session, ctx, env).await? {
            return Ok(answered);
        }
        respond_json(
            session,
            ctx,
            404,
            r#"{"error_msg":"404 Route Not Found"}"#,
            env,
        )
        .await?;
        return Ok(true);
    };
    let has_upstream = route.upstream.is_some();
    ctx.route = Some(route);
    ctx.hash_key = hash_key;
    if let Some(answered) = lua_phases(session, ctx, env).await? {
        return Ok(answered);
    }
    if has_upstream && phases::body_not_replayable(session, ctx) {
        tracing::warn!(
            "a request body over 64 KiB read by ngx.req.read_body() cannot be proxied (Pingora replays at most 64 KiB); answered 413"
        );
        respond_json(
            session,
            ctx,
            413,
            r#"{"error_msg":"request body too large to proxy after Lua read it"}"#,
            env,
        )
        .await?;
        return Ok(true);
    }
    if !has_upstream {
        respond_json(
            session,
            ctx,
            503,
            r#"{"error_msg":"missing upstream configuration in Route or Service"}"#,
            env,
        )
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// Runs rewrite, access and (when there is content code) content. `Some(true)`: a
/// response was written; `None`: go on (to the upstream, or the 404).
async fn lua_phases(
    session: &mut Session,
    ctx: &mut RequestCtx,
    env: &LuaEnv<'_>,
) -> Result<Option<bool>> {
    for phase in [Phase::Rewrite, Phase::Access] {
        let mut result = phases::run_phase(session, ctx, phase, env).await;
        if phase == Phase::Rewrite && matches!(result, PhaseResult::Continue) {
            result = phases::enter_consumer(session, ctx, env).await;
        }
        match result {
            PhaseResult::Continue => {}
            PhaseResult::Respond { status, body } => {
                local::respond_from_lua(session, ctx, status, body, env).await?;
                return Ok(Some(true));
            }
            PhaseResult::Failed => {
                local::respond_lua_failure(session, ctx, env).await?;
                return Ok(Some(true));
            }
        }
    }
    // The content phase answers without an upstream (OpenResty `content_by_lua`).
    if !phases::has_phase(ctx, Phase::Content) {
        return Ok(None);
    }
    let (status, body) = match phases::run_phase(session, ctx, Phase::Content, env).await {
        PhaseResult::Continue => (200, None),
        PhaseResult::Respond { status, body } => (status, body),
        PhaseResult::Failed => {
            local::respond_lua_failure(session, ctx, env).await?;
            return Ok(Some(true));
        }
    };
    local::respond_from_lua(session, ctx, status, body, env).await?;
    Ok(Some(true))
}

/// Writes a complete JSON response the gateway generates (keep-alive is preserved).
pub async fn respond_json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: &'static str,
    env: &LuaEnv<'_>,
) -> Result<()> {
    let body = Bytes::from_static(body.as_bytes());
    local::respond(session, ctx, status, "application/json", body, env).await
}

const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
const HTTP: http::HeaderValue = http::HeaderValue::from_static("http");
const HTTPS: http::HeaderValue = http::HeaderValue::from_static("https");

/// Sets Host per `pass_host` and the forwarding headers users expect from nginx/APISIX.
///
/// The header names are given as `&'static str`: Pingora's `insert_header` turns any name
/// into its case-preserving bytes and parses those, and a static string is the one kind
/// it takes without a copy. The values are built as `HeaderValue`s directly (no
/// `String` on the way, no formatting machinery for the address and port).
pub fn prepare_upstream_request(
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    let route = ctx.route.as_ref();
    let upstream = route.and_then(|r| r.upstream.as_ref());
    let node = upstream.and_then(|u| ctx.tried.last().and_then(|i| u.nodes.get(*i)));
    if let (Some(up), Some(node)) = (upstream, node) {
        match up.pass_host {
            PassHost::Pass => {}
            PassHost::Node => {
                upstream_request.insert_header(http::header::HOST, node.host_header.as_str())?
            }
            PassHost::Rewrite => {
                if let Some(h) = up.upstream_host.as_deref() {
                    upstream_request.insert_header(http::header::HOST, h)?;
                }
            }
        }
    }
    let downstream = &session.req_header().headers;
    if let Some(client) = super::native::client_addr(session, ctx) {
        let mut buf = [0u8; 15];
        let ip_v6;
        let ip: &[u8] = match client.ip() {
            IpAddr::V4(v4) => ipv4_text(v4, &mut buf),
            v6 => {
                ip_v6 = v6.to_string();
                ip_v6.as_bytes()
            }
        };
        let real_ip = http::HeaderValue::from_bytes(ip)
            .or_err(InvalidHTTPHeader, "invalid client address")?;
        let xff = match downstream
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.is_empty() => {
                let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip);
                http::HeaderValue::from_maybe_shared(Bytes::from(v))
                    .or_err(InvalidHTTPHeader, "invalid x-forwarded-for")?
            }
            _ => real_ip.clone(),
        };
        upstream_request.insert_header("x-forwarded-for", xff)?;
        upstream_request.insert_header("x-real-ip", real_ip)?;
    }
    let proto = if super::view::is_tls(session) {
        HTTPS
    } else {
        HTTP
    };
    upstream_request.insert_header("x-forwarded-proto", proto)?;
    if let Some(host) = downstream.get(http::header::HOST) {
        upstream_request.insert_header("x-forwarded-host", host.clone())?;
    }
    if let Some(server) = session.server_addr().and_then(|a| a.as_inet()) {
        upstream_request
            .insert_header("x-forwarded-port", http::HeaderValue::from(server.port()))?;
    }
    Ok(())
}

/// An IPv4 address in dotted-quad text (as its `Display` writes it), in `buf`.
fn ipv4_text(ip: std::net::Ipv4Addr, buf: &mut [u8; 15]) -> &[u8] {
    let mut n = 0;
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    &buf[..n]
}

#[cfg(test)]
mod tests {
    use super::ipv4_text;
    use crate::vars::strip_port;

    #[test]
    fn ipv4_text_matches_display() {
        for ip in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 255, 255, 255],
            [1, 20, 200, 109],
        ] {
            let ip = std::net::Ipv4Addr::from(ip);
            let mut buf = [0u8; 15];
            assert_eq!(ipv4_text(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
        assert_eq!(strip_port("127.0.0.1:9080"), "127.0.0.1");
    }
}
