//! The phase runner: the request's plugin chain (Lua and native steps, dynacode snippets
//! first) at each OpenResty phase, the request's Lua state, and what Lua answered.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use portico_plugins::lua::{
    method_name, BodyState, CallOutcome, ConnVars, LuaRequest, RequestLine, SharedRequest,
    WorkerVms, MAX_READ_BODY,
};
use portico_plugins::{ChainEntry, NativeOutcome, Phase, PluginChain, Step};

use super::ctx::{LuaCtx, RequestCtx};
use crate::metrics::Metrics;

/// What the hooks need to run Lua.
pub struct LuaEnv<'a> {
    pub workers: &'a WorkerVms,
    pub metrics: &'a Metrics,
    /// The `Server` header of every response (`server_header`); `None` sends none.
    pub server_header: Option<&'a http::HeaderValue>,
    /// `proxy.client_max_body_size` in bytes.
    pub max_read_body: usize,
}

/// How a phase ended.
#[derive(Debug)]
pub enum PhaseResult {
    Continue,
    /// Answer now with this status; `body: None` means the output buffered by `ngx.say`.
    Respond {
        status: u16,
        body: Option<Vec<u8>>,
    },
    /// A function failed in a phase where that fails the request (500).
    Failed,
}

/// The chain this request runs: its consumer's merge with its route's once an
/// authenticated consumer has plugins of its own, its route's, or the global rules' when
/// none matched.
pub fn chain(ctx: &RequestCtx) -> Arc<PluginChain> {
    if let Some(c) = &ctx.consumer_chain {
        return Arc::clone(c);
    }
    match &ctx.route {
        Some(r) => Arc::clone(&r.chain),
        None => Arc::clone(&ctx.snap.global_chain),
    }
}

/// Whether anything runs in this phase of this request: the same answer as
/// `!PhaseEntries::of(ctx, phase).is_empty()`, without building the entries (the
/// plain-proxy path asks this for every phase of every request).
pub fn has_phase(ctx: &RequestCtx, phase: Phase) -> bool {
    let chain = match (&ctx.consumer_chain, &ctx.route) {
        (Some(c), _) => c,
        (None, Some(r)) => &r.chain,
        (None, None) => &ctx.snap.global_chain,
    };
    if !chain.phase(phase).is_empty() {
        return true;
    }
    match &ctx.snap.dynacode {
        Some(d) => d.has_entries(&ctx.dynacode, phase),
        _ => false,
    }
}

/// What runs in one phase of this request: the matching dynacode snippets first (they
/// are server-wide, like OpenResty's http-level handlers), then the plugin chain.
pub struct PhaseEntries {
    dynacode: Vec<ChainEntry>,
    chain: Arc<PluginChain>,
    phase: Phase,
}

