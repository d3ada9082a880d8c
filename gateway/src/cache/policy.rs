//! What the cache does with a request and a response, as pure functions of the route's
//! `proxy-cache` configuration and the headers: the key, bypass, whether a response is
//! stored and for how long, the `Vary` variance, and the status shown to the client.

use std::time::Duration;

use http::HeaderMap;
use pingora_cache::cache_control::CacheControl;
use pingora_cache::key::HashBinary;
use pingora_cache::{CachePhase, VarianceBuilder};
use portico_plugins::native::proxy_cache::ProxyCacheConf;
use portico_plugins::vars::{RequestView, Template};

/// `Apisix-Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Miss,
    Hit,
    Expired,
    Stale,
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Miss => "MISS",
            CacheStatus::Hit => "HIT",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Stale => "STALE",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// The status of a request the cache handled, from Pingora's phase once the
    /// response header is known. A response that turned out not storable is a `MISS`
    /// (nginx's `$upstream_cache_status` too).
    pub fn of_phase(phase: CachePhase) -> CacheStatus {
        match phase {
            CachePhase::Hit | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
                CacheStatus::Hit
            }
            CachePhase::Stale | CachePhase::StaleUpdating => CacheStatus::Stale,
            CachePhase::Expired => CacheStatus::Expired,
            CachePhase::Bypass => CacheStatus::Bypass,
            CachePhase::Miss
            | CachePhase::Disabled(_)
            | CachePhase::Uninit
            | CachePhase::CacheKey => CacheStatus::Miss,
        }
    }
}

/// APISIX's test for `cache_bypass` and `no_cache`: the values rendered one after the
/// other are neither empty nor `"0"`.
pub fn vars_say_yes(templates: &[Template], view: &RequestView<'_>) -> bool {
    if templates.is_empty() {
        return false;
    }
    let value: String = templates.iter().map(|t| t.render_lossy(view)).collect();
    !value.is_empty() && value != "0"
}

/// The entry's primary key: `cache_key` rendered and concatenated (`$host$request_uri`).
pub fn primary_key(conf: &ProxyCacheConf, view: &RequestView<'_>) -> String {
    conf.cache_key
        .iter()
        .map(|t| t.render_lossy(view))
        .collect()
}

/// Whether a request skips the cache (status `BYPASS`): a method `cache_method` does not
/// list, `cache_bypass`, or with `cache_control`, a client's `no-cache`/`no-store`.
pub fn bypasses(conf: &ProxyCacheConf, view: &RequestView<'_>) -> bool {
    if !conf.cache_method.iter().any(|m| m.as_str() == view.method) {
        return true;
    }
    if vars_say_yes(&conf.cache_bypass, view) {
        return true;
    }
    conf.cache_control
        && CacheControl::from_headers_named("cache-control", view.headers)
            .is_some_and(|cc| cc.no_cache() || cc.no_store())
}

/// How long a stored response stays fresh, and its stale windows (seconds).
#[derive(Debug, PartialEq, Eq)]
pub struct Freshness {
    pub ttl: Duration,
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
}

/// Whether a response is stored, and for how long; `Err` says why not.
///
/// Never stored, whatever `cache_control` says (nginx's default): a response with
/// `Set-Cookie`, `Cache-Control: private` or `no-store`, or `Vary: *`. With
/// `cache_control`, `no-cache` and `max-age=0` are not stored either, and `s-maxage`
/// (else `max-age`) is the TTL, `cache_ttl` when neither is given; without it the TTL is
/// `cache_ttl`.
pub fn freshness(
    conf: &ProxyCacheConf,
    status: u16,
    headers: &HeaderMap,
    no_cache: bool,
) -> Result<Freshness, &'static str> {
    if !conf.cache_http_status.contains(&status) {
        return Err("status not in cache_http_status");
    }
    if no_cache {
        return Err("no_cache");
    }
    if headers.contains_key(http::header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if vary_names(headers).any(|n| n == "*") {
        return Err("vary *");
    }
    let cc = CacheControl::from_headers_named("cache-control", headers);
    if let Some(cc) = &cc {
        if cc.private() {
            return Err("cache-control private");
        }
        if cc.no_store() {
            return Err("cache-control no-store");
        }
    }
    let mut fresh = Freshness {
        ttl: Duration::from_secs(conf.cache_ttl),
        stale_while_revalidate: 0,
        stale_if_error: 0,
    };
    if let (true, Some(cc)) = (conf.cache_control, &cc) {
        if cc.no_cache() {
            return Err("cache-control no-cache");
        }
        let max_age = cc.s_maxage().ok().flatten().or(cc.max_age().ok().flatten());
        match max_age {
            Some(0) => return Err("cache-control max-age=0"),
            Some(secs) => fresh.ttl = Duration::from_secs(u64::from(secs)),
            None => {}
        }
        fresh.stale_while_revalidate = cc.stale_while_revalidate().ok().flatten().unwrap_or(0);
        fresh.stale_if_error = cc.stale_if_error().ok().flatten().unwrap_or(0);
    }
    Ok(fresh)
}

