//! Host name resolution that never blocks a runtime thread: getaddrinfo runs on
//! tokio's blocking pool (`lookup_host`). IPv4 is preferred, as nginx's resolver does
//! unless `ipv6=on` (`localhost` is often `::1` first).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Stage};

/// How long a cached resolution is reused, and how many names are kept.
const DNS_TTL: Duration = Duration::from_secs(30);
const DNS_CACHE_MAX: usize = 1024;

fn failed(host: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Resolve,
        Stage::Resolve,
        format!("{host} could not be resolved ({why})"),
    )
}

/// Resolves `host` (an IP literal is used as is); `limit` bounds the lookup.
pub async fn resolve(host: &str, port: u16, limit: Option<Duration>) -> Result<SocketAddr, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let lookup = tokio::net::lookup_host((host, port));
    let found = match limit {
        Some(limit) => match tokio::time::timeout(limit, lookup).await {
            Err(_) => return Err(failed(host, "timeout")),
            Ok(r) => r,
        },
        None => lookup.await,
    };
    let addrs: Vec<SocketAddr> = found.map_err(|e| failed(host, e))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| failed(host, "no address"))
}

/// [`resolve`] through a small process-wide cache (30 s, 1024 names): for callers that
/// may resolve the same names many times a second (`resty.http` from request phases).
pub async fn resolve_cached(
    host: &str,
    port: u16,
    limit: Option<Duration>,
) -> Result<SocketAddr, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    type Cache = Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked mid-insert: the map is usable.
    let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
    let key = (host.to_ascii_lowercase(), port);
    if let Some((addr, at)) = lock().get(&key) {
        if at.elapsed() < DNS_TTL {
            return Ok(*addr);
        }
    }
    let addr = resolve(host, port, limit).await?;
    let mut c = lock();
    if c.len() >= DNS_CACHE_MAX {
        c.clear();
    }
    c.insert(key, (addr, Instant::now()));
    Ok(addr)
}
