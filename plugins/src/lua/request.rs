//! The request as Lua sees it: plain data the gateway fills before a phase and reads
//! back after it. Keeping this boundary plain data is what lets the plugins crate run
//! OpenResty snippets without depending on the gateway or on Pingora's session.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;

use crate::phase::Phase;

/// Shared between the gateway and the Lua functions of one request.
pub type SharedRequest = Arc<Mutex<LuaRequest>>;

/// Variables the gateway provides (`ngx.var.*` beyond the request line and headers).
/// Addresses stay addresses: `ngx.var.remote_addr` and friends are formatted when Lua
/// reads them, so a request whose Lua never asks pays nothing for them.
#[derive(Debug, Clone, Default)]
pub struct ConnVars {
    pub host: String,
    /// This machine's host name (`ngx.var.hostname`), read once per process.
    pub hostname: &'static str,
    pub scheme: &'static str,
    /// The client (after `real-ip`).
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub server_ip: Option<IpAddr>,
    pub server_port: Option<u16>,
    /// The SNI of a TLS connection (empty on plain HTTP or without SNI).
    pub ssl_server_name: String,
}

/// Shared placeholders for a new request (the gateway fills in the real ones), so making
/// one allocates neither.
fn no_plugin() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from("")))
}

fn no_libraries() -> Arc<super::LuaLibraries> {
    static EMPTY: std::sync::OnceLock<Arc<super::LuaLibraries>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(Arc::default))
}

/// The request line a Lua view starts from.
#[derive(Debug, Clone)]
pub struct RequestLine {
    pub method: Cow<'static, str>,
    /// The path, without the query.
    pub uri: String,
    /// The raw query string, if the request has one.
    pub args: Option<String>,
}

/// The name of a request method, without an allocation for the standard ones.
pub fn method_name(method: &http::Method) -> Cow<'static, str> {
    const STANDARD: [&str; 9] = [
        "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    match STANDARD.iter().find(|m| **m == method.as_str()) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(method.as_str().to_string()),
    }
}

/// `ngx.var` of an optional address part: empty when unknown, as nginx gives it.
fn shown<T: ToString>(v: Option<T>) -> Cow<'static, str> {
    v.map_or(Cow::Borrowed(""), |v| Cow::Owned(v.to_string()))
}

/// Everything Lua can read or change about one request.
#[derive(Debug)]
pub struct LuaRequest {
    pub phase: Phase,
    /// The plugin whose function is running (for `ngx.log` and error reports).
    pub plugin: Arc<str>,
    /// The request line as Lua sees it (`ngx.req.get_method`, `ngx.var.uri`, `ngx.var.args`),
    /// changed through `set_method`, `set_uri` and `set_args`.
    method: Cow<'static, str>,
    uri: String,
    args: Option<String>,
    /// `ngx.var.request_uri`, once Lua changed the uri or the args: the original request
    /// line's, kept at the first change. Until then it is `uri` and `args` themselves,
    /// so a request whose Lua never changes them formats it only if Lua reads it.
    original_request_uri: Option<String>,
    /// Request headers; `ngx.req.set_header` changes them (for the upstream request).
    pub headers: HeaderMap,
    pub conn: ConnVars,
    /// Variables set with `ngx.var.NAME = value` (nginx `set $NAME`).
    pub user_vars: BTreeMap<String, String>,
    pub started: Instant,
    /// `ngx.var.upstream_addr`, once a node was chosen.
    pub upstream_addr: Option<String>,
    /// `ngx.var.consumer_name`, once an auth plugin authenticated the request.
    pub consumer_name: Option<Arc<str>>,
    /// Lua changed the method, uri or args.
    pub line_changed: bool,
    /// The request headers Lua set or cleared since the gateway last applied them: only
    /// these are rewritten upstream.
    pub changed_headers: Vec<HeaderName>,

