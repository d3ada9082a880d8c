//! The `lua_modules` resource: a Lua library (not a plugin) uploaded as code
//! (`PUT /apisix/admin/lua_modules/{name}`, dotted names such as `resty.redis`) and
//! `require`d by that name from snippets, plugin modules and other library modules.
//! Compiled when inserted into a [`super::ResourceSet`] (see `set.rs`).

use serde::Deserialize;

use super::{CheckSpec, FieldError, Id};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LuaModuleSpec {
    /// The module name (the resource id).
    #[serde(default)]
    pub id: Option<Id>,
    /// Lua source returning the module's value (usually a table).
    pub code: String,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

impl CheckSpec for LuaModuleSpec {
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
