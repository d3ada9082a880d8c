//! APISIX's `cors` (priority 4000). A preflight (`OPTIONS`) is answered by the gateway
//! with 200 in rewrite; every response (proxied, preflight or any other local answer)
//! gets the CORS headers in header_filter when the request's `Origin` is allowed:
//! `allow_origins` (`*`; `**` echoes any origin; or a comma-separated list of
//! `scheme://host[:port]`), or, when given instead, `allow_origins_by_regex`; when that
//! does not allow the origin, `allow_origins_by_metadata` names sets of the plugin's
//! metadata (`plugin_metadata/cors` `allow_origins`, name -> an `allow_origins` value),
//! resolved into the instance at apply time: a name the metadata lacks is a 400, and a
//! metadata change rebuilds the instance. A set that allows the origin echoes it, as
//! APISIX does. `allow_credential: true` forbids `*` in every other field (a 400 at
//! apply time).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "cors",
    priority: 4000,
    phases: &[Phase::Rewrite, Phase::HeaderFilter],
    schema,
    build,
    group: None,
    metadata_schema: Some(metadata_schema),
};

/// APISIX's pattern of an `allow_origins` value: `*`, `**`, `null`, or a comma-separated
/// list of `scheme://host[:port]`.
const ORIGINS_PATTERN: &str = r"^(\*|\*\*|null|\w+://[^,]+(,\w+://[^,]+)*)$";

fn metadata_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "allow_origins": {
                "type": "object",
                "additionalProperties": {"type": "string", "pattern": ORIGINS_PATTERN}
            }
        }
    })
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "allow_origins": {"type": "string", "default": "*"},
            "allow_methods": {"type": "string", "default": "*"},
            "allow_headers": {"type": "string", "default": "*"},
            "expose_headers": {"type": "string"},
            "max_age": {"type": "integer", "default": 5},
            "allow_credential": {"type": "boolean", "default": false},
            "allow_origins_by_regex": {"type": "array", "minItems": 1,
                                       "items": {"type": "string", "minLength": 1}},
            "allow_origins_by_metadata": {"type": "array", "minItems": 1, "uniqueItems": true,
                                          "items": {"type": "string", "minLength": 1,
                                                    "maxLength": 4096}}
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "star")]
    allow_origins: String,
    #[serde(default = "star")]
    allow_methods: String,
    #[serde(default = "star")]
    allow_headers: String,
    #[serde(default)]
    expose_headers: Option<String>,
    #[serde(default = "default_max_age")]
    max_age: i64,
    #[serde(default)]
    allow_credential: bool,
    #[serde(default)]
    allow_origins_by_regex: Option<Vec<String>>,
    #[serde(default)]
    allow_origins_by_metadata: Option<Vec<String>>,
}

fn star() -> String {
    "*".to_string()
}
fn default_max_age() -> i64 {
    5
}

/// `allow_origins`, read at apply time.
enum Origins {
    /// `*`: `Access-Control-Allow-Origin: *`.
    Any,
    /// `**`: any origin, echoed.
    EchoAny,
    /// These exact origins, echoed when one matches.
    List(Vec<String>),
    /// `allow_origins_by_regex`: echoed when one matches.
    Regex(Vec<Regex>),
}

struct Cors {
    origins: Origins,
    /// The metadata sets `allow_origins_by_metadata` names, in its order: tried when
    /// `origins` does not allow the request's origin.
    by_metadata: Vec<Origins>,
    methods: HeaderValue,
    /// `None` for `**`: the request's `Access-Control-Request-Headers` is echoed.
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
    credential: bool,
}

/// What rewrite saw of the request, for header_filter (a later plugin may change the
/// request's headers).
#[derive(Clone)]
struct CorsRequest {
    origin: Option<HeaderValue>,
    request_headers: Option<HeaderValue>,
}

const ALL_METHODS: &str = "GET,POST,PUT,DELETE,PATCH,HEAD,OPTIONS,CONNECT,TRACE";

