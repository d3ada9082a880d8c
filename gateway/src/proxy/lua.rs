//! Running the request's plugin chain at each OpenResty phase, and carrying what Lua
//! changed back into the request, the upstream request and the response.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use portico_plugins::lua::{
    BodyState, CallOutcome, ConnVars, LuaRequest, LuaVm, SharedRequest, WorkerVms, MAX_READ_BODY,
};
use portico_plugins::{ChainEntry, NativeOutcome, Phase, PluginChain, Step};

use super::ctx::RequestCtx;
use crate::metrics::Metrics;

/// The request's VM and Lua-side state, kept from its first Lua phase to its last.
pub struct LuaCtx {
    pub vm: Arc<LuaVm>,
    pub req: SharedRequest,
    /// `ctx.tried.len()` when `upstream_addr` was last brought up to date.
    tried_seen: usize,
}

/// What the hooks need to run Lua.
pub struct LuaEnv<'a> {
    pub workers: &'a WorkerVms,
    pub metrics: &'a Metrics,
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

/// The chain this request runs: its route's, or the global rules' when none matched.
pub fn chain(ctx: &RequestCtx) -> Arc<PluginChain> {
    match &ctx.route {
        Some(r) => Arc::clone(&r.chain),
        None => Arc::clone(&ctx.snap.global_chain),
    }
}

