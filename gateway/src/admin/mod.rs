//! The admin API on its own listener: APISIX v3 Admin API dialect.
//!
//! Paths: `/apisix/admin/{routes,upstreams,services,global_rules,consumers,plugin_metadata,...}[/{id}[/{sub/path}]]`
//! and `/apisix/admin/configs[/validate]`; `DELETE /apisix/admin/proxy_cache/{zone}`
//! purges a cache zone. Every request needs a key (see [`auth`]);
//! every response carries `X-API-VERSION: v3`.

mod auth;
mod configs;
mod dynacode;
mod healthcheck;
mod history;
mod plugins;
mod proxy_cache;
mod reply;
mod resources;
mod standalone;

pub use standalone::StandaloneState;

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::Value;

use crate::config::ResourceKind;
use crate::store::{ConfigStore, Origin};

/// Largest accepted request body: APISIX's 1.5 MiB.
pub const MAX_BODY: usize = 1536 * 1024;

const PREFIX: &str = "/apisix/admin";
/// The control-API path of health-check status (APISIX serves it on its control port).
const HEALTHCHECK_PREFIX: &str = "/v1/healthcheck";

pub struct AdminApi {
    pub store: Arc<ConfigStore>,
    /// The keys in force; `SIGHUP` swaps them.
    pub keys: crate::reload::LiveKeys,
    /// `conf_version`s and `X-Digest` of API-driven `PUT /configs` (held across the
    /// apply, so two such updates never interleave).
    pub standalone: tokio::sync::Mutex<StandaloneState>,
}

/// The percent-decoded value of query argument `name`, if present.
pub(crate) fn query_arg<'a>(
    query: Option<&'a str>,
    name: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| crate::vars::percent_decode(v))
}

/// The value of query argument `name` as sent, without percent-decoding.
fn query_arg_raw<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    Read(String),
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, BodyError> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(BodyError::Read(e.to_string())),
        }
    }
}

/// A request after auth and body parsing, ready to dispatch.
struct AdminRequest<'a> {
    method: &'a str,
    segments: Vec<&'a str>,
    query: Option<&'a str>,
    body: Option<Value>,
    /// The name of the admin key the request was made with.
    key_name: Option<String>,
    /// The `X-Digest` header (API-driven `PUT /configs`).
    digest: Option<String>,
}

