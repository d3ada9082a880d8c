//! APISIX's `response-rewrite` (priority 899): changes the response, proxied or
//! written by the gateway, when `vars` (if given) match it. `status_code`; `headers`
//! (`{add: ["name: value"], set: {name: value}, remove: [name]}` applied add, remove,
//! set, or the older plain object of headers to set, an empty value removing one;
//! values are `$var` templates); and the body: `body` (optionally `body_base64`)
//! replaces it, or `filters` (regex replacements) edit it. Filters need the whole body:
//! it is buffered up to [`FILTER_LIMIT`], and a larger body goes out unfiltered.

mod expr;

use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::HeaderName;
use parking_lot::Mutex;
use pingora_http::ResponseHeader;
use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::header_ops::{capture_template, header_name, HeaderTemplate};
use super::{NativeBuildInput, NativeCtx, NativePlugin, Plugin};
use crate::phase::Phase;
use expr::Conditions;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "response-rewrite",
    priority: 899,
    phases: &[Phase::HeaderFilter, Phase::BodyFilter],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

/// The most of a body `filters` buffer (larger bodies go out unfiltered).
pub const FILTER_LIMIT: usize = 8 * 1024 * 1024;

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "status_code": {"type": "integer", "minimum": 200, "maximum": 598},
            "body": {"type": "string"},
            "body_base64": {"type": "boolean", "default": false},
            "headers": {"type": "object"},
            "vars": {"type": "array"},
            "filters": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "properties": {
                    "regex": {"type": "string", "minLength": 1},
                    "scope": {"type": "string", "enum": ["once", "global"], "default": "once"},
                    "replace": {"type": "string"},
                    "options": {"type": "string", "default": "jo"}
                },
                "required": ["regex", "replace"]
            }}
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    status_code: Option<u16>,
    body: Option<String>,
    #[serde(default)]
    body_base64: bool,
    headers: Option<Map<String, Value>>,
    vars: Option<Value>,
    filters: Option<Vec<FilterConf>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConf {
    regex: String,
    #[serde(default)]
    scope: Scope,
    replace: String,
    #[serde(default = "default_options")]
    options: String,
}

fn default_options() -> String {
    "jo".to_string()
}

/// How many matches a filter replaces.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Scope {
    #[default]
    Once,
    Global,
}

struct Filter {
    regex: Regex,
    replace: String,
    scope: Scope,
}

/// How the body changes.
enum BodyChange {
    Replace(Bytes),
    Filters(Vec<Filter>),
}

#[derive(Default)]
struct HeaderChanges {
    add: Vec<(HeaderName, HeaderTemplate)>,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderTemplate)>,
}

struct ResponseRewrite {
    status: Option<u16>,
    headers: HeaderChanges,
    vars: Option<Conditions>,
    body: Option<BodyChange>,
}

/// The body work one response has, decided in header_filter.
#[derive(Clone)]
struct BodyWork(Arc<Mutex<BodyState>>);

enum BodyState {
    /// The configured body goes out once; upstream chunks are dropped.
    Replace { sent: bool },
    /// Buffering for the filters; `None` once it gave up (too large).
    Buffer(Option<BytesMut>),
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    if let Some(code) = conf.status_code {
        if !(200..=598).contains(&code) {
            return Err(format!("status_code: {code} is not in 200..=598"));
        }
    }
    let body = match (&conf.body, &conf.filters) {
        (Some(_), Some(_)) => {
            return Err("body, filters: only one of them can be configured".to_string())
        }
        (Some(b), None) if conf.body_base64 => Some(BodyChange::Replace(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("body: not base64 ({e}) while body_base64 is true"))?,
        ))),
        (Some(b), None) => Some(BodyChange::Replace(Bytes::from(b.clone()))),
        (None, Some(filters)) => Some(BodyChange::Filters(
            filters
                .iter()
                .enumerate()
                .map(|(i, f)| filter(i, f))
                .collect::<Result<_, _>>()?,
        )),
        (None, None) => None,
    };
    if conf.filters.as_ref().is_some_and(Vec::is_empty) {
        return Err("filters: must hold at least one filter".to_string());
    }
    let headers = match &conf.headers {
        Some(h) => header_changes(h)?,
        None => HeaderChanges::default(),
    };
    let vars = match &conf.vars {
        Some(v) => Some(Conditions::parse("vars", v)?),
        None => None,
    };
    Ok(Arc::new(ResponseRewrite {
        status: conf.status_code,
        headers,
        vars,
        body,
    }))
}

fn filter(i: usize, f: &FilterConf) -> Result<Filter, String> {
    let field = format!("filters[{i}]");
    let mut b = RegexBuilder::new(&f.regex);
    for o in f.options.chars() {
        match o {
            'i' => b.case_insensitive(true),
            'm' => b.multi_line(true),
            's' => b.dot_matches_new_line(true),
            'x' => b.ignore_whitespace(true),
            // PCRE's JIT and compile-once: always so here.
            'j' | 'o' => &mut b,
            other => return Err(format!("{field}.options: `{other}` is not supported")),
        };
    }
    let regex = b.build().map_err(|e| format!("{field}.regex: {e}"))?;
    Ok(Filter {
        regex,
        replace: capture_template(&f.replace),
        scope: f.scope,
    })
}