impl PhaseEntries {
    pub fn of(ctx: &RequestCtx, phase: Phase) -> PhaseEntries {
        let dynacode = match &ctx.snap.dynacode {
            Some(d) if !ctx.dynacode.is_empty() => d.entries(&ctx.dynacode, phase),
            _ => Vec::new(),
        };
        PhaseEntries {
            dynacode,
            chain: chain(ctx),
            phase,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &ChainEntry> {
        self.dynacode.iter().chain(self.chain.phase(self.phase))
    }

    pub fn is_empty(&self) -> bool {
        self.dynacode.is_empty() && self.chain.phase(self.phase).is_empty()
    }
}

/// This machine's host name (`ngx.var.hostname`), read once.
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// The Lua view of the downstream request, made at the first Lua phase.
fn lua_request(session: &Session, ctx: &RequestCtx) -> LuaRequest {
    let req = session.req_header();
    let client = super::native::client_addr(session, ctx);
    let server = session.server_addr().and_then(|a| a.as_inet());
    let host = super::view::request_host(session).into_owned();
    let conn = ConnVars {
        hostname: hostname(),
        host,
        scheme: super::view::scheme(session),
        ssl_server_name: super::view::ssl_server_name(session).unwrap_or_default(),
        client_ip: client.map(|a| a.ip()),
        client_port: client.map(|a| a.port()),
        server_ip: server.map(|a| a.ip()),
        server_port: server.map(|a| a.port()),
    };
    let line = RequestLine {
        method: method_name(&req.method),
        uri: req.uri.path().to_string(),
        args: req.uri.query().map(str::to_string),
    };
    // `ngx.var.request_time` and `ngx.req.start_time()` count from the request's
    // arrival, not from its first Lua phase.
    LuaRequest::arrived(
        line,
        req.headers.clone(),
        conn,
        ctx.started,
        Arc::clone(&ctx.snap.lua_libraries),
    )
}

/// The request's Lua state, created at its first Lua phase, with the variables that
/// change during the request (`upstream_addr`, `status`) brought up to date.
pub(super) fn ensure<'c>(
    session: &Session,
    ctx: &'c mut RequestCtx,
    env: &LuaEnv<'_>,
) -> Result<&'c LuaCtx, ()> {
    if ctx.lua.is_none() {
        let vm = env.workers.current().map_err(|e| {
            tracing::error!("{e}");
        })?;
        let req = lua_request(session, ctx);
        ctx.lua = Some(LuaCtx {
            vm,
            req: req.shared(),
            tried_seen: 0,
        });
    }
    // `upstream_addr` changes only when a node was tried since the last phase.
    let tried = ctx.tried.len();
    let upstream_addr = match &ctx.lua {
        Some(l) if l.tried_seen == tried => None,
        _ => upstream_addr(ctx),
    };
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status);
    if let Some(l) = ctx.lua.as_mut() {
        l.tried_seen = tried;
    }
    let lua = ctx.lua.as_ref().ok_or(())?;
    {
        let mut r = lua.req.lock();
        if upstream_addr.is_some() {
            r.upstream_addr = upstream_addr;
        }
        if let Some(status) = status {
            r.status = status;
        }
        // A client address set after the Lua state was made (`real-ip` after a Lua
        // global rule) reaches `ngx.var.remote_addr` too.
        if let Some(client) = ctx.client_override {
            if r.conn.client_ip != Some(client.ip) {
                r.conn.client_ip = Some(client.ip);
                if client.port.is_some() {
                    r.conn.client_port = client.port;
                }
            }
        }
        if r.consumer_name.is_none() {
            r.consumer_name = ctx.consumer.as_ref().map(|c| Arc::clone(&c.username));
        }
    }
    Ok(lua)
}

/// Runs the steps of a phase that may yield (rewrite, access, content, before_proxy,
/// log): Lua functions and native plugins, in chain order.
pub async fn run_phase(
    session: &mut Session,
    ctx: &mut RequestCtx,
    phase: Phase,
    env: &LuaEnv<'_>,
) -> PhaseResult {
    if !has_phase(ctx, phase) {
        return PhaseResult::Continue;
    }
    let entries = PhaseEntries::of(ctx, phase);
    run_entries(session, ctx, phase, env, entries).await
}

/// After the rewrite phase: when the request authenticated as a consumer with plugins of
/// its own, switch to the route's chain for that consumer (built at apply time) and run
/// the consumer's own rewrite steps (APISIX's `rewrite_in_consumer`).
pub async fn enter_consumer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    env: &LuaEnv<'_>,
) -> PhaseResult {
    let found = match (&ctx.consumer, &ctx.route) {
        (Some(c), Some(r)) => r
            .consumer_chains
            .get(&c.username)
            .map(|cc| (Arc::clone(&cc.chain), Arc::clone(&cc.own))),
        _ => None,
    };
    let Some((merged, own)) = found else {
        return PhaseResult::Continue;
    };
    ctx.consumer_chain = Some(merged);
    if own.phase(Phase::Rewrite).is_empty() {
        return PhaseResult::Continue;
    }
    let entries = PhaseEntries {
        dynacode: Vec::new(),
        chain: own,
        phase: Phase::Rewrite,
    };
    run_entries(session, ctx, Phase::Rewrite, env, entries).await
}

