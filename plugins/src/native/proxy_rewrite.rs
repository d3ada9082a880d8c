//! APISIX's `proxy-rewrite` (priority 1008, rewrite phase): changes the request that
//! goes upstream. `uri` (a `$var` template) or else `regex_uri` (pattern and template
//! pairs, the first match wins; no match keeps the URI) sets the path, the request's
//! query string carried along; `method`; `host` (the Host header sent upstream, unless
//! the upstream's `pass_host` is `node` or `rewrite`); `headers`, either
//! `{add, set, remove}` (applied in that order: add, remove, set) or a plain object of
//! headers to set, values being `$var` templates.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::header_ops::{compose_uri, header_name, HeaderTemplate, RegexUri};
use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;
use crate::vars::Template;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "proxy-rewrite",
    priority: 1008,
    phases: &[Phase::Rewrite],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

const METHODS: [&str; 14] = [
    "GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND", "LOCK",
    "UNLOCK", "PATCH", "TRACE",
];

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "uri": {"type": "string", "minLength": 1, "maxLength": 4096},
            "method": {"type": "string", "enum": METHODS},
            "regex_uri": {"type": "array", "minItems": 2, "items": {"type": "string"}},
            "host": {"type": "string"},
            "scheme": {"type": "string", "enum": ["http", "https"]},
            "headers": {"type": "object"},
            "use_real_request_uri_unsafe": {"type": "boolean", "default": false}
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    uri: Option<String>,
    method: Option<String>,
    regex_uri: Option<Vec<String>>,
    host: Option<String>,
    /// Deprecated in APISIX (the upstream's `scheme` decides); accepted and ignored.
    #[allow(dead_code)]
    scheme: Option<String>,
    headers: Option<Map<String, Value>>,
    /// The URI is normalised before routing in Portico; accepted and ignored.
    #[allow(dead_code)]
    #[serde(default)]
    use_real_request_uri_unsafe: bool,
}

/// Header changes, in the order they apply.
#[derive(Default)]
struct HeaderChanges {
    add: Vec<(HeaderName, HeaderTemplate)>,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Vec<HeaderTemplate>)>,
}

struct ProxyRewrite {
    uri: Option<Template>,
    regex_uri: Option<RegexUri>,
    method: Option<http::Method>,
    host: Option<HeaderValue>,
    headers: HeaderChanges,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let uri = match &conf.uri {
        Some(u) if u.is_empty() => return Err("uri: must not be empty".to_string()),
        Some(u) => Some(Template::parse(u).map_err(|e| format!("uri: {e}"))?),
        None => None,
    };
    let regex_uri = match &conf.regex_uri {
        Some(items) => Some(RegexUri::parse("regex_uri", items)?),
        None => None,
    };
    let method = match &conf.method {
        Some(m) if METHODS.contains(&m.as_str()) => {
            Some(http::Method::from_bytes(m.as_bytes()).map_err(|_| format!("method: `{m}`"))?)
        }
        Some(m) => {
            return Err(format!(
                "method: `{m}` is not one of {}",
                METHODS.join(", ")
            ))
        }
        None => None,
    };
    let host = match &conf.host {
        Some(h) => Some(
            HeaderValue::from_str(h).map_err(|_| format!("host: `{h}` is not a header value"))?,
        ),
        None => None,
    };
    let headers = match &conf.headers {
        Some(h) => header_changes(h)?,
        None => HeaderChanges::default(),
    };
    Ok(Arc::new(ProxyRewrite {
        uri,
        regex_uri,
        method,
        host,
        headers,
    }))
}

