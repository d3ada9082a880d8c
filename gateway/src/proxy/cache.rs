//! The `proxy-cache` plugin on Pingora's cache hooks: each function here is one hook of
//! `impl ProxyHttp for Gateway`, reading the route's resolved cache (apply time) and
//! delegating decisions to [`crate::cache::policy`].
//!
//! Flow: `request_cache_filter` enables the cache for a route with `proxy-cache` (unless
//! the request bypasses it) and renders the key; Pingora looks the key up, waits on the
//! zone's cache lock when another request is filling it, and asks
//! `response_cache_filter` whether an upstream response is stored; `response_header`
//! adds the status header on every response of such a route, hit or not.

use std::time::{Duration, SystemTime};

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, CacheOptionOverrides, NoCacheReason, RespCacheable};

use super::ctx::RequestCtx;
use crate::cache::policy::{self, CacheStatus};

/// How long a request waits for another request filling the same key before it goes
/// upstream itself (nginx's `proxy_cache_lock_timeout` is 5 s).
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn is_purge_method(req: &RequestHeader) -> bool {
    req.method.as_str() == "PURGE"
}

/// `request_cache_filter`.
pub fn enable(session: &mut Session, ctx: &mut RequestCtx) {
    let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.clone()) else {
        return;
    };
    ctx.cache.active = true;
    let host = super::view::request_host(session);
    let conn = super::native::conn_info(session, ctx.client_override);
    let mut view = super::view::request_view(session, &host);
    // The client address a plugin (`real-ip`) set, as every later variable sees it.
    view.remote_addr = conn.client_ip;
    view.remote_port = conn.client_port;
    view.consumer_name = ctx.consumer.as_ref().map(|c| &*c.username);
    let purge = is_purge_method(session.req_header());
    if !purge && policy::bypasses(&rc.conf, &view) {
        ctx.cache.bypass = true;
        return;
    }
    ctx.cache.no_cache = policy::vars_say_yes(&rc.conf.no_cache, &view);
    ctx.cache.key = Some(policy::primary_key(&rc.conf, &view));
    let mut overrides = CacheOptionOverrides::default();
    overrides.wait_timeout = Some(LOCK_WAIT);
    session.cache.enable(
        rc.tier.storage,
        Some(rc.tier.eviction),
        None,
        Some(rc.zone.lock),
        Some(overrides),
    );
    session.cache.set_max_file_size_bytes(rc.tier.max_entry);
}

/// `cache_key_callback`.
pub fn key(ctx: &RequestCtx) -> CacheKey {
    CacheKey::new(ctx.cache.key.clone().unwrap_or_default(), "")
}

/// `is_purge`: `PURGE` on a caching route.
pub fn is_purge(session: &Session, ctx: &RequestCtx) -> bool {
    ctx.cache.active && is_purge_method(session.req_header()) && session.cache.enabled()
}

/// `response_cache_filter`.
pub fn cacheable(session: &Session, resp: &ResponseHeader, ctx: &RequestCtx) -> RespCacheable {
    let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
        return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
    };
    // A HEAD response has no body to serve a later GET with: looked up, never stored.
    if session.req_header().method == http::Method::HEAD {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("HEAD"));
    }
    match policy::freshness(
        &rc.conf,
        resp.status.as_u16(),
        &resp.headers,
        ctx.cache.no_cache,
    ) {
        Ok(f) => {
            let now = SystemTime::now();
            RespCacheable::Cacheable(CacheMeta::new(
                now + f.ttl,
                now,
                f.stale_while_revalidate,
                f.stale_if_error,
                resp.clone(),
            ))
        }
        Err(reason) => RespCacheable::Uncacheable(NoCacheReason::Custom(reason)),
    }
}

/// `cache_vary_filter`.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    policy::variance(meta.headers(), &req.headers)
}

/// In `response_filter`, for every response of a caching route (hit or not): the status
/// header, the zone's counters, and `hide_cache_headers`.
pub fn response_header(session: &Session, ctx: &RequestCtx, resp: &mut ResponseHeader) {
    if !ctx.cache.active {
        return;
    }
    let Some(rc) = ctx.route.as_ref().and_then(|r| r.cache.as_ref()) else {
        return;
    };
    let status = if ctx.cache.bypass {
        CacheStatus::Bypass
    } else {
        CacheStatus::of_phase(session.cache.phase())
    };
    match status {
        CacheStatus::Hit | CacheStatus::Stale => rc.zone.counters.count_hit(),
        CacheStatus::Miss | CacheStatus::Expired => rc.zone.counters.count_miss(),
        CacheStatus::Bypass => {}
    }
    if let Some(zones) = crate::cache::zone::installed() {
        let _ = resp.insert_header(zones.status_header.clone(), status.as_str());
    }
    if rc.conf.hide_cache_headers {
        resp.remove_header(&http::header::CACHE_CONTROL);
        resp.remove_header(&http::header::EXPIRES);
    }
}