impl AdminApi {
    async fn dispatch(&self, req: AdminRequest<'_>) -> Response<Vec<u8>> {
        let store = &self.store;
        let writes = matches!(req.method, "PUT" | "POST" | "PATCH" | "DELETE");
        let purge = req.segments.first() == Some(&"proxy_cache");
        if writes && !purge && store.is_read_only() && req.segments.last() != Some(&"validate") {
            return reply::error(405, "the admin API is read-only: config_provider is yaml");
        }
        let body = || req.body.clone().unwrap_or(Value::Null);
        let who = || Origin {
            key_name: req.key_name.clone(),
            note: None,
        };
        match (req.method, req.segments.as_slice()) {
            ("GET", ["configs"]) => configs::get(store, &*self.standalone.lock().await),
            ("PUT", ["configs"]) => {
                let mut state = self.standalone.lock().await;
                configs::put(store, body(), req.digest.clone(), &mut state, who()).await
            }
            ("POST", ["configs", "validate"]) => configs::replace(store, body(), true, who()).await,
            ("GET", ["configs", "history"]) => history::list(store),
            ("GET", ["configs", "history", rev]) => history::get(store, rev),
            ("GET", ["configs", "history", rev, "diff"]) => history::diff(store, rev),
            ("POST", ["configs", "rollback", rev]) => history::rollback(store, rev, who()).await,
            ("GET", ["plugins", "list"]) => plugins::list(store),
            ("GET", ["plugins"]) if query_arg(req.query, "all").is_some_and(|v| v == "true") => {
                plugins::all(store)
            }
            ("PUT", ["plugins", "reload"]) => plugins::reload(),
            ("GET", ["plugins", name]) => plugins::schema(store, name),
            ("GET", ["dynacode"]) => dynacode::get(store),
            ("PUT", ["dynacode"]) => dynacode::put(store, body(), who()).await,
            ("DELETE", ["dynacode"]) => dynacode::delete(store, who()).await,
            ("POST", ["dynacode", "validate"]) => dynacode::validate(&body()),
            ("DELETE", ["proxy_cache", zone]) => {
                let prefix = query_arg(req.query, "prefix").map(|p| p.into_owned());
                proxy_cache::purge(zone, prefix).await
            }
            (method, [res, rest @ ..]) => {
                let Some(kind) = ResourceKind::from_segment(res) else {
                    return reply::error(404, "404 Route Not Found");
                };
                if kind == ResourceKind::PluginMetadata {
                    // APISIX: known by the plugin's name only; no POST or PATCH.
                    match (method, rest) {
                        ("POST" | "PATCH", _) => {
                            return reply::error(
                                405,
                                format!("not supported `{method}` method for plugin_metadata"),
                            )
                        }
                        ("PUT" | "DELETE", []) => return reply::error(400, "missing plugin name"),
                        _ => {}
                    }
                }
                if kind == ResourceKind::Consumers {
                    match (method, rest) {
                        ("PUT", []) => {
                            return resources::put_consumer(store, None, body(), who()).await
                        }
                        ("PUT", [name]) => {
                            return resources::put_consumer(store, Some(name), body(), who()).await
                        }
                        ("POST", _) | ("PATCH", _) => {
                            return reply::error(
                                405,
                                format!("method {method} is not allowed here"),
                            )
                        }
                        _ => {}
                    }
                }
                match (method, rest) {
                    ("GET", []) => resources::list(store, kind, req.query),
                    ("POST", []) => resources::post(store, kind, body(), who()).await,
                    ("PUT", []) => resources::put_with_body_id(store, kind, body(), who()).await,
                    ("GET", [id]) => resources::get_one(store, kind, id),
                    ("PUT", [id]) => resources::put(store, kind, id, body(), who()).await,
                    ("PATCH", [id, sub @ ..]) => {
                        resources::patch(store, kind, id, sub, body(), who()).await
                    }
                    ("DELETE", [id]) => resources::delete(store, kind, id, req.query, who()).await,
                    _ => reply::error(405, format!("method {method} is not allowed here")),
                }
            }
            _ => reply::error(404, "404 Route Not Found"),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let method = header.method.as_str().to_string();
        let path = header.uri.path().to_string();
        let query = header.uri.query().map(str::to_string);
        let api_key = header
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let digest = header
            .headers
            .get("x-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);

        let (rest, healthcheck) = if let Some(rest) = path.strip_prefix(PREFIX) {
            (rest, false)
        } else if let Some(rest) = path.strip_prefix(HEALTHCHECK_PREFIX) {
            (rest, true)
        } else {
            return reply::error(404, "404 Route Not Found");
        };
        // Verbatim, not percent-decoded: APISIX reads `ngx.var.arg_api_key`, which nginx
        // leaves encoded, and docs/admin-api.md says so.
        let query_key = query_arg_raw(query.as_deref(), "api_key");
        let presented = api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .or(query_key.filter(|k| !k.is_empty()));
        let key_name = match auth::authorized_key(&self.keys.load(), presented, &method) {
            Ok(k) => k.name.clone(),
            Err(e) => {
                return reply::json(
                    401,
                    &serde_json::json!({"error_msg": "failed to check token", "description": e.description()}),
                )
            }
        };
        if healthcheck {
            if method != "GET" {
                return reply::error(405, format!("method {method} is not allowed here"));
            }
            let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
            return healthcheck::get(&self.store, &segments);
        }
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(BodyError::TooLarge) => {
                return reply::error(413, format!("request body is larger than {MAX_BODY} bytes"))
            }
            Err(BodyError::Read(e)) => {
                return reply::error(400, format!("cannot read request body: {e}"))
            }
        };
        let body = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => Some(v),
                Err(e) => return reply::error(400, format!("invalid request body: {e}")),
            }
        };
        // `PUT /plugins/reload` is the one write without a body.
        if body.is_none()
            && matches!(method.as_str(), "PUT" | "POST" | "PATCH")
            && rest.trim_end_matches('/') != "/plugins/reload"
        {
            return reply::error(400, "invalid request body: empty body");
        }
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        self.dispatch(AdminRequest {
            method: &method,
            segments,
            query: query.as_deref(),
            body,
            key_name: Some(key_name),
            digest,
        })
        .await
    }
}