fn header_changes(h: &Map<String, Value>) -> Result<HeaderChanges, String> {
    let verbs = ["add", "set", "remove"];
    let mut out = HeaderChanges::default();
    if !h.keys().any(|k| verbs.contains(&k.as_str())) {
        // The older form: headers to set; an empty value removes the header.
        for (name, v) in h {
            let field = format!("headers.{name}");
            let n = header_name(&field, name)?;
            let v = scalar(&field, v)?;
            if v.is_empty() {
                out.remove.push(n);
            } else {
                out.set.push((n, HeaderTemplate::parse(&field, &v)?));
            }
        }
        return Ok(out);
    }
    for (verb, v) in h {
        match verb.as_str() {
            "add" => {
                let list = v
                    .as_array()
                    .ok_or("headers.add: must be an array of \"name: value\"")?;
                for (i, item) in list.iter().enumerate() {
                    let field = format!("headers.add[{i}]");
                    let item = item.as_str().ok_or(format!("{field}: must be a string"))?;
                    let (name, value) = item
                        .split_once(':')
                        .ok_or(format!("{field}: must be \"name: value\""))?;
                    out.add.push((
                        header_name(&field, name.trim())?,
                        HeaderTemplate::parse(&field, value.trim())?,
                    ));
                }
            }
            "set" => {
                let obj = v.as_object().ok_or("headers.set: must be an object")?;
                for (name, v) in obj {
                    let field = format!("headers.set.{name}");
                    let v = scalar(&field, v)?;
                    out.set.push((
                        header_name(&field, name)?,
                        HeaderTemplate::parse(&field, &v)?,
                    ));
                }
            }
            "remove" => {
                let list = v
                    .as_array()
                    .ok_or("headers.remove: must be an array of names")?;
                for (i, name) in list.iter().enumerate() {
                    let field = format!("headers.remove[{i}]");
                    let name = name.as_str().ok_or(format!("{field}: must be a string"))?;
                    out.remove.push(header_name(&field, name)?);
                }
            }
            other => {
                return Err(format!(
                    "headers.{other}: unknown action (add, set or remove), not mixed with headers"
                ))
            }
        }
    }
    Ok(out)
}

fn scalar(field: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("{field}: must be a string or a number")),
    }
}

impl ResponseRewrite {
    fn apply_filters(&self, body: &[u8]) -> Bytes {
        let Some(BodyChange::Filters(filters)) = &self.body else {
            return Bytes::copy_from_slice(body);
        };
        // Regexes work on text; a body that is not UTF-8 goes out as it came.
        let Ok(text) = std::str::from_utf8(body) else {
            return Bytes::copy_from_slice(body);
        };
        let mut text = text.to_string();
        for f in filters {
            let limit = if f.scope == Scope::Once { 1 } else { 0 };
            text = f
                .regex
                .replacen(&text, limit, f.replace.as_str())
                .into_owned();
        }
        Bytes::from(text)
    }
}

impl Plugin for ResponseRewrite {
    fn header_filter(&self, resp: &mut ResponseHeader, cx: &mut NativeCtx<'_>) {
        let req = cx.request;
        let view = req.map(|r| cx.view(r));
        if let Some(vars) = &self.vars {
            if !vars.matches(view.as_ref(), resp.status.as_u16()) {
                return;
            }
        }
        if let Some(code) = self.status {
            let _ = resp.set_status(code);
        }
        let render = |t: &HeaderTemplate| match (&view, t) {
            (_, HeaderTemplate::Constant(v)) => Some(v.clone()),
            (Some(view), t) => t.render(view),
            (None, _) => None,
        };
        for (name, t) in &self.headers.add {
            if let Some(v) = render(t) {
                let _ = resp.append_header(name.clone(), v);
            }
        }
        for name in &self.headers.remove {
            resp.remove_header(name);
        }
        for (name, t) in &self.headers.set {
            if let Some(v) = render(t) {
                let _ = resp.insert_header(name.clone(), v);
            }
        }
        let state = match &self.body {
            None => return,
            Some(BodyChange::Replace(_)) => BodyState::Replace { sent: false },
            Some(BodyChange::Filters(_)) => {
                let encoded = resp
                    .headers
                    .get(http::header::CONTENT_ENCODING)
                    .is_some_and(|v| v.as_bytes() != b"identity");
                if encoded {
                    tracing::warn!("response-rewrite: filters skip an encoded response body");
                    return;
                }
                BodyState::Buffer(Some(BytesMut::new()))
            }
        };
        resp.remove_header(&http::header::CONTENT_LENGTH);
        cx.state.insert(BodyWork(Arc::new(Mutex::new(state))));
    }

