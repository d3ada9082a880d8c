//! The APISIX `plugin_metadata` object: plugin-wide settings of one plugin, stored under
//! the plugin's name (`/apisix/admin/plugin_metadata/cors`). Its fields are the plugin's
//! own (its metadata schema, checked against the plugin registry when the object is
//! inserted into a [`super::ResourceSet`]); the snapshot build hands them to every
//! instance of the plugin.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CheckSpec, FieldError};

/// The fields the store sets on every object; not part of the plugin's metadata.
const STORE_FIELDS: [&str; 3] = ["id", "create_time", "update_time"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "Map<String, Value>")]
pub struct PluginMetadataSpec {
    /// The metadata as the plugin sees it: the stored object without `id` and times.
    pub metadata: Value,
}

impl From<Map<String, Value>> for PluginMetadataSpec {
    fn from(mut map: Map<String, Value>) -> PluginMetadataSpec {
        for field in STORE_FIELDS {
            map.remove(field);
        }
        PluginMetadataSpec {
            metadata: Value::Object(map),
        }
    }
}

impl CheckSpec for PluginMetadataSpec {
    /// Everything is the plugin's to check (see [`super::ResourceSet::insert`]).
    fn check(&self) -> Vec<FieldError> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_spec;
    use serde_json::json;

    #[test]
    fn store_fields_are_not_metadata() {
        let spec: PluginMetadataSpec = parse_spec(&json!({
            "id": "cors", "create_time": 1, "allow_origins": {"a": "*"}
        }))
        .unwrap();
        assert_eq!(spec.metadata, json!({"allow_origins": {"a": "*"}}));
        assert!(parse_spec::<PluginMetadataSpec>(&json!([1])).is_err());
    }
}
