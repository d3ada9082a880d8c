//! The document format of lua-resty-dynacode.

use serde::Deserialize;

use super::FieldError;

/// The key the document is stored under (APISIX-style).
pub const KEY: &str = "/apisix/dynacode";

/// `{"general": {...}, "domains": [...]}`. Unknown fields are ignored, as
/// lua-resty-dynacode ignores them (CMSs add their own).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DynacodeDoc {
    #[serde(default)]
    pub general: DynacodeGeneral,
    #[serde(default)]
    pub domains: Vec<DynacodeDomain>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DynacodeGeneral {
    /// Anything but `"enabled"` disables the whole document.
    #[serde(default = "enabled")]
    pub status: String,
    /// Host regexes for which nothing runs.
    #[serde(default)]
    pub skip_domains: Vec<String>,
}

impl Default for DynacodeGeneral {
    fn default() -> Self {
        DynacodeGeneral {
            status: enabled(),
            skip_domains: Vec::new(),
        }
    }
}

fn enabled() -> String {
    "enabled".to_string()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DynacodeDomain {
    /// `"*"` (every host) or a regex searched in the host (unanchored, like `ngx.re.find`).
    pub name: String,
    #[serde(default)]
    pub plugins: Vec<DynacodeSnippet>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct DynacodeSnippet {
    pub name: String,
    /// A statement list, run whole in its phase for every matching request.
    pub code: String,
    pub phase: String,
}

impl DynacodeDoc {
    /// Parses a document; a wrong shape is an error naming the field.
    pub fn parse(value: &serde_json::Value) -> Result<DynacodeDoc, Vec<FieldError>> {
        if !value.is_object() {
            return Err(vec![FieldError::new("", "expected a JSON object")]);
        }
        crate::config::from_json(value).map_err(|e| vec![e])
    }

    pub fn is_enabled(&self) -> bool {
        self.general.status == "enabled"
    }
}