/// Runs `entries` of a phase that may yield, in order.
async fn run_entries(
    session: &mut Session,
    ctx: &mut RequestCtx,
    phase: Phase,
    env: &LuaEnv<'_>,
    entries: PhaseEntries,
) -> PhaseResult {
    let mut lua_time = None;
    let mut result = PhaseResult::Continue;
    for entry in entries.iter() {
        let function = match &entry.step {
            Step::Lua(f) => f,
            Step::Native(plugin) => {
                match super::native::request_step(session, ctx, phase, plugin).await {
                    NativeOutcome::Continue => continue,
                    NativeOutcome::Respond { .. } if phase == Phase::Log => continue,
                    NativeOutcome::Respond { status, body } => {
                        let route = ctx.route.as_ref().map_or("", |r| r.id.as_str());
                        env.metrics.plugins.count_rejected(&entry.plugin, route);
                        result = PhaseResult::Respond {
                            status,
                            body: Some(body.to_vec()),
                        };
                        break;
                    }
                }
            }
        };
        let Ok(lua) = ensure(session, ctx, env) else {
            result = failed(phase);
            break;
        };
        lua_time.get_or_insert_with(Instant::now);
        {
            let mut r = lua.req.lock();
            r.phase = phase;
            r.plugin = Arc::clone(&entry.plugin);
        }
        let call = lua.vm.call(function, &lua.req);
        tokio::pin!(call);
        // Most calls finish without yielding: try once before setting up the wait.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(r) => r,
            // `ngx.req.read_body()` yields and asks for the body: read it here, where the
            // connection is, while the call waits.
            Poll::Pending => {
                // A `notify_one` sent before this wait starts is kept as a permit.
                let signals = lua.req.lock().body_signals();
                loop {
                    tokio::select! {
                        r = &mut call => break r,
                        _ = signals.wanted.notified() => {
                            read_body(session, &lua.req, env.max_read_body).await
                        }
                    }
                }
            }
        };
        if lua.req.lock().body == BodyState::TooLarge {
            result = PhaseResult::Respond {
                status: 413,
                body: None,
            };
            break;
        }
        match outcome {
            Ok(CallOutcome::Continue) => {}
            Ok(CallOutcome::Respond { status, body }) => {
                if phase == Phase::Log {
                    continue;
                }
                result = PhaseResult::Respond { status, body };
                break;
            }
            Err(e) => {
                report(env, &entry.plugin, phase, &e);
                if phase.fails_request() && !contained(entry, &e) {
                    result = PhaseResult::Failed;
                    break;
                }
            }
        }
    }
    if let Some(started) = lua_time {
        env.metrics
            .observe_lua_phase(phase, started.elapsed().as_secs_f64());
    }
    result
}

/// Runs the Lua functions of a phase that must not yield (header_filter, body_filter,
/// balancer). Failures are logged; returns false if any function failed (the balancer
/// then fails the request; the filters let the response go on, as in OpenResty).
pub fn run_sync_phase(
    session: &Session,
    ctx: &mut RequestCtx,
    phase: Phase,
    env: &LuaEnv<'_>,
) -> bool {
    if !has_phase(ctx, phase) {
        return true;
    }
    let entries = PhaseEntries::of(ctx, phase);
    let lua_entries: Vec<&ChainEntry> = entries.iter().filter(|e| is_lua(e)).collect();
    run_sync_entries(session, ctx, phase, env, &lua_entries)
}

pub(super) fn is_lua(entry: &ChainEntry) -> bool {
    matches!(entry.step, Step::Lua(_))
}

/// Runs `entries` (Lua steps) of a synchronous phase, in order.
pub(super) fn run_sync_entries(
    session: &Session,
    ctx: &mut RequestCtx,
    phase: Phase,
    env: &LuaEnv<'_>,
    entries: &[&ChainEntry],
) -> bool {
    if entries.is_empty() {
        return true;
    }
    let Ok(lua) = ensure(session, ctx, env) else {
        return false;
    };
    let started = Instant::now();
    lua.req.lock().phase = phase;
    let mut ok = true;
    for entry in entries {
        let Step::Lua(function) = &entry.step else {
            continue;
        };
        lua.req.lock().plugin = std::sync::Arc::clone(&entry.plugin);
        if let Err(e) = lua.vm.call_sync(function, &lua.req) {
            report(env, &entry.plugin, phase, &e);
            if contained(entry, &e) {
                continue;
            }
            ok = false;
            if phase.fails_request() {
                break;
            }
        }
    }
    env.metrics
        .observe_lua_phase(phase, started.elapsed().as_secs_f64());
    ok
}

/// The `balancer` phase of one attempt: what `ngx.balancer` asked for.
pub struct BalancerChoice {
    /// `set_current_peer(host, port)`: the address to use instead of the picked node.
    pub peer: Option<std::net::SocketAddr>,
    /// `set_more_tries(n)`.
    pub more_tries: Option<u32>,
}