/// The header names a response's `Vary` lists, lowercase.
fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

/// The variance of a request for a stored response's `Vary`: the request's values of the
/// listed headers (absent ones count as empty). `None`: the response does not vary.
pub fn variance(stored: &HeaderMap, request: &HeaderMap) -> Option<HashBinary> {
    let mut builder = VarianceBuilder::new();
    for name in vary_names(stored) {
        let value: Vec<u8> = request
            .get_all(name.as_str())
            .iter()
            .flat_map(|v| v.as_bytes().iter().copied().chain(*b","))
            .collect();
        builder.add_owned_name_value(name, value);
    }
    builder.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conf(v: serde_json::Value) -> ProxyCacheConf {
        ProxyCacheConf::parse(&v).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    fn view<'a>(method: &'a str, query: Option<&'a str>, h: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method,
            path: "/p",
            query,
            host: "example.com",
            headers: h,
            remote_addr: None,
            remote_port: None,
            server_port: None,
            scheme: "http",
            consumer_name: None,
        }
    }

    #[test]
    fn key_and_bypass_from_vars() {
        let c = conf(json!({"cache_bypass": ["$arg_bypass"], "cache_method": ["GET"]}));
        let h = HeaderMap::new();
        assert_eq!(
            primary_key(&c, &view("GET", Some("a=1"), &h)),
            "example.com/p?a=1"
        );
        assert!(!bypasses(&c, &view("GET", None, &h)));
        assert!(!bypasses(&c, &view("GET", Some("bypass=0"), &h)));
        assert!(bypasses(&c, &view("GET", Some("bypass=1"), &h)));
        assert!(bypasses(&c, &view("HEAD", None, &h)));
        let cc = conf(json!({"cache_control": true}));
        let nc = headers(&[("cache-control", "no-cache")]);
        assert!(bypasses(&cc, &view("GET", None, &nc)));
        assert!(!bypasses(&c, &view("GET", None, &nc)));
    }

    #[test]
    fn what_is_stored_and_for_how_long() {
        let plain = conf(json!({"cache_ttl": 10}));
        let cc = conf(json!({"cache_control": true, "cache_ttl": 10}));
        let ttl = |c: &ProxyCacheConf, h: &[(&'static str, &'static str)]| {
            freshness(c, 200, &headers(h), false).map(|f| f.ttl.as_secs())
        };
        assert_eq!(ttl(&plain, &[]), Ok(10));
        assert_eq!(ttl(&plain, &[("cache-control", "max-age=99")]), Ok(10));
        assert_eq!(ttl(&cc, &[("cache-control", "max-age=99")]), Ok(99));
        assert_eq!(
            ttl(&cc, &[("cache-control", "max-age=99, s-maxage=5")]),
            Ok(5)
        );
        assert_eq!(ttl(&cc, &[]), Ok(10));
        assert!(ttl(&cc, &[("cache-control", "max-age=0")]).is_err());
        assert!(ttl(&cc, &[("cache-control", "no-cache")]).is_err());
        assert_eq!(ttl(&plain, &[("cache-control", "no-cache")]), Ok(10));
        for c in [&plain, &cc] {
            assert!(ttl(c, &[("cache-control", "private")]).is_err());
            assert!(ttl(c, &[("cache-control", "no-store")]).is_err());
            assert!(ttl(c, &[("set-cookie", "a=b")]).is_err());
            assert!(ttl(c, &[("vary", "*")]).is_err());
        }
        assert!(freshness(&plain, 500, &HeaderMap::new(), false).is_err());
        assert!(freshness(&plain, 404, &HeaderMap::new(), false).is_ok());
        assert!(freshness(&plain, 200, &HeaderMap::new(), true).is_err());
    }

    #[test]
    fn variance_follows_vary() {
        let stored = headers(&[("vary", "Accept-Encoding, X-Lang")]);
        let a = variance(&stored, &headers(&[("accept-encoding", "gzip")]));
        let b = variance(&stored, &headers(&[("accept-encoding", "br")]));
        let a2 = variance(&stored, &headers(&[("Accept-Encoding", "gzip")]));
        assert!(a.is_some());
        assert_ne!(a, b);
        assert_eq!(a, a2);
        assert_eq!(variance(&HeaderMap::new(), &stored), None);
    }

    #[test]
    fn statuses_of_phases() {
        assert_eq!(CacheStatus::of_phase(CachePhase::Hit).as_str(), "HIT");
        assert_eq!(CacheStatus::of_phase(CachePhase::Miss).as_str(), "MISS");
        assert_eq!(
            CacheStatus::of_phase(CachePhase::Expired).as_str(),
            "EXPIRED"
        );
        assert_eq!(CacheStatus::of_phase(CachePhase::Stale).as_str(), "STALE");
    }
}
