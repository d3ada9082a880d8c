//! APISIX's `request-id` (priority 12015): every request carries an id in
//! `header_name` (default `X-Request-Id`) to the upstream and, with
//! `include_in_response` (default true), back to the client. An id the client sent is
//! kept; otherwise a UUID v4 is made. It keeps no state across requests.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "request-id",
    priority: 12015,
    phases: &[Phase::Rewrite, Phase::HeaderFilter],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

/// APISIX's schema, less the algorithms this build does not make.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "header_name": {"type": "string", "default": "X-Request-Id"},
            "include_in_response": {"type": "boolean", "default": true},
            "algorithm": {"type": "string", "enum": ["uuid"], "default": "uuid"}
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_header")]
    header_name: String,
    #[serde(default = "default_true")]
    include_in_response: bool,
    #[serde(default = "default_algorithm")]
    algorithm: String,
}

fn default_header() -> String {
    "X-Request-Id".to_string()
}
fn default_true() -> bool {
    true
}
fn default_algorithm() -> String {
    "uuid".to_string()
}

struct RequestId {
    header: HeaderName,
    include_in_response: bool,
}

/// The id this request carries, kept from rewrite for header_filter.
#[derive(Clone)]
struct ChosenId(HeaderValue);

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let header = HeaderName::from_bytes(conf.header_name.as_bytes())
        .map_err(|_| format!("header_name: `{}` is not a header name", conf.header_name))?;
    if conf.algorithm != "uuid" {
        return Err(format!(
            "algorithm: `{}` is not supported (only `uuid`)",
            conf.algorithm
        ));
    }
    Ok(Arc::new(RequestId {
        header,
        include_in_response: conf.include_in_response,
    }))
}

#[async_trait::async_trait]
impl Plugin for RequestId {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let id = match req.headers.get(&self.header) {
            Some(v) => v.clone(),
            None => {
                let v = HeaderValue::from_str(&uuid_v4()).expect("a UUID is a header value");
                // Only an error for an invalid name, which `build` excluded.
                let _ = req.insert_header(self.header.clone(), v.clone());
                v
            }
        };
        cx.state.insert(ChosenId(id));
        NativeOutcome::Continue
    }

    fn header_filter(&self, resp: &mut ResponseHeader, cx: &mut NativeCtx<'_>) {
        if !self.include_in_response || resp.headers.contains_key(&self.header) {
            return;
        }
        if let Some(ChosenId(id)) = cx.state.get::<ChosenId>() {
            let _ = resp.insert_header(self.header.clone(), id.clone());
        }
    }
}

/// A random (version 4) UUID, lower-case hex with dashes.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    fn build(conf: Value) -> Result<Arc<dyn Plugin>, String> {
        crate::native::test_support::build(&PLUGIN, conf)
    }

    #[test]
    fn makes_an_id_keeps_a_given_one_and_echoes_it() {
        let p = build(json!({})).unwrap();
        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(
            block_on(p.rewrite(&mut req, &mut r.cx())),
            NativeOutcome::Continue
        );
        let id = req
            .headers
            .get("x-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4: {id}");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        p.header_filter(&mut resp, &mut r.cx());
        assert_eq!(resp.headers.get("x-request-id").unwrap(), id.as_str());

        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("X-Request-Id", "given").unwrap();
        block_on(p.rewrite(&mut req, &mut r.cx()));
        assert_eq!(req.headers.get("x-request-id").unwrap(), "given");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        p.header_filter(&mut resp, &mut r.cx());
        assert_eq!(resp.headers.get("x-request-id").unwrap(), "given");
    }

    #[test]
    fn configuration_is_checked() {
        let p = build(json!({"header_name": "X-Trace", "include_in_response": false})).unwrap();
        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        block_on(p.rewrite(&mut req, &mut r.cx()));
        assert!(req.headers.contains_key("x-trace"));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        p.header_filter(&mut resp, &mut r.cx());
        assert!(!resp.headers.contains_key("x-trace"), "not echoed");
        assert!(build(json!({"algorithm": "nanoid"}))
            .err()
            .unwrap()
            .contains("algorithm"));
        assert!(build(json!({"header_name": "a b"}))
            .err()
            .unwrap()
            .contains("header_name"));
        assert!(build(json!({"nope": 1})).err().unwrap().contains("nope"));
        assert_ne!(uuid_v4(), uuid_v4());
    }
}
