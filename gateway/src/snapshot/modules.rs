//! Lua plugin modules (`lua_plugins` resources), compiled and inspected at apply time.

use std::collections::HashMap;
use std::sync::Arc;

use portico_plugins::{LuaModule, PluginRegistry};

use crate::config::{FieldError, ResourceSet};

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
        match registry.compile_module(id, code) {
            Ok(module) => {
                out.insert(id.clone(), Arc::new(module));
            }
            Err(e) => {
                let path = if registry.contains(id) {
                    format!("lua_plugins[id={id}]")
                } else {
                    format!("lua_plugins[id={id}].code")
                };
                errors.push(FieldError::new(path, e));
            }
        }
    }
    out
}