/// `{add, set, remove}`, or the older plain object of headers to set.
fn header_changes(h: &Map<String, Value>) -> Result<HeaderChanges, String> {
    let verbs = ["add", "set", "remove"];
    let has_verbs = h.keys().any(|k| verbs.contains(&k.as_str()));
    let mut out = HeaderChanges::default();
    if !has_verbs {
        for (name, v) in h {
            let field = format!("headers.{name}");
            out.set
                .push((header_name(&field, name)?, values(&field, v)?));
        }
        return Ok(out);
    }
    for (verb, v) in h {
        match verb.as_str() {
            "add" | "set" => {
                let obj = v
                    .as_object()
                    .ok_or_else(|| format!("headers.{verb}: must be an object"))?;
                for (name, v) in obj {
                    let field = format!("headers.{verb}.{name}");
                    let n = header_name(&field, name)?;
                    let vals = values(&field, v)?;
                    if verb == "add" {
                        out.add.extend(vals.into_iter().map(|t| (n.clone(), t)));
                    } else {
                        out.set.push((n, vals));
                    }
                }
            }
            "remove" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| "headers.remove: must be an array of names".to_string())?;
                for (i, name) in list.iter().enumerate() {
                    let field = format!("headers.remove[{i}]");
                    let name = name
                        .as_str()
                        .ok_or_else(|| format!("{field}: must be a string"))?;
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

/// A header value: a string, a number, or an array of them (several headers).
fn values(field: &str, v: &Value) -> Result<Vec<HeaderTemplate>, String> {
    let one = |v: &Value| match v {
        Value::String(s) => HeaderTemplate::parse(field, s),
        Value::Number(n) => HeaderTemplate::parse(field, &n.to_string()),
        _ => Err(format!("{field}: must be a string or a number")),
    };
    match v {
        Value::Array(items) => items.iter().map(one).collect(),
        v => Ok(vec![one(v)?]),
    }
}

#[async_trait::async_trait]
impl Plugin for ProxyRewrite {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        // Everything is computed from the request as it came, then applied.
        let (new_uri, adds, sets) = {
            let view = cx.view(req);
            let new_path = match (&self.uri, &self.regex_uri) {
                (Some(t), _) => Some(t.render_lossy(&view)),
                (None, Some(r)) => r.apply(view.path),
                (None, None) => None,
            };
            let new_uri = new_path.map(|p| compose_uri(&p, view.query));
            let adds: Vec<(HeaderName, HeaderValue)> = self
                .headers
                .add
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.render(&view)?)))
                .collect();
            let sets: Vec<(HeaderName, Vec<HeaderValue>)> = self
                .headers
                .set
                .iter()
                .map(|(n, ts)| {
                    (
                        n.clone(),
                        ts.iter().filter_map(|t| t.render(&view)).collect(),
                    )
                })
                .collect();
            (new_uri, adds, sets)
        };
        if let Some(uri) = new_uri {
            match http::Uri::try_from(uri.as_str()) {
                Ok(u) => req.set_uri(u),
                Err(e) => tracing::warn!("proxy-rewrite: `{uri}` is not a URI: {e}"),
            }
        }
        if let Some(m) = &self.method {
            req.set_method(m.clone());
        }
        if let Some(h) = &self.host {
            let _ = req.insert_header(http::header::HOST, h.clone());
        }
        for (name, value) in adds {
            let _ = req.append_header(name, value);
        }
        for name in &self.headers.remove {
            req.remove_header(name);
        }
        for (name, values) in sets {
            req.remove_header(&name);
            for v in values {
                let _ = req.append_header(name.clone(), v);
            }
        }
        NativeOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    fn run(conf: Value, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip("10.0.0.9");
        let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        req.insert_header("Host", "a.com").unwrap();
        for (k, v) in headers {
            req.insert_header(k.to_string(), *v).unwrap();
        }
        assert_eq!(
            block_on(p.rewrite(&mut req, &mut r.cx())),
            NativeOutcome::Continue
        );
        req
    }

    fn header<'a>(req: &'a RequestHeader, name: &str) -> Vec<&'a str> {
        req.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn uri_method_host_and_headers() {
        // APISIX's example object.
        let conf = json!({
            "uri": "/test/home.html", "host": "iresty.com", "method": "POST",
            "headers": {"set": {"X-Api-Version": "v1", "X-Api-Engine": "apisix"},
                        "add": {"X-Request-ID": "112233"}, "remove": ["X-Remove"]}
        });
        let req = run(
            conf,
            "/x?a=1",
            &[("X-Remove", "1"), ("X-Api-Version", "v0")],
        );
        assert_eq!(req.uri.to_string(), "/test/home.html?a=1");
        assert_eq!(req.method, http::Method::POST);
        assert_eq!(header(&req, "host"), ["iresty.com"]);
        assert_eq!(header(&req, "x-api-version"), ["v1"]);
        assert_eq!(header(&req, "x-api-engine"), ["apisix"]);
        assert_eq!(header(&req, "x-request-id"), ["112233"]);
        assert!(header(&req, "x-remove").is_empty());
    }

    #[test]
    fn templates_regex_and_the_old_header_form() {
        let conf = json!({"uri": "/u/$arg_id", "headers": {"X-Client": "$remote_addr", "X-Two": ["a", "b"]}});
        let req = run(conf, "/x?id=7", &[]);
        assert_eq!(req.uri.to_string(), "/u/7?id=7");
        assert_eq!(header(&req, "x-client"), ["10.0.0.9"]);
        assert_eq!(header(&req, "x-two"), ["a", "b"]);
        let conf = json!({"regex_uri": ["^/iresty/(.*)/(.*)/(.*)", "/$1-$2-$3"]});
        assert_eq!(
            run(conf.clone(), "/iresty/a/b/c", &[]).uri.to_string(),
            "/a-b-c"
        );
        assert_eq!(run(conf, "/other", &[]).uri.to_string(), "/other");
        let conf = json!({"uri": "/u", "regex_uri": ["^/(.*)", "/r/$1"]});
        assert_eq!(run(conf, "/z", &[]).uri.to_string(), "/u", "uri wins");
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        assert!(build(json!({"method": "FETCH"}))
            .unwrap()
            .contains("method"));
        assert!(build(json!({"uri": "/$nope"})).unwrap().starts_with("uri"));
        assert!(build(json!({"regex_uri": ["^/a"]}))
            .unwrap()
            .starts_with("regex_uri"));
        assert!(build(json!({"headers": {"set": {"a b": "1"}}}))
            .unwrap()
            .contains("headers.set.a b"));
        assert!(build(json!({"headers": {"set": {}, "X-A": "1"}}))
            .unwrap()
            .contains("headers.X-A"));
    }
}
