//! Lua plugin modules (`lua_plugins` resources), compiled and inspected at apply time.

use std::collections::HashMap;
use std::sync::Arc;

use portico_plugins::lua::CompiledFunction;
use portico_plugins::schema::Schema;
use portico_plugins::{Phase, PluginInstance, PluginRegistry};

use crate::config::{FieldError, ResourceSet};

/// A compiled module: what it declares, and its code shared by every use.
pub struct LuaModule {
    pub name: Arc<str>,
    pub priority: i32,
    pub schema: Option<Schema>,
    /// The schema as the module declared it (served by `GET /plugins/{name}`).
    pub schema_json: Option<serde_json::Value>,
    pub phases: Vec<Phase>,
    pub compiled: Arc<CompiledFunction>,
    /// The source this was built from, to reuse it when unchanged.
    source: String,
}

/// Compiles every module of `set`, reusing `prev`'s for unchanged code. Errors are
/// reported with paths such as `lua_plugins[id=my-auth].code`.
pub fn build_modules(
    set: &ResourceSet,
    prev: Option<&HashMap<String, Arc<LuaModule>>>,
    registry: &PluginRegistry,
    errors: &mut Vec<FieldError>,
) -> HashMap<String, Arc<LuaModule>> {
    let mut out = HashMap::new();
    for (id, entry) in &set.lua_plugins {
        let code = &entry.spec.code;
        if let Some(old) = prev.and_then(|p| p.get(id)).filter(|m| &m.source == code) {
            out.insert(id.clone(), Arc::clone(old));
            continue;
        }
        let path = format!("lua_plugins[id={id}].code");
        if registry.contains(id) {
            errors.push(FieldError::new(
                format!("lua_plugins[id={id}]"),
                format!("`{id}` is a built-in plugin"),
            ));
            continue;
        }
        let (compiled, info) = match registry.inspect_module(&format!("lua_plugins.{id}"), code) {
            Ok(x) => x,
            Err(e) => {
                errors.push(FieldError::new(path, e));
                continue;
            }
        };
        if let Some(name) = info.name.as_deref().filter(|n| *n != id) {
            errors.push(FieldError::new(
                path,
                format!("the module's name `{name}` differs from the plugin id `{id}`"),
            ));
            continue;
        }
        let schema = match info.schema.as_ref().map(Schema::parse).transpose() {
            Ok(s) => s,
            Err(e) => {
                errors.push(FieldError::new(path, format!("schema: {e}")));
                continue;
            }
        };
        out.insert(
            id.clone(),
            Arc::new(LuaModule {
                name: Arc::from(id.as_str()),
                priority: i32::try_from(info.priority).unwrap_or(0),
                schema,
                schema_json: info.schema,
                phases: info.phases,
                compiled: Arc::new(compiled),
                source: code.clone(),
            }),
        );
    }
    out
}

impl LuaModule {
    /// An instance for one use: `conf` validated against the module's schema (every
    /// error with its path under `path`), defaults filled in.
    pub fn instance(
        &self,
        conf: &serde_json::Value,
        owner: &str,
    ) -> Result<PluginInstance, Vec<FieldError>> {
        let conf = match &self.schema {
            Some(schema) => {
                let errs = schema.validate(conf);
                if !errs.is_empty() {
                    return Err(errs
                        .into_iter()
                        .map(|(p, m)| FieldError::new(crate::config::join_path(owner, &p), m))
                        .collect());
                }
                schema.with_defaults(conf)
            }
            None => conf.clone(),
        };
        let conf = Arc::new(conf);
        Ok(PluginInstance {
            name: Arc::clone(&self.name),
            priority: self.priority,
            functions: self
                .phases
                .iter()
                .map(|p| {
                    (
                        *p,
                        Arc::new(self.compiled.module_phase(*p, owner, Arc::clone(&conf))),
                    )
                })
                .collect(),
        })
    }
}
