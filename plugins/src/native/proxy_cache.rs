//! APISIX's `proxy-cache` (priority 1085): the configuration only. Caching itself runs
//! on Pingora's cache hooks in the gateway (`gateway/src/cache/`), which reads the parsed
//! [`ProxyCacheConf`] of a route at apply time; the plugin instance has no phases.
//! Whether `cache_zone` names a zone of the static settings is checked there too, since
//! zones are the gateway's (`cache.zones`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{NativeBuildInput, NativePlugin, Plugin};
use crate::vars::Template;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "proxy-cache",
    priority: 1085,
    phases: &[],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "cache_zone": {"type": "string", "minLength": 1, "maxLength": 100,
                           "default": "disk_cache_one"},
            "cache_strategy": {"enum": ["disk", "memory"], "default": "disk"},
            "cache_key": {"type": "array", "minItems": 1,
                          "items": {"type": "string", "minLength": 1},
                          "default": ["$host", "$request_uri"]},
            "cache_bypass": {"type": "array", "minItems": 1,
                             "items": {"type": "string", "minLength": 1}},
            "cache_method": {"type": "array", "minItems": 1, "uniqueItems": true,
                             "items": {"enum": ["GET", "POST", "HEAD"]},
                             "default": ["GET", "HEAD"]},
            "cache_http_status": {"type": "array", "minItems": 1, "uniqueItems": true,
                                  "items": {"type": "integer", "minimum": 200, "maximum": 599},
                                  "default": [200, 301, 404]},
            "hide_cache_headers": {"type": "boolean", "default": false},
            "cache_control": {"type": "boolean", "default": false},
            "no_cache": {"type": "array", "minItems": 1,
                         "items": {"type": "string", "minLength": 1}},
            "cache_ttl": {"type": "integer", "minimum": 1, "default": 300}
        }
    })
}

/// Where a route's responses are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheStrategy {
    Disk,
    Memory,
}

/// A method `cache_method` may list (APISIX's closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CacheMethod {
    GET,
    POST,
    HEAD,
}

impl CacheMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMethod::GET => "GET",
            CacheMethod::POST => "POST",
            CacheMethod::HEAD => "HEAD",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConf {
    #[serde(default = "default_zone")]
    cache_zone: String,
    #[serde(default = "default_strategy")]
    cache_strategy: CacheStrategy,
    #[serde(default = "default_key")]
    cache_key: Vec<String>,
    #[serde(default)]
    cache_bypass: Vec<String>,
    #[serde(default = "default_methods")]
    cache_method: Vec<CacheMethod>,
    #[serde(default = "default_statuses")]
    cache_http_status: Vec<u16>,
    #[serde(default)]
    hide_cache_headers: bool,
    #[serde(default)]
    cache_control: bool,
    #[serde(default)]
    no_cache: Vec<String>,
    #[serde(default = "default_ttl")]
    cache_ttl: u64,
}

fn default_zone() -> String {
    "disk_cache_one".to_string()
}
fn default_strategy() -> CacheStrategy {
    CacheStrategy::Disk
}
fn default_key() -> Vec<String> {
    vec!["$host".to_string(), "$request_uri".to_string()]
}
fn default_methods() -> Vec<CacheMethod> {
    vec![CacheMethod::GET, CacheMethod::HEAD]
}
fn default_statuses() -> Vec<u16> {
    vec![200, 301, 404]
}
fn default_ttl() -> u64 {
    300
}

/// One `proxy-cache` configuration, with its variable lists parsed.
#[derive(Debug, Clone)]
pub struct ProxyCacheConf {
    pub cache_zone: String,
    pub cache_strategy: CacheStrategy,
    /// Rendered and concatenated: the entry's primary key.
    pub cache_key: Vec<Template>,
    /// A non-empty, non-`"0"` rendering skips the cache (status `BYPASS`).
    pub cache_bypass: Vec<Template>,
    pub cache_method: Vec<CacheMethod>,
    pub cache_http_status: Vec<u16>,
    pub hide_cache_headers: bool,
    pub cache_control: bool,
    /// A non-empty, non-`"0"` rendering keeps the response out of the cache.
    pub no_cache: Vec<Template>,
    pub cache_ttl: u64,
}

