//! Request variables: the subset of APISIX's `ctx.var` vocabulary that Portico
//! understands (`uri`, `arg_*`, `http_*`, `cookie_*`, ...).
//!
//! Variable names are parsed once, when configuration is applied, into a
//! [`Var`]; per request they are resolved against a borrowed [`RequestView`].
//! Resolution borrows from the request wherever possible so that the common
//! cases (`uri`, `host`, plain header values, plain query values) never
//! allocate.
//!
//! [`Template`] implements the `"$host$uri"`-style keys APISIX uses for
//! `vars_combinations` (e.g. in `limit-count` with `key_type = var_combination`).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

/// Read-only view of one downstream request; built once per request by the proxy.
///
/// Everything is borrowed, so building a view costs nothing beyond the
/// struct itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Request method, e.g. `"GET"`.
    pub method: &'a str,
    /// Request path without the query string, e.g. `"/a/b"`.
    pub path: &'a str,
    /// Raw, undecoded query string without the leading `?`, e.g. `"x=1&y=2"`.
    pub query: Option<&'a str>,
    /// `Host` header without the port. Expected to be lowercase already
    /// (the router copes with uppercase, at the cost of an allocation).
    pub host: &'a str,
    /// All request headers.
    pub headers: &'a http::HeaderMap,
    /// Address of the downstream peer, when known.
    pub remote_addr: Option<IpAddr>,
    /// Port of the downstream peer, when known.
    pub remote_port: Option<u16>,
    /// Local port the request arrived on, when known.
    pub server_port: Option<u16>,
    /// `"http"` or `"https"`.
    pub scheme: &'a str,
    /// The authenticated consumer's username, once an auth plugin ran.
    pub consumer_name: Option<&'a str>,
}

/// The request's host: the Host header (or the URI's authority), without the port, as
/// sent (not lower-cased).
pub fn host_of(req: &pingora_http::RequestHeader) -> &str {
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.host())
        .unwrap_or("");
    strip_port(raw)
}

/// `host[:port]` or `[v6]:port` without the port.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// A variable name parsed once at apply time (never per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `uri`: the request path, without the query string.
    Uri,
    /// `request_uri`: path plus `?` plus query (when there is a query).
    RequestUri,
    /// `args`: the raw query string.
    Args,
    /// `host`: the `Host` header without port.
    Host,
    /// `remote_addr`: the downstream peer's IP address.
    RemoteAddr,
    /// `remote_port`: the downstream peer's port.
    RemotePort,
    /// `server_port`: the local port.
    ServerPort,
    /// `scheme`: `http` or `https`.
    Scheme,
    /// `request_method`: e.g. `GET`.
    RequestMethod,
    /// `consumer_name`: the authenticated consumer's username.
    ConsumerName,
    /// `arg_<name>`: first query parameter with that exact key, percent-decoded.
    Arg(String),
    /// `http_<name>`: a request header; the stored name is already lowercase
    /// with `_` replaced by `-` (so `http_x_user` looks up `x-user`).
    Http(String),
    /// `cookie_<name>`: a cookie from the `Cookie` header(s), raw (not decoded).
    Cookie(String),
}

impl Var {
    /// Parses an APISIX variable name such as `uri`, `arg_id`, `http_x_user`
    /// or `cookie_sid`.
    ///
    /// Errors name the offending variable, e.g. ``unknown variable `x` ``.
    pub fn parse(name: &str) -> Result<Var, String> {
        let simple = match name {
            "uri" => Some(Var::Uri),
            "request_uri" => Some(Var::RequestUri),
            "args" => Some(Var::Args),
            "host" => Some(Var::Host),
            "remote_addr" => Some(Var::RemoteAddr),
            "remote_port" => Some(Var::RemotePort),
            "server_port" => Some(Var::ServerPort),
            "scheme" => Some(Var::Scheme),
            "request_method" => Some(Var::RequestMethod),
            "consumer_name" => Some(Var::ConsumerName),
            _ => None,
        };
        if let Some(var) = simple {
            return Ok(var);
        }
        if let Some(arg) = name.strip_prefix("arg_") {
            if arg.is_empty() {
                return Err(format!("variable `{name}` is missing the argument name"));
            }
            return Ok(Var::Arg(arg.to_owned()));
        }
        if let Some(header) = name.strip_prefix("http_") {
            if header.is_empty() {
                return Err(format!("variable `{name}` is missing the header name"));
            }
            let header = header.to_ascii_lowercase().replace('_', "-");
            // Validate now so a bad name is a config error, not a silent miss.
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!(
                    "variable `{name}`: `{header}` is not a valid header name"
                ));
            }
            return Ok(Var::Http(header));
        }
        if let Some(cookie) = name.strip_prefix("cookie_") {
            if cookie.is_empty() {
                return Err(format!("variable `{name}` is missing the cookie name"));
            }
            return Ok(Var::Cookie(cookie.to_owned()));
        }
        Err(format!("unknown variable `{name}`"))
    }

    /// Resolves the variable against a request. `None` means "not present"
    /// (no such header / argument / cookie, or an unknown peer address).
    ///
    /// Borrows from the request whenever the value exists verbatim in it.
    pub fn resolve<'a>(&self, req: &RequestView<'a>) -> Option<Cow<'a, str>> {
        match self {
            Var::Uri => Some(Cow::Borrowed(req.path)),
            Var::RequestUri => Some(match req.query {
                Some(q) => Cow::Owned(format!("{}?{}", req.path, q)),
                None => Cow::Borrowed(req.path),
            }),
            Var::Args => req.query.map(Cow::Borrowed),
            Var::Host => Some(Cow::Borrowed(req.host)),
            Var::RemoteAddr => req.remote_addr.map(|ip| Cow::Owned(ip.to_string())),
            Var::RemotePort => req.remote_port.map(|p| Cow::Owned(p.to_string())),
            Var::ServerPort => req.server_port.map(|p| Cow::Owned(p.to_string())),
            Var::Scheme => Some(Cow::Borrowed(req.scheme)),
            Var::RequestMethod => Some(Cow::Borrowed(req.method)),
            Var::ConsumerName => req.consumer_name.map(Cow::Borrowed),
            Var::Arg(name) => query_arg(req.query?, name).map(percent_decode),
            Var::Http(name) => req
                .headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(Cow::Borrowed),
            Var::Cookie(name) => cookie(req.headers, name).map(Cow::Borrowed),
        }
    }
}

