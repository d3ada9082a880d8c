//! Which plugins exist, and how a configuration becomes a runnable [`PluginInstance`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::lua::{CompiledFunction, LuaLimits, SharedDicts, Validator};
use crate::phase::Phase;

/// Why a plugin configuration was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    /// No plugin of this name exists in this build.
    #[error("unknown plugin `{0}`")]
    Unknown(String),
    /// The plugin exists but rejected its configuration (a Lua error names the line).
    #[error("{message}")]
    InvalidConfig { plugin: String, message: String },
}

/// A configured plugin, ready to run: the functions it runs and in which phase.
#[derive(Debug)]
pub struct PluginInstance {
    pub name: Arc<str>,
    /// Higher runs first within a phase (APISIX).
    pub priority: i32,
    /// The functions it runs, each in its phase, in order.
    pub functions: Vec<(Phase, Arc<CompiledFunction>)>,
}

/// What a plugin factory gets at apply time.
pub struct BuildInput<'a> {
    pub conf: &'a Value,
    /// Where the configuration lives (`routes[id=1].plugins.NAME`): names the code in
    /// errors, and gives each place its own Lua closures, as APISIX does per config.
    pub owner: &'a str,
    pub validator: &'a Validator,
}

/// Turns a configuration into an instance; the error names the field.
pub type Factory = fn(&BuildInput<'_>) -> Result<PluginInstance, String>;

/// Plugin names known to this build.
pub struct PluginRegistry {
    factories: BTreeMap<&'static str, Factory>,
    /// Runs user code once at apply time (it must load and return a function) in a VM
    /// no request ever uses.
    validator: Validator,
}

impl PluginRegistry {
    /// The built-in plugins, validating Lua under `limits` with the process's shared dicts.
    pub fn new(limits: LuaLimits, dicts: &SharedDicts) -> Result<PluginRegistry, String> {
        let validator = Validator::new(limits, dicts)
            .map_err(|e| format!("cannot create the Lua validator VM: {e}"))?;
        let mut factories: BTreeMap<&'static str, Factory> = BTreeMap::new();
        factories.insert("serverless-pre-function", crate::serverless::build_pre);
        factories.insert("serverless-post-function", crate::serverless::build_post);
        Ok(PluginRegistry {
            factories,
            validator,
        })
    }

    /// The built-in plugins with default Lua limits.
    pub fn builtin() -> PluginRegistry {
        match PluginRegistry::new(LuaLimits::default(), &SharedDicts::default()) {
            Ok(r) => r,
            // A VM with default limits is created at startup; failing here means the
            // process cannot allocate a Lua state at all.
            Err(e) => panic!("{e}"),
        }
    }

    /// Checks that `name` exists and that `conf` builds (Lua compiles, loads and returns
    /// functions).
    pub fn check(&self, name: &str, conf: &Value) -> Result<(), PluginError> {
        self.build(name, conf, name).map(|_| ())
    }

    /// Compiles a plugin module and reads what it declares (apply time, in the validator
    /// VM). The error names the code and the problem, with the line for syntax errors.
    pub fn inspect_module(
        &self,
        label: &str,
        source: &str,
    ) -> Result<(CompiledFunction, crate::lua::ModuleInfo), String> {
        let compiled = crate::lua::compile_module(label, source)?;
        let info = self.validator.inspect_module(&compiled)?;
        Ok((compiled, info))
    }

    /// Whether a plugin called `name` exists (a cheap check; `build` validates the conf).
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    /// Builds a runnable instance of `name` from `conf`, configured at `owner`.
    pub fn build(
        &self,
        name: &str,
        conf: &Value,
        owner: &str,
    ) -> Result<PluginInstance, PluginError> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        factory(&BuildInput {
            conf,
            owner,
            validator: &self.validator,
        })
        .map_err(|message| PluginError::InvalidConfig {
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
    use serde_json::json;

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
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            vec!["serverless-post-function", "serverless-pre-function"]
        );
    }

    #[test]
    fn serverless_code_is_checked_at_apply_time() {
        let r = PluginRegistry::builtin();
        let ok = json!({"phase": "access", "functions": ["return function(conf, ctx) ngx.exit(403) end"]});
        let inst = r
            .build(
                "serverless-pre-function",
                &ok,
                "routes[id=1].plugins.serverless-pre-function",
            )
            .unwrap();
        assert_eq!(
            inst.functions[0].1.label,
            "routes[id=1].plugins.serverless-pre-function.functions[0]"
        );
        assert_eq!(
            (inst.priority, inst.functions[0].0, inst.functions.len()),
            (10000, Phase::Access, 1)
        );
        let post = r
            .build(
                "serverless-post-function",
                &json!({"functions": ["return function() end"]}),
                "x",
            )
            .unwrap();
        assert_eq!((post.priority, post.functions[0].0), (-2000, Phase::Access));
        let e = r
            .check(
                "serverless-pre-function",
                &json!({"functions": ["return function()\n x = = 1 end"]}),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("functions[0]") && e.contains("line 2"), "{e}");
        let e = r
            .check(
                "serverless-pre-function",
                &json!({"functions": ["return 1"]}),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("must return a function"), "{e}");
        let e = r
            .check(
                "serverless-pre-function",
                &json!({"phase": "init_worker", "functions": ["return function() end"]}),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("phase"), "{e}");
        let e = r
            .check("serverless-pre-function", &json!({"functions": []}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("functions"), "{e}");
    }
}
