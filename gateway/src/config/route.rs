//! The APISIX `route` and `global_rule` objects.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CheckSpec, FieldError, Id, Timeout, UpstreamSpec};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub uris: Option<Vec<String>>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub priority: i64,
    /// lua-resty-expr terms, compiled by the router.
    #[serde(default)]
    pub vars: Option<Value>,
    #[serde(default)]
    pub remote_addr: Option<String>,
    #[serde(default)]
    pub remote_addrs: Option<Vec<String>>,
    #[serde(default)]
    pub plugins: Option<Map<String, Value>>,
    /// Boxed: held inline, it made every spec 640 bytes larger, with an inline upstream
    /// or without one (6 MB per 10,000 routes; the `spec_sizes` test).
    #[serde(default)]
    pub upstream: Option<Box<UpstreamSpec>>,
    #[serde(default)]
    pub upstream_id: Option<Id>,
    #[serde(default)]
    pub service_id: Option<Id>,
    /// A `plugin_configs` object whose plugins this route runs under its own.
    #[serde(default)]
    pub plugin_config_id: Option<Id>,
    /// Overrides the upstream's timeouts for this route.
    #[serde(default)]
    pub timeout: Option<Timeout>,
    /// 1 = enabled, 0 = disabled (kept, but never matched).
    #[serde(default = "default_status")]
    pub status: u8,
    #[serde(default)]
    pub enable_websocket: Option<bool>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

fn default_status() -> u8 {
    1
}

impl RouteSpec {
    /// `uri` and `uris` together, as the router sees them.
    pub fn all_uris(&self) -> Vec<String> {
        let mut out: Vec<String> = self.uri.iter().cloned().collect();
        out.extend(self.uris.iter().flatten().cloned());
        out
    }

    /// `host` and `hosts` together (empty = any host).
    pub fn all_hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = self.host.iter().cloned().collect();
        out.extend(self.hosts.iter().flatten().cloned());
        out
    }

    pub fn all_remote_addrs(&self) -> Vec<String> {
        let mut out: Vec<String> = self.remote_addr.iter().cloned().collect();
        out.extend(self.remote_addrs.iter().flatten().cloned());
        out
    }
}

impl RouteSpec {
    /// Bounds what the route expands into in the router: one entry per (uri, host).
    fn check_expansion(&self) -> Vec<FieldError> {
        use super::limits::{
            check_count, MAX_REMOTE_ADDRS, MAX_ROUTE_ENTRIES, MAX_ROUTE_HOSTS, MAX_ROUTE_URIS,
        };
        let uris = self.uris.as_ref().map_or(0, Vec::len);
        let hosts = self.hosts.as_ref().map_or(0, Vec::len);
        let mut errors: Vec<FieldError> = [
            check_count("uris", uris, MAX_ROUTE_URIS),
            check_count("hosts", hosts, MAX_ROUTE_HOSTS),
            check_count(
                "remote_addrs",
                self.remote_addrs.as_ref().map_or(0, Vec::len),
                MAX_REMOTE_ADDRS,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if errors.is_empty() && uris.max(1) * hosts.max(1) > MAX_ROUTE_ENTRIES {
            errors.push(FieldError::new(
                "hosts",
                format!(
                    "{uris} uris × {hosts} hosts is more than {MAX_ROUTE_ENTRIES} router entries"
                ),
            ));
        }
        errors
    }
}

impl CheckSpec for RouteSpec {
    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match (&self.uri, &self.uris) {
            (None, None) => {
                errors.push(FieldError::new("uri", "one of `uri` or `uris` is required"))
            }
            (Some(_), Some(_)) => errors.push(FieldError::new(
                "uris",
                "`uri` and `uris` cannot be used together",
            )),
            (None, Some(u)) if u.is_empty() => {
                errors.push(FieldError::new("uris", "must not be empty"))
            }
            _ => {}
        }
        if self.host.is_some() && self.hosts.is_some() {
            errors.push(FieldError::new(
                "hosts",
                "`host` and `hosts` cannot be used together",
            ));
        }
        if self.remote_addr.is_some() && self.remote_addrs.is_some() {
            errors.push(FieldError::new(
                "remote_addrs",
                "`remote_addr` and `remote_addrs` cannot be used together",
            ));
        }
        if self.upstream.is_some() && self.upstream_id.is_some() {
            errors.push(FieldError::new(
                "upstream_id",
                "`upstream` and `upstream_id` cannot be used together",
            ));
        }
        if self.upstream.is_none()
            && self.upstream_id.is_none()
            && self.service_id.is_none()
            && self.plugins.is_none()
        {
            errors.push(FieldError::new(
                "upstream",
                "a route needs one of `upstream`, `upstream_id`, `service_id` or `plugins`",
            ));
        }
        errors.extend(self.check_expansion());
        if self.status > 1 {
            errors.push(FieldError::new("status", "must be 0 or 1"));
        }
        if let Some(up) = &self.upstream {
            errors.extend(up.check().into_iter().map(|e| e.under("upstream")));
        }
        if let Some(t) = &self.timeout {
            errors.extend(t.check("timeout"));
        }
        if let Some(id) = &self.id {
            if let Err(m) = super::check_id(&id.0) {
                errors.push(FieldError::new("id", m));
            }
        }
        errors
    }
}

/// `{id, plugins}`: plugins that run for every request, before route plugins.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GlobalRuleSpec {
    #[serde(default)]
    pub id: Option<Id>,
    pub plugins: Map<String, Value>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

impl CheckSpec for GlobalRuleSpec {
    fn check(&self) -> Vec<FieldError> {
        match &self.id {
            Some(id) => match super::check_id(&id.0) {
                Ok(()) => Vec::new(),
                Err(m) => vec![FieldError::new("id", m)],
            },
            None => Vec::new(),
        }
    }
}
