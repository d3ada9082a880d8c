//! The APISIX `service` object: an upstream and plugins that routes inherit.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CheckSpec, FieldError, Id, UpstreamSpec};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub id: Option<Id>,
    /// Boxed, as in `RouteSpec`.
    #[serde(default)]
    pub upstream: Option<Box<UpstreamSpec>>,
    #[serde(default)]
    pub upstream_id: Option<Id>,
    #[serde(default)]
    pub plugins: Option<Map<String, Value>>,
    /// Hosts a route inherits when it names none of its own.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
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

impl CheckSpec for ServiceSpec {
    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(up) = &self.upstream {
            errors.extend(up.check().into_iter().map(|e| e.under("upstream")));
        }
        if let Some(hosts) = &self.hosts {
            if hosts.is_empty() {
                errors.push(FieldError::new("hosts", "must not be empty"));
            }
        }
        if let Some(id) = &self.id {
            if let Err(m) = super::check_id(&id.0) {
                errors.push(FieldError::new("id", m));
            }
        }
        errors
    }
}
