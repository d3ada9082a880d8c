//! `require "resty.http"`: the `request_uri` subset of lua-resty-http, non-blocking, on
//! Pingora's pooled HTTP/1.1 connector.
//!
//! `request_uri` is an mlua async function: while it waits for DNS, the connection or
//! the response, its coroutine is suspended and the worker thread serves other requests
//! (the CPU budget counts only while Lua runs). Connections are kept alive in one
//! process-wide pool, keyed by resolved address, scheme, SNI and verification settings.
//! Network failures return `nil, err` with lua-resty-http's (cosocket's) wording;
//! calling it where Lua cannot yield (header_filter, body_filter) raises a Lua error.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mlua::{Function, Lua, Table, Value};
use parking_lot::Mutex;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error as PError, ErrorType};
use pingora_http::RequestHeader;

/// Largest response body `request_uri` reads (the body becomes one Lua string).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// lua-resty-http's default for each of the connect, send and read timeouts.
const DEFAULT_TIMEOUT_MS: f64 = 60_000.0;
/// How long an idle pooled connection is kept (lua_socket_keepalive_timeout's default).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle connections kept by the process-wide pool, over all hosts.
const POOL_SIZE: usize = 512;
const USER_AGENT: &str = "portico-resty-http";
const REGISTRY_KEY: &str = "portico.resty.http";
/// How long a name resolution is reused, and how many names are kept.
const DNS_TTL: Duration = Duration::from_secs(30);
const DNS_CACHE_MAX: usize = 1024;

/// The `resty.http` module table (built once per VM; later calls return the same table).
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    if let Value::Table(t) = lua.named_registry_value::<Value>(REGISTRY_KEY)? {
        return Ok(t);
    }
    let raw = lua.create_async_function(raw_request)?;
    let parse = lua.create_function(|lua, uri: String| match parse_uri(&uri) {
        Ok(u) => {
            let t = lua.create_table()?;
            t.raw_push(if u.tls { "https" } else { "http" })?;
            t.raw_push(u.host)?;
            t.raw_push(u.port)?;
            t.raw_push(u.path)?;
            t.raw_push(u.query.unwrap_or_default())?;
            Ok((Value::Table(t), None))
        }
        Err(e) => Ok((Value::Nil, Some(e))),
    })?;
    let coroutine: Table = lua.globals().get("coroutine")?;
    let isyieldable: Function = coroutine.get("isyieldable")?;
    let make: Function = lua
        .load(LUA_CLIENT)
        .set_name("=resty.http")
        .into_function()?;
    let (m, client, client_mt, headers_mt): (Table, Table, Table, Table) =
        make.call((raw, isyieldable, parse))?;
    // Shared by every plugin on the VM: read-only, like the other built-in modules.
    for t in [&m, &client, &client_mt, &headers_mt] {
        t.set_readonly(true);
    }
    lua.set_named_registry_value(REGISTRY_KEY, &m)?;
    Ok(m)
}

/// The client object and the header-table metatable, in Lua. `request_uri` checks that
/// it may yield before calling the async Rust function, so a sync phase gets a clear
/// error instead of Luau's "attempt to yield across metamethod/C-call boundary".
const LUA_CLIENT: &str = r#"
local raw_request, isyieldable, parse_uri = ...
local type, tonumber, error, rawget, rawset, setmetatable, lower =
    type, tonumber, error, rawget, rawset, setmetatable, string.lower

local headers_mt = {
    __index = function(t, k)
        if type(k) == "string" then return rawget(t, lower(k)) end
        return nil
    end,
    __newindex = function(t, k, v)
        if type(k) == "string" then k = lower(k) end
        rawset(t, k, v)
    end,
}

local client = {}
local unsupported = {
    connect = true, request = true, request_pipeline = true, ssl_handshake = true,
    proxy_request = true, proxy_response = true, set_proxy_options = true,
    get_client_body_reader = true, read_response = true, send_request = true,
    tcp_only = true, get_reused_times = true, set_keepalive_pool = true,
}
local client_mt = {
    __index = function(_, k)
        local f = client[k]
        if f ~= nil then return f end
        if unsupported[k] then
            return function()
                error("resty.http: httpc:" .. k .. "() is not supported by Portico; "
                    .. "use httpc:request_uri(uri, params)", 2)
            end
        end
        return nil
    end,
}

