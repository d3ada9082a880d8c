//! [`ResourceSet`]: every stored resource, parsed, with its etcd-style indexes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use portico_plugins::PluginRegistry;

use super::{
    check_plugins, parse_spec, ConsumerGroupSpec, ConsumerSpec, FieldError, GlobalRuleSpec,
    LuaModuleSpec, LuaPluginSpec, PluginConfigSpec, PluginMetadataSpec, ResourceKind, RouteSpec,
    ServiceSpec, SslSpec, UpstreamSpec,
};

/// One stored resource: the JSON the user wrote (plus `id`, `create_time`,
/// `update_time`), its parsed form, and the revision indexes of its envelope.
#[derive(Debug)]
pub struct Entry<T> {
    pub value: Arc<Value>,
    pub spec: Arc<T>,
    pub created_index: u64,
    pub modified_index: u64,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            value: Arc::clone(&self.value),
            spec: Arc::clone(&self.spec),
            created_index: self.created_index,
            modified_index: self.modified_index,
        }
    }
}

/// The stored view of an entry, independent of its kind.
#[derive(Debug, Clone)]
pub struct StoredView {
    pub value: Arc<Value>,
    pub created_index: u64,
    pub modified_index: u64,
}

impl<T> From<&Entry<T>> for StoredView {
    fn from(e: &Entry<T>) -> StoredView {
        StoredView {
            value: Arc::clone(&e.value),
            created_index: e.created_index,
            modified_index: e.modified_index,
        }
    }
}

/// Every resource, by kind and id. Cloning is cheap-ish (the maps hold `Arc`s), which
/// is what lets `apply` build the next set beside the running one.
#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    pub ssls: BTreeMap<String, Entry<SslSpec>>,
    pub lua_modules: BTreeMap<String, Entry<LuaModuleSpec>>,
    /// `lua_modules` compiled when inserted (a syntax error is the PUT's 400).
    pub lua_libraries: BTreeMap<String, Arc<portico_plugins::lua::LuaLibrary>>,
    pub lua_plugins: BTreeMap<String, Entry<LuaPluginSpec>>,
    /// By plugin name.
    pub plugin_metadata: BTreeMap<String, Entry<PluginMetadataSpec>>,
    pub upstreams: BTreeMap<String, Entry<UpstreamSpec>>,
    pub services: BTreeMap<String, Entry<ServiceSpec>>,
    pub plugin_configs: BTreeMap<String, Entry<PluginConfigSpec>>,
    pub routes: BTreeMap<String, Entry<RouteSpec>>,
    pub global_rules: BTreeMap<String, Entry<GlobalRuleSpec>>,
    pub consumer_groups: BTreeMap<String, Entry<ConsumerGroupSpec>>,
    /// By username.
    pub consumers: BTreeMap<String, Entry<ConsumerSpec>>,
    /// The lua-resty-dynacode document, when one was pushed or polled.
    pub dynacode: Option<Entry<crate::config::DynacodeDoc>>,
}

impl ResourceSet {
    pub fn get(&self, kind: ResourceKind, id: &str) -> Option<StoredView> {
        match kind {
            ResourceKind::Ssls => self.ssls.get(id).map(StoredView::from),
            ResourceKind::LuaModules => self.lua_modules.get(id).map(StoredView::from),
            ResourceKind::LuaPlugins => self.lua_plugins.get(id).map(StoredView::from),
            ResourceKind::PluginMetadata => self.plugin_metadata.get(id).map(StoredView::from),
            ResourceKind::Upstreams => self.upstreams.get(id).map(StoredView::from),
            ResourceKind::Services => self.services.get(id).map(StoredView::from),
            ResourceKind::PluginConfigs => self.plugin_configs.get(id).map(StoredView::from),
            ResourceKind::Routes => self.routes.get(id).map(StoredView::from),
            ResourceKind::GlobalRules => self.global_rules.get(id).map(StoredView::from),
            ResourceKind::ConsumerGroups => self.consumer_groups.get(id).map(StoredView::from),
            ResourceKind::Consumers => self.consumers.get(id).map(StoredView::from),
        }
    }

