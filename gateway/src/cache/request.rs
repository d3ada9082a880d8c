//! The per-request state of the cache, kept in the request context.

/// What the cache decided for one request.
#[derive(Debug, Default)]
pub struct CacheRequest {
    /// The route caches: its responses carry the status header.
    pub active: bool,
    /// `BYPASS`: the cache is not used for this request.
    pub bypass: bool,
    /// The rendered `cache_key`.
    pub key: Option<String>,
    /// `no_cache` said the response is not stored.
    pub no_cache: bool,
}