    fn body_filter(&self, body: &mut Option<Bytes>, end_of_stream: bool, cx: &mut NativeCtx<'_>) {
        let Some(BodyWork(work)) = cx.state.get::<BodyWork>() else {
            return;
        };
        let mut state = work.lock();
        match &mut *state {
            BodyState::Replace { sent } => {
                if *sent {
                    *body = None;
                } else {
                    *sent = true;
                    if let Some(BodyChange::Replace(b)) = &self.body {
                        *body = Some(b.clone());
                    }
                }
            }
            BodyState::Buffer(None) => {}
            BodyState::Buffer(Some(buf)) => {
                if let Some(chunk) = body.take() {
                    buf.extend_from_slice(&chunk);
                }
                if buf.len() > FILTER_LIMIT {
                    tracing::warn!(
                        "response-rewrite: body over {FILTER_LIMIT} bytes goes out unfiltered"
                    );
                    *body = Some(std::mem::take(buf).freeze());
                    *state = BodyState::Buffer(None);
                } else if end_of_stream {
                    *body = Some(self.apply_filters(buf));
                    *state = BodyState::Buffer(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::TestRequest;
    use pingora_http::RequestHeader;

    /// The response header and the body after the filters, for an upstream response of
    /// `status` with `chunks`.
    fn run(conf: Value, status: u16, chunks: &[&str]) -> (ResponseHeader, String) {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip("10.0.0.1");
        let mut req = RequestHeader::build("GET", b"/r?who=me", None).unwrap();
        req.insert_header("Host", "a.com").unwrap();
        let mut resp = ResponseHeader::build(status, None).unwrap();
        resp.insert_header("Content-Length", "99").unwrap();
        resp.insert_header("X-Old", "1").unwrap();
        p.header_filter(&mut resp, &mut r.cx_for(&req));
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c.as_bytes()));
            p.body_filter(&mut body, i + 1 == chunks.len(), &mut r.cx_for(&req));
            out.extend_from_slice(&body.unwrap_or_default());
        }
        (resp, String::from_utf8(out).unwrap())
    }

    fn header<'a>(resp: &'a ResponseHeader, name: &str) -> Vec<&'a str> {
        resp.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn status_headers_and_body() {
        // APISIX's example object.
        let conf = json!({
            "body": "{\"code\":\"ok\",\"message\":\"new json body\"}",
            "headers": {"set": {"X-Server-id": 3, "X-Server-status": "on",
                                "X-Server-balancer-addr": "$remote_addr"},
                        "add": ["X-Who: $arg_who"], "remove": ["X-Old"]},
            "status_code": 201
        });
        let (resp, body) = run(conf, 200, &["up", "stream"]);
        assert_eq!(resp.status.as_u16(), 201);
        assert_eq!(header(&resp, "x-server-id"), ["3"]);
        assert_eq!(header(&resp, "x-server-balancer-addr"), ["10.0.0.1"]);
        assert_eq!(header(&resp, "x-who"), ["me"]);
        assert!(header(&resp, "x-old").is_empty());
        assert!(header(&resp, "content-length").is_empty());
        assert_eq!(body, r#"{"code":"ok","message":"new json body"}"#);
    }

    #[test]
    fn vars_gate_everything() {
        let conf = json!({"status_code": 403, "body": "no", "vars": [["status", "==", 500]]});
        let (resp, body) = run(conf.clone(), 200, &["fine"]);
        assert_eq!((resp.status.as_u16(), body.as_str()), (200, "fine"));
        let (resp, body) = run(conf, 500, &["boom"]);
        assert_eq!((resp.status.as_u16(), body.as_str()), (403, "no"));
        let conf = json!({"body": "x", "vars": [["arg_who", "==", "me"]]});
        assert_eq!(run(conf, 200, &["y"]).1, "x");
    }

    #[test]
    fn filters_edit_the_whole_body() {
        let conf = json!({"filters": [
            {"regex": "X-Amzn", "scope": "global", "replace": "X-Portico"},
            {"regex": "(\\d+)", "replace": "<$1>"},
            {"regex": "hello", "options": "i", "replace": "bye"}
        ]});
        let (_, body) = run(conf, 200, &["HELLO X-Am", "zn 12 X-Amzn 34"]);
        assert_eq!(body, "bye X-Portico <12> X-Portico 34");
        let b64 = json!({"body": "aGVsbG8=", "body_base64": true});
        assert_eq!(run(b64, 200, &["x"]).1, "hello");
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        assert!(
            build(json!({"body": "a", "filters": [{"regex": "a", "replace": "b"}]}))
                .unwrap()
                .contains("only one")
        );
        assert!(build(json!({"status_code": 600}))
            .unwrap()
            .starts_with("status_code"));
        assert!(build(json!({"filters": [{"regex": "(", "replace": "b"}]}))
            .unwrap()
            .starts_with("filters[0].regex"));
        assert!(build(json!({"headers": {"add": ["nocolon"]}}))
            .unwrap()
            .starts_with("headers.add[0]"));
        assert!(build(json!({"vars": [["status", "=", 1]]}))
            .unwrap()
            .starts_with("vars[0]"));
        assert!(build(json!({"body": "!!", "body_base64": true}))
            .unwrap()
            .starts_with("body"));
    }
}