    /// Entries of one kind, ordered by id.
    pub fn list(&self, kind: ResourceKind) -> Vec<(String, StoredView)> {
        fn views<T>(m: &BTreeMap<String, Entry<T>>) -> Vec<(String, StoredView)> {
            m.iter().map(|(k, e)| (k.clone(), e.into())).collect()
        }
        match kind {
            ResourceKind::Ssls => views(&self.ssls),
            ResourceKind::LuaModules => views(&self.lua_modules),
            ResourceKind::LuaPlugins => views(&self.lua_plugins),
            ResourceKind::PluginMetadata => views(&self.plugin_metadata),
            ResourceKind::Upstreams => views(&self.upstreams),
            ResourceKind::Services => views(&self.services),
            ResourceKind::PluginConfigs => views(&self.plugin_configs),
            ResourceKind::Routes => views(&self.routes),
            ResourceKind::GlobalRules => views(&self.global_rules),
            ResourceKind::ConsumerGroups => views(&self.consumer_groups),
            ResourceKind::Consumers => views(&self.consumers),
        }
    }

    pub fn len(&self, kind: ResourceKind) -> usize {
        match kind {
            ResourceKind::Ssls => self.ssls.len(),
            ResourceKind::LuaModules => self.lua_modules.len(),
            ResourceKind::LuaPlugins => self.lua_plugins.len(),
            ResourceKind::PluginMetadata => self.plugin_metadata.len(),
            ResourceKind::Upstreams => self.upstreams.len(),
            ResourceKind::Services => self.services.len(),
            ResourceKind::PluginConfigs => self.plugin_configs.len(),
            ResourceKind::Routes => self.routes.len(),
            ResourceKind::GlobalRules => self.global_rules.len(),
            ResourceKind::ConsumerGroups => self.consumer_groups.len(),
            ResourceKind::Consumers => self.consumers.len(),
        }
    }

    pub fn total(&self) -> usize {
        ResourceKind::ALL.iter().map(|k| self.len(*k)).sum()
    }

