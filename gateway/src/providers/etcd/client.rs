//! An etcd v3 client over its JSON gateway (HTTP/1.1), as APISIX's lua-resty-etcd talks
//! to etcd: `POST /v3/kv/range`, `/v3/kv/txn`, `/v3/kv/put`, `/v3/watch` (a streamed
//! response, one JSON message per line) and `/v3/auth/authenticate`.
//!
//! It rides on `portico-outbound` (Pingora's connector: non-blocking DNS, TLS with
//! rustls, connect timeouts), so it needs no gRPC stack and no `protoc` (docs/cluster.md).
//! Connections are not pooled: the gateway makes one request per admin write and one
//! read per (re)connection, and a fresh connection never turns out stale halfway
//! through a write. Each request is bounded by `etcd.timeout`; a failing endpoint makes
//! the next one be tried, and the one that answered is tried first next time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use pingora::http::RequestHeader;
use pingora::protocols::http::v1::client::HttpSession;
use portico_outbound::{resolve, Client, PeerSpec, Request};
use serde_json::Value;

use super::wire::{self, Expect, Header, RangeReply, WatchMessage};
use crate::settings_etcd::{Endpoint, EtcdSettings};

/// Largest reply read (a whole prefix of a big configuration).
const MAX_BODY: usize = 512 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint answered (refused, timed out, reset).
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error.
    #[error("etcd refused the request: {0}")]
    Refused(String),
    /// A watch stayed silent for `etcd.timeout`.
    #[error("etcd watch timed out")]
    Timeout,
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Done, at this revision.
    At(u64),
    /// The expectation did not hold; etcd was at this revision.
    Conflict(u64),
}

pub struct EtcdClient {
    endpoints: Vec<Endpoint>,
    verify: bool,
    timeout: Duration,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    /// The endpoint that answered last (tried first).
    current: AtomicUsize,
    http: Client,
}

