//! Lua library modules uploaded as `lua_modules` resources, and `require` of them.
//!
//! A library is compiled at apply time (syntax errors and LuaJIT-only constructs are
//! refused with their line) and versioned by its content. Each VM runs a library's chunk
//! once per version, on its first `require`, and keeps the value in `package.loaded`:
//! module-level state lives per worker VM across requests, as in OpenResty. A new
//! version replaces it at the next `require`, and so does everything loaded while the
//! old one was required (a plugin's outer chunk holding `local m = require "m"`): each
//! loaded function and library records the library versions it required, and is loaded
//! again once one of them changed.

use std::collections::HashMap;
use std::sync::Arc;

use mlua::chunk::ChunkMode;
use mlua::{Lua, Table, Value};
use parking_lot::Mutex;

use super::compile::{compile_statements, CompiledFunction};
use super::env::{new_env, seal};

/// Library versions (name, id) something required while it loaded.
pub(super) type LibDeps = Vec<(String, u64)>;

/// One compiled library.
#[derive(Debug)]
pub struct LuaLibrary {
    pub name: String,
    /// Content hash of the code: the library's version.
    pub id: u64,
    compiled: CompiledFunction,
    /// Modules its code requires by string literal (see `lua_scan.rs`).
    pub requires: Vec<String>,
}

/// The library modules of one configuration, by name.
#[derive(Debug, Default)]
pub struct LuaLibraries {
    by_name: HashMap<String, Arc<LuaLibrary>>,
}