    /// Parses `value` as a `kind` object and stores it under `id`. Errors carry paths
    /// relative to the object.
    pub fn insert(
        &mut self,
        kind: ResourceKind,
        id: &str,
        value: Value,
        created_index: u64,
        modified_index: u64,
        plugins: &PluginRegistry,
    ) -> Result<(), Vec<FieldError>> {
        fn entry<T: serde::de::DeserializeOwned + super::CheckSpec>(
            value: Value,
            created_index: u64,
            modified_index: u64,
        ) -> Result<Entry<T>, Vec<FieldError>> {
            let spec = parse_spec::<T>(&value)?;
            Ok(Entry {
                value: Arc::new(value),
                spec: Arc::new(spec),
                created_index,
                modified_index,
            })
        }
        match kind {
            ResourceKind::Ssls => {
                let e = entry::<SslSpec>(value, created_index, modified_index)?;
                self.ssls.insert(id.to_string(), e);
            }
            ResourceKind::LuaModules => {
                let e = entry::<LuaModuleSpec>(value, created_index, modified_index)?;
                let unchanged = self.lua_libraries.get(id).filter(|_| {
                    self.lua_modules
                        .get(id)
                        .is_some_and(|o| o.spec.code == e.spec.code)
                });
                let lib = match unchanged {
                    Some(lib) => Arc::clone(lib),
                    None => portico_plugins::lua::compile_library(id, &e.spec.code)
                        .map(Arc::new)
                        .map_err(|m| vec![FieldError::new("code", m)])?,
                };
                self.lua_libraries.insert(id.to_string(), lib);
                self.lua_modules.insert(id.to_string(), e);
            }
            ResourceKind::LuaPlugins => {
                let e = entry::<LuaPluginSpec>(value, created_index, modified_index)?;
                self.lua_plugins.insert(id.to_string(), e);
            }
            ResourceKind::PluginMetadata => {
                let e = entry::<PluginMetadataSpec>(value, created_index, modified_index)?;
                if self.lua_plugins.contains_key(id) {
                    // No seam carries metadata into Lua plugin modules yet.
                    return Err(vec![FieldError::new(
                        "",
                        format!(
                            "plugin `{id}` is a Lua plugin module: it takes no plugin_metadata"
                        ),
                    )]);
                }
                plugins
                    .check_metadata(id, &e.spec.metadata)
                    .map_err(|errs| {
                        errs.into_iter()
                            .map(|(path, m)| FieldError::new(path, m))
                            .collect::<Vec<_>>()
                    })?;
                self.plugin_metadata.insert(id.to_string(), e);
            }
            ResourceKind::Upstreams => {
                let e = entry::<UpstreamSpec>(value, created_index, modified_index)?;
                self.upstreams.insert(id.to_string(), e);
            }
            ResourceKind::Services => {
                let e = entry::<ServiceSpec>(value, created_index, modified_index)?;
                let errors = check_plugins(
                    e.spec.plugins.as_ref(),
                    plugins,
                    &self.lua_plugins,
                    "plugins",
                );
                if !errors.is_empty() {
                    return Err(errors);
                }
                self.services.insert(id.to_string(), e);
            }
            ResourceKind::Routes => {
                let e = entry::<RouteSpec>(value, created_index, modified_index)?;
                let errors = check_plugins(
                    e.spec.plugins.as_ref(),
                    plugins,
                    &self.lua_plugins,
                    "plugins",
                );
                if !errors.is_empty() {
                    return Err(errors);
                }
                self.routes.insert(id.to_string(), e);
            }
            ResourceKind::GlobalRules => {
                let e = entry::<GlobalRuleSpec>(value, created_index, modified_index)?;
                let errors =
                    check_plugins(Some(&e.spec.plugins), plugins, &self.lua_plugins, "plugins");
                if !errors.is_empty() {
                    return Err(errors);
                }
                self.global_rules.insert(id.to_string(), e);
            }
            ResourceKind::PluginConfigs => {
                let e = entry::<PluginConfigSpec>(value, created_index, modified_index)?;
                let errors =
                    check_plugins(Some(&e.spec.plugins), plugins, &self.lua_plugins, "plugins");
                if !errors.is_empty() {
                    return Err(errors);
                }
                self.plugin_configs.insert(id.to_string(), e);
            }
            ResourceKind::ConsumerGroups => {
                let e = entry::<ConsumerGroupSpec>(value, created_index, modified_index)?;
                let errors =
                    check_plugins(Some(&e.spec.plugins), plugins, &self.lua_plugins, "plugins");
                if !errors.is_empty() {
                    return Err(errors);
                }
                self.consumer_groups.insert(id.to_string(), e);
            }
            ResourceKind::Consumers => {
                let e = entry::<ConsumerSpec>(value, created_index, modified_index)?;
                let mut errors = check_plugins(
                    e.spec.plugins.as_ref(),
                    plugins,
                    &self.lua_plugins,
                    "plugins",
                );
                if e.spec.username != id {
                    errors.push(FieldError::new(
                        "username",
                        format!("must equal the consumer's id `{id}`"),
                    ));
                }
                if !errors.is_empty() {
                    return Err(errors);
                }
                self.consumers.insert(id.to_string(), e);
            }
        }
        Ok(())
    }

    pub fn remove(&mut self, kind: ResourceKind, id: &str) -> bool {
        match kind {
            ResourceKind::Ssls => self.ssls.remove(id).is_some(),
            ResourceKind::LuaModules => {
                self.lua_libraries.remove(id);
                self.lua_modules.remove(id).is_some()
            }
            ResourceKind::LuaPlugins => self.lua_plugins.remove(id).is_some(),
            ResourceKind::PluginMetadata => self.plugin_metadata.remove(id).is_some(),
            ResourceKind::Upstreams => self.upstreams.remove(id).is_some(),
            ResourceKind::Services => self.services.remove(id).is_some(),
            ResourceKind::PluginConfigs => self.plugin_configs.remove(id).is_some(),
            ResourceKind::Routes => self.routes.remove(id).is_some(),
            ResourceKind::GlobalRules => self.global_rules.remove(id).is_some(),
            ResourceKind::ConsumerGroups => self.consumer_groups.remove(id).is_some(),
            ResourceKind::Consumers => self.consumers.remove(id).is_some(),
        }
    }

