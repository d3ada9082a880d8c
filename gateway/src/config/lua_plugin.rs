//! The `lua_plugin` resource: an APISIX-style plugin module uploaded as code
//! (`PUT /apisix/admin/lua_plugins/{name}`), usable by name in every `plugins` object.

use serde::Deserialize;

use super::{CheckSpec, FieldError, Id};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LuaPluginSpec {
    /// The plugin name (the resource id).
    #[serde(default)]
    pub id: Option<Id>,
    /// Lua that returns the module table (`_M`, with `priority`, `schema` and phase
    /// functions).
    pub code: String,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

impl CheckSpec for LuaPluginSpec {
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
