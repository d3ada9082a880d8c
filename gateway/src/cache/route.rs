//! A route's `proxy-cache`, resolved at apply time: the parsed configuration and the
//! zone tier it stores in. An unknown zone (or one without the strategy's storage) is a
//! configuration error naming `cache_zone`.

use std::sync::Arc;

use portico_plugins::native::proxy_cache::ProxyCacheConf;
use serde_json::Value;

use super::zone::{self, Tier, Zone};
use crate::config::FieldError;

pub struct RouteCache {
    pub conf: ProxyCacheConf,
    pub zone: &'static Zone,
    pub tier: &'static Tier,
}

/// Resolves the `proxy-cache` configuration `conf` of the plugins at `path`
/// (`routes[id=1].plugins`). A configuration the plugin itself refuses is reported by
/// the plugin build; here it yields `Ok(None)`.
pub fn resolve(conf: &Value, path: &str) -> Result<Option<Arc<RouteCache>>, FieldError> {
    let Ok(conf) = ProxyCacheConf::parse(conf) else {
        return Ok(None);
    };
    let field = format!("{path}.proxy-cache.cache_zone");
    let zones = zone::installed()
        .ok_or_else(|| FieldError::new(&field, "no cache zones are configured"))?;
    let (zone, tier) = zones
        .tier(&conf.cache_zone, conf.cache_strategy)
        .map_err(|e| FieldError::new(&field, e))?;
    Ok(Some(Arc::new(RouteCache { conf, zone, tier })))
}