    /// Resources that reference `kind/id` (routes and services naming an upstream,
    /// routes naming a service), for DELETE's integrity check.
    pub fn referrers(&self, kind: ResourceKind, id: &str) -> Vec<(ResourceKind, String)> {
        let mut out = Vec::new();
        match kind {
            ResourceKind::Upstreams => {
                for (rid, r) in &self.routes {
                    if r.spec.upstream_id.as_ref().is_some_and(|u| u.0 == id) {
                        out.push((ResourceKind::Routes, rid.clone()));
                    }
                }
                for (sid, s) in &self.services {
                    if s.spec.upstream_id.as_ref().is_some_and(|u| u.0 == id) {
                        out.push((ResourceKind::Services, sid.clone()));
                    }
                }
            }
            ResourceKind::Services => {
                for (rid, r) in &self.routes {
                    if r.spec.service_id.as_ref().is_some_and(|s| s.0 == id) {
                        out.push((ResourceKind::Routes, rid.clone()));
                    }
                }
            }
            ResourceKind::ConsumerGroups => {
                for (cid, c) in &self.consumers {
                    if c.spec.group_id.as_ref().is_some_and(|g| g.0 == id) {
                        out.push((ResourceKind::Consumers, cid.clone()));
                    }
                }
            }
            ResourceKind::PluginConfigs => {
                for (rid, r) in &self.routes {
                    if r.spec.plugin_config_id.as_ref().is_some_and(|p| p.0 == id) {
                        out.push((ResourceKind::Routes, rid.clone()));
                    }
                }
            }
            ResourceKind::LuaModules => out = self.requirers(id),
            ResourceKind::LuaPlugins => {
                let uses = |p: Option<&serde_json::Map<String, Value>>| {
                    p.is_some_and(|p| p.contains_key(id))
                };
                for (rid, r) in &self.routes {
                    if uses(r.spec.plugins.as_ref()) {
                        out.push((ResourceKind::Routes, rid.clone()));
                    }
                }
                for (sid, s) in &self.services {
                    if uses(s.spec.plugins.as_ref()) {
                        out.push((ResourceKind::Services, sid.clone()));
                    }
                }
                for (gid, g) in &self.global_rules {
                    if uses(Some(&g.spec.plugins)) {
                        out.push((ResourceKind::GlobalRules, gid.clone()));
                    }
                }
                for (pid, p) in &self.plugin_configs {
                    if uses(Some(&p.spec.plugins)) {
                        out.push((ResourceKind::PluginConfigs, pid.clone()));
                    }
                }
                for (gid, g) in &self.consumer_groups {
                    if uses(Some(&g.spec.plugins)) {
                        out.push((ResourceKind::ConsumerGroups, gid.clone()));
                    }
                }
                for (cid, c) in &self.consumers {
                    if uses(c.spec.plugins.as_ref()) {
                        out.push((ResourceKind::Consumers, cid.clone()));
                    }
                }
            }
            // A route naming a metadata set is checked when the snapshot is built.
            ResourceKind::Routes
            | ResourceKind::GlobalRules
            | ResourceKind::Ssls
            | ResourceKind::PluginMetadata
            | ResourceKind::Consumers => {}
        }
        out
    }

    /// The library modules of this set, as `require` resolves them.
    pub fn libraries(&self) -> Arc<portico_plugins::lua::LuaLibraries> {
        Arc::new(portico_plugins::lua::LuaLibraries::new(
            self.lua_libraries.values().cloned(),
        ))
    }

    /// What requires the library module `id` by string literal (a static scan, see
    /// `lua_scan.rs`): other library modules, Lua plugin modules, and Lua code anywhere
    /// in a `plugins` object (serverless functions).
    fn requirers(&self, id: &str) -> Vec<(ResourceKind, String)> {
        let requires = |code: &str| {
            portico_plugins::lua::required_modules(code)
                .iter()
                .any(|n| n == id)
        };
        let in_plugins = |p: Option<&serde_json::Map<String, Value>>| {
            p.is_some_and(|p| p.values().any(|v| json_requires(v, &requires)))
        };
        let mut out = Vec::new();
        for (lid, lib) in &self.lua_libraries {
            if lid != id && lib.requires.iter().any(|n| n == id) {
                out.push((ResourceKind::LuaModules, lid.clone()));
            }
        }
        for (pid, p) in &self.lua_plugins {
            if requires(&p.spec.code) {
                out.push((ResourceKind::LuaPlugins, pid.clone()));
            }
        }
        for (rid, r) in &self.routes {
            if in_plugins(r.spec.plugins.as_ref()) {
                out.push((ResourceKind::Routes, rid.clone()));
            }
        }
        for (sid, s) in &self.services {
            if in_plugins(s.spec.plugins.as_ref()) {
                out.push((ResourceKind::Services, sid.clone()));
            }
        }
        for (gid, g) in &self.global_rules {
            if in_plugins(Some(&g.spec.plugins)) {
                out.push((ResourceKind::GlobalRules, gid.clone()));
            }
        }
        for (pid, p) in &self.plugin_configs {
            if in_plugins(Some(&p.spec.plugins)) {
                out.push((ResourceKind::PluginConfigs, pid.clone()));
            }
        }
        for (gid, g) in &self.consumer_groups {
            if in_plugins(Some(&g.spec.plugins)) {
                out.push((ResourceKind::ConsumerGroups, gid.clone()));
            }
        }
        for (cid, c) in &self.consumers {
            if in_plugins(c.spec.plugins.as_ref()) {
                out.push((ResourceKind::Consumers, cid.clone()));
            }
        }
        out
    }

