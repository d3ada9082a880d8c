//! APISIX's `redirect` (priority 900, rewrite phase): answers with `ret_code` (302)
//! and a `Location` of `uri` (a `$var` template), or of the `regex_uri` template when
//! its pattern matches (no match: no redirect), or, with `http_to_https`, the same URI
//! on `https://` with 301. `encode_uri` percent-encodes the path, and
//! `append_query_string` carries the request's query along. The body is the gateway's
//! default page for the status.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::header_ops::{escape_path, RegexUri};
use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;
use crate::vars::Template;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "redirect",
    priority: 900,
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
            "ret_code": {"type": "integer", "minimum": 200, "default": 302},
            "uri": {"type": "string", "minLength": 2},
            "regex_uri": {"type": "array", "minItems": 2, "maxItems": 2,
                          "items": {"type": "string"}},
            "http_to_https": {"type": "boolean"},
            "encode_uri": {"type": "boolean", "default": false},
            "append_query_string": {"type": "boolean", "default": false}
        },
        "oneOf": [{"required": ["uri"]}, {"required": ["regex_uri"]},
                  {"required": ["http_to_https"]}]
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    ret_code: Option<u16>,
    uri: Option<String>,
    regex_uri: Option<Vec<String>>,
    http_to_https: Option<bool>,
    #[serde(default)]
    encode_uri: bool,
    #[serde(default)]
    append_query_string: bool,
}

/// Where the redirect goes.
enum Target {
    Uri(Template),
    Regex(RegexUri),
    Https,
}

struct Redirect {
    target: Target,
    status: u16,
    encode_uri: bool,
    append_query_string: bool,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let https = conf.http_to_https == Some(true);
    let target = match (&conf.uri, &conf.regex_uri, https) {
        (Some(u), None, false) => Target::Uri(Template::parse(u).map_err(|e| format!("uri: {e}"))?),
        (None, Some(r), false) => {
            if r.len() != 2 {
                return Err("regex_uri: must be [pattern, template]".to_string());
            }
            Target::Regex(RegexUri::parse("regex_uri", r)?)
        }
        (None, None, true) => Target::Https,
        _ => {
            return Err(
                "uri, regex_uri, http_to_https: exactly one of them must be configured".to_string(),
            )
        }
    };
    if https && conf.append_query_string {
        return Err(
            "append_query_string: can not be used with http_to_https (the query is kept)"
                .to_string(),
        );
    }
    let status = match (conf.ret_code, https) {
        (Some(code), _) if !(200..=599).contains(&code) => {
            return Err(format!("ret_code: {code} is not in 200..=599"))
        }
        (Some(code), _) => code,
        (None, true) => 301,
        (None, false) => 302,
    };
    Ok(Arc::new(Redirect {
        target,
        status,
        encode_uri: conf.encode_uri,
        append_query_string: conf.append_query_string,
    }))
}

impl Redirect {
    /// The `Location` for this request, or `None` when it is not redirected.
    fn location(&self, req: &RequestHeader, cx: &NativeCtx<'_>) -> Option<String> {
        let view = cx.view(req);
        let mut loc = match &self.target {
            Target::Https => {
                if view.scheme == "https" {
                    return None;
                }
                let mut l = format!("https://{}{}", view.host, view.path);
                if let Some(q) = view.query {
                    l.push('?');
                    l.push_str(q);
                }
                return Some(l);
            }
            Target::Uri(t) => t.render_lossy(&view),
            Target::Regex(r) => r.apply(view.path)?,
        };
        if self.encode_uri {
            loc = match loc.split_once('?') {
                Some((p, q)) => format!("{}?{q}", escape_path(p)),
                None => escape_path(&loc).into_owned(),
            };
        }
        if self.append_query_string {
            if let Some(q) = view.query.filter(|q| !q.is_empty()) {
                loc.push(if loc.contains('?') { '&' } else { '?' });
                loc.push_str(q);
            }
        }
        Some(loc)
    }
}

#[async_trait::async_trait]
impl Plugin for Redirect {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let Some(loc) = self.location(req, cx) else {
            return NativeOutcome::Continue;
        };
        match HeaderValue::from_str(&loc) {
            Ok(v) => cx.response_headers.push((http::header::LOCATION, v)),
            Err(_) => {
                tracing::warn!("redirect: `{loc}` is not a header value");
                return NativeOutcome::Continue;
            }
        }
        NativeOutcome::Respond {
            status: self.status,
            body: Bytes::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    /// The status and Location of a request to `path`, if redirected.
    fn run(conf: Value, path: &str) -> Option<(u16, String)> {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip("127.0.0.1");
        let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        req.insert_header("Host", "foo.com:9080").unwrap();
        match block_on(p.rewrite(&mut req, &mut r.cx())) {
            NativeOutcome::Continue => None,
            NativeOutcome::Respond { status, .. } => {
                let (_, v) = r.response_headers.pop().unwrap();
                Some((status, v.to_str().unwrap().to_string()))
            }
        }
    }

    #[test]
    fn uri_regex_and_https() {
        assert_eq!(
            run(
                json!({"uri": "/test/default.html", "ret_code": 301}),
                "/a?x=1"
            ),
            Some((301, "/test/default.html".into()))
        );
        assert_eq!(
            run(
                json!({"uri": "$uri/index.html", "append_query_string": true}),
                "/a?x=1"
            ),
            Some((302, "/a/index.html?x=1".into()))
        );
        let re = json!({"regex_uri": ["^/iresty/(.*)/(.*)", "/$1-$2"]});
        assert_eq!(run(re.clone(), "/iresty/a/b"), Some((302, "/a-b".into())));
        assert_eq!(run(re, "/no"), None);
        assert_eq!(
            run(json!({"http_to_https": true}), "/p?q=1"),
            Some((301, "https://foo.com/p?q=1".into()))
        );
        assert_eq!(
            run(json!({"uri": "/a b", "encode_uri": true}), "/"),
            Some((302, "/a%20b".into()))
        );
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        assert!(build(json!({})).unwrap().contains("exactly one"));
        assert!(build(json!({"uri": "/a", "http_to_https": true}))
            .unwrap()
            .contains("exactly one"));
        assert!(
            build(json!({"http_to_https": true, "append_query_string": true}))
                .unwrap()
                .starts_with("append_query_string")
        );
        assert!(build(json!({"uri": "/a", "ret_code": 100}))
            .unwrap()
            .starts_with("ret_code"));
        assert!(build(json!({"regex_uri": ["(", "/"]}))
            .unwrap()
            .starts_with("regex_uri"));
    }
}
