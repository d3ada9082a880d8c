//! APISIX's `basic-auth` (priority 2520, rewrite): `Authorization: Basic base64(user:pass)`
//! names a consumer whose `basic-auth` credential is that `username`/`password`. A
//! missing header is 401 `{"message":"Missing authorization in request"}` with
//! `WWW-Authenticate: Basic realm='.'`; a malformed one 401 `{"message":"Invalid
//! authorization in request"}`; an unknown user or wrong password 401 `{"message":
//! "Invalid user authorization"}`. With `hide_credentials` the header does not reach the
//! upstream.

use std::sync::Arc;

use base64::Engine;
use http::HeaderValue;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "basic-auth",
    priority: 2520,
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
            "hide_credentials": {"type": "boolean", "default": false}
        },
        "consumer_schema": {
            "type": "object",
            "properties": {
                "username": {"type": "string", "minLength": 1},
                "password": {"type": "string", "minLength": 1}
            },
            "required": ["username", "password"]
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default)]
    hide_credentials: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    username: String,
    password: String,
}

/// Checks a consumer's `basic-auth` configuration: its username and password.
pub fn credential(conf: &Value) -> Result<(String, String), String> {
    let c: Credential = serde_json::from_value(conf.clone()).map_err(|e| e.to_string())?;
    if c.username.is_empty() {
        return Err("username: must not be empty".to_string());
    }
    if c.password.is_empty() {
        return Err("password: must not be empty".to_string());
    }
    Ok((c.username, c.password))
}

struct BasicAuth {
    hide_credentials: bool,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(BasicAuth {
        hide_credentials: conf.hide_credentials,
    }))
}

/// `user` and `password` of a `Basic` authorization value.
fn decode(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = raw.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(raw[..colon].to_vec()).ok()?;
    Some((user, raw[colon + 1..].to_vec()))
}

#[async_trait::async_trait]
impl Plugin for BasicAuth {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let Some(value) = req.headers.get(http::header::AUTHORIZATION) else {
            cx.response_headers.push((
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm='.'"),
            ));
            return super::unauthorized("Missing authorization in request");
        };
        let Some((user, password)) = decode(value.as_bytes()) else {
            return super::unauthorized("Invalid authorization in request");
        };
        let Some(consumer) = cx.consumers.basic_owner(&user, &password).cloned() else {
            return super::unauthorized("Invalid user authorization");
        };
        if self.hide_credentials {
            req.remove_header(&http::header::AUTHORIZATION);
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

    fn run(auth: Option<&str>) -> (NativeOutcome, Option<String>, usize) {
        let plugins = json!({"basic-auth": {"username": "foo", "password": "bar"}});
        let plugin = build_conf(&PLUGIN, json!({"hide_credentials": true})).unwrap();
        let mut r = TestRequest::from_ip("127.0.0.1");
        r.consumers = ConsumerIndex::build([ConsumerInput {
            username: "jack",
            group_id: None,
            plugins: plugins.as_object(),
        }])
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/a", None).unwrap();
        if let Some(a) = auth {
            req.insert_header("authorization", a).unwrap();
        }
        let out = block_on(plugin.rewrite(&mut req, &mut r.cx()));
        assert!(out != NativeOutcome::Continue || !req.headers.contains_key("authorization"));
        (
            out,
            r.consumer.map(|c| c.username.to_string()),
            r.response_headers.len(),
        )
    }

    #[test]
    fn basic_credentials_find_the_consumer() {
        // foo:bar
        let (out, who, _) = run(Some("Basic Zm9vOmJhcg=="));
        assert_eq!(out, NativeOutcome::Continue);
        assert_eq!(who.as_deref(), Some("jack"));
        let (out, _, n) = run(None);
        assert!(matches!(out, NativeOutcome::Respond { status: 401, .. }));
        assert_eq!(n, 1, "WWW-Authenticate");
        // foo:baz
        let (out, _, _) = run(Some("Basic Zm9vOmJheg=="));
        assert_eq!(
            out,
            NativeOutcome::Respond {
                status: 401,
                body: r#"{"message":"Invalid user authorization"}"#.into()
            }
        );
        let (out, _, _) = run(Some("Bearer x"));
        assert!(matches!(out, NativeOutcome::Respond { status: 401, .. }));
    }
}