local function millis(v, what, level)
    if v == nil then return nil end
    local n = tonumber(v)
    if n == nil or n ~= n or n < 0 then
        error("resty.http: bad " .. what .. " (milliseconds expected, got " .. type(v) .. ")", level)
    end
    return n
end

function client.set_timeout(self, timeout)
    local t = millis(timeout, "timeout", 3)
    if t ~= nil then
        self.connect_timeout, self.send_timeout, self.read_timeout = t, t, t
    end
    return 1
end

function client.set_timeouts(self, connect, send, read)
    self.connect_timeout = millis(connect, "connect timeout", 3) or self.connect_timeout
    self.send_timeout = millis(send, "send timeout", 3) or self.send_timeout
    self.read_timeout = millis(read, "read timeout", 3) or self.read_timeout
    return 1
end

function client.set_keepalive(self) return 1 end
function client.close(self) return 1 end

function client.parse_uri(self, uri)
    if type(uri) ~= "string" then return nil, "bad uri: " .. tostring(uri) end
    return parse_uri(uri)
end

function client.request_uri(self, uri, params)
    if type(self) ~= "table" then
        error("resty.http: use httpc:request_uri(uri, params), with a colon", 2)
    end
    if not isyieldable() then
        error("resty.http: request_uri cannot run here: this code cannot yield "
            .. "(header_filter and body_filter run synchronously, as in OpenResty "
            .. "where cosockets are disabled there)", 2)
    end
    if type(uri) ~= "string" then return nil, "bad uri: " .. tostring(uri) end
    if params ~= nil and type(params) ~= "table" then
        error("resty.http: params must be a table, got " .. type(params), 2)
    end
    local res, err = raw_request(uri, params, self.connect_timeout, self.send_timeout,
        self.read_timeout)
    if not res then return nil, err end
    setmetatable(res.headers, headers_mt)
    return res
end

local http = { _VERSION = "0.17.1-portico" }
function http.new()
    return setmetatable({}, client_mt)
end

return http, client, client_mt, headers_mt
"#;

/// A parsed `http(s)://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Uri {
    tls: bool,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
    path: String,
    query: Option<String>,
    userinfo: Option<String>,
}

fn parse_uri(uri: &str) -> Result<Uri, String> {
    let bad = || format!("bad uri: {uri}");
    let (scheme, rest) = uri.split_once("://").ok_or_else(bad)?;
    let tls = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return Err(bad());
    };
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(bad)?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        if !after.is_empty() && !after.starts_with(':') {
            return Err(bad());
        }
        (h, after.strip_prefix(':'))
    } else if let Some((h, p)) = hostport.split_once(':') {
        (h, Some(p))
    } else {
        (hostport, None)
    };
    if host.is_empty() || host.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad());
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(bad()),
        },
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (tail, None),
    };
    if tail.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad());
    }
    Ok(Uri {
        tls,
        host: host.to_string(),
        port,
        path: if path.is_empty() { "/" } else { path }.to_string(),
        query: query.filter(|q| !q.is_empty()),
        userinfo,
    })
}

/// Everything the network part needs, taken out of Lua before the first await.
struct Prepared {
    uri: Uri,
    header: RequestHeader,
    body: Vec<u8>,
    verify: bool,
    sni: String,
    connect: Duration,
    send: Duration,
    read: Duration,
    keepalive: bool,
    idle: Duration,
    /// A failure on a reused connection before any response may be retried once.
    idempotent: bool,
}

/// The async Rust half of `httpc:request_uri` (the Lua half checked yieldability).
/// Returns `res` or `nil, err`.
async fn raw_request(
    lua: Lua,
    (uri, params, connect, send, read): (
        String,
        Option<Table>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ),
) -> mlua::Result<(Value, Option<String>)> {
    let prepared = match prepare(&lua, &uri, params.as_ref(), [connect, send, read])? {
        Ok(p) => p,
        Err(e) => return Ok((Value::Nil, Some(e))),
    };
    match execute(prepared).await {
        Ok(resp) => Ok((Value::Table(resp.into_lua(&lua)?), None)),
        Err(e) => Ok((Value::Nil, Some(e))),
    }
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
            super::vm::lua_type_name(other)
        ))),
    }
}

