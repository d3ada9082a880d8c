//! Resources that are Lua code uploaded by name: `lua_plugins` (an APISIX-style plugin
//! module, `PUT /apisix/admin/lua_plugins/{name}`, usable by name in every `plugins`
//! object) and `lua_modules` (a library, `PUT /apisix/admin/lua_modules/{name}` with a
//! dotted name such as `resty.redis`, `require`d by snippets, plugin modules and other
//! libraries). Both are compiled when inserted into a [`super::ResourceSet`] (`set.rs`).

use serde::Deserialize;

use super::{CheckSpec, FieldError, Id};

/// A Lua plugin module (`lua_plugins`).
pub type LuaPluginSpec = LuaCodeSpec;
/// A Lua library module (`lua_modules`).
pub type LuaModuleSpec = LuaCodeSpec;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LuaCodeSpec {
    /// The plugin or module name (the resource id).
    #[serde(default)]
    pub id: Option<Id>,
    /// Lua that returns the module's value: for a plugin, its table (`_M`, with
    /// `priority`, `schema` and phase functions); for a library, usually a table.
    pub code: String,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

impl CheckSpec for LuaCodeSpec {
    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.code.trim().is_empty() {
            errors.push(FieldError::new("code", "must not be empty"));
        }
        if let Some(id) = &self.id {
            if let Err(m) = super::check_id(&id.0) {
                errors.push(FieldError::new("id", m));
            }
        }
        errors
    }
}
