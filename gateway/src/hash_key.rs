//! The key a `chash` upstream hashes, parsed once from `hash_on` + `key` at apply time.

use std::borrow::Cow;

use serde::Deserialize;

use crate::vars::{RequestView, Template, Var};

/// What a `chash` upstream hashes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    /// `key` is a variable name: `uri`, `remote_addr`, `arg_id`, `http_x`, ...
    #[default]
    Vars,
    /// `key` is a request header name.
    Header,
    /// `key` is a cookie name.
    Cookie,
    /// `key` is a template such as `$host$uri`.
    VarsCombinations,
}

/// Where a request's hash key comes from.
#[derive(Debug)]
pub enum HashKey {
    /// `hash_on: vars`: a variable such as `uri`, `remote_addr`, `arg_id`.
    Var(Var),
    /// `hash_on: header`: a request header, by lowercase name.
    Header(http::HeaderName),
    /// `hash_on: cookie`: a cookie by name.
    Cookie(Var),
    /// `hash_on: vars_combinations`: a template such as `$host$uri`.
    Template(Template),
}

impl HashKey {
    /// Parses `key` for `hash_on`; the error says what is wrong with the key.
    pub fn parse(hash_on: HashOn, key: &str) -> Result<HashKey, String> {
        match hash_on {
            HashOn::Vars => Var::parse(key).map(HashKey::Var),
            HashOn::Header => http::HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{key}` is not a valid header name")),
            HashOn::Cookie => {
                if key.is_empty() || key.contains([';', '=', ' ']) {
                    Err(format!("`{key}` is not a valid cookie name"))
                } else {
                    Var::parse(&format!("cookie_{key}")).map(HashKey::Cookie)
                }
            }
            HashOn::VarsCombinations => Template::parse(key).map(HashKey::Template),
        }
    }

    /// The key of this request, or `None` when it is missing (the caller then falls back
    /// to the client address, as APISIX does).
    pub fn extract<'a>(&self, req: &RequestView<'a>) -> Option<Cow<'a, str>> {
        let key = match self {
            HashKey::Var(v) | HashKey::Cookie(v) => v.resolve(req),
            HashKey::Header(name) => req
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            HashKey::Template(t) => t.render(req).map(Cow::Owned),
        };
        key.filter(|k| !k.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
        RequestView {
            method: "GET",
            path: "/p",
            query,
            host: "example.com",
            headers,
            remote_addr: "10.0.0.1".parse().ok(),
            remote_port: Some(5555),
            server_port: Some(9080),
            scheme: "http",
            consumer_name: None,
        }
    }

    #[test]
    fn each_hash_on_extracts_its_key() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert("cookie", "a=1; sid=s42".parse().unwrap());
        let req = view(&h, Some("id=7"));
        let k = |on, key| {
            HashKey::parse(on, key)
                .unwrap()
                .extract(&req)
                .map(|c| c.into_owned())
        };
        assert_eq!(k(HashOn::Header, "X-User").as_deref(), Some("alice"));
        assert_eq!(k(HashOn::Cookie, "sid").as_deref(), Some("s42"));
        assert_eq!(k(HashOn::Vars, "arg_id").as_deref(), Some("7"));
        assert_eq!(k(HashOn::Vars, "uri").as_deref(), Some("/p"));
        assert_eq!(
            k(HashOn::VarsCombinations, "$host$uri").as_deref(),
            Some("example.com/p")
        );
        assert_eq!(k(HashOn::Header, "x-missing"), None);
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(HashKey::parse(HashOn::Vars, "no_such_var").is_err());
        assert!(HashKey::parse(HashOn::Header, "bad header").is_err());
        assert!(HashKey::parse(HashOn::Cookie, "a;b").is_err());
    }
}