/// Reads `params` into a [`Prepared`]. `Err` raises (a wrong type: a programming error);
/// `Ok(Err)` is returned as `nil, err` (a bad URI or header, as lua-resty-http does).
fn prepare(
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
            String::from_utf8_lossy(&super::ngx_lib::codec::encode_args(lua, &t)?).into_owned(),
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
                    if out.len() > super::ngx_lib::MAX_RESULT_LEN {
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
                super::vm::lua_type_name(&v)
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
            let decoded = super::ngx_lib::codec::unescape_uri(info.as_bytes());
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

/// The response, read whole, before it becomes a Lua table.
struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, Vec<Vec<u8>>)>,
    body: Vec<u8>,
}

impl Response {
    fn into_lua(self, lua: &Lua) -> mlua::Result<Table> {
        let res = lua.create_table_with_capacity(0, 4)?;
        res.raw_set("status", self.status)?;
        res.raw_set("reason", self.reason)?;
        let headers = lua.create_table_with_capacity(0, self.headers.len())?;
        for (name, mut values) in self.headers {
            if values.len() == 1 {
                let v = values.pop().unwrap_or_default();
                headers.raw_set(name, lua.create_string(&v)?)?;
            } else {
                let list = lua.create_table_with_capacity(values.len(), 0)?;
                for v in values {
                    list.raw_push(lua.create_string(&v)?)?;
                }
                headers.raw_set(name, list)?;
            }
        }
        res.raw_set("headers", headers)?;
        res.raw_set("body", lua.create_string(&self.body)?)?;
        Ok(res)
    }
}

/// The process-wide pooled connector (Send + Sync; built on first use).
fn connector() -> Result<&'static Connector, String> {
    static CONNECTOR: OnceLock<Result<Connector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            // Pingora panics when the system CA store cannot be loaded: fail the call
            // instead of the worker.
            std::panic::catch_unwind(|| Connector::new(Some(ConnectorOptions::new(POOL_SIZE))))
                .map_err(|_| {
                    "HTTP client unavailable: loading the system CA certificates failed".to_string()
                })
        })
        .as_ref()
        .map_err(|e| e.clone())
}

/// Resolves `host` without blocking the worker (getaddrinfo runs on tokio's blocking
/// pool), with a small cache.
async fn resolve(host: &str, port: u16, limit: Duration) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    type Cache = Mutex<HashMap<(String, u16), (SocketAddr, Instant)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (host.to_ascii_lowercase(), port);
    if let Some((addr, at)) = cache.lock().get(&key) {
        if at.elapsed() < DNS_TTL {
            return Ok(*addr);
        }
    }
    let addrs = match tokio::time::timeout(limit, tokio::net::lookup_host((host, port))).await {
        Err(_) => return Err(format!("{host} could not be resolved (timeout)")),
        Ok(Err(e)) => return Err(format!("{host} could not be resolved ({e})")),
        Ok(Ok(addrs)) => addrs.collect::<Vec<_>>(),
    };
    // Prefer IPv4, as nginx's resolver does unless `ipv6=on`.
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host} could not be resolved (no address)"))?;
    let mut c = cache.lock();
    if c.len() >= DNS_CACHE_MAX {
        c.clear();
    }
    c.insert(key, (addr, Instant::now()));
    Ok(addr)
}