impl fmt::Display for Var {
    /// Writes the APISIX spelling of the variable (`http_` names come back
    /// in their normalised `x-user` form, i.e. `http_x-user`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Uri => f.write_str("uri"),
            Var::RequestUri => f.write_str("request_uri"),
            Var::Args => f.write_str("args"),
            Var::Host => f.write_str("host"),
            Var::RemoteAddr => f.write_str("remote_addr"),
            Var::RemotePort => f.write_str("remote_port"),
            Var::ServerPort => f.write_str("server_port"),
            Var::Scheme => f.write_str("scheme"),
            Var::RequestMethod => f.write_str("request_method"),
            Var::ConsumerName => f.write_str("consumer_name"),
            Var::Arg(n) => write!(f, "arg_{n}"),
            Var::Http(n) => write!(f, "http_{n}"),
            Var::Cookie(n) => write!(f, "cookie_{n}"),
        }
    }
}

/// Finds the raw (still encoded) value of the first `name=value` pair whose
/// key equals `name`. A bare key (`?flag`) yields an empty value, as nginx's
/// `$arg_flag` does.
fn query_arg<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Decodes `%XX` escapes and `+` (as space). Malformed escapes are kept
/// literally; invalid UTF-8 is replaced with U+FFFD. Borrows when there is
/// nothing to decode.
pub fn percent_decode(raw: &str) -> Cow<'_, str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex_val(b)),
                bytes.get(i + 2).and_then(|&b| hex_val(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Value of one hex digit.
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Finds cookie `name` across all `Cookie` headers (`a=1; b=2`). The value
/// is returned raw, matching nginx's `$cookie_name`.
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim())
        })
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// An APISIX variable template such as `"$host$uri"` or
/// `"$http_x_user-$arg_id"`, parsed once and rendered per request.
///
/// Syntax: `$name` or `${name}` where a name is `[A-Za-z0-9_]+`; everything
/// else is literal text. `\$` is a literal `$` (as APISIX's `resolve_var`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; fails on unknown variables, a `$` without a name,
    /// or an unterminated `${`.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = src;
        while let Some(ch) = rest.chars().next() {
            if ch == '\\' && rest[1..].starts_with('$') {
                literal.push('$');
                rest = &rest[2..];
                continue;
            }
            if ch != '$' {
                literal.push(ch);
                rest = &rest[ch.len_utf8()..];
                continue;
            }
            let offset = src.len() - rest.len();
            let after = &rest[1..];
            let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unterminated `${{` at byte {offset} in `{src}`"))?;
                let name = &braced[..end];
                if name.is_empty() || !name.bytes().all(is_name_byte) {
                    return Err(format!("invalid variable name `{name}` in `{src}`"));
                }
                (name, 1 + 1 + end + 1)
            } else {
                let end = after
                    .bytes()
                    .position(|b| !is_name_byte(b))
                    .unwrap_or(after.len());
                if end == 0 {
                    return Err(format!(
                        "`$` at byte {offset} is not followed by a variable name in `{src}`"
                    ));
                }
                (&after[..end], 1 + end)
            };
            let var = Var::parse(name)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = &rest[consumed..];
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Renders the template. Missing variables render as empty text; when
    /// *no* variable resolved (including a template without variables) the
    /// result is `None`, mirroring APISIX which then falls back to another
    /// key.
    pub fn render(&self, req: &RequestView<'_>) -> Option<String> {
        let mut out = String::new();
        let mut resolved = 0usize;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => {
                    if let Some(value) = var.resolve(req) {
                        resolved += 1;
                        out.push_str(&value);
                    }
                }
            }
        }
        (resolved > 0).then_some(out)
    }

    /// Renders the template with missing variables as empty text, literals always kept
    /// (for values such as a rewritten URI, where a template without variables is a
    /// constant rather than a miss).
    pub fn render_lossy(&self, req: &RequestView<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => {
                    if let Some(value) = var.resolve(req) {
                        out.push_str(&value);
                    }
                }
            }
        }
        out
    }

    /// Whether the template has no variables (it renders to a constant).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The variables referenced by the template, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Literal(_) => None,
        })
    }
}

/// `[A-Za-z0-9_]`: the bytes allowed in a template variable name.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
