//! APISIX's `ip-restriction` (priority 3000, access phase): a `whitelist` or a
//! `blacklist` (exactly one) of addresses and CIDR ranges, v4 and v6. A refused client
//! gets `response_code` (403, or 404) and `{"message": message}`. The client address is
//! the connection's, or the one `real-ip` set for the request.

use std::sync::Arc;

use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ip_set::IpSet;
use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "ip-restriction",
    priority: 3000,
    phases: &[Phase::Access],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    let list = json!({"type": "array", "minItems": 1, "items": {"type": "string"}});
    json!({
        "type": "object",
        "properties": {
            "whitelist": list,
            "blacklist": list,
            "message": {"type": "string", "minLength": 1, "maxLength": 1024,
                        "default": "Your IP address is not allowed"},
            "response_code": {"type": "integer", "minimum": 403, "maximum": 404, "default": 403}
        },
        "oneOf": [{"required": ["whitelist"]}, {"required": ["blacklist"]}]
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    whitelist: Option<Vec<String>>,
    blacklist: Option<Vec<String>>,
    #[serde(default = "default_message")]
    message: String,
    #[serde(default = "default_code")]
    response_code: u16,
}

fn default_message() -> String {
    "Your IP address is not allowed".to_string()
}
fn default_code() -> u16 {
    403
}

/// Which way the list works.
enum Rule {
    Allow(IpSet),
    Deny(IpSet),
}

struct IpRestriction {
    rule: Rule,
    status: u16,
    body: Bytes,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let rule = match (&conf.whitelist, &conf.blacklist) {
        (Some(w), None) => Rule::Allow(non_empty("whitelist", w)?),
        (None, Some(b)) => Rule::Deny(non_empty("blacklist", b)?),
        _ => {
            return Err("whitelist, blacklist: exactly one of them must be configured".to_string())
        }
    };
    if conf.message.is_empty() || conf.message.len() > 1024 {
        return Err("message: must be 1 to 1024 characters".to_string());
    }
    if !(403..=404).contains(&conf.response_code) {
        return Err(format!(
            "response_code: {} is not 403 or 404",
            conf.response_code
        ));
    }
    Ok(Arc::new(IpRestriction {
        rule,
        status: conf.response_code,
        body: Bytes::from(json!({"message": conf.message}).to_string()),
    }))
}

fn non_empty(field: &str, items: &[String]) -> Result<IpSet, String> {
    if items.is_empty() {
        return Err(format!("{field}: must list at least one address"));
    }
    IpSet::parse(field, items)
}

#[async_trait::async_trait]
impl Plugin for IpRestriction {
    async fn access(&self, _req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        // An unknown address (a Unix socket peer) is in no list.
        let allowed = match (&self.rule, cx.client_ip()) {
            (Rule::Allow(set), Some(ip)) => set.contains(ip),
            (Rule::Allow(_), None) => false,
            (Rule::Deny(set), Some(ip)) => !set.contains(ip),
            (Rule::Deny(_), None) => true,
        };
        if allowed {
            NativeOutcome::Continue
        } else {
            NativeOutcome::Respond {
                status: self.status,
                body: self.body.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    fn run(conf: Value, ip: &str) -> NativeOutcome {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip(ip);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        block_on(p.access(&mut req, &mut r.cx()))
    }

    #[test]
    fn whitelist_and_blacklist() {
        let w = json!({"whitelist": ["127.0.0.1", "113.74.26.106/24"]});
        assert_eq!(run(w.clone(), "127.0.0.1"), NativeOutcome::Continue);
        assert_eq!(run(w.clone(), "113.74.26.7"), NativeOutcome::Continue);
        assert_eq!(
            run(w, "10.0.0.1"),
            NativeOutcome::Respond {
                status: 403,
                body: Bytes::from_static(br#"{"message":"Your IP address is not allowed"}"#)
            }
        );
        let b = json!({"blacklist": ["::1", "10.0.0.0/8"], "message": "Do you want to do something bad?",
                       "response_code": 404});
        assert_eq!(run(b.clone(), "127.0.0.1"), NativeOutcome::Continue);
        assert_eq!(
            run(b, "10.1.2.3"),
            NativeOutcome::Respond {
                status: 404,
                body: Bytes::from_static(br#"{"message":"Do you want to do something bad?"}"#)
            }
        );
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        assert!(build(json!({})).unwrap().contains("exactly one"));
        assert!(
            build(json!({"whitelist": ["1.1.1.1"], "blacklist": ["2.2.2.2"]}))
                .unwrap()
                .contains("exactly one")
        );
        assert!(build(json!({"whitelist": ["x"]}))
            .unwrap()
            .contains("whitelist[0]"));
        assert!(build(json!({"whitelist": []}))
            .unwrap()
            .contains("whitelist"));
        assert!(
            build(json!({"whitelist": ["1.1.1.1"], "response_code": 500}))
                .unwrap()
                .contains("response_code")
        );
        assert!(build(json!({"whitelist": ["1.1.1.1"], "message": ""}))
            .unwrap()
            .contains("message"));
    }
}
