//! Reading `request_uri`'s Lua arguments into a [`Prepared`] request.

use std::time::Duration;

use base64::Engine as _;
use mlua::{Lua, Table, Value};
use pingora_http::RequestHeader;

use super::uri::{parse_uri, Uri};

/// lua-resty-http's default for each of the connect, send and read timeouts.
const DEFAULT_TIMEOUT_MS: f64 = 60_000.0;
/// How long an idle pooled connection is kept (lua_socket_keepalive_timeout's default).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
const USER_AGENT: &str = "portico-resty-http";

/// Everything the network part needs, taken out of Lua before the first await.
pub(super) struct Prepared {
    pub(super) uri: Uri,
    pub(super) header: RequestHeader,
    pub(super) body: Vec<u8>,
    pub(super) verify: bool,
    pub(super) sni: String,
    pub(super) connect: Duration,
    pub(super) send: Duration,
    pub(super) read: Duration,
    pub(super) keepalive: bool,
    pub(super) idle: Duration,
    /// A failure on a reused connection before any response may be retried once.
    pub(super) idempotent: bool,
}

fn millis(ms: Option<f64>) -> Duration {
    let ms = match ms {
        Some(v) if v.is_finite() && v > 0.0 => v,
        _ => DEFAULT_TIMEOUT_MS,
    };
    // At most a day: a huge value means "effectively never".
    Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0)
}

fn lua_bytes(v: &Value, what: &str) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(Value::Number(*n)
            .to_string()
            .unwrap_or_default()
            .into_bytes()),
        other => Err(mlua::Error::runtime(format!(
            "resty.http: {what} must be a string, got {}",
            super::super::convert::lua_type_name(other)
        ))),
    }
}

