//! Portico plugins: the registry of plugin names the gateway knows, and (with the Lua
//! runtime issue) the plugin trait, chains and built-ins.
//!
//! This crate never depends on the gateway: the gateway hands each plugin its JSON
//! configuration and the plugin validates it when the config is applied, so a bad plugin
//! configuration is a 400 from the admin API and never an error on the request path.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde_json::Value;

/// Why a plugin configuration was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    /// No plugin of this name exists in this build.
    #[error("unknown plugin `{0}`")]
    Unknown(String),
    /// The plugin exists but rejected its configuration.
    #[error("invalid configuration for plugin `{plugin}`: {message}")]
    InvalidConfig { plugin: String, message: String },
}

/// What a registered plugin provides at apply time.
pub struct PluginFactory {
    /// Higher runs first, as in APISIX.
    pub priority: i32,
    /// Validates a configuration object; the message names the offending field.
    pub check: fn(&Value) -> Result<(), String>,
}

/// Plugin names known to this build, with their config checks.
#[derive(Default)]
pub struct PluginRegistry {
    factories: BTreeMap<&'static str, PluginFactory>,
}

impl PluginRegistry {
    /// The registry of built-in plugins. None ship yet: every plugin name is rejected with
    /// a 400 naming it, so configurations written for plugins that do not exist never
    /// silently do nothing.
    pub fn builtin() -> PluginRegistry {
        PluginRegistry::default()
    }

    /// Adds a plugin (used by the built-ins and by tests).
    pub fn register(&mut self, name: &'static str, factory: PluginFactory) {
        self.factories.insert(name, factory);
    }

    /// Checks that `name` exists and accepts `conf`.
    pub fn check(&self, name: &str, conf: &Value) -> Result<(), PluginError> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        (factory.check)(conf).map_err(|message| PluginError::InvalidConfig {
            plugin: name.to_string(),
            message,
        })
    }

    /// Names of every registered plugin, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.factories.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object_only(v: &Value) -> Result<(), String> {
        if v.is_object() {
            Ok(())
        } else {
            Err("expected an object".into())
        }
    }

    #[test]
    fn unknown_plugin_is_named() {
        let r = PluginRegistry::builtin();
        assert_eq!(
            r.check("limit-count", &Value::Null),
            Err(PluginError::Unknown("limit-count".into()))
        );
        assert_eq!(
            r.check("x", &Value::Null).unwrap_err().to_string(),
            "unknown plugin `x`"
        );
    }

    #[test]
    fn registered_plugin_checks_its_config() {
        let mut r = PluginRegistry::builtin();
        r.register(
            "demo",
            PluginFactory {
                priority: 1,
                check: object_only,
            },
        );
        assert!(r.check("demo", &serde_json::json!({})).is_ok());
        let err = r.check("demo", &Value::Null).unwrap_err();
        assert!(err.to_string().contains("demo") && err.to_string().contains("object"));
        assert_eq!(r.names().collect::<Vec<_>>(), vec!["demo"]);
    }
}
