//! The desired state: APISIX v3 resource objects as users write them.
//!
//! These are serde types only; nothing here is used on the request path. Each object is
//! parsed from JSON with `deny_unknown_fields`, so a typo is a 400 naming the field, and
//! then checked semantically ([`FieldError`] lists every problem with its JSON path).
//! [`crate::snapshot`] compiles a validated [`ResourceSet`] into runtime objects.

mod consumer;
pub mod defaults;
mod document;
pub mod dynacode;
pub mod limits;
mod lua_code;
pub mod patch;
mod plugin_metadata;
mod plugin_set;
mod route;
mod service;
mod set;
mod ssl;
mod upstream;
mod upstream_tls;

pub use consumer::{check_username, ConsumerSpec};
pub use document::items_of;
pub use dynacode::{DynacodeDoc, DynacodeDomain, DynacodeGeneral, DynacodeSnippet};
pub use lua_code::{LuaModuleSpec, LuaPluginSpec};
pub use plugin_metadata::PluginMetadataSpec;
pub use plugin_set::{ConsumerGroupSpec, PluginConfigSpec};
pub use route::{GlobalRuleSpec, RouteSpec};
pub use service::ServiceSpec;
pub use set::{Entry, ResourceSet, StoredView};
pub use ssl::{SslClient, SslSpec, SslType};
pub use upstream::{
    HashOn, KeepalivePool, NodeSpec, Nodes, PassHost, Scheme, Timeout, UpstreamSpec, UpstreamType,
};
pub use upstream_tls::UpstreamTls;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// The resource kinds of the admin API, in dependency order (a route may reference a
/// service and an upstream; a service may reference an upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// Certificates (`ssls`); they reference nothing.
    Ssls,
    /// Lua library modules (`lua_modules`): before the plugin modules that require them.
    LuaModules,
    /// Lua plugin modules; first, so a bulk replace defines them before their users.
    LuaPlugins,
    /// Before everything that configures plugins: instances are built with it.
    PluginMetadata,
    Upstreams,
    Services,
    /// Before routes, which reference them.
    PluginConfigs,
    Routes,
    GlobalRules,
    /// Before consumers, which reference them.
    ConsumerGroups,
    /// Last: their plugins may name Lua plugin modules.
    Consumers,
}

impl ResourceKind {
    pub const ALL: [ResourceKind; 11] = [
        ResourceKind::Ssls,
        ResourceKind::LuaModules,
        ResourceKind::LuaPlugins,
        ResourceKind::PluginMetadata,
        ResourceKind::Upstreams,
        ResourceKind::Services,
        ResourceKind::PluginConfigs,
        ResourceKind::Routes,
        ResourceKind::GlobalRules,
        ResourceKind::ConsumerGroups,
        ResourceKind::Consumers,
    ];

    /// The URL segment and the key segment: `routes`, `global_rules`.
    pub fn segment(self) -> &'static str {
        match self {
            ResourceKind::Ssls => "ssls",
            ResourceKind::LuaModules => "lua_modules",
            ResourceKind::LuaPlugins => "lua_plugins",
            ResourceKind::PluginMetadata => "plugin_metadata",
            ResourceKind::Upstreams => "upstreams",
            ResourceKind::Services => "services",
            ResourceKind::PluginConfigs => "plugin_configs",
            ResourceKind::Routes => "routes",
            ResourceKind::GlobalRules => "global_rules",
            ResourceKind::ConsumerGroups => "consumer_groups",
            ResourceKind::Consumers => "consumers",
        }
    }

    pub fn from_segment(segment: &str) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.segment() == segment)
    }

    /// Singular noun for messages: "upstream", "global rule".
    pub fn noun(self) -> &'static str {
        match self {
            ResourceKind::Ssls => "ssl",
            ResourceKind::LuaModules => "Lua module",
            ResourceKind::LuaPlugins => "Lua plugin",
            ResourceKind::PluginMetadata => "plugin metadata",
            ResourceKind::Upstreams => "upstream",
            ResourceKind::Services => "service",
            ResourceKind::PluginConfigs => "plugin config",
            ResourceKind::Routes => "route",
            ResourceKind::GlobalRules => "global rule",
            ResourceKind::ConsumerGroups => "consumer group",
            ResourceKind::Consumers => "consumer",
        }
    }

    /// The etcd-style key APISIX reports in envelopes: `/apisix/routes/1`.
    pub fn key(self, id: &str) -> String {
        format!("/apisix/{}/{}", self.segment(), id)
    }
}

/// One validation problem: where (a JSON path such as `upstream.nodes[0].port`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error, nested under `prefix` (`routes[2]` + `uri` → `routes[2].uri`).
    pub fn under(mut self, prefix: &str) -> FieldError {
        self.path = join_path(prefix, &self.path);
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Joins JSON path segments: `a` + `b` → `a.b`, `a` + `[0]` → `a[0]`.
pub fn join_path(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// Joins a list of errors the way the admin API reports them.
pub fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Deserializes `value` into `T`, reporting the failing field's path.
pub fn from_json<T: DeserializeOwned>(value: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError::new(path, e.inner().to_string())
    })
}

/// A resource id. APISIX accepts strings and integers; both are kept as strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        match Raw::deserialize(d) {
            Ok(Raw::S(s)) => Ok(Id(s)),
            Ok(Raw::N(n)) => Ok(Id(n.to_string())),
            Err(_) => Err(serde::de::Error::custom(
                "expected a string or an integer id",
            )),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// APISIX's id rule: 1..64 characters of `[a-zA-Z0-9-_.]`; `.` and `..` are refused
/// too, since they name the collection or its parent in a URL path.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.bytes().all(|b| b == b'.') && !id.is_empty() {
        return Err(format!("id `{id}` must not be made of dots only"));
    }
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "id `{id}` must be 1 to 64 characters of a-z, A-Z, 0-9, '-', '_' and '.'"
        ))
    }
}

/// Parses any resource object and runs its own checks (not cross-resource references).
pub fn parse_spec<T: DeserializeOwned + CheckSpec>(value: &Value) -> Result<T, Vec<FieldError>> {
    if !value.is_object() {
        return Err(vec![FieldError::new("", "expected a JSON object")]);
    }
    limits::check_depth(value).map_err(|e| vec![e])?;
    let spec: T = from_json(value).map_err(|e| vec![e])?;
    let errors = spec.check();
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

/// Self-contained checks a resource object can make without seeing other resources.
pub trait CheckSpec {
    fn check(&self) -> Vec<FieldError>;
}

/// Plugin names in a `plugins` object, checked against the plugin registry. Each
/// plugin's configuration (and its Lua) is checked when the snapshot is built, where it
/// is compiled once.
pub fn check_plugins(
    plugins: Option<&serde_json::Map<String, Value>>,
    registry: &portico_plugins::PluginRegistry,
    lua_plugins: &std::collections::BTreeMap<String, Entry<LuaPluginSpec>>,
    path: &str,
) -> Vec<FieldError> {
    plugins
        .into_iter()
        .flatten()
        .filter(|(name, _)| !registry.contains(name) && !lua_plugins.contains_key(name.as_str()))
        .map(|(name, _)| FieldError::new(join_path(path, name), format!("unknown plugin `{name}`")))
        .collect()
}

#[cfg(test)]
mod tests;