    /// `ngx.status`: the response status (0 = not set yet).
    pub status: u16,
    /// Response headers: in `header_filter` the real ones; before that, headers for a
    /// response the Lua code generates itself.
    pub response_headers: HeaderMap,
    /// Set when Lua changed `ngx.status` or `ngx.header`.
    pub response_changed: bool,
    /// The response headers Lua set or cleared since the gateway last applied them:
    /// only these are compared and rewritten after `header_filter`.
    pub changed_response_headers: Vec<HeaderName>,
    /// `ngx.say`/`ngx.print` output not yet sent.
    pub output: Vec<u8>,
    /// `ngx.exit(code)` was called: it ends the request even if `pcall` caught the
    /// unwinding error, as in OpenResty (where `ngx.exit` cannot be caught).
    pub exit_code: Option<i64>,
    /// The running function is a plain call in a phase that may yield (its code names
    /// no yielding API): yielding APIs fail with a clear error.
    pub plain_call: bool,

    /// `ngx.arg[1]`/`ngx.arg[2]` in `body_filter`.
    pub chunk: Option<Bytes>,
    pub eof: bool,

    /// `ngx.balancer.set_current_peer(host, port)`.
    pub balancer_peer: Option<(String, u16)>,
    /// `ngx.balancer.set_more_tries(n)`.
    pub balancer_more_tries: Option<u32>,

    /// The `ngx.ctx` table, created on first use and kept for every phase.
    pub ctx: Option<Arc<mlua::Table>>,

    /// The request body, once `ngx.req.read_body()` had it read.
    pub body: BodyState,
    /// Between a Lua call that waits for the body and the gateway that reads it; made
    /// by the first side that needs it (`body_signals()`), so a request whose Lua never
    /// yields allocates none.
    body_signals: Option<Arc<BodySignals>>,
    /// Cosockets and light threads of the request, closed and stopped when it ends;
    /// made at the first one (`owned()`).
    owned: Option<Arc<super::owned::Owned>>,

    /// The library modules (`lua_modules`) of the configuration serving the request.
    pub libraries: Arc<super::LuaLibraries>,
}

/// Between `ngx.req.read_body()` and the gateway's body reader.
#[derive(Debug, Default)]
pub struct BodySignals {
    /// Lua → gateway: "read the body now" (the gateway holds the connection).
    pub wanted: tokio::sync::Notify,
    /// Gateway → Lua: the body is in `body`.
    pub ready: tokio::sync::Notify,
}

/// Where the request body stands for Lua.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyState {
    NotRead,
    /// `read_body()` asked for it; the gateway is reading.
    Wanted,
    Read(Bytes),
    /// Larger than `proxy.client_max_body_size`: the request is answered 413.
    TooLarge,
}

/// The largest body Pingora can replay to the upstream after `ngx.req.read_body()` read
/// it (its retry buffer); `read_body` itself is bounded by `proxy.client_max_body_size`.
pub const MAX_READ_BODY: usize = 64 * 1024;

impl LuaRequest {
    /// A request that arrives now, with no library modules (for tests and benchmarks; the
    /// gateway uses [`LuaRequest::arrived`]).
    pub fn new(
        method: String,
        uri: String,
        args: Option<String>,
        headers: HeaderMap,
        conn: ConnVars,
    ) -> LuaRequest {
        LuaRequest::arrived(
            RequestLine {
                method: Cow::Owned(method),
                uri,
                args,
            },
            headers,
            conn,
            Instant::now(),
            no_libraries(),
        )
    }

    /// The Lua view of a request that arrived at `started`, served by a configuration
    /// with `libraries`. The gateway makes one per request that runs Lua, so it takes
    /// what the gateway already has instead of reading the clock again.
    pub fn arrived(
        line: RequestLine,
        headers: HeaderMap,
        conn: ConnVars,
        started: Instant,
        libraries: Arc<super::LuaLibraries>,
    ) -> LuaRequest {
        LuaRequest {
            phase: Phase::Rewrite,
            plugin: no_plugin(),
            method: line.method,
            uri: line.uri,
            args: line.args,
            original_request_uri: None,
            headers,
            conn,
            user_vars: BTreeMap::new(),
            started,
            upstream_addr: None,
            consumer_name: None,
            line_changed: false,
            changed_headers: Vec::new(),
            status: 0,
            response_headers: HeaderMap::new(),
            response_changed: false,
            changed_response_headers: Vec::new(),
            output: Vec::new(),
            exit_code: None,
            plain_call: false,
            chunk: None,
            eof: false,
            balancer_peer: None,
            balancer_more_tries: None,
            ctx: None,
            body: BodyState::NotRead,
            body_signals: None,
            owned: None,
            libraries,
        }
    }