/// Reads `params` into a [`Prepared`]. `Err` raises (a wrong type: a programming error);
/// `Ok(Err)` is returned as `nil, err` (a bad URI or header, as lua-resty-http does).
pub(super) fn prepare(
    lua: &Lua,
    uri: &str,
    params: Option<&Table>,
    timeouts: [Option<f64>; 3],
) -> mlua::Result<Result<Prepared, String>> {
    let mut u = match parse_uri(uri) {
        Ok(u) => u,
        Err(e) => return Ok(Err(e)),
    };
    let get = |k: &str| -> mlua::Result<Value> {
        match params {
            Some(t) => t.get::<Value>(k),
            None => Ok(Value::Nil),
        }
    };

    let method = match get("method")? {
        Value::Nil => "GET".to_string(),
        v => String::from_utf8_lossy(&lua_bytes(&v, "params.method")?).into_owned(),
    };
    if let Value::String(p) = get("path")? {
        u.path = p.to_str()?.to_string();
    }
    // `query` is appended to the URI's own query string.
    let extra_query = match get("query")? {
        Value::Nil => None,
        Value::Table(t) => Some(
            String::from_utf8_lossy(&super::super::ngx_lib::codec::encode_args(lua, &t)?)
                .into_owned(),
        ),
        v => Some(
            String::from_utf8_lossy(&lua_bytes(&v, "params.query")?)
                .trim_start_matches('?')
                .to_string(),
        ),
    };
    let query = [u.query.clone(), extra_query]
        .into_iter()
        .flatten()
        .filter(|q| !q.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    let target = if query.is_empty() {
        u.path.clone()
    } else {
        format!("{}?{query}", u.path)
    };
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Ok(Err(format!("bad uri: {uri}")));
    }

    let body_value = get("body")?;
    let has_body = !body_value.is_nil();
    let body =
        match body_value {
            Value::Nil => Vec::new(),
            Value::Table(t) => {
                let mut out = Vec::new();
                for v in t.sequence_values::<Value>() {
                    out.extend_from_slice(&lua_bytes(&v?, "each part of params.body")?);
                    if out.len() > super::super::ngx_lib::MAX_RESULT_LEN {
                        return Err(mlua::Error::runtime("resty.http: params.body is too large"));
                    }
                }
                out
            }
            Value::Function(_) => return Err(mlua::Error::runtime(
                "resty.http: params.body as an iterator function is not supported; pass a string",
            )),
            v => lua_bytes(&v, "params.body")?,
        };

    let mut header = match RequestHeader::build(method.as_str(), target.as_bytes(), None) {
        Ok(h) => h,
        Err(_) => return Ok(Err(format!("invalid method \"{method}\""))),
    };
    fn user_has(name: &str, headers: &[(String, Vec<u8>)]) -> bool {
        headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    match get("headers")? {
        Value::Nil => {}
        Value::Table(t) => {
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let name = String::from_utf8_lossy(&lua_bytes(&k, "a header name")?).into_owned();
                match v {
                    Value::Table(list) => {
                        for item in list.sequence_values::<Value>() {
                            headers.push((name.clone(), lua_bytes(&item?, "a header value")?));
                        }
                    }
                    Value::Boolean(false) | Value::Nil => {}
                    v => headers.push((name, lua_bytes(&v, "a header value")?)),
                }
            }
        }
        v => {
            return Err(mlua::Error::runtime(format!(
                "resty.http: params.headers must be a table, got {}",
                super::super::convert::lua_type_name(&v)
            )))
        }
    }
    // Framing is ours: the body is sent whole with its length.
    headers.retain(|(k, _)| {
        !k.eq_ignore_ascii_case("content-length") && !k.eq_ignore_ascii_case("transfer-encoding")
    });
    let keepalive = !matches!(get("keepalive")?, Value::Boolean(false));
    if !user_has("host", &headers) {
        let host = if u.host.contains(':') {
            format!("[{}]", u.host)
        } else {
            u.host.clone()
        };
        let default_port = if u.tls { 443 } else { 80 };
        let value = if u.port == default_port {
            host
        } else {
            format!("{host}:{}", u.port)
        };
        headers.insert(0, ("Host".to_string(), value.into_bytes()));
    }
    if !user_has("user-agent", &headers) {
        headers.push(("User-Agent".to_string(), USER_AGENT.as_bytes().to_vec()));
    }
    if let Some(info) = &u.userinfo {
        if !user_has("authorization", &headers) {
            let decoded = super::super::ngx_lib::codec::unescape_uri(info.as_bytes());
            let token = base64::engine::general_purpose::STANDARD.encode(decoded);
            headers.push((
                "Authorization".to_string(),
                format!("Basic {token}").into_bytes(),
            ));
        }
    }
    if !keepalive && !user_has("connection", &headers) {
        headers.push(("Connection".to_string(), b"close".to_vec()));
    }
    let upper = method.to_ascii_uppercase();
    if has_body || matches!(upper.as_str(), "POST" | "PUT" | "PATCH") {
        headers.push((
            "Content-Length".to_string(),
            body.len().to_string().into_bytes(),
        ));
    }
    for (k, v) in headers {
        let shown = k.clone();
        if header.append_header(k, v.as_slice()).is_err() {
            return Ok(Err(format!("invalid request header \"{shown}\"")));
        }
    }

    let verify = !matches!(get("ssl_verify")?, Value::Boolean(false));
    let sni = match get("ssl_server_name")? {
        Value::String(s) => s.to_str()?.to_string(),
        _ => u.host.clone(),
    };
    let idle = match get("keepalive_timeout")? {
        Value::Integer(ms) if ms > 0 => Duration::from_millis(ms as u64),
        Value::Number(ms) if ms.is_finite() && ms > 0.0 => {
            Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0)
        }
        _ => DEFAULT_KEEPALIVE,
    };
    let [c, s, r] = timeouts;
    Ok(Ok(Prepared {
        idempotent: matches!(
            upper.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        uri: u,
        header,
        body,
        verify,
        sni,
        connect: millis(c),
        send: millis(s),
        read: millis(r),
        keepalive,
        idle,
    }))
}