/// Whether anything runs in this phase of this request: the same answer as
/// `!PhaseEntries::of(ctx, phase).is_empty()`, without building the entries (the
/// plain-proxy path asks this for every phase of every request).
pub fn has_phase(ctx: &RequestCtx, phase: Phase) -> bool {
    let chain = match &ctx.route {
        Some(r) => &r.chain,
        None => &ctx.snap.global_chain,
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
fn lua_request(session: &Session) -> LuaRequest {
    let req = session.req_header();
    let client = session.client_addr().and_then(|a| a.as_inet());
    let server = session.server_addr().and_then(|a| a.as_inet());
    let host = super::request::request_host(session).into_owned();
    let conn = ConnVars {
        hostname: hostname().to_string(),
        host,
        scheme: "http",
        remote_addr: client.map(|a| a.ip().to_string()).unwrap_or_default(),
        remote_port: client.map(|a| a.port().to_string()).unwrap_or_default(),
        server_addr: server.map(|a| a.ip().to_string()).unwrap_or_default(),
        server_port: server.map(|a| a.port().to_string()).unwrap_or_default(),
    };
    LuaRequest::new(
        req.method.as_str().to_string(),
        req.uri.path().to_string(),
        req.uri.query().map(str::to_string),
        req.headers.clone(),
        conn,
    )
}

/// The request's Lua state, created at its first Lua phase, with the variables that
/// change during the request (`upstream_addr`, `status`) brought up to date.
fn ensure<'c>(
    session: &Session,
    ctx: &'c mut RequestCtx,
    env: &LuaEnv<'_>,
) -> Result<&'c LuaCtx, ()> {
    if ctx.lua.is_none() {
        let vm = env.workers.current().map_err(|e| {
            tracing::error!("{e}");
        })?;
        let mut req = lua_request(session);
        // `ngx.var.request_time` and `ngx.req.start_time()` count from the request's
        // arrival, not from its first Lua phase.
        req.started = ctx.started;
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
    let mut lua_time = None;
    let mut result = PhaseResult::Continue;
    for entry in entries.iter() {
        let function = match &entry.step {
            Step::Lua(f) => f,
            Step::Native(plugin) => {
                match super::native::request_step(session, ctx, phase, plugin) {
                    NativeOutcome::Continue => continue,
                    NativeOutcome::Respond { .. } if phase == Phase::Log => continue,
                    NativeOutcome::Respond { status, body } => {
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
        let wanted = {
            let mut r = lua.req.lock();
            r.phase = phase;
            r.plugin = Arc::clone(&entry.plugin);
            Arc::clone(&r.body_wanted)
        };
        let call = lua.vm.call(function, &lua.req);
        tokio::pin!(call);
        // Most calls finish without yielding: try once before setting up the wait.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        let outcome = match first {
            Poll::Ready(r) => r,
            // `ngx.req.read_body()` yields and asks for the body: read it here, where the
            // connection is, while the call waits.
            Poll::Pending => loop {
                tokio::select! {
                    r = &mut call => break r,
                    _ = wanted.notified() => read_body(session, &lua.req).await,
                }
            },
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

fn is_lua(entry: &ChainEntry) -> bool {
    matches!(entry.step, Step::Lua(_))
}

/// Runs `entries` (Lua steps) of a synchronous phase, in order.
fn run_sync_entries(
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

/// Reads the request body for `ngx.req.read_body()`, bounded by what Pingora can replay
/// to the upstream afterwards (its retry buffer), then wakes the waiting Lua.
async fn read_body(session: &mut Session, req: &SharedRequest) {
    session.as_mut().enable_retry_buffering();
    let mut body = bytes::BytesMut::new();
    let state = loop {
        match session.as_mut().read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_READ_BODY => {
                break BodyState::TooLarge
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break BodyState::Read(body.freeze()),
            Err(e) => {
                tracing::debug!("cannot read the request body for Lua: {e}");
                break BodyState::Read(bytes::Bytes::new());
            }
        }
    };
    let ready = {
        let mut r = req.lock();
        r.body = state;
        Arc::clone(&r.body_ready)
    };
    ready.notify_one();
}

/// `ngx.var.upstream_addr`: the nodes tried so far, as nginx lists them (`a, b`).
fn upstream_addr(ctx: &RequestCtx) -> Option<String> {
    let upstream = ctx.route.as_ref()?.upstream.as_ref()?;
    if ctx.tried.is_empty() {
        return None;
    }
    let addrs: Vec<String> = ctx
        .tried
        .iter()
        .filter_map(|i| upstream.nodes.get(*i))
        .map(|n| n.addr.to_string())
        .collect();
    Some(addrs.join(", "))
}

/// A dynacode snippet's runtime error is logged and the request goes on (dynacode runs
/// each snippet under `pcall`); timeouts and memory errors still fail it.
fn contained(entry: &ChainEntry, e: &portico_plugins::lua::LuaFailure) -> bool {
    entry.contain_errors && e.kind() == "error"
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

/// Runs `header_filter` on a response header (proxied or local) and writes back what
/// Lua changed. Returns whether the route has body filters (the length may change).
pub fn filter_response_header(
    session: &Session,
    ctx: &mut RequestCtx,
    header: &mut ResponseHeader,
    env: &LuaEnv<'_>,
) -> Result<bool> {
    let has_header_filter = has_phase(ctx, Phase::HeaderFilter);
    let has_body_filter = has_phase(ctx, Phase::BodyFilter);
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
    let gone: Vec<http::HeaderName> = header
        .headers
        .keys()
        .filter(|name| !r.response_headers.contains_key(*name))
        .cloned()
        .collect();
    for name in gone {
        header.remove_header(&name);
    }
    // Only the headers whose values differ are rewritten: rewriting every header costs
    // more than the Lua that changed one.
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

/// Writes what Lua changed in the request so far into the session's request header, so
/// a native step sees it; Lua's later changes are applied upstream as usual.
pub fn flush_request_changes(session: &mut Session, ctx: &RequestCtx) -> Result<()> {
    let Some(lua) = &ctx.lua else {
        return Ok(());
    };
    if !lua.req.lock().request_changed {
        return Ok(());
    }
    let original = session.req_header().headers.clone();
    apply_request_changes(ctx, &original, session.req_header_mut())?;
    lua.req.lock().request_changed = false;
    Ok(())
}

/// Lua's view of the request headers, after a native step changed them.
pub fn reload_request_headers(session: &Session, ctx: &RequestCtx) {
    if let Some(lua) = &ctx.lua {
        lua.req.lock().headers = session.req_header().headers.clone();
    }
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
    // The filters' failures are logged; the chunk goes on as Lua left it.
    if let Ok(lua) = ensure(session, ctx, env) {
        let mut r = lua.req.lock();
        r.chunk = Some(body.take().unwrap_or_default());
        r.eof = eof;
    }
    let _ = run_sync_phase(session, ctx, Phase::BodyFilter, env);
    if let Some(lua) = &ctx.lua {
        *body = lua.req.lock().chunk.take();
    }
}

/// Applies what Lua changed in the request (method, uri, args, headers) to the request
/// that goes upstream.
pub fn apply_request_changes(
    ctx: &RequestCtx,
    original: &http::HeaderMap,
    upstream: &mut RequestHeader,
) -> Result<()> {
    let Some(lua) = &ctx.lua else {
        return Ok(());
    };
    let r = lua.req.lock();
    if !r.request_changed {
        return Ok(());
    }
    if r.method != upstream.method.as_str() {
        let method = http::Method::from_bytes(r.method.as_bytes())
            .or_err(InternalError, "Lua set an invalid method")?;
        upstream.set_method(method);
    }
    let path_and_query = match &r.args {
        Some(a) => format!("{}?{a}", r.uri),
        None => r.uri.clone(),
    };
    if upstream.uri.path_and_query().map(|p| p.as_str()) != Some(path_and_query.as_str()) {
        let uri = http::Uri::builder()
            .path_and_query(path_and_query)
            .build()
            .or_err(InternalError, "Lua set an invalid uri")?;
        upstream.set_uri(uri);
    }
    for name in original.keys() {
        if !r.headers.contains_key(name) {
            upstream.remove_header(name);
        }
    }
    // Headers whose values are already what Lua left are not rewritten (the result is
    // the same; rewriting all of them was most of the cost).
    for name in r.headers.keys() {
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

/// Whether `name` has the same values, in the same order, in both maps.
fn same_values(a: &http::HeaderMap, b: &http::HeaderMap, name: &http::HeaderName) -> bool {
    a.get_all(name).iter().eq(b.get_all(name).iter())
}