async fn execute(p: Prepared) -> Result<Response, String> {
    let connector = connector()?;
    let addr = resolve(&p.uri.host, p.uri.port, p.connect).await?;
    let mut peer = HttpPeer::new(
        addr,
        p.uri.tls,
        if p.uri.tls {
            p.sni.clone()
        } else {
            String::new()
        },
    );
    peer.options.connection_timeout = Some(p.connect);
    peer.options.verify_cert = p.verify;
    peer.options.verify_hostname = p.verify;

    let mut retried = false;
    loop {
        let (mut session, reused) = connector
            .get_http_session(&peer)
            .await
            .map_err(|e| describe(&e))?;
        session.read_timeout = Some(p.read);
        session.write_timeout = Some(p.send);
        match send_request(&mut session, &p).await {
            Ok(()) => {}
            // A pooled connection the server closed meanwhile: one fresh try.
            Err(e) if reused && !retried && p.idempotent && is_stale(&e) => {
                retried = true;
                continue;
            }
            Err(e) => return Err(describe(&e)),
        }
        let response = read_response(&mut session).await?;
        if p.keepalive {
            connector
                .release_http_session(session, &peer, Some(p.idle))
                .await;
        }
        return Ok(response);
    }
}

/// Writes the request and reads the final response header.
async fn send_request(session: &mut HttpSession, p: &Prepared) -> pingora_core::Result<()> {
    session
        .write_request_header(Box::new(p.header.clone()))
        .await?;
    if !p.body.is_empty() {
        session.write_body(&p.body).await?;
    }
    session.finish_body().await?;
    loop {
        session.read_response().await?;
        // Informational responses (100 Continue, 103 Early Hints) precede the real one.
        match session.get_status().map(|s| s.as_u16()) {
            Some(code) if (100..200).contains(&code) && code != 101 => continue,
            _ => return Ok(()),
        }
    }
}

async fn read_response(session: &mut HttpSession) -> Result<Response, String> {
    let Some(head) = session.resp_header() else {
        return Err("bad response: no status line".to_string());
    };
    let status = head.status.as_u16();
    let reason = head.get_reason_phrase().unwrap_or("").to_string();
    let mut headers: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for name in head.headers.keys() {
        let values = head
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        headers.push((name.as_str().to_string(), values));
    }
    let declared = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err("response body too large".to_string());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    loop {
        match session.read_body_ref().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err("response body too large".to_string());
                }
                body.extend_from_slice(chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(describe(&e)),
        }
    }
    Ok(Response {
        status,
        reason,
        headers,
        body,
    })
}

/// Whether a failure on a reused connection looks like the server had closed it.
fn is_stale(e: &PError) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

fn io_kind(e: &PError) -> Option<std::io::ErrorKind> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.root_cause());
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// The TLS library's reason inside Pingora's error text, e.g. "invalid peer
/// certificate: UnknownIssuer" (the outermost cause is only the local address).
fn tls_detail(e: &PError) -> Option<String> {
    let text = e.to_string();
    text.split(" cause: ")
        .skip(1)
        .filter(|c| !c.starts_with("local address"))
        .last()
        .map(|c| c.split(", SNI:").next().unwrap_or(c).trim().to_string())
        .filter(|c| !c.is_empty())
}

/// A Pingora error in cosocket words ("timeout", "connection refused", "closed", ...).
fn describe(e: &PError) -> String {
    use std::io::ErrorKind as K;
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout
        | ErrorType::TLSHandshakeTimedout => "timeout".to_string(),
        ErrorType::ConnectRefused => "connection refused".to_string(),
        ErrorType::ConnectNoRoute => "no route to host".to_string(),
        ErrorType::TLSHandshakeFailure
        | ErrorType::InvalidCert
        | ErrorType::TLSWantX509Lookup
        | ErrorType::HandshakeError => match tls_detail(e) {
            Some(d) => format!("handshake failed ({d})"),
            None => "handshake failed".to_string(),
        },
        ErrorType::ConnectionClosed => "closed".to_string(),
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectError => {
            match io_kind(e) {
                Some(K::ConnectionReset) => "connection reset by peer".to_string(),
                Some(K::BrokenPipe) => "broken pipe".to_string(),
                Some(K::ConnectionRefused) => "connection refused".to_string(),
                Some(K::TimedOut) => "timeout".to_string(),
                Some(K::UnexpectedEof) | None if e.etype() != &ErrorType::ConnectError => {
                    "closed".to_string()
                }
                _ => format!("connect failed ({})", e.root_cause()),
            }
        }
        ErrorType::InvalidHTTPHeader | ErrorType::H1Error => {
            format!("bad response ({})", e.root_cause())
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
#[path = "resty_http_tests.rs"]
mod tests;
