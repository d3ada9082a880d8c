//! APISIX's `key-auth` (priority 2500, rewrite): the caller's key from header `header`
//! (default `apikey`) or else query argument `query` (default `apikey`) names a consumer
//! whose `key-auth` credential is that `key`. Missing: 401 `{"message":"Missing API key
//! in request"}`; unknown: 401 `{"message":"Invalid API key in request"}`. With
//! `hide_credentials` the key does not reach the upstream.

use std::sync::Arc;

use http::HeaderName;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "key-auth",
    priority: 2500,
    phases: &[Phase::Rewrite],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "header": {"type": "string", "default": "apikey"},
            "query": {"type": "string", "default": "apikey"},
            "hide_credentials": {"type": "boolean", "default": false}
        },
        "consumer_schema": {
            "type": "object",
            "properties": {"key": {"type": "string", "minLength": 1}},
            "required": ["key"]
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_name")]
    header: String,
    #[serde(default = "default_name")]
    query: String,
    #[serde(default)]
    hide_credentials: bool,
}

fn default_name() -> String {
    "apikey".to_string()
}

/// A consumer's credential: `{"key": "..."}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    key: String,
}

/// Checks a consumer's `key-auth` configuration and returns its key.
pub fn credential(conf: &Value) -> Result<String, String> {
    let c: Credential = serde_json::from_value(conf.clone()).map_err(|e| e.to_string())?;
    if c.key.is_empty() {
        return Err("key: must not be empty".to_string());
    }
    Ok(c.key)
}

struct KeyAuth {
    header: HeaderName,
    query: String,
    hide_credentials: bool,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let header = HeaderName::from_bytes(conf.header.as_bytes())
        .map_err(|_| format!("header: `{}` is not a header name", conf.header))?;
    if conf.query.is_empty() {
        return Err("query: must not be empty".to_string());
    }
    Ok(Arc::new(KeyAuth {
        header,
        query: conf.query,
        hide_credentials: conf.hide_credentials,
    }))
}

/// Where the key was found.
enum Found {
    Header(Vec<u8>),
    Query(String),
}

impl KeyAuth {
    fn find(&self, req: &RequestHeader) -> Option<Found> {
        if let Some(v) = req.headers.get(&self.header) {
            return Some(Found::Header(v.as_bytes().to_vec()));
        }
        let query = req.uri.query()?;
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == self.query)
            .map(|(_, v)| Found::Query(crate::vars::percent_decode(v).into_owned()))
    }
}

#[async_trait::async_trait]
impl Plugin for KeyAuth {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let Some(found) = self.find(req) else {
            return super::unauthorized("Missing API key in request");
        };
        let key: &[u8] = match &found {
            Found::Header(k) => k,
            Found::Query(k) => k.as_bytes(),
        };
        let Some(consumer) = cx.consumers.key_owner(key).cloned() else {
            return super::unauthorized("Invalid API key in request");
        };
        if self.hide_credentials {
            match found {
                Found::Header(_) => {
                    req.remove_header(&self.header);
                }
                Found::Query(_) => super::remove_query_arg(req, &self.query),
            }
        }
        super::attach(req, cx, &consumer);
        NativeOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{ConsumerIndex, ConsumerInput};
    use crate::native::test_support::{block_on, build as build_conf, TestRequest};

    fn index() -> ConsumerIndex {
        let plugins = json!({"key-auth": {"key": "auth-one"}});
        ConsumerIndex::build([ConsumerInput {
            username: "jack",
            group_id: None,
            plugins: plugins.as_object(),
        }])
        .unwrap()
    }

    fn run(conf: Value, req: &mut RequestHeader) -> (NativeOutcome, Option<String>) {
        let plugin = build_conf(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip("127.0.0.1");
        r.consumers = index();
        let out = block_on(plugin.rewrite(req, &mut r.cx()));
        (out, r.consumer.map(|c| c.username.to_string()))
    }

    #[test]
    fn header_then_query() {
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        req.insert_header("apikey", "auth-one").unwrap();
        let (out, who) = run(json!({}), &mut req);
        assert_eq!(out, NativeOutcome::Continue);
        assert_eq!(who.as_deref(), Some("jack"));
        assert_eq!(req.headers["apikey"], "auth-one");
        assert_eq!(req.headers["x-consumer-username"], "jack");

        let mut req = RequestHeader::build("GET", b"/a?apikey=auth-one&x=1", None).unwrap();
        let (out, who) = run(json!({"hide_credentials": true}), &mut req);
        assert_eq!(out, NativeOutcome::Continue);
        assert_eq!(who.as_deref(), Some("jack"));
        assert_eq!(req.uri.to_string(), "/a?x=1");
    }

    #[test]
    fn missing_and_invalid_keys_are_401() {
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        let (out, who) = run(json!({}), &mut req);
        assert_eq!(
            out,
            NativeOutcome::Respond {
                status: 401,
                body: r#"{"message":"Missing API key in request"}"#.into()
            }
        );
        assert!(who.is_none());
        req.insert_header("apikey", "nope").unwrap();
        let (out, _) = run(json!({}), &mut req);
        assert_eq!(
            out,
            NativeOutcome::Respond {
                status: 401,
                body: r#"{"message":"Invalid API key in request"}"#.into()
            }
        );
    }

    #[test]
    fn configuration_is_checked() {
        assert!(build_conf(&PLUGIN, json!({"header": "bad header"})).is_err());
        assert!(build_conf(&PLUGIN, json!({"nope": 1})).is_err());
        assert!(credential(&json!({"key": ""})).is_err());
        assert!(credential(&json!({})).is_err());
    }
}
