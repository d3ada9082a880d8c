//! APISIX's `mocking` (priority 10900, access phase): answers without the upstream,
//! with `response_status` (200), `content_type` (`application/json;charset=utf8`),
//! `response_headers`, and the body `response_example`, or one made from
//! `response_schema` (JSON Schema: an `example` or `default` where given, else a
//! placeholder of the type: `"string"`, `0`, `false`, an object of its properties, an
//! array of one item). `delay` seconds pass first; `with_mock_header` (true) adds
//! `x-mock-by: Portico/<version>`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::header_ops::header_name;
use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "mocking",
    priority: 10900,
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
            "delay": {"type": "integer", "minimum": 0, "default": 0},
            "response_status": {"type": "integer", "minimum": 100, "default": 200},
            "content_type": {"type": "string", "default": "application/json;charset=utf8"},
            "response_example": {"type": "string"},
            "response_schema": {"type": "object"},
            "with_mock_header": {"type": "boolean", "default": true},
            "response_headers": {"type": "object", "minProperties": 1}
        },
        "anyOf": [{"required": ["response_example"]}, {"required": ["response_schema"]}]
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default)]
    delay: u64,
    #[serde(default = "default_status")]
    response_status: u16,
    #[serde(default = "default_content_type")]
    content_type: String,
    response_example: Option<String>,
    response_schema: Option<Value>,
    #[serde(default = "default_true")]
    with_mock_header: bool,
    response_headers: Option<Map<String, Value>>,
}

fn default_status() -> u16 {
    200
}
fn default_content_type() -> String {
    "application/json;charset=utf8".to_string()
}
fn default_true() -> bool {
    true
}

struct Mocking {
    delay: Duration,
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

const MOCK_BY: HeaderName = HeaderName::from_static("x-mock-by");

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    if !(100..=599).contains(&conf.response_status) {
        return Err(format!(
            "response_status: {} is not in 100..=599",
            conf.response_status
        ));
    }
    // Made once, at apply time: every answer is the same.
    let body = match (&conf.response_example, &conf.response_schema) {
        (Some(example), _) => Bytes::from(example.clone()),
        (None, Some(schema)) => Bytes::from(from_schema(schema).to_string()),
        (None, None) => {
            return Err(
                "response_example, response_schema: one of them must be configured".to_string(),
            )
        }
    };
    let mut headers = vec![(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(&conf.content_type)
            .map_err(|_| "content_type: not a header value".to_string())?,
    )];
    if conf.with_mock_header {
        let by = format!("Portico/{}", env!("CARGO_PKG_VERSION"));
        headers.push((
            MOCK_BY,
            HeaderValue::from_str(&by).expect("a version is a header value"),
        ));
    }
    for (name, v) in conf.response_headers.iter().flatten() {
        let field = format!("response_headers.{name}");
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("{field}: must be a string or a number")),
        };
        let value =
            HeaderValue::from_str(&text).map_err(|_| format!("{field}: not a header value"))?;
        headers.push((header_name(&field, name)?, value));
    }
    Ok(Arc::new(Mocking {
        delay: Duration::from_secs(conf.delay),
        status: conf.response_status,
        headers,
        body,
    }))
}

/// A value that fits a JSON Schema (depth-limited against self-nesting schemas).
fn from_schema(schema: &Value) -> Value {
    fn make(s: &Value, depth: usize) -> Value {
        if let Some(v) = s.get("example").or_else(|| s.get("default")) {
            return v.clone();
        }
        if let Some(first) = s
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return first.clone();
        }
        if depth > 16 {
            return Value::Null;
        }
        let ty =
            s.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if s.get("properties").is_some() {
                    "object"
                } else {
                    "string"
                });
        match ty {
            "object" => {
                let mut out = Map::new();
                for (k, v) in s
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    out.insert(k.clone(), make(v, depth + 1));
                }
                Value::Object(out)
            }
            "array" => match s.get("items") {
                Some(items) => json!([make(items, depth + 1)]),
                None => json!([]),
            },
            "integer" | "number" => json!(0),
            "boolean" => json!(false),
            "null" => Value::Null,
            _ => json!("string"),
        }
    }
    make(schema, 0)
}

#[async_trait::async_trait]
impl Plugin for Mocking {
    async fn access(&self, _req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        cx.response_headers.extend(self.headers.iter().cloned());
        NativeOutcome::Respond {
            status: self.status,
            body: self.body.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    #[test]
    fn answers_the_example_or_the_schema() {
        let p = crate::native::test_support::build(
            &PLUGIN,
            json!({"response_example": "{\"a\":1}", "response_status": 201,
                   "response_headers": {"X-Mock": "yes"}}),
        )
        .unwrap();
        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let out = block_on(p.access(&mut req, &mut r.cx()));
        assert_eq!(
            out,
            NativeOutcome::Respond {
                status: 201,
                body: Bytes::from_static(b"{\"a\":1}")
            }
        );
        let names: Vec<&str> = r.response_headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-mock-by", "x-mock"]);

        let schema = json!({"type": "object", "properties": {
            "id": {"type": "integer"}, "name": {"type": "string", "example": "tom"},
            "tags": {"type": "array", "items": {"type": "string"}}, "ok": {"type": "boolean"}}});
        assert_eq!(
            from_schema(&schema),
            json!({"id": 0, "name": "tom", "tags": ["string"], "ok": false})
        );
        let err = crate::native::test_support::build(&PLUGIN, json!({}))
            .err()
            .unwrap();
        assert!(err.contains("response_example"), "{err}");
    }
}