/// Runs the `balancer` functions for this attempt. `Err` fails the request: the code
/// failed, or named a peer that is not an IP address (OpenResty requires one too).
pub fn run_balancer(
    session: &Session,
    ctx: &mut RequestCtx,
    env: &LuaEnv<'_>,
) -> Result<Option<BalancerChoice>> {
    if !has_phase(ctx, Phase::Balancer) {
        return Ok(None);
    }
    if !run_sync_phase(session, ctx, Phase::Balancer, env) {
        return Error::e_explain(HTTPStatus(500), "balancer Lua failed");
    }
    let Some(lua) = &ctx.lua else {
        return Ok(None);
    };
    let mut r = lua.req.lock();
    let peer = match r.balancer_peer.take() {
        Some((host, port)) => {
            let ip: std::net::IpAddr = host.parse().or_err_with(HTTPStatus(500), || {
                format!("ngx.balancer.set_current_peer: `{host}` is not an IP address")
            })?;
            Some(std::net::SocketAddr::new(ip, port))
        }
        None => None,
    };
    Ok(Some(BalancerChoice {
        peer,
        more_tries: r.balancer_more_tries.take(),
    }))
}

/// Reads the request body for `ngx.req.read_body()`, bounded by
/// `proxy.client_max_body_size` (`max`), then wakes the waiting Lua. Pingora keeps the
/// first 64 KiB (its retry buffer) to send upstream afterwards; a larger body can be
/// read and answered by Lua, not proxied (see [`body_not_replayable`]).
async fn read_body(session: &mut Session, req: &SharedRequest, max: usize) {
    session.as_mut().enable_retry_buffering();
    let mut body = bytes::BytesMut::new();
    // nginx answers a declared length over the limit before reading anything.
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let state = loop {
        if declared.is_some_and(|n| n > max) {
            break BodyState::TooLarge;
        }
        match session.as_mut().read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > max => break BodyState::TooLarge,
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break BodyState::Read(body.freeze()),
            Err(e) => {
                tracing::debug!("cannot read the request body for Lua: {e}");
                break BodyState::Read(bytes::Bytes::new());
            }
        }
    };
    let signals = {
        let mut r = req.lock();
        r.body = state;
        r.body_signals()
    };
    signals.ready.notify_one();
}

/// Lua read a body larger than Pingora can send upstream after it was read (its 64 KiB
/// retry buffer): such a request can be answered by Lua but not proxied.
pub fn body_not_replayable(session: &Session, ctx: &RequestCtx) -> bool {
    let read_by_lua = ctx.lua.as_ref().is_some_and(
        |l| matches!(&l.req.lock().body, BodyState::Read(b) if b.len() > MAX_READ_BODY),
    );
    read_by_lua && session.as_ref().retry_buffer_truncated()
}

/// `ngx.var.upstream_addr`: the nodes tried so far, as nginx lists them (`a, b`).
fn upstream_addr(ctx: &RequestCtx) -> Option<String> {
    let upstream = ctx.route.as_ref()?.upstream.as_ref()?;
    if ctx.tried.is_empty() {
        return None;
    }
    let mut out = String::new();
    for node in ctx.tried.iter().filter_map(|i| upstream.nodes.get(*i)) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&node.addr_text);
    }
    Some(out)
}

/// A dynacode snippet's runtime error is logged and the request goes on (dynacode runs
/// each snippet under `pcall`); timeouts and memory errors still fail it.
fn contained(entry: &ChainEntry, e: &portico_plugins::lua::LuaFailure) -> bool {
    entry.contain_errors && matches!(e, portico_plugins::lua::LuaFailure::Error(_))
}

fn failed(phase: Phase) -> PhaseResult {
    if phase.fails_request() {
        PhaseResult::Failed
    } else {
        PhaseResult::Continue
    }
}

fn report(env: &LuaEnv<'_>, plugin: &str, phase: Phase, e: &portico_plugins::lua::LuaFailure) {
    env.metrics.count_lua_error(plugin, phase, e.kind());
    tracing::error!(
        plugin,
        phase = phase.name(),
        kind = e.kind(),
        "Lua failed: {e}"
    );
}

/// The body of a Lua-generated response: the returned body, else the `ngx.say` output.
pub fn take_output(ctx: &RequestCtx, body: Option<Vec<u8>>) -> Bytes {
    match body {
        Some(b) => Bytes::from(b),
        None => ctx
            .lua
            .as_ref()
            .map(|l| Bytes::from(std::mem::take(&mut l.req.lock().output)))
            .unwrap_or_default(),
    }
}

/// Headers Lua set with `ngx.header` before answering itself.
pub fn lua_response_headers(ctx: &RequestCtx) -> Option<http::HeaderMap> {
    ctx.lua
        .as_ref()
        .map(|l| l.req.lock().response_headers.clone())
}