impl ProxyCacheConf {
    /// Parses and checks a configuration; the error names the field.
    pub fn parse(conf: &Value) -> Result<ProxyCacheConf, String> {
        let raw: RawConf =
            serde_json::from_value(conf.clone()).map_err(|e| field_error(conf, e))?;
        if raw.cache_zone.is_empty() || raw.cache_zone.len() > 100 {
            return Err("cache_zone: must be 1 to 100 characters".to_string());
        }
        if raw.cache_key.is_empty() {
            return Err("cache_key: must list at least one item".to_string());
        }
        if raw.cache_method.is_empty() {
            return Err("cache_method: must list at least one method".to_string());
        }
        if raw.cache_http_status.is_empty() {
            return Err("cache_http_status: must list at least one status".to_string());
        }
        if let Some(s) = raw
            .cache_http_status
            .iter()
            .find(|s| !(200..=599).contains(*s))
        {
            return Err(format!("cache_http_status: {s} is not in 200..=599"));
        }
        if raw.cache_ttl == 0 {
            return Err("cache_ttl: must be at least 1".to_string());
        }
        Ok(ProxyCacheConf {
            cache_key: templates("cache_key", &raw.cache_key)?,
            cache_bypass: templates("cache_bypass", &raw.cache_bypass)?,
            no_cache: templates("no_cache", &raw.no_cache)?,
            cache_zone: raw.cache_zone,
            cache_strategy: raw.cache_strategy,
            cache_method: raw.cache_method,
            cache_http_status: raw.cache_http_status,
            hide_cache_headers: raw.hide_cache_headers,
            cache_control: raw.cache_control,
            cache_ttl: raw.cache_ttl,
        })
    }
}

/// Serde's error with the field it is about: each field is read alone until one fails.
fn field_error(conf: &Value, e: serde_json::Error) -> String {
    for (k, v) in conf.as_object().into_iter().flatten() {
        let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
        if let Err(e) = serde_json::from_value::<RawConf>(one) {
            return format!("{k}: {e}");
        }
    }
    e.to_string()
}

fn templates(field: &str, items: &[String]) -> Result<Vec<Template>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| Template::parse(s).map_err(|e| format!("{field}[{i}]: {e}")))
        .collect()
}

/// The instance: nothing runs in the plugin phases (see the module comment).
struct ProxyCache;

impl Plugin for ProxyCache {}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    ProxyCacheConf::parse(input.conf)?;
    Ok(Arc::new(ProxyCache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_apisix_s() {
        let c = ProxyCacheConf::parse(&json!({})).unwrap();
        assert_eq!(c.cache_zone, "disk_cache_one");
        assert_eq!(c.cache_strategy, CacheStrategy::Disk);
        assert_eq!(c.cache_key.len(), 2);
        assert_eq!(c.cache_method, vec![CacheMethod::GET, CacheMethod::HEAD]);
        assert_eq!(c.cache_http_status, vec![200, 301, 404]);
        assert_eq!(c.cache_ttl, 300);
        assert!(!c.cache_control && !c.hide_cache_headers);
    }

    #[test]
    fn errors_name_the_field() {
        let err = |v: Value| ProxyCacheConf::parse(&v).unwrap_err();
        assert!(err(json!({"cache_strategy": "ram"})).starts_with("cache_strategy: "));
        assert!(err(json!({"cache_ttl": "5"})).starts_with("cache_ttl: "));
        assert!(err(json!({"cache_key": ["$nope"]})).starts_with("cache_key[0]"));
        assert!(err(json!({"cache_bypass": ["$"]})).starts_with("cache_bypass[0]"));
        assert!(err(json!({"cache_http_status": [100]})).starts_with("cache_http_status"));
        assert!(err(json!({"cache_ttl": 0})).starts_with("cache_ttl"));
        assert!(err(json!({"cache_method": ["PUT"]})).starts_with("cache_method: "));
        assert!(err(json!({"cache_zone": ""})).starts_with("cache_zone"));
        assert!(err(json!({"cache_key": []})).starts_with("cache_key"));
    }
}