fn value(field: &str, v: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v).map_err(|_| format!("{field}: `{v}` is not a header value"))
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    if conf.allow_credential {
        let stars = [
            ("allow_origins", Some(&conf.allow_origins)),
            ("allow_methods", Some(&conf.allow_methods)),
            ("allow_headers", Some(&conf.allow_headers)),
            ("expose_headers", conf.expose_headers.as_ref()),
        ];
        if let Some((field, _)) = stars.iter().find(|(_, v)| v.is_some_and(|v| v == "*")) {
            return Err(format!(
                "{field}: you can not set '*' for other option when 'allow_credential' is true"
            ));
        }
    }
    let origins = match &conf.allow_origins_by_regex {
        Some(list) => {
            let mut regexes = Vec::with_capacity(list.len());
            for (i, r) in list.iter().enumerate() {
                regexes
                    .push(Regex::new(r).map_err(|e| format!("allow_origins_by_regex[{i}]: {e}"))?);
            }
            Origins::Regex(regexes)
        }
        None => parse_origins(&conf.allow_origins).map_err(|m| format!("allow_origins: {m}"))?,
    };
    let by_metadata = match &conf.allow_origins_by_metadata {
        Some(names) => metadata_origins(names, input.metadata)?,
        None => Vec::new(),
    };
    let methods = match conf.allow_methods.as_str() {
        "**" => HeaderValue::from_static(ALL_METHODS),
        m => value("allow_methods", m)?,
    };
    let headers = match conf.allow_headers.as_str() {
        "**" => None,
        h => Some(value("allow_headers", h)?),
    };
    let expose = match conf.expose_headers.as_deref() {
        None | Some("") => None,
        Some(e) => Some(value("expose_headers", e)?),
    };
    Ok(Arc::new(Cors {
        origins,
        by_metadata,
        methods,
        headers,
        expose,
        max_age: HeaderValue::from(conf.max_age),
        credential: conf.allow_credential,
    }))
}

/// An `allow_origins` value: `*`, `**`, or a comma-separated list of origins.
fn parse_origins(value: &str) -> Result<Origins, String> {
    match value {
        "*" => Ok(Origins::Any),
        "**" => Ok(Origins::EchoAny),
        list => {
            let origins: Vec<String> = list.split(',').map(|o| o.trim().to_string()).collect();
            // `null` is the origin of opaque requests (file://, sandboxed frames).
            if let Some(bad) = origins.iter().find(|o| !valid_origin(o) && *o != "null") {
                return Err(format!("`{bad}` is not `*`, `**` or scheme://host[:port]"));
            }
            Ok(Origins::List(origins))
        }
    }
}

/// The metadata sets `names` refers to, parsed: every name must be in the metadata's
/// `allow_origins` (checked here, at apply time, rather than silently never matching).
fn metadata_origins(names: &[String], metadata: Option<&Value>) -> Result<Vec<Origins>, String> {
    let sets = metadata.and_then(|m| m.get("allow_origins"));
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some(value) = sets.and_then(|s| s.get(name)) else {
            return Err(format!(
                "allow_origins_by_metadata[{i}]: `{name}` is not a set of the cors plugin \
                 metadata's allow_origins (PUT /apisix/admin/plugin_metadata/cors)"
            ));
        };
        let value = value.as_str().unwrap_or_default();
        out.push(parse_origins(value).map_err(|m| {
            format!("allow_origins_by_metadata[{i}]: the metadata set `{name}`: {m}")
        })?);
    }
    Ok(out)
}

/// `scheme://host[:port]`, as APISIX's schema pattern allows.
fn valid_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphabetic())
        && !rest.is_empty()
        && !rest.contains('/')
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed:
    /// by `allow_origins` (or its regexes), else by a metadata set, which echoes the
    /// origin whatever the set says (APISIX's `match_origins`).
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        if let Some(v) = self.origins.allow(origin) {
            return Some(v);
        }
        let o = origin?;
        self.by_metadata
            .iter()
            .any(|set| set.allow(Some(o)).is_some())
            .then(|| o.clone())
    }
}

impl Origins {
    /// The `Access-Control-Allow-Origin` value these origins give `origin`, if any.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::EchoAny => origin.cloned(),
            Origins::List(list) => {
                let o = origin?.to_str().ok()?;
                list.iter().any(|a| a == o).then(|| origin.cloned())?
            }
            Origins::Regex(regexes) => {
                let o = origin?.to_str().ok()?;
                regexes
                    .iter()
                    .any(|r| r.is_match(o))
                    .then(|| origin.cloned())?
            }
        }
    }
}

