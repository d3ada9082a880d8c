//! APISIX's `consumer-restriction` (priority 2400, access): lets a request through only
//! when its authenticated consumer (`type: consumer_name`, the default) or the
//! consumer's group (`type: consumer_group_id`) is on the `whitelist`, or not on the
//! `blacklist`. No consumer: 401 `{"message":"Missing authentication or identity
//! verification."}`; refused: `rejected_code` (403) with `rejected_msg` or
//! `{"message":"The consumer_name is forbidden."}`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "consumer-restriction",
    priority: 2400,
    phases: &[Phase::Access],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["consumer_name", "consumer_group_id"], "default": "consumer_name"},
            "whitelist": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "blacklist": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "rejected_code": {"type": "integer", "minimum": 200, "default": 403},
            "rejected_msg": {"type": "string"}
        },
        "oneOf": [{"required": ["whitelist"]}, {"required": ["blacklist"]}]
    })
}

/// What the lists name.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ListOf {
    #[default]
    ConsumerName,
    ConsumerGroupId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default, rename = "type")]
    kind: ListOf,
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    #[serde(default = "default_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
}

fn default_code() -> u16 {
    403
}

struct ConsumerRestriction {
    kind: ListOf,
    /// `true`: only these pass; `false`: these are refused.
    allow: bool,
    names: HashSet<String>,
    rejected_code: u16,
    rejected_body: Bytes,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let (allow, names) = match (conf.whitelist, conf.blacklist) {
        (Some(w), None) => (true, w),
        (None, Some(b)) => (false, b),
        _ => return Err("exactly one of `whitelist` and `blacklist` is required".to_string()),
    };
    if names.is_empty() {
        return Err("the list must not be empty".to_string());
    }
    if !(200..=599).contains(&conf.rejected_code) {
        return Err("rejected_code: must be from 200 to 599".to_string());
    }
    let message = conf.rejected_msg.unwrap_or_else(|| {
        let what = match conf.kind {
            ListOf::ConsumerName => "consumer_name",
            ListOf::ConsumerGroupId => "consumer_group_id",
        };
        format!("The {what} is forbidden.")
    });
    Ok(Arc::new(ConsumerRestriction {
        kind: conf.kind,
        allow,
        names: names.into_iter().collect(),
        rejected_code: conf.rejected_code,
        rejected_body: Bytes::from(json!({ "message": message }).to_string()),
    }))
}

#[async_trait::async_trait]
impl Plugin for ConsumerRestriction {
    async fn access(&self, _req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let Some(consumer) = cx.consumer.as_ref() else {
            return NativeOutcome::Respond {
                status: 401,
                body: Bytes::from_static(
                    br#"{"message":"Missing authentication or identity verification."}"#,
                ),
            };
        };
        let value = match self.kind {
            ListOf::ConsumerName => Some(&*consumer.username),
            ListOf::ConsumerGroupId => consumer.group_id.as_deref(),
        };
        let listed = value.is_some_and(|v| self.names.contains(v));
        if listed == self.allow {
            NativeOutcome::Continue
        } else {
            NativeOutcome::Respond {
                status: self.rejected_code,
                body: self.rejected_body.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Consumer;
    use crate::native::test_support::{block_on, build as build_conf, TestRequest};

    fn status(conf: Value, who: Option<&str>) -> Option<u16> {
        let plugin = build_conf(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip("127.0.0.1");
        r.consumer = who.map(|u| {
            Arc::new(Consumer {
                username: Arc::from(u),
                group_id: Some(Arc::from("g1")),
            })
        });
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        match block_on(plugin.access(&mut req, &mut r.cx())) {
            NativeOutcome::Continue => None,
            NativeOutcome::Respond { status, .. } => Some(status),
        }
    }

    #[test]
    fn lists_decide() {
        let white = json!({"whitelist": ["jack"]});
        assert_eq!(status(white.clone(), Some("jack")), None);
        assert_eq!(status(white.clone(), Some("rose")), Some(403));
        assert_eq!(status(white, None), Some(401));
        let black = json!({"blacklist": ["jack"], "rejected_code": 401});
        assert_eq!(status(black.clone(), Some("jack")), Some(401));
        assert_eq!(status(black, Some("rose")), None);
        let groups = json!({"type": "consumer_group_id", "whitelist": ["g1"]});
        assert_eq!(status(groups, Some("rose")), None);
        assert!(build_conf(&PLUGIN, json!({})).is_err());
        assert!(build_conf(&PLUGIN, json!({"whitelist": ["a"], "blacklist": ["b"]})).is_err());
    }
}
