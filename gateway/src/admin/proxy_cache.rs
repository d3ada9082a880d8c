//! `DELETE /apisix/admin/proxy_cache/{zone}[?prefix=...]`: removes every entry of a cache
//! zone (memory and disk), or those whose key (the rendered `cache_key`, e.g.
//! `example.com/images/`) starts with `prefix`. Answers the number removed. Not a
//! configuration change: allowed with a read-only provider, and not in the history.

use http::Response;
use serde_json::json;

use super::reply;

pub async fn purge(zone: &str, prefix: Option<String>) -> Response<Vec<u8>> {
    let Some(z) = crate::cache::zone::installed().and_then(|zones| zones.get(zone)) else {
        return reply::error(404, format!("unknown cache zone `{zone}`"));
    };
    let prefix = prefix.unwrap_or_default();
    let wanted = prefix.clone();
    // Walking a disk zone blocks: off the async workers.
    let removed = tokio::task::spawn_blocking(move || {
        z.tiers().map(|t| t.purge_prefix(&wanted)).sum::<usize>()
    })
    .await;
    match removed {
        Ok(n) => reply::json(200, &json!({"zone": zone, "prefix": prefix, "purged": n})),
        Err(e) => reply::error(500, format!("purge failed: {e}")),
    }
}