const VARY: HeaderName = http::header::VARY;

#[async_trait::async_trait]
impl Plugin for Cors {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        cx.state.insert(CorsRequest {
            origin: req.headers.get(http::header::ORIGIN).cloned(),
            request_headers: req
                .headers
                .get(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned(),
        });
        if req.method == http::Method::OPTIONS {
            return NativeOutcome::Respond {
                status: 200,
                body: Bytes::new(),
            };
        }
        NativeOutcome::Continue
    }

    fn header_filter(&self, resp: &mut ResponseHeader, cx: &mut NativeCtx<'_>) {
        let Some(seen) = cx.state.get::<CorsRequest>() else {
            return;
        };
        let Some(origin) = self.allow_origin(seen.origin.as_ref()) else {
            return;
        };
        use http::header as h;
        let echoes = origin != "*";
        let _ = resp.insert_header(h::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if echoes {
            let _ = resp.append_header(VARY, HeaderValue::from_static("Origin"));
        }
        let _ = resp.insert_header(h::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let _ = resp.insert_header(h::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if let Some(expose) = &self.expose {
            let _ = resp.insert_header(h::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
        let allow_headers = match &self.headers {
            Some(v) => Some(v.clone()),
            None => seen.request_headers.clone(),
        };
        if let Some(v) = allow_headers {
            let _ = resp.insert_header(h::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        if self.credential {
            let _ = resp.insert_header(
                h::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    /// The outcome of rewrite and the response header after header_filter.
    fn run(conf: Value, method: &str, headers: &[(&str, &str)]) -> (NativeOutcome, ResponseHeader) {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip("127.0.0.1");
        let mut req = RequestHeader::build(method, b"/", None).unwrap();
        for (k, v) in headers {
            req.insert_header(k.to_string(), *v).unwrap();
        }
        let outcome = block_on(p.rewrite(&mut req, &mut r.cx()));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        p.header_filter(&mut resp, &mut r.cx());
        (outcome, resp)
    }

    fn header<'a>(resp: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        resp.headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn defaults_allow_everything_and_answer_preflight() {
        let (outcome, resp) = run(json!({}), "OPTIONS", &[("Origin", "http://a.com")]);
        assert_eq!(
            outcome,
            NativeOutcome::Respond {
                status: 200,
                body: Bytes::new()
            }
        );
        assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&resp, "access-control-allow-methods"), Some("*"));
        assert_eq!(header(&resp, "access-control-allow-headers"), Some("*"));
        assert_eq!(header(&resp, "access-control-max-age"), Some("5"));
        assert_eq!(header(&resp, "access-control-expose-headers"), None);
        assert_eq!(header(&resp, "access-control-allow-credentials"), None);
        let (outcome, _) = run(json!({}), "GET", &[]);
        assert_eq!(outcome, NativeOutcome::Continue);
    }

    #[test]
    fn listed_origins_are_echoed_others_get_nothing() {
        let conf = json!({"allow_origins": "http://a.com,https://b.com:8443",
                          "allow_methods": "GET,POST", "allow_headers": "**",
                          "expose_headers": "X-Count", "max_age": 3600, "allow_credential": true});
        let (_, resp) = run(
            conf.clone(),
            "GET",
            &[
                ("Origin", "https://b.com:8443"),
                ("Access-Control-Request-Headers", "X-A"),
            ],
        );
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("https://b.com:8443")
        );
        assert_eq!(header(&resp, "vary"), Some("Origin"));
        assert_eq!(header(&resp, "access-control-allow-headers"), Some("X-A"));
        assert_eq!(
            header(&resp, "access-control-expose-headers"),
            Some("X-Count")
        );
        assert_eq!(
            header(&resp, "access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(header(&resp, "access-control-max-age"), Some("3600"));
        let (_, resp) = run(conf, "GET", &[("Origin", "http://evil.com")]);
        assert_eq!(header(&resp, "access-control-allow-origin"), None);

        let conf = json!({"allow_origins_by_regex": [".*\\.test\\.com$"]});
        let (_, resp) = run(conf.clone(), "GET", &[("Origin", "http://x.test.com")]);
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("http://x.test.com")
        );
        let (_, resp) = run(conf, "GET", &[("Origin", "http://x.other.com")]);
        assert_eq!(header(&resp, "access-control-allow-origin"), None);
        let (_, resp) = run(
            json!({"allow_origins": "**", "allow_methods": "**"}),
            "GET",
            &[("Origin", "http://z.com")],
        );
        assert_eq!(
            header(&resp, "access-control-allow-origin"),
            Some("http://z.com")
        );
        assert_eq!(
            header(&resp, "access-control-allow-methods"),
            Some(ALL_METHODS)
        );
    }

    #[test]
    fn metadata_sets_allow_their_origins_after_allow_origins() {
        let metadata = json!({"allow_origins": {
            "key_1": "https://domain.com",
            "key_2": "https://sub.domain.com,https://sub2.domain.com"
        }});
        let conf = json!({"allow_origins": "https://test.com",
                          "allow_origins_by_metadata": ["key_1", "key_2"]});
        let p = crate::native::test_support::build_with_metadata(&PLUGIN, conf.clone(), &metadata)
            .unwrap();
        let allowed = |origin: &str| {
            let mut r = TestRequest::from_ip("127.0.0.1");
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("Origin", origin).unwrap();
            block_on(p.rewrite(&mut req, &mut r.cx()));
            let mut resp = ResponseHeader::build(200, None).unwrap();
            p.header_filter(&mut resp, &mut r.cx());
            header(&resp, "access-control-allow-origin").map(str::to_string)
        };
        assert_eq!(
            allowed("https://test.com").as_deref(),
            Some("https://test.com")
        );
        assert_eq!(
            allowed("https://domain.com").as_deref(),
            Some("https://domain.com")
        );
        assert_eq!(
            allowed("https://sub2.domain.com").as_deref(),
            Some("https://sub2.domain.com")
        );
        assert_eq!(allowed("http://foo.example.org"), None);

        let err = crate::native::test_support::build_with_metadata(
            &PLUGIN,
            json!({"allow_origins_by_metadata": ["key_1", "nope"]}),
            &metadata,
        )
        .err()
        .unwrap();
        assert!(
            err.starts_with("allow_origins_by_metadata[1]: `nope`"),
            "{err}"
        );
        let err = crate::native::test_support::build(&PLUGIN, conf)
            .err()
            .unwrap();
        assert!(err.contains("allow_origins_by_metadata[0]"), "{err}");
    }

    #[test]
    fn the_metadata_schema_is_apisix_s() {
        let schema = crate::schema::Schema::parse(&metadata_schema()).unwrap();
        let good = json!({"allow_origins": {"a": "*", "b": "**", "c": "null",
            "d": "https://x.com,http://y.com.uk:12000,http://c.tv"}, "inactive_timeout": 1});
        assert!(schema.validate(&good).is_empty());
        for bad in [
            "",
            "*a",
            "*,http://y.com",
            "nulll",
            "x.com",
            "https://x.com,y.com.uk",
        ] {
            let errs = schema.validate(&json!({"allow_origins": {"k": bad}}));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].0, "allow_origins.k", "{bad}");
        }
    }

    #[test]
    fn credentials_forbid_stars() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        let err = build(json!({"allow_credential": true})).unwrap();
        assert!(
            err.contains("allow_origins") && err.contains("allow_credential"),
            "{err}"
        );
        let err = build(
            json!({"allow_credential": true, "allow_origins": "http://a.com",
                               "allow_methods": "GET", "allow_headers": "*"}),
        )
        .unwrap();
        assert!(err.starts_with("allow_headers"), "{err}");
        assert!(build(
            json!({"allow_credential": true, "allow_origins": "http://a.com",
                             "allow_methods": "GET", "allow_headers": "X-A"})
        )
        .is_none());
        assert!(build(json!({"allow_origins": "a.com"}))
            .unwrap()
            .contains("allow_origins"));
        assert!(build(json!({"allow_origins_by_regex": ["("]}))
            .unwrap()
            .contains("allow_origins_by_regex[0]"));
    }
}
