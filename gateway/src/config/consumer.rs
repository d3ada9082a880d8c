//! The APISIX `consumer` object: a caller known by `username`, with the credentials of
//! auth plugins and any other plugin, which then runs for that consumer's requests.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CheckSpec, FieldError, Id};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    pub username: String,
    /// Set by the store (the username); accepted so a stored object parses again.
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub plugins: Option<Map<String, Value>>,
    #[serde(default)]
    pub group_id: Option<Id>,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

/// APISIX's `username` rule: `^[a-zA-Z0-9_\-]+$`, and at most 100 characters.
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "username `{name}` must be 1 to 100 characters of a-z, A-Z, 0-9, '_' and '-'"
        ))
    }
}

impl CheckSpec for ConsumerSpec {
    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Err(m) = check_username(&self.username) {
            errors.push(FieldError::new("username", m));
        }
        if let Some(id) = &self.id {
            if id.0 != self.username {
                errors.push(FieldError::new(
                    "username",
                    format!("must equal the consumer's id `{id}`"),
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_spec;
    use serde_json::json;

    #[test]
    fn usernames_follow_apisix() {
        let ok: ConsumerSpec =
            parse_spec(&json!({"username": "jack_1-x", "plugins": {"key-auth": {"key": "k"}}}))
                .unwrap();
        assert_eq!(ok.username, "jack_1-x");
        let errs = parse_spec::<ConsumerSpec>(&json!({"username": "ja ck"})).unwrap_err();
        assert_eq!(errs[0].path, "username");
        let errs = parse_spec::<ConsumerSpec>(&json!({"username": "a", "nope": 1})).unwrap_err();
        assert!(errs[0].message.contains("nope"), "{errs:?}");
    }
}
