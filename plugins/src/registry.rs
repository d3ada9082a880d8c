//! Which plugins exist, and how a configuration becomes a runnable [`PluginInstance`]:
//! built-in Lua plugins (the serverless pair), native plugins, and the Lua plugin
//! modules a configuration uploads. [`PluginRegistry::resolve`] answers for any name.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::instance::{BuildInput, PluginInstance, Step};
use crate::lua::{CompiledFunction, LuaLimits, SharedDicts, Validator};
use crate::lua_module::LuaModule;
use crate::native::NativePlugin;
use crate::schema::Schema;

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

/// Turns a configuration into an instance; the error names the field.
pub type Factory = fn(&BuildInput<'_>) -> Result<PluginInstance, String>;

/// Plugin names known to this build.
pub struct PluginRegistry {
    factories: BTreeMap<&'static str, Factory>,
    natives: BTreeMap<&'static str, NativePlugin>,
    /// Runs user code once at apply time (it must load and return a function) in a VM
    /// no request ever uses.
    validator: Validator,
    /// The process's `ngx.shared` dictionaries: a module's `shared_dicts` are created here.
    dicts: SharedDicts,
}

impl PluginRegistry {
    /// The built-in plugins, validating Lua under `limits` with the process's shared dicts.
    pub fn new(limits: LuaLimits, dicts: &SharedDicts) -> Result<PluginRegistry, String> {
        let validator = Validator::new(limits, dicts)
            .map_err(|e| format!("cannot create the Lua validator VM: {e}"))?;
        let mut factories: BTreeMap<&'static str, Factory> = BTreeMap::new();
        factories.insert("serverless-pre-function", crate::serverless::build_pre);
        factories.insert("serverless-post-function", crate::serverless::build_post);
        let natives = crate::native::builtin()
            .into_iter()
            .map(|n| (n.name, n))
            .collect();
        Ok(PluginRegistry {
            factories,
            natives,
            validator,
            dicts: dicts.clone(),
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

    /// The library modules (`lua_modules`) of the configuration being built: code checked
    /// from now on may `require` them (call before building plugin instances).
    pub fn set_lua_libraries(&self, libs: &std::sync::Arc<crate::lua::LuaLibraries>) {
        self.validator.set_libraries(libs);
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

    /// Compiles the code of the Lua plugin module `id` (a `lua_plugins` resource) and
    /// reads what it declares. The error names the problem, with the line for syntax
    /// errors.
    pub fn compile_module(&self, id: &str, code: &str) -> Result<LuaModule, String> {
        if self.contains(id) {
            return Err(format!("`{id}` is a built-in plugin"));
        }
        let (compiled, info) = self.inspect_module(&format!("lua_plugins.{id}"), code)?;
        if let Some(name) = info.name.as_deref().filter(|n| *n != id) {
            return Err(format!(
                "the module's name `{name}` differs from the plugin id `{id}`"
            ));
        }
        let schema = info
            .schema
            .as_ref()
            .map(Schema::parse)
            .transpose()
            .map_err(|e| format!("schema: {e}"))?;
        // Created (or grown) now, before any worker runs the module; a dictionary stays
        // when the module goes (like an nginx zone, see `shared_dict_registry.rs`).
        for (name, bytes) in &info.shared_dicts {
            self.dicts.ensure(name, *bytes);
        }
        Ok(LuaModule {
            name: Arc::from(id),
            priority: i32::try_from(info.priority).unwrap_or(0),
            schema,
            schema_json: info.schema,
            phases: info.phases,
            compiled: Arc::new(compiled),
            source: code.to_string(),
        })
    }

    /// Whether a built-in plugin (Lua or native) called `name` exists (a cheap check;
    /// `build` validates the conf).
    pub fn contains(&self, name: &str) -> bool {
        self.factories.contains_key(name) || self.natives.contains_key(name)
    }

    /// The JSON Schema of a native plugin's configuration.
    pub fn native_schema(&self, name: &str) -> Option<Value> {
        self.natives.get(name).map(|n| (n.schema)())
    }

    /// The instance of plugin `name` configured with `conf` at `owner`, whatever kind of
    /// plugin it is: built-in, native, or one of the configuration's Lua `modules`.
    /// `Ok(None)`: no plugin has that name (a module deleted with `force`). Errors carry
    /// the path of the field they are about.
    /// `metadata` is the plugin's `plugin_metadata` object, if one is configured.
    pub fn resolve(
        &self,
        name: &str,
        conf: &Value,
        owner: &str,
        modules: &HashMap<String, Arc<LuaModule>>,
        metadata: Option<&Value>,
    ) -> Result<Option<PluginInstance>, Vec<(String, String)>> {
        if self.contains(name) {
            return self
                .build_with_metadata(name, conf, owner, metadata)
                .map(Some)
                .map_err(|e| vec![(owner.to_string(), e.to_string())]);
        }
        match modules.get(name) {
            Some(m) => m.instance(conf, owner).map(Some),
            None => Ok(None),
        }
    }

    /// Builds a runnable instance of `name` from `conf`, configured at `owner`.
    pub fn build(
        &self,
        name: &str,
        conf: &Value,
        owner: &str,
    ) -> Result<PluginInstance, PluginError> {
        self.build_with_metadata(name, conf, owner, None)
    }

    /// [`PluginRegistry::build`] with the plugin's metadata (native plugins only; the
    /// built-in Lua plugins take none).
    pub fn build_with_metadata(
        &self,
        name: &str,
        conf: &Value,
        owner: &str,
        metadata: Option<&Value>,
    ) -> Result<PluginInstance, PluginError> {
        let invalid = |message| PluginError::InvalidConfig {
            plugin: name.to_string(),
            message,
        };
        if let Some(native) = self.natives.get(name) {
            let instance = (native.build)(&crate::native::NativeBuildInput {
                conf,
                owner,
                metadata,
            })
            .map_err(invalid)?;
            return Ok(PluginInstance {
                name: Arc::from(native.name),
                priority: native.priority,
                steps: native
                    .phases
                    .iter()
                    .map(|p| (*p, Step::Native(Arc::clone(&instance))))
                    .collect(),
            });
        }
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| PluginError::Unknown(name.to_string()))?;
        factory(&BuildInput {
            conf,
            owner,
            validator: &self.validator,
        })
        .map_err(invalid)
    }

    /// The JSON Schema of plugin `name`'s metadata; `None` when the plugin takes none.
    pub fn metadata_schema(&self, name: &str) -> Option<Value> {
        self.natives
            .get(name)
            .and_then(|n| n.metadata_schema)
            .map(|schema| schema())
    }

    /// Checks a `plugin_metadata` object for plugin `name`: the plugin must exist and take
    /// metadata, and `value` must satisfy its metadata schema. Errors are (JSON path
    /// relative to `value`, message), every one of them.
    pub fn check_metadata(&self, name: &str, value: &Value) -> Result<(), Vec<(String, String)>> {
        if !self.contains(name) {
            return Err(vec![(
                String::new(),
                format!("invalid plugin name: `{name}` is not a plugin of this build"),
            )]);
        }
        let Some(schema) = self.metadata_schema(name) else {
            return Err(vec![(
                String::new(),
                format!("plugin `{name}` has no metadata schema: it takes no plugin_metadata"),
            )]);
        };
        let schema = Schema::parse(&schema).map_err(|e| {
            // A built-in schema is a constant: failing to parse is a bug of this build.
            vec![(
                String::new(),
                format!("the metadata schema of `{name}`: {e}"),
            )]
        })?;
        let errors = schema.validate(value);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The group `conf` shares its state with, for plugins that have groups
    /// (`limit-count`'s `group`): configurations of one group must be identical.
    pub fn group_of(&self, name: &str, conf: &Value) -> Option<String> {
        self.natives.get(name)?.group.and_then(|g| g(conf))
    }

    /// The priority of a built-in plugin (Lua or native).
    pub fn priority(&self, name: &str) -> Option<i32> {
        match name {
            "serverless-pre-function" => Some(10000),
            "serverless-post-function" => Some(-2000),
            _ => self.natives.get(name).map(|n| n.priority),
        }
    }

    /// Names of every built-in plugin (Lua and native), sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        let mut names: Vec<&'static str> = self
            .factories
            .keys()
            .chain(self.natives.keys())
            .copied()
            .collect();
        names.sort_unstable();
        names.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phase::Phase;
    use serde_json::json;

    #[test]
    fn native_plugins_resolve_into_native_steps() {
        let r = PluginRegistry::builtin();
        let inst = r
            .resolve(
                "request-id",
                &json!({}),
                "routes[id=1].plugins.request-id",
                &HashMap::new(),
                None,
            )
            .unwrap()
            .unwrap();
        assert_eq!(inst.priority, 12015);
        let phases: Vec<Phase> = inst.steps.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, vec![Phase::Rewrite, Phase::HeaderFilter]);
        assert!(matches!(inst.steps[0].1, Step::Native(_)));
        let errs = r
            .resolve(
                "request-id",
                &json!({"algorithm": 1}),
                "x.request-id",
                &HashMap::new(),
                None,
            )
            .unwrap_err();
        assert_eq!(errs[0].0, "x.request-id");
        assert!(r
            .resolve("nope", &json!({}), "x", &HashMap::new(), None)
            .unwrap()
            .is_none());
        assert!(r.native_schema("request-id").is_some());
    }

    #[test]
    fn unknown_plugin_is_named() {
        let r = PluginRegistry::builtin();
        assert_eq!(
            r.check("proxy-mirror", &Value::Null),
            Err(PluginError::Unknown("proxy-mirror".into()))
        );
        assert_eq!(
            r.check("x", &Value::Null).unwrap_err().to_string(),
            "unknown plugin `x`"
        );
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            vec![
                "basic-auth",
                "brotli",
                "consumer-restriction",
                "cors",
                "gzip",
                "ip-restriction",
                "jwt-auth",
                "key-auth",
                "limit-conn",
                "limit-count",
                "limit-req",
                "mocking",
                "proxy-rewrite",
                "real-ip",
                "redirect",
                "request-id",
                "response-rewrite",
                "serverless-post-function",
                "serverless-pre-function"
            ]
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
        let Step::Lua(f) = &inst.steps[0].1 else {
            panic!("a serverless step is Lua")
        };
        assert_eq!(
            f.label,
            "routes[id=1].plugins.serverless-pre-function.functions[0]"
        );
        assert_eq!(
            (inst.priority, inst.steps[0].0, inst.steps.len()),
            (10000, Phase::Access, 1)
        );
        let post = r
            .build(
                "serverless-post-function",
                &json!({"functions": ["return function() end"]}),
                "x",
            )
            .unwrap();
        assert_eq!((post.priority, post.steps[0].0), (-2000, Phase::Access));
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

    #[test]
    fn modules_declare_the_shared_dicts_they_need() {
        let dicts = SharedDicts::default();
        let r = PluginRegistry::new(LuaLimits::default(), &dicts).unwrap();
        let code = r#"return { shared_dicts = { my_limit = "64k", bytes = 16384 },
            access = function() end }"#;
        r.compile_module("m", code).unwrap();
        let many = (0..65)
            .map(|i| format!("d{i} = \"8k\""))
            .collect::<Vec<_>>()
            .join(", ");
        let e = r
            .compile_module(
                "m3",
                &format!("return {{ shared_dicts = {{ {many} }}, access = function() end }}"),
            )
            .err()
            .unwrap_or_default();
        assert!(e.contains("at most 64"), "{e}");
        let lua = mlua::Lua::new();
        let t = dicts.table(&lua).unwrap();
        lua.globals().raw_set("shared", t).unwrap();
        let caps: (usize, usize) = lua
            .load("return shared.my_limit:capacity(), shared.bytes:capacity()")
            .eval()
            .unwrap();
        assert_eq!(caps, (64 * 1024, 16 * 1024));
        for (bad, want) in [
            (r#"{ d = "tiny" }"#, "shared_dicts.d: `tiny` is not a size"),
            (r#"{ d = "1k" }"#, "shared_dicts.d: must be at least 8k"),
            (r#""10m""#, "`shared_dicts` must be a table"),
            (
                r#"{ [1] = "1m" }"#,
                "names must be strings of 1 to 128 bytes",
            ),
        ] {
            let code = format!("return {{ shared_dicts = {bad}, access = function() end }}");
            let e = r.compile_module("m2", &code).err().unwrap_or_default();
            assert!(e.contains("lua_plugins.m2") && e.contains(want), "{e}");
        }
    }
}
