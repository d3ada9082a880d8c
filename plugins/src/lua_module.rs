//! Lua plugin modules (APISIX-style: priority, JSON Schema, phase functions), uploaded as
//! `lua_plugins` resources: compiled and inspected once at apply time, then instantiated
//! for each place that configures them.

use std::sync::Arc;

use serde_json::Value;

use crate::instance::{PluginInstance, Step};
use crate::lua::CompiledFunction;
use crate::phase::Phase;
use crate::schema::Schema;

/// A compiled module: what it declares, and its code shared by every use.
pub struct LuaModule {
    pub name: Arc<str>,
    pub priority: i32,
    pub schema: Option<Schema>,
    /// The schema as the module declared it (served by `GET /plugins/{name}`).
    pub schema_json: Option<Value>,
    pub phases: Vec<Phase>,
    pub compiled: Arc<CompiledFunction>,
    /// The source this was built from, to reuse it when unchanged.
    pub source: String,
}

impl LuaModule {
    /// An instance for one use: `conf` validated against the module's schema (every
    /// error with its path under `owner`), defaults filled in.
    pub fn instance(
        &self,
        conf: &Value,
        owner: &str,
    ) -> Result<PluginInstance, Vec<(String, String)>> {
        let conf = match &self.schema {
            Some(schema) => {
                let errs = schema.validate(conf);
                if !errs.is_empty() {
                    return Err(errs
                        .into_iter()
                        .map(|(p, m)| (join(owner, &p), m))
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
            steps: self
                .phases
                .iter()
                .map(|p| {
                    let f = self.compiled.module_phase(*p, owner, Arc::clone(&conf));
                    (*p, Step::Lua(Arc::new(f)))
                })
                .collect(),
        })
    }
}

/// `a` + `b` → `a.b`, `a` + `[0]` → `a[0]`, as configuration error paths are joined.
fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}