    /// `ngx.req.get_method()`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// `ngx.var.uri`: the path, without the query.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `ngx.var.args`: the raw query string.
    pub fn args(&self) -> Option<&str> {
        self.args.as_deref()
    }

    /// `ngx.var.request_uri`: the original request line's uri and query; changing the
    /// uri or the args does not change it, as in nginx.
    pub fn request_uri(&self) -> Cow<'_, str> {
        if let Some(original) = &self.original_request_uri {
            return Cow::Borrowed(original);
        }
        match &self.args {
            Some(a) => Cow::Owned(format!("{}?{a}", self.uri)),
            None => Cow::Borrowed(&self.uri),
        }
    }

    /// `ngx.req.set_method`.
    pub fn set_method(&mut self, method: String) {
        self.method = Cow::Owned(method);
        self.line_changed = true;
    }

    /// `ngx.req.set_uri`.
    pub fn set_uri(&mut self, uri: String) {
        self.keep_request_uri();
        self.uri = uri;
        self.line_changed = true;
    }

    /// `ngx.req.set_uri_args` and `ngx.var.args = ...`: an empty query is no query.
    pub fn set_args(&mut self, args: Option<String>) {
        self.keep_request_uri();
        self.args = args.filter(|a| !a.is_empty());
        self.line_changed = true;
    }

    /// Keeps `request_uri` before the first change of the uri or the args.
    fn keep_request_uri(&mut self) {
        if self.original_request_uri.is_none() {
            self.original_request_uri = Some(self.request_uri().into_owned());
        }
    }

    /// The request's body signals, made on first use.
    pub fn body_signals(&mut self) -> Arc<BodySignals> {
        Arc::clone(self.body_signals.get_or_insert_with(Arc::default))
    }

    /// The request's cosockets and light threads, the set made on first use.
    pub fn owned(&mut self) -> Arc<super::owned::Owned> {
        Arc::clone(self.owned.get_or_insert_with(Arc::default))
    }

    /// The set of cosockets and light threads, if the request ever had one.
    pub fn owned_if_any(&self) -> Option<Arc<super::owned::Owned>> {
        self.owned.clone()
    }

    /// Lua changed the method, uri, args or headers since the gateway last applied them.
    pub fn request_changed(&self) -> bool {
        self.line_changed || !self.changed_headers.is_empty()
    }

    pub fn shared(self) -> SharedRequest {
        Arc::new(Mutex::new(self))
    }

    /// `ngx.var.NAME` (`None` is Lua `nil`), borrowed where the value is stored as is
    /// (most variables and request headers), so reading one allocates nothing.
    pub fn var_ref(&self, name: &str) -> Option<Cow<'_, str>> {
        let v: &str = match name {
            "uri" => &self.uri,
            "request_uri" => return Some(self.request_uri()),
            "args" | "query_string" => return self.args.as_deref().map(Cow::Borrowed),
            "is_args" => {
                if self.args.is_some() {
                    "?"
                } else {
                    ""
                }
            }
            "request_method" => &self.method,
            "host" => &self.conn.host,
            "hostname" => self.conn.hostname,
            "scheme" => self.conn.scheme,
            "remote_addr" => return Some(shown(self.conn.client_ip)),
            "remote_port" => return Some(shown(self.conn.client_port)),
            "server_addr" => return Some(shown(self.conn.server_ip)),
            "server_port" => return Some(shown(self.conn.server_port)),
            "ssl_server_name" if !self.conn.ssl_server_name.is_empty() => {
                &self.conn.ssl_server_name
            }
            "upstream_addr" => return self.upstream_addr.as_deref().map(Cow::Borrowed),
            "consumer_name" => return self.consumer_name.as_deref().map(Cow::Borrowed),
            "status" => {
                return (self.status > 0).then(|| Cow::Owned(self.status.to_string()));
            }
            "request_time" => {
                return Some(Cow::Owned(format!(
                    "{:.3}",
                    self.started.elapsed().as_secs_f64()
                )))
            }
            "content_type" => return self.header_ref("content-type"),
            "content_length" => return self.header_ref("content-length"),
            "http_cookie" => return self.header_ref("cookie"),
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    return if h.contains('_') {
                        self.header_ref(&h.replace('_', "-"))
                    } else {
                        self.header_ref(h)
                    };
                }
                if let Some(a) = name.strip_prefix("arg_") {
                    return self.arg(a).map(Cow::Owned);
                }
                if let Some(c) = name.strip_prefix("cookie_") {
                    return self.cookie(c).map(Cow::Owned);
                }
                return self.user_vars.get(name).map(|v| Cow::Borrowed(v.as_str()));
            }
        };
        Some(Cow::Borrowed(v))
    }

    /// `ngx.var.NAME` as bytes: `binary_remote_addr` (the client address as 4 or 16 raw
    /// bytes, as nginx gives it) and everything `var_ref` knows.
    pub fn var_bytes(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        if name == "binary_remote_addr" {
            return Some(Cow::Owned(match self.conn.client_ip {
                Some(IpAddr::V4(ip)) => ip.octets().to_vec(),
                Some(IpAddr::V6(ip)) => ip.octets().to_vec(),
                None => Vec::new(),
            }));
        }
        Some(match self.var_ref(name)? {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        })
    }

    /// `ngx.var.NAME = value`: nginx lets `args` and user variables change; built-in
    /// read-only variables raise an error, as in OpenResty.
    pub fn set_var(&mut self, name: &str, value: Option<String>) -> Result<(), String> {
        match name {
            "args" | "query_string" => {
                self.set_args(value);
                Ok(())
            }
            "uri" | "request_uri" | "request_method" | "host" | "hostname" | "scheme"
            | "remote_addr" | "binary_remote_addr" | "remote_port" | "server_addr"
            | "server_port" | "ssl_server_name" | "status" | "request_time" | "upstream_addr"
            | "is_args" | "consumer_name" => Err(format!("variable \"{name}\" not changeable")),
            _ if name.starts_with("http_")
                || name.starts_with("arg_")
                || name.starts_with("cookie_") =>
            {
                Err(format!("variable \"{name}\" not changeable"))
            }
            _ => {
                match value {
                    Some(v) => self.user_vars.insert(name.to_string(), v),
                    None => self.user_vars.remove(name),
                };
                Ok(())
            }
        }
    }

    /// First value of a request header, as a string.
    fn header_ref(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }

    fn arg(&self, name: &str) -> Option<String> {
        self.args.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| v.to_string())
        })
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|h| {
                h.to_str().ok()?.split(';').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| v.to_string())
                })
            })
    }

    /// Sets (or with an empty list removes) a request header.
    pub fn set_request_header(&mut self, name: &str, values: &[String]) -> Result<(), String> {
        replace_header(&mut self.headers, &mut self.changed_headers, name, values)
    }

    /// Sets (or with an empty list removes) a response header.
    pub fn set_response_header(&mut self, name: &str, values: &[String]) -> Result<(), String> {
        replace_header(
            &mut self.response_headers,
            &mut self.changed_response_headers,
            name,
            values,
        )?;
        self.response_changed = true;
        Ok(())
    }
}