impl EtcdClient {
    pub fn new(settings: &EtcdSettings) -> Result<EtcdClient, EtcdError> {
        Ok(EtcdClient {
            endpoints: settings.parsed_endpoints(),
            verify: settings.tls.verify,
            timeout: Duration::from_secs(settings.timeout.max(1)),
            credentials: settings.user.clone().zip(settings.password.clone()),
            token: Mutex::new(None),
            current: AtomicUsize::new(0),
            http: Client::new(1).map_err(|e| EtcdError::Unreachable(e.to_string()))?,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Every key under `dir` and the revision they were read at.
    pub async fn range(&self, dir: &str) -> Result<RangeReply, EtcdError> {
        let body = self
            .call("/v3/kv/range", &wire::range_request(dir.as_bytes(), false))
            .await?;
        wire::parse_range(&body).map_err(EtcdError::Refused)
    }

    /// The current revision and cluster (a count-only read of `dir`).
    pub async fn header(&self, dir: &str) -> Result<Header, EtcdError> {
        let body = self
            .call("/v3/kv/range", &wire::range_request(dir.as_bytes(), true))
            .await?;
        wire::parse_header(&body).map_err(EtcdError::Refused)
    }

    /// An unconditional put; the revision it got.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<u64, EtcdError> {
        let body = self
            .call("/v3/kv/put", &wire::put_request(key.as_bytes(), value))
            .await?;
        Ok(wire::parse_header(&body)
            .map_err(EtcdError::Refused)?
            .revision)
    }

    /// Puts `value` under `key` when `expect` holds.
    pub async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expect: Expect,
    ) -> Result<Written, EtcdError> {
        self.txn(&wire::put_txn(key.as_bytes(), value, expect))
            .await
    }

    /// Deletes `key` when `expect` holds.
    pub async fn delete_if(&self, key: &str, expect: Expect) -> Result<Written, EtcdError> {
        self.txn(&wire::delete_txn(key.as_bytes(), expect)).await
    }

    /// Unconditional operations ([`wire::put_op`], [`wire::delete_op`]) in one
    /// transaction; the revision it got.
    pub async fn ops(&self, ops: Vec<Value>) -> Result<u64, EtcdError> {
        match self.txn(&wire::ops_txn(ops)).await? {
            Written::At(revision) | Written::Conflict(revision) => Ok(revision),
        }
    }

    async fn txn(&self, body: &Value) -> Result<Written, EtcdError> {
        let reply = self.call("/v3/kv/txn", body).await?;
        let txn = wire::parse_txn(&reply).map_err(EtcdError::Refused)?;
        Ok(if txn.succeeded {
            Written::At(txn.header.revision)
        } else {
            Written::Conflict(txn.header.revision)
        })
    }

    /// Opens a watch of every key under `dir` from `start_revision`.
    pub async fn watch(&self, dir: &str, start_revision: u64) -> Result<WatchStream, EtcdError> {
        let body = serde_json::to_vec(&wire::watch_request(dir.as_bytes(), start_revision))
            .map_err(|e| EtcdError::Refused(e.to_string()))?;
        let mut last = String::new();
        for ep in self.in_order() {
            let token = self.token_for_request().await?;
            match self.open_watch(ep, &body, token.as_deref()).await {
                Ok(stream) => return Ok(stream),
                Err(EtcdError::Unreachable(e)) => last = e,
                Err(other) => return Err(other),
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    async fn open_watch(
        &self,
        ep: &Endpoint,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<WatchStream, EtcdError> {
        let unreachable = |e: String| EtcdError::Unreachable(format!("{}: {e}", ep.authority));
        let peer = self.peer(ep).await?;
        let stream = self
            .http
            .connect(&peer)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut session = HttpSession::new_with_options(stream, &peer);
        session.write_timeout = Some(self.timeout);
        session.read_timeout = Some(self.timeout);
        let header = request_header("/v3/watch", ep, body.len(), token)?;
        let sent = async {
            session.write_request_header(Box::new(header)).await?;
            session.write_body(body).await?;
            session.finish_body().await?;
            session.read_response().await
        };
        sent.await.map_err(|e| unreachable(e.to_string()))?;
        let status = session.get_status().map_or(0, |s| s.as_u16());
        if status != 200 {
            let body = session.read_body_bytes().await.ok().flatten();
            let msg = wire::error_message(body.as_deref().unwrap_or_default());
            return Err(EtcdError::Refused(format!(
                "watch answered {status}: {msg}"
            )));
        }
        Ok(WatchStream {
            session,
            buf: Vec::new(),
            ready: std::collections::VecDeque::new(),
        })
    }

    /// Endpoints, the last one that answered first.
    fn in_order(&self) -> impl Iterator<Item = &Endpoint> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| &self.endpoints[(start + i) % n])
    }

    async fn peer(&self, ep: &Endpoint) -> Result<pingora::upstreams::peer::HttpPeer, EtcdError> {
        let addr = resolve(&ep.host, ep.port, Some(self.timeout))
            .await
            .map_err(|e| EtcdError::Unreachable(format!("{}: {e}", ep.authority)))?;
        Ok(PeerSpec {
            tls: ep.tls,
            sni: ep.host.clone(),
            verify: self.verify,
            connect_timeout: Some(self.timeout),
            total_connect_timeout: Some(self.timeout),
        }
        .peer(addr))
    }

    /// The token to send, authenticating first when credentials are set and none is held.
    async fn token_for_request(&self) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.credentials else {
            return Ok(None);
        };
        if let Some(t) = self.token.lock().clone() {
            return Ok(Some(t));
        }
        let body = serde_json::to_value(wire::AuthRequest {
            name: user,
            password,
        })
        .map_err(|e| EtcdError::Refused(e.to_string()))?;
        let reply = self.post_any("/v3/auth/authenticate", &body, None).await?;
        let token = wire::parse_token(&reply).map_err(EtcdError::Refused)?;
        *self.token.lock() = Some(token.clone());
        Ok(Some(token))
    }

    /// POSTs `body` to the first endpoint that answers; a rejected token is renewed once.
    async fn call(&self, path: &str, body: &Value) -> Result<Vec<u8>, EtcdError> {
        let token = self.token_for_request().await?;
        match self.post_any(path, body, token.as_deref()).await {
            Err(EtcdError::Refused(m)) if token.is_some() && is_auth_failure(&m) => {
                *self.token.lock() = None;
                let token = self.token_for_request().await?;
                self.post_any(path, body, token.as_deref()).await
            }
            other => other,
        }
    }

    async fn post_any(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Vec<u8>, EtcdError> {
        let bytes = serde_json::to_vec(body).map_err(|e| EtcdError::Refused(e.to_string()))?;
        let mut last = String::from("no endpoint configured");
        let n = self.endpoints.len().max(1);
        let start = self.current.load(Ordering::Relaxed);
        for i in 0..self.endpoints.len() {
            let index = (start + i) % n;
            let ep = &self.endpoints[index];
            match self.post(ep, path, &bytes, token).await {
                Ok(reply) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(reply);
                }
                Err(EtcdError::Unreachable(e)) => last = e,
                Err(other) => return Err(other),
            }
        }
        Err(EtcdError::Unreachable(last))
    }

    async fn post(
        &self,
        ep: &Endpoint,
        path: &str,
        body: &[u8],
        token: Option<&str>,
    ) -> Result<Vec<u8>, EtcdError> {
        let peer = self.peer(ep).await?;
        let header = request_header(path, ep, body.len(), token)?;
        let request = Request {
            header: &header,
            body,
            read_timeout: Some(self.timeout),
            write_timeout: Some(self.timeout),
            max_body: MAX_BODY,
            retry_stale: false,
            keepalive: None,
        };
        let reply = self
            .http
            .request(&peer, &request)
            .await
            .map_err(|e| EtcdError::Unreachable(format!("{}: {e}", ep.authority)))?;
        match reply.status() {
            200 => Ok(reply.body),
            // etcd is starting or has no leader: another member may do.
            503 => Err(EtcdError::Unreachable(format!(
                "{}: {}",
                ep.authority,
                wire::error_message(&reply.body)
            ))),
            code => Err(EtcdError::Refused(format!(
                "{code}: {}",
                wire::error_message(&reply.body)
            ))),
        }
    }
}

fn is_auth_failure(message: &str) -> bool {
    message.starts_with("401") || message.contains("invalid auth token")
}

fn request_header(
    path: &str,
    ep: &Endpoint,
    len: usize,
    token: Option<&str>,
) -> Result<RequestHeader, EtcdError> {
    let bad = |e: pingora::BError| EtcdError::Refused(format!("cannot build the request: {e}"));
    let mut h = RequestHeader::build("POST", path.as_bytes(), None).map_err(bad)?;
    h.insert_header("Host", ep.authority.as_str())
        .map_err(bad)?;
    h.insert_header("Content-Type", "application/json")
        .map_err(bad)?;
    h.insert_header("Content-Length", len.to_string())
        .map_err(bad)?;
    if let Some(t) = token {
        h.insert_header("Authorization", t).map_err(bad)?;
    }
    Ok(h)
}

/// An open watch: messages as they arrive.
pub struct WatchStream {
    session: HttpSession,
    buf: Vec<u8>,
    ready: std::collections::VecDeque<Vec<u8>>,
}

impl WatchStream {
    /// The next message; `Timeout` when etcd sent nothing for `etcd.timeout`.
    pub async fn next(&mut self) -> Result<WatchMessage, EtcdError> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return wire::parse_watch_message(&line).map_err(EtcdError::Refused);
            }
            let chunk: Option<Bytes> = self.session.read_body_bytes().await.map_err(|e| {
                if e.etype() == &pingora::ErrorType::ReadTimedout {
                    EtcdError::Timeout
                } else {
                    EtcdError::Unreachable(format!("watch: {e}"))
                }
            })?;
            let Some(chunk) = chunk else {
                return Err(EtcdError::Unreachable(
                    "watch: etcd closed the stream".into(),
                ));
            };
            self.buf.extend_from_slice(&chunk);
            self.ready.extend(wire::take_lines(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;

    use super::*;

    /// A stand-in etcd that answers each connection with the next of `replies` (path
    /// → body) and records the requests' heads and bodies.
    fn fake_etcd(replies: Vec<(&'static str, &'static str)>) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for (expected_path, body) in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut head = String::new();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let mut req_body = vec![0; len];
                reader.read_exact(&mut req_body).unwrap();
                assert!(
                    head.starts_with(&format!("POST {expected_path} ")),
                    "{head}"
                );
                record
                    .lock()
                    .push(format!("{head}\n{}", String::from_utf8_lossy(&req_body)));
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        (port, seen)
    }

    fn dead_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_dead_endpoint_fails_over_to_the_next_which_is_tried_first_afterwards() {
        let (port, seen) = fake_etcd(vec![
            ("/v3/kv/put", r#"{"header":{"revision":"7"}}"#),
            ("/v3/kv/txn", r#"{"header":{"revision":"8"}}"#),
        ]);
        let settings = EtcdSettings {
            endpoints: vec![
                format!("http://127.0.0.1:{}", dead_port()),
                format!("http://127.0.0.1:{port}"),
            ],
            timeout: 2,
            ..EtcdSettings::default()
        };
        let client = EtcdClient::new(&settings).unwrap();
        let rt = runtime();
        assert_eq!(rt.block_on(client.put("/apisix/gen_id", b"1")), Ok(7));
        assert_eq!(client.current.load(Ordering::Relaxed), 1);
        // A transaction whose comparison failed (`succeeded` left out) is a conflict.
        let written = rt.block_on(client.put_if("/apisix/routes/1", b"{}", Expect::ModRevision(3)));
        assert_eq!(written, Ok(Written::Conflict(8)));
        let seen = seen.lock();
        assert!(
            seen[0].contains(&wire::b64(b"/apisix/gen_id")),
            "{}",
            seen[0]
        );
        assert!(seen[1].contains("\"mod_revision\":\"3\""), "{}", seen[1]);
    }

    #[test]
    fn credentials_get_a_token_that_is_sent_with_each_request() {
        let (port, seen) = fake_etcd(vec![
            (
                "/v3/auth/authenticate",
                r#"{"header":{},"token":"tok.123"}"#,
            ),
            (
                "/v3/kv/range",
                r#"{"header":{"revision":"5","cluster_id":"9"}}"#,
            ),
        ]);
        let settings = EtcdSettings {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            user: Some("root".into()),
            password: Some("secret".into()),
            timeout: 2,
            ..EtcdSettings::default()
        };
        let client = EtcdClient::new(&settings).unwrap();
        let h = runtime().block_on(client.header("/apisix/")).unwrap();
        assert_eq!((h.revision, h.cluster_id), (5, 9));
        let seen = seen.lock();
        assert!(seen[0].contains(r#""name":"root""#), "{}", seen[0]);
        assert!(
            seen[1]
                .to_ascii_lowercase()
                .contains("authorization: tok.123"),
            "{}",
            seen[1]
        );
        assert!(seen[1].contains(r#""count_only":true"#));
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        let settings = EtcdSettings {
            endpoints: vec![format!("http://127.0.0.1:{}", dead_port())],
            timeout: 1,
            ..EtcdSettings::default()
        };
        let client = EtcdClient::new(&settings).unwrap();
        let e = runtime().block_on(client.range("/apisix/")).unwrap_err();
        assert!(matches!(e, EtcdError::Unreachable(_)), "{e}");
        assert!(is_auth_failure("401: etcdserver: invalid auth token"));
        assert!(!is_auth_failure("400: etcdserver: key is not provided"));
    }
}
