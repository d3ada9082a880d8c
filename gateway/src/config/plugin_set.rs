//! APISIX's two named plugin sets, one schema: a `plugin_config` (routes reference it
//! with `plugin_config_id`; a route's own plugins override its plugins of the same name)
//! and a `consumer_group` (consumers reference it with `group_id`; a consumer's own
//! plugins override its group's).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CheckSpec, FieldError, Id};

/// `plugins` plus the common metadata.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSetSpec {
    #[serde(default)]
    pub id: Option<Id>,
    pub plugins: Map<String, Value>,
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

impl CheckSpec for PluginSetSpec {
    fn check(&self) -> Vec<FieldError> {
        match &self.id {
            Some(id) => match super::check_id(&id.0) {
                Err(m) => vec![FieldError::new("id", m)],
                Ok(()) => Vec::new(),
            },
            None => Vec::new(),
        }
    }
}

/// A `plugin_configs` object.
pub type PluginConfigSpec = PluginSetSpec;
/// A `consumer_groups` object.
pub type ConsumerGroupSpec = PluginSetSpec;