impl LuaLibraries {
    pub fn new(libs: impl IntoIterator<Item = Arc<LuaLibrary>>) -> LuaLibraries {
        LuaLibraries {
            by_name: libs.into_iter().map(|l| (l.name.clone(), l)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<LuaLibrary>> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Every recorded (name, version) is still the current one.
    fn current(&self, deps: &[(String, u64)]) -> bool {
        deps.iter()
            .all(|(n, id)| self.by_name.get(n).is_some_and(|l| l.id == *id))
    }
}

/// Names `require` answers with Portico's own modules whatever is uploaded: the `ngx`
/// API and the modules the runtime implements in Rust.
pub fn reserved_name(name: &str) -> bool {
    name == "ngx"
        || name.starts_with("ngx.")
        || name.starts_with("table.")
        || matches!(name, "cjson" | "cjson.safe" | "bit" | "ffi")
}

/// Compiles library `name`: a 400-worthy message naming the line on a syntax error, a
/// `goto`, or the FFI.
pub fn compile_library(name: &str, source: &str) -> Result<LuaLibrary, String> {
    if reserved_name(name) {
        return Err(format!(
            "`{name}` is a module built into Portico's Lua runtime; choose another name"
        ));
    }
    let label = format!("lua_modules.{name}");
    let report = super::lua_scan::check_luau_compatible(&label, source)?;
    let compiled = compile_statements(&label, source)?;
    let mut requires: Vec<String> = report.requires.into_iter().map(|(n, _)| n).collect();
    requires.sort();
    requires.dedup();
    Ok(LuaLibrary {
        name: name.to_string(),
        id: compiled.id,
        compiled,
        requires,
    })
}

/// The modules `source` requires by string literal (for `DELETE`'s in-use check).
pub fn required_modules(source: &str) -> Vec<String> {
    if !source.contains("require") {
        return Vec::new();
    }
    super::lua_scan::scan(source)
        .requires
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// What one VM loaded.
struct Cached {
    id: u64,
    /// Versions of every library required (transitively) while it loaded.
    deps: Vec<(String, u64)>,
}

/// Per VM: the libraries of the configuration the running code belongs to, and what
/// this VM loaded of them.
pub(super) struct LibraryState {
    current: Mutex<Arc<LuaLibraries>>,
    cache: Mutex<HashMap<String, Cached>>,
    /// Libraries whose chunk is running (a `require` chain), for cycle errors.
    loading: Mutex<Vec<String>>,
    /// One list per load in progress: the library versions it required.
    collectors: Mutex<Vec<Vec<(String, u64)>>>,
    package_loaded: Table,
    globals: Table,
}

impl LibraryState {
    /// `globals` are the read-only globals library chunks read through to.
    pub(super) fn new(lua: &Lua, globals: &Table) -> mlua::Result<LibraryState> {
        let package = lua.create_table()?;
        let package_loaded = lua.create_table()?;
        package.raw_set("loaded", package_loaded.clone())?;
        globals.raw_set("package", package)?;
        Ok(LibraryState {
            current: Mutex::new(Arc::new(LuaLibraries::default())),
            cache: Mutex::new(HashMap::new()),
            loading: Mutex::new(Vec::new()),
            collectors: Mutex::new(Vec::new()),
            package_loaded,
            globals: globals.clone(),
        })
    }

    /// The running code belongs to a configuration with `libs`.
    pub(super) fn set_current(&self, libs: &Arc<LuaLibraries>) {
        let mut cur = self.current.lock();
        if !Arc::ptr_eq(&cur, libs) {
            *cur = Arc::clone(libs);
        }
    }

    /// Whether something loaded with these library versions is still current.
    pub(super) fn deps_current(&self, deps: &[(String, u64)]) -> bool {
        deps.is_empty() || self.current.lock().current(deps)
    }

    /// Runs `f` recording the library versions required meanwhile.
    pub(super) fn collect<T>(&self, f: impl FnOnce() -> T) -> (T, Vec<(String, u64)>) {
        self.collectors.lock().push(Vec::new());
        let r = f();
        let deps = self.collectors.lock().pop().unwrap_or_default();
        self.note(&deps);
        (r, deps)
    }

    /// Records `deps` in the load in progress, if any.
    pub(super) fn note(&self, deps: &[(String, u64)]) {
        if let Some(top) = self.collectors.lock().last_mut() {
            for d in deps {
                if !top.contains(d) {
                    top.push(d.clone());
                }
            }
        }
    }

    /// `require(name)` of an uploaded library: `None` when there is none by that name.
    pub(super) fn require(&self, lua: &Lua, name: &str) -> mlua::Result<Option<Value>> {
        let libs = Arc::clone(&self.current.lock());
        let Some(lib) = libs.get(name) else {
            return Ok(None);
        };
        let cached_deps = {
            let cache = self.cache.lock();
            cache
                .get(name)
                .filter(|c| c.id == lib.id && libs.current(&c.deps))
                .map(|c| c.deps.clone())
        };
        if let Some(deps) = cached_deps {
            let value = self.package_loaded.raw_get::<Value>(name)?;
            if !value.is_nil() {
                self.note(&[(name.to_string(), lib.id)]);
                self.note(&deps);
                return Ok(Some(value));
            }
        }
        {
            let mut loading = self.loading.lock();
            if loading.iter().any(|n| n == name) {
                let chain = loading.join(" -> ");
                return Err(mlua::Error::runtime(format!(
                    "loop or previous error loading module '{name}': require cycle {chain} -> {name}"
                )));
            }
            loading.push(name.to_string());
        }
        let (result, deps) = self.collect(|| self.run_chunk(lua, lib));
        self.loading.lock().pop();
        let value = match result? {
            Value::Nil => Value::Boolean(true),
            v => v,
        };
        self.package_loaded.raw_set(name, value.clone())?;
        self.cache.lock().insert(
            name.to_string(),
            Cached {
                id: lib.id,
                deps: deps.clone(),
            },
        );
        self.note(&[(name.to_string(), lib.id)]);
        Ok(Some(value))
    }

    /// Runs a library's chunk in its own environment (sealed afterwards: module state
    /// goes in locals, not globals), with the module name as `...`.
    fn run_chunk(&self, lua: &Lua, lib: &LuaLibrary) -> mlua::Result<Value> {
        let (env, env_mt) = new_env(lua, &self.globals)?;
        // Loaded with no request current; the chunk itself then runs in the caller's.
        let chunk = super::current::without_request(lua, || {
            lua.load(&lib.compiled.bytecode[..])
                .set_mode(ChunkMode::Binary)
                .set_name(lib.compiled.label.as_str())
                .set_environment(env)
                .into_function()
        })?;
        let value = chunk.call::<Value>(lib.name.as_str())?;
        seal(lua, &env_mt, &lib.compiled.label)?;
        Ok(value)
    }
}
