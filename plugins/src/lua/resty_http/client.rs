//! The HTTP/1.1 exchange over Pingora's pooled connector: DNS, connection reuse,
//! sending the request, reading the response, and cosocket-style error text.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mlua::{Lua, Table};
use parking_lot::Mutex;
use pingora_core::connectors::http::v1::Connector;
use pingora_core::connectors::ConnectorOptions;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error as PError, ErrorType};

use super::params::Prepared;

/// Largest response body `request_uri` reads (the body becomes one Lua string).
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle connections kept by the process-wide pool, over all hosts.
const POOL_SIZE: usize = 512;
/// How long a name resolution is reused, and how many names are kept.
const DNS_TTL: Duration = Duration::from_secs(30);
const DNS_CACHE_MAX: usize = 1024;

/// The response, read whole, before it becomes a Lua table.
pub(super) struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, Vec<Vec<u8>>)>,
    body: Vec<u8>,
}

impl Response {
    pub(super) fn into_lua(self, lua: &Lua) -> mlua::Result<Table> {
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

pub(super) async fn execute(p: Prepared) -> Result<Response, String> {
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