/// Replaces every value of `name` in `headers` with `values` and lists the name in
/// `changed` (once): the gateway writes back only the listed headers.
fn replace_header(
    headers: &mut HeaderMap,
    changed: &mut Vec<HeaderName>,
    name: &str,
    values: &[String],
) -> Result<(), String> {
    let name = header_name(name)?;
    headers.remove(&name);
    for v in values {
        headers.append(name.clone(), header_value(v)?);
    }
    if !changed.contains(&name) {
        changed.push(name);
    }
    Ok(())
}

/// OpenResty normalises header names given to `ngx.header`/`set_header`: `_` becomes `-`.
pub fn header_name(name: &str) -> Result<HeaderName, String> {
    // `HeaderName::from_bytes` lowercases by itself; only `_` needs replacing first.
    let parsed = if name.contains('_') {
        HeaderName::from_bytes(name.replace('_', "-").as_bytes())
    } else {
        HeaderName::from_bytes(name.as_bytes())
    };
    parsed.map_err(|_| format!("invalid header name \"{name}\""))
}

fn header_value(v: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(v).map_err(|_| format!("invalid header value \"{}\"", v.escape_debug()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> LuaRequest {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("alice"));
        h.insert("cookie", HeaderValue::from_static("a=1; sid=s9"));
        LuaRequest::new(
            "GET".into(),
            "/p".into(),
            Some("x=1&y=2".into()),
            h,
            ConnVars::default(),
        )
    }

    #[test]
    fn vars_resolve_like_nginx() {
        let r = req();
        assert_eq!(r.var_ref("uri").as_deref(), Some("/p"));
        assert_eq!(r.var_ref("request_uri").as_deref(), Some("/p?x=1&y=2"));
        assert_eq!(r.var_ref("arg_y").as_deref(), Some("2"));
        assert_eq!(r.var_ref("http_x_user").as_deref(), Some("alice"));
        assert_eq!(r.var_ref("cookie_sid").as_deref(), Some("s9"));
        assert_eq!(r.var_ref("status"), None);
        assert_eq!(r.var_ref("nope"), None);
    }

    #[test]
    fn binary_remote_addr_is_the_raw_address() {
        let mut r = req();
        r.conn.client_ip = "10.1.2.3".parse().ok();
        assert_eq!(
            r.var_bytes("binary_remote_addr").as_deref(),
            Some(&[10u8, 1, 2, 3][..])
        );
        r.conn.client_ip = "2001:db8::1".parse().ok();
        let v6 = r.var_bytes("binary_remote_addr").unwrap();
        assert_eq!(v6.len(), 16);
        assert_eq!((v6[0], v6[1], v6[15]), (0x20, 0x01, 1));
        assert_eq!(r.var_bytes("uri").as_deref(), Some(&b"/p"[..]));
        assert!(r.set_var("binary_remote_addr", Some("x".into())).is_err());
    }

    #[test]
    fn request_uri_stays_the_original_line() {
        let mut r = req();
        r.set_uri("/q".into());
        r.set_args(Some("z=3".into()));
        assert_eq!(r.var_ref("uri").as_deref(), Some("/q"));
        assert_eq!(r.var_ref("args").as_deref(), Some("z=3"));
        assert_eq!(r.var_ref("request_uri").as_deref(), Some("/p?x=1&y=2"));
        r.set_args(Some(String::new()));
        assert_eq!(r.args(), None);
        assert_eq!(r.var_ref("request_uri").as_deref(), Some("/p?x=1&y=2"));
        assert!(r.line_changed);

        let mut r = LuaRequest::new(
            "GET".into(),
            "/a".into(),
            None,
            HeaderMap::new(),
            ConnVars::default(),
        );
        assert_eq!(r.var_ref("request_uri").as_deref(), Some("/a"));
        r.set_var("args", Some("k=v".into())).unwrap();
        assert_eq!(r.var_ref("request_uri").as_deref(), Some("/a"));
        assert_eq!(r.var_ref("is_args").as_deref(), Some("?"));
    }

    #[test]
    fn method_names_are_borrowed_when_standard() {
        assert!(matches!(
            method_name(&http::Method::GET),
            Cow::Borrowed("GET")
        ));
        assert!(matches!(
            method_name(&http::Method::CONNECT),
            Cow::Borrowed("CONNECT")
        ));
        let purge = http::Method::from_bytes(b"PURGE").unwrap();
        assert!(matches!(method_name(&purge), Cow::Owned(m) if m == "PURGE"));
    }

    #[test]
    fn only_changeable_vars_change() {
        let mut r = req();
        assert!(r.set_var("uri", Some("/x".into())).is_err());
        r.set_var("args", Some("z=3".into())).unwrap();
        assert_eq!(r.var_ref("arg_z").as_deref(), Some("3"));
        r.set_var("my_var", Some("v".into())).unwrap();
        assert_eq!(r.var_ref("my_var").as_deref(), Some("v"));
    }
}