    /// Checks that what `kind/id` references exists. Paths are relative to the object.
    pub fn check_references(&self, kind: ResourceKind, id: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let (upstream_id, service_id) = match kind {
            ResourceKind::Routes => match self.routes.get(id) {
                Some(r) => (r.spec.upstream_id.as_ref(), r.spec.service_id.as_ref()),
                None => return errors,
            },
            ResourceKind::Services => match self.services.get(id) {
                Some(s) => (s.spec.upstream_id.as_ref(), None),
                None => return errors,
            },
            ResourceKind::Upstreams
            | ResourceKind::GlobalRules
            | ResourceKind::LuaModules
            | ResourceKind::LuaPlugins
            | ResourceKind::PluginMetadata
            | ResourceKind::Ssls
            | ResourceKind::PluginConfigs
            | ResourceKind::ConsumerGroups => return errors,
            ResourceKind::Consumers => {
                let group = self
                    .consumers
                    .get(id)
                    .and_then(|c| c.spec.group_id.as_ref());
                if let Some(g) = group {
                    if !self.consumer_groups.contains_key(&g.0) {
                        errors.push(FieldError::new(
                            "group_id",
                            format!("consumer group `{g}` does not exist"),
                        ));
                    }
                }
                return errors;
            }
        };
        if let Some(u) = upstream_id {
            if !self.upstreams.contains_key(&u.0) {
                errors.push(FieldError::new(
                    "upstream_id",
                    format!("upstream `{u}` does not exist"),
                ));
            }
        }
        if let Some(s) = service_id {
            if !self.services.contains_key(&s.0) {
                errors.push(FieldError::new(
                    "service_id",
                    format!("service `{s}` does not exist"),
                ));
            }
        }
        let plugin_config_id = match kind {
            ResourceKind::Routes => self
                .routes
                .get(id)
                .and_then(|r| r.spec.plugin_config_id.as_ref()),
            _ => None,
        };
        if let Some(p) = plugin_config_id {
            if !self.plugin_configs.contains_key(&p.0) {
                errors.push(FieldError::new(
                    "plugin_config_id",
                    format!("plugin config `{p}` does not exist"),
                ));
            }
        }
        errors
    }

    /// Every dangling reference in the set, with paths such as `routes[id=1].upstream_id`.
    pub fn check_all_references(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for kind in [
            ResourceKind::Services,
            ResourceKind::Routes,
            ResourceKind::Consumers,
        ] {
            for (id, _) in self.list(kind) {
                let prefix = format!("{}[id={id}]", kind.segment());
                errors.extend(
                    self.check_references(kind, &id)
                        .into_iter()
                        .map(|e| e.under(&prefix)),
                );
            }
        }
        errors
    }

    /// The highest index in the set (the store's revision after a load).
    pub fn max_index(&self) -> u64 {
        ResourceKind::ALL
            .iter()
            .flat_map(|k| self.list(*k))
            .map(|(_, v)| v.modified_index.max(v.created_index))
            .chain(self.dynacode.iter().map(|d| d.modified_index))
            .max()
            .unwrap_or(0)
    }
}

/// Whether any string in `v` (Lua code in a plugin configuration) passes `requires`.
fn json_requires(v: &Value, requires: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => requires(s),
        Value::Array(a) => a.iter().any(|x| json_requires(x, requires)),
        Value::Object(o) => o.values().any(|x| json_requires(x, requires)),
        _ => false,
    }
}
