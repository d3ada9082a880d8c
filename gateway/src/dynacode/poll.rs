//! The dynacode poller (`dynacode:` in the static config): fetches the document from a
//! URL every `interval` + random 0..=`jitter` seconds, with conditional requests
//! (`If-None-Match` / `If-Modified-Since`), and applies it through the one apply path
//! only when it changed.
//!
//! Outcomes (`portico_dynacode_polls_total{result}`):
//! - `updated`: a new document was applied;
//! - `not_modified`: 304, or a 200 whose document equals the running one (nothing is
//!   applied, so nothing recompiles);
//! - `fetch_error`: DNS, connect, TLS, read/write errors or the `timeout` elapsed;
//! - `status_error`: any status but 200 and 304;
//! - `invalid`: the body is not JSON, or the document has the wrong shape (or could
//!   not be applied).
//!
//! Every failure keeps the running document. The poll URL is authoritative: when the
//! running document differs from what the server serves (e.g. it was replaced or
//! deleted through the admin API), the next successful poll puts the polled one back,
//! whether the server answers 200 or 304.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorType;
use rand::Rng;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::settings::DynacodePollSettings;
use crate::store::{ApplyError, ApplySource, Change, ConfigStore};

/// Largest document accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long an idle connection to the poll server is kept for the next poll.
const IDLE_KEEPALIVE: Duration = Duration::from_secs(60);

/// Background service polling the dynacode document.
pub struct DynacodePoller {
    pub settings: DynacodePollSettings,
    pub store: Arc<ConfigStore>,
    pub metrics: Arc<Metrics>,
}

/// The result of one poll; its label is the `result` of `portico_dynacode_polls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollResult {
    Updated,
    NotModified,
    FetchError,
    StatusError,
    Invalid,
}

impl PollResult {
    pub(crate) fn label(self) -> &'static str {
        match self {
            PollResult::Updated => "updated",
            PollResult::NotModified => "not_modified",
            PollResult::FetchError => "fetch_error",
            PollResult::StatusError => "status_error",
            PollResult::Invalid => "invalid",
        }
    }
}

/// What the poller remembers between polls.
#[derive(Default)]
pub(crate) struct PollState {
    /// Pooled client, built on first use (inside the poller's runtime).
    connector: Option<Arc<Connector>>,
    /// Validators of the last accepted 200, sent back as `If-None-Match` /
    /// `If-Modified-Since`.
    etag: Option<String>,
    last_modified: Option<String>,
    /// The document those validators belong to (what a 304 means).
    document: Option<Arc<Value>>,
}

impl PollState {
    fn forget_validators(&mut self) {
        self.etag = None;
        self.last_modified = None;
        self.document = None;
    }
}

/// The delay before the next poll: `interval` seconds plus a uniformly random
/// 0..=`jitter` seconds (millisecond resolution), so instances spread their polls.
pub(crate) fn next_delay(interval: u64, jitter: u64, rng: &mut impl Rng) -> Duration {
    let base = Duration::from_secs(interval);
    if jitter == 0 {
        return base;
    }
    base + Duration::from_millis(rng.random_range(0..=jitter.saturating_mul(1000)))
}

#[async_trait]
impl BackgroundService for DynacodePoller {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tracing::info!(
            url = %self.settings.url,
            interval = self.settings.interval,
            jitter = self.settings.jitter,
            "dynacode poller started"
        );
        let mut state = PollState::default();
        let mut poll_now = self.settings.poll_at_start;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if poll_now {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = self.poll_once(&mut state) => {}
                }
            }
            poll_now = true;
            let delay = next_delay(
                self.settings.interval,
                self.settings.jitter,
                &mut rand::rng(),
            );
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// How a poll ended, before it is counted and logged.
enum Outcome {
    Updated { version: u64, reason: &'static str },
    NotModified,
    Failed(PollResult, String),
}

/// A response read whole.
struct Fetched {
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    body: Vec<u8>,
}

/// Where the document lives.
#[derive(Debug, PartialEq)]
struct Target {
    tls: bool,
    /// Host name or IP, without IPv6 brackets (for DNS and SNI).
    host: String,
    port: u16,
    /// The `Host` header (port only when explicit in the URL).
    authority: String,
    path_and_query: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid url `{url}`: {e}"))?;
    let tls = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => true,
        Some(s) if s.eq_ignore_ascii_case("http") => false,
        _ => return Err(format!("url `{url}` is not http(s)")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("url `{url}` has no host"))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(format!("url `{url}` has no host"));
    }
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // Without userinfo.
    let authority = authority
        .as_str()
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .to_string();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(Target {
        tls,
        host,
        port,
        authority,
        path_and_query,
    })
}

fn pingora_reason(e: &pingora::Error) -> String {
    let cause = e.root_cause().to_string();
    let etype = e.etype().as_str();
    if cause.is_empty() || cause == etype {
        etype.to_string()
    } else {
        format!("{etype}: {cause}")
    }
}

fn is_stale(e: &pingora::Error) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

fn header_text(head: &pingora::http::ResponseHeader, name: http::HeaderName) -> Option<String> {
    head.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl DynacodePoller {
    /// One poll: fetch, decide, apply when changed; counted and logged.
    pub(crate) async fn poll_once(&self, state: &mut PollState) -> PollResult {
        let outcome = self.poll_inner(state).await;
        let url = self.settings.url.as_str();
        let result = match outcome {
            Outcome::Updated { version, reason } => {
                tracing::info!(url, version, "dynacode document updated ({reason})");
                PollResult::Updated
            }
            Outcome::NotModified => {
                tracing::debug!(url, "dynacode document not modified");
                PollResult::NotModified
            }
            Outcome::Failed(result, reason) => {
                tracing::warn!(
                    url,
                    result = result.label(),
                    "dynacode poll failed, keeping the current document: {reason}"
                );
                result
            }
        };
        self.metrics.count_dynacode_poll(result.label());
        if matches!(result, PollResult::Updated | PollResult::NotModified) {
            self.metrics.set_dynacode_last_success();
        }
        result
    }

    async fn poll_inner(&self, state: &mut PollState) -> Outcome {
        let timeout = Duration::from_secs(self.settings.timeout.max(1));
        let fetched = match tokio::time::timeout(timeout, self.fetch(state, timeout)).await {
            Err(_) => {
                return Outcome::Failed(
                    PollResult::FetchError,
                    format!("timeout after {}s", timeout.as_secs()),
                )
            }
            Ok(Err(reason)) => return Outcome::Failed(PollResult::FetchError, reason),
            Ok(Ok(f)) => f,
        };
        match fetched.status {
            304 => {
                let Some(doc) = state.document.clone() else {
                    return Outcome::Failed(
                        PollResult::StatusError,
                        "304 Not Modified to an unconditional request".to_string(),
                    );
                };
                if self.is_running(&doc) {
                    return Outcome::NotModified;
                }
                // The running document was replaced or deleted locally meanwhile.
                self.apply(state, doc, fetched.etag, fetched.last_modified, "restored the polled document")
                    .await
            }
            200 => {
                let doc: Value = match serde_json::from_slice(&fetched.body) {
                    Ok(doc) => doc,
                    Err(e) => {
                        state.forget_validators();
                        self.store.count_rejected(ApplySource::Poll);
                        return Outcome::Failed(
                            PollResult::Invalid,
                            format!("the body is not JSON: {e}"),
                        );
                    }
                };
                let doc = Arc::new(doc);
                if self.is_running(&doc) {
                    state.etag = fetched.etag;
                    state.last_modified = fetched.last_modified;
                    state.document = Some(doc);
                    return Outcome::NotModified;
                }
                self.apply(state, doc, fetched.etag, fetched.last_modified, "new document")
                    .await
            }
            status => Outcome::Failed(
                PollResult::StatusError,
                format!("unexpected status {status}"),
            ),
        }
    }

    /// Whether `doc` is the running document (same JSON content).
    fn is_running(&self, doc: &Arc<Value>) -> bool {
        self.store
            .resources()
            .dynacode
            .as_ref()
            .is_some_and(|e| Arc::ptr_eq(&e.value, doc) || *e.value == **doc)
    }

    async fn apply(
        &self,
        state: &mut PollState,
        doc: Arc<Value>,
        etag: Option<String>,
        last_modified: Option<String>,
        reason: &'static str,
    ) -> Outcome {
        let store = Arc::clone(&self.store);
        let value = (*doc).clone();
        let applied = tokio::task::spawn_blocking(move || {
            store.apply(Change::PutDynacode(value), ApplySource::Poll)
        })
        .await;
        match applied {
            Ok(Ok(applied)) => {
                state.etag = etag;
                state.last_modified = last_modified;
                state.document = Some(doc);
                Outcome::Updated {
                    version: applied.version,
                    reason,
                }
            }
            Ok(Err(ApplyError::Invalid(errors))) => {
                state.forget_validators();
                Outcome::Failed(
                    PollResult::Invalid,
                    format!(
                        "invalid document: {}",
                        crate::config::describe(&errors)
                    ),
                )
            }
            // Not the document's fault (e.g. data_dir not writable); retried next poll.
            Ok(Err(e)) => {
                state.forget_validators();
                Outcome::Failed(PollResult::Invalid, format!("document not applied: {e}"))
            }
            Err(e) => {
                state.forget_validators();
                Outcome::Failed(PollResult::Invalid, format!("document not applied: {e}"))
            }
        }
    }

    fn request(&self, target: &Target, state: &PollState) -> Result<RequestHeader, String> {
        let mut req = RequestHeader::build("GET", target.path_and_query.as_bytes(), None)
            .map_err(|e| format!("cannot build the request: {}", pingora_reason(&e)))?;
        let bad = |name: &str, e: Box<pingora::Error>| {
            format!("invalid request header `{name}`: {}", pingora_reason(&e))
        };
        req.insert_header(http::header::HOST, target.authority.as_str())
            .map_err(|e| bad("Host", e))?;
        req.insert_header(
            http::header::USER_AGENT,
            format!("portico/{} dynacode-poller", crate::VERSION),
        )
        .map_err(|e| bad("User-Agent", e))?;
        req.insert_header(http::header::ACCEPT, "application/json")
            .map_err(|e| bad("Accept", e))?;
        for (name, value) in &self.settings.headers {
            req.insert_header(name.clone(), value.as_str())
                .map_err(|e| bad(name, e))?;
        }
        if state.document.is_some() {
            if let Some(etag) = &state.etag {
                req.insert_header(http::header::IF_NONE_MATCH, etag.as_str())
                    .map_err(|e| bad("If-None-Match", e))?;
            }
            if let Some(lm) = &state.last_modified {
                req.insert_header(http::header::IF_MODIFIED_SINCE, lm.as_str())
                    .map_err(|e| bad("If-Modified-Since", e))?;
            }
        }
        Ok(req)
    }

    /// GETs the URL (one retry on a pooled connection the server had closed).
    async fn fetch(&self, state: &mut PollState, timeout: Duration) -> Result<Fetched, String> {
        let target = parse_url(&self.settings.url)?;
        let connector = match &state.connector {
            Some(c) => Arc::clone(c),
            None => {
                // Pingora panics when the system CA store cannot be loaded.
                let c = std::panic::catch_unwind(|| Connector::new(Some(ConnectorOptions::new(4))))
                    .map_err(|_| {
                        "HTTP client unavailable: loading the system CA certificates failed"
                            .to_string()
                    })?;
                let c = Arc::new(c);
                state.connector = Some(Arc::clone(&c));
                c
            }
        };
        let addr = resolve(&target.host, target.port).await?;
        let mut peer = HttpPeer::new(
            addr,
            target.tls,
            if target.tls {
                target.host.clone()
            } else {
                String::new()
            },
        );
        peer.options.connection_timeout = Some(timeout);
        peer.options.total_connection_timeout = Some(timeout);
        let req = self.request(&target, state)?;

        let mut retried = false;
        loop {
            let (mut session, reused) = connector
                .get_http_session(&peer)
                .await
                .map_err(|e| format!("connect to {addr} failed: {}", pingora_reason(&e)))?;
            session.set_read_timeout(Some(timeout));
            session.set_write_timeout(Some(timeout));
            match exchange(&mut session, req.clone()).await {
                Err(e) if reused && !retried && is_stale(&e) => {
                    retried = true;
                    continue;
                }
                Err(e) => return Err(pingora_reason(&e)),
                Ok(()) => {}
            }
            let fetched = read_response(&mut session).await?;
            connector
                .release_http_session(session, &peer, Some(IDLE_KEEPALIVE))
                .await;
            return Ok(fetched);
        }
    }
}

/// Resolves without blocking (getaddrinfo runs on tokio's blocking pool).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} could not be resolved: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} could not be resolved: no address"))
}

/// Writes the request and reads the final response header.
async fn exchange(session: &mut HttpSession, req: RequestHeader) -> pingora::Result<()> {
    session.write_request_header(Box::new(req)).await?;
    session.finish_request_body().await?;
    loop {
        session.read_response_header().await?;
        // Informational responses (100, 103) precede the real one.
        match session.response_header().map(|h| h.status.as_u16()) {
            Some(code) if (100..200).contains(&code) && code != 101 => continue,
            _ => return Ok(()),
        }
    }
}

async fn read_response(session: &mut HttpSession) -> Result<Fetched, String> {
    let head = session
        .response_header()
        .ok_or_else(|| "bad response: no status line".to_string())?;
    let status = head.status.as_u16();
    let etag = header_text(head, http::header::ETAG);
    let last_modified = header_text(head, http::header::LAST_MODIFIED);
    let mut body = Vec::new();
    while let Some(chunk) = session
        .read_response_body()
        .await
        .map_err(|e| format!("reading the body failed: {}", pingora_reason(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the body exceeds {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched {
        status,
        etag,
        last_modified,
        body,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use parking_lot::Mutex;
    use rand::SeedableRng;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::store::{DiskStore, StoreDeps};

    /// What the mock server answers.
    #[derive(Clone)]
    enum Mode {
        /// The document, with an optional ETag (304 when `If-None-Match` matches).
        Doc { body: String, etag: Option<String> },
        /// A bare status with a text body.
        Status(u16),
        /// Closes every connection without answering.
        Down,
        /// Accepts and never answers.
        Hang,
    }

    struct Mock {
        addr: SocketAddr,
        mode: Arc<Mutex<Mode>>,
        /// Request heads received (lowercased header names).
        requests: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
        accept: tokio::task::JoinHandle<()>,
    }

    impl Mock {
        async fn start(mode: Mode) -> Mock {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mode = Arc::new(Mutex::new(mode));
            let requests = Arc::new(Mutex::new(Vec::new()));
            let (m, r) = (Arc::clone(&mode), Arc::clone(&requests));
            let accept = tokio::spawn(async move {
                loop {
                    let Ok((conn, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(serve(conn, Arc::clone(&m), Arc::clone(&r)));
                }
            });
            Mock {
                addr,
                mode,
                requests,
                accept,
            }
        }

        fn set(&self, mode: Mode) {
            *self.mode.lock() = mode;
        }

        fn last_request(&self) -> BTreeMap<String, String> {
            self.requests.lock().last().cloned().unwrap()
        }

        /// Stops listening (connection refused from now on) and closes kept-alive
        /// connections.
        fn shut(&self) {
            self.set(Mode::Down);
            self.accept.abort();
        }
    }

    /// One connection: keep-alive HTTP/1.1, GET only.
    async fn serve(
        mut conn: tokio::net::TcpStream,
        mode: Arc<Mutex<Mode>>,
        requests: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    ) {
        let mut buf = Vec::new();
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            buf.drain(..head_end);
            let mut headers = BTreeMap::new();
            let mut lines = head.split("\r\n");
            headers.insert(":request".to_string(), lines.next().unwrap_or("").to_string());
            for line in lines {
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let mode = mode.lock().clone();
            let response = match mode {
                Mode::Down => return,
                Mode::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                Mode::Status(code) => format!(
                    "HTTP/1.1 {code} Oops\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\noops"
                ),
                Mode::Doc { body, etag } => match &etag {
                    Some(tag) if headers.get("if-none-match") == Some(tag) => format!(
                        "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\n\r\n"
                    ),
                    _ => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{body}",
                        etag.map(|t| format!("ETag: {t}\r\n")).unwrap_or_default(),
                        body.len()
                    ),
                },
            };
            requests.lock().push(headers);
            if conn.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn doc(text: &str) -> Value {
        json!({
            "general": {"status": "enabled", "skip_domains": []},
            "domains": [{"name": "*", "plugins": [
                {"name": "cors", "code": format!("ngx.header['X-Doc'] = '{text}'"), "phase": "header_filter"}
            ]}]
        })
    }

    struct Fixture {
        poller: DynacodePoller,
        metrics: Arc<Metrics>,
        _dir: TempDir,
    }

    /// The store's data_dir, removed when the test ends.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn fixture(url: String, headers: BTreeMap<String, String>, timeout: u64) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "portico-dynacode-poll-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let metrics = Metrics::new().unwrap();
        let deps = StoreDeps {
            plugins: Arc::new(portico_plugins::PluginRegistry::builtin()),
            metrics: Arc::clone(&metrics),
            health: portico_healthcheck::HealthRegistry::new(Arc::new(
                portico_healthcheck::NoopObserver,
            )),
        };
        let store = ConfigStore::open(DiskStore::open(&dir).unwrap(), deps).unwrap();
        Fixture {
            poller: DynacodePoller {
                settings: DynacodePollSettings {
                    url,
                    interval: 15,
                    jitter: 5,
                    timeout,
                    headers,
                    poll_at_start: true,
                },
                store: Arc::new(store),
                metrics: Arc::clone(&metrics),
            },
            metrics,
            _dir: TempDir(dir),
        }
    }

    impl Fixture {
        fn running(&self) -> Option<(Value, u64)> {
            self.poller
                .store
                .resources()
                .dynacode
                .as_ref()
                .map(|e| ((*e.value).clone(), e.modified_index))
        }

        fn polls(&self, result: &str) -> u64 {
            let text = String::from_utf8(self.metrics.render()).unwrap();
            text.lines()
                .find(|l| {
                    l.starts_with("portico_dynacode_polls_total")
                        && l.contains(&format!("result=\"{result}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        }
    }

    #[tokio::test]
    async fn etag_round_trip_updates_once_then_not_modified() {
        let d1 = doc("one");
        let mock = Mock::start(Mode::Doc {
            body: d1.to_string(),
            etag: Some("\"v1\"".into()),
        })
        .await;
        let f = fixture(format!("http://{}/plugins.json", mock.addr), BTreeMap::new(), 5);
        let mut state = PollState::default();

        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        let (running, index) = f.running().unwrap();
        assert_eq!(running, d1);
        let first = mock.last_request();
        assert_eq!(first[":request"], "GET /plugins.json HTTP/1.1");
        assert!(!first.contains_key("if-none-match"), "{first:?}");
        assert_eq!(first["host"], mock.addr.to_string());

        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::NotModified);
        assert_eq!(mock.last_request()["if-none-match"], "\"v1\"");
        assert_eq!(f.running().unwrap().1, index, "nothing re-applied on 304");

        // A new document behind a new ETag.
        let d2 = doc("two");
        mock.set(Mode::Doc {
            body: d2.to_string(),
            etag: Some("\"v2\"".into()),
        });
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        let (running, index2) = f.running().unwrap();
        assert_eq!(running, d2);
        assert!(index2 > index);
        assert_eq!(f.polls("updated"), 2);
        assert_eq!(f.polls("not_modified"), 1);
        assert_eq!(mock.requests.lock().len(), 3);
        assert!(String::from_utf8(f.metrics.render())
            .unwrap()
            .lines()
            .any(|l| l.starts_with("portico_dynacode_last_success_timestamp_seconds ")
                && !l.ends_with(" 0")));
    }

    #[tokio::test]
    async fn same_document_without_etag_is_not_modified() {
        let d1 = doc("same");
        let mock = Mock::start(Mode::Doc {
            body: d1.to_string(),
            etag: None,
        })
        .await;
        let f = fixture(format!("http://{}/", mock.addr), BTreeMap::new(), 5);
        let mut state = PollState::default();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        let (_, index) = f.running().unwrap();
        // Same content, different formatting and key order.
        mock.set(Mode::Doc {
            body: serde_json::to_string_pretty(&d1).unwrap(),
            etag: None,
        });
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::NotModified);
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::NotModified);
        assert!(!mock.last_request().contains_key("if-none-match"));
        assert_eq!(f.running().unwrap(), (d1, index), "nothing re-applied");
        assert_eq!(f.polls("not_modified"), 2);
    }

    #[tokio::test]
    async fn failures_keep_the_last_good_document() {
        let good = doc("good");
        let mock = Mock::start(Mode::Doc {
            body: good.to_string(),
            etag: Some("\"g\"".into()),
        })
        .await;
        let f = fixture(format!("http://{}/doc", mock.addr), BTreeMap::new(), 1);
        let mut state = PollState::default();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        let kept = f.running().unwrap();

        mock.set(Mode::Status(500));
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::StatusError);
        assert_eq!(f.running().unwrap(), kept);

        mock.set(Mode::Doc {
            body: "{not json".into(),
            etag: Some("\"bad\"".into()),
        });
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Invalid);
        assert_eq!(f.running().unwrap(), kept);

        mock.set(Mode::Doc {
            body: json!({"domains": "x"}).to_string(),
            etag: Some("\"shape\"".into()),
        });
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Invalid);
        assert_eq!(f.running().unwrap(), kept);
        // The rejected document's ETag is not remembered: the next poll is a full GET,
        // still invalid (not "not modified").
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Invalid);
        assert!(!mock.last_request().contains_key("if-none-match"));

        mock.set(Mode::Hang);
        let started = std::time::Instant::now();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
        assert!(started.elapsed() < Duration::from_secs(3), "timeout applies");
        assert_eq!(f.running().unwrap(), kept);

        mock.shut();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
        assert_eq!(f.running().unwrap(), kept);

        assert_eq!(f.polls("status_error"), 1);
        assert_eq!(f.polls("invalid"), 3);
        assert_eq!(f.polls("fetch_error"), 2);
        assert_eq!(f.polls("updated"), 1);
    }

    #[tokio::test]
    async fn unreachable_server_is_a_fetch_error() {
        // A port nothing listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let f = fixture(format!("http://127.0.0.1:{port}/"), BTreeMap::new(), 2);
        let mut state = PollState::default();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
        assert!(f.running().is_none());
    }

    #[tokio::test]
    async fn configured_headers_reach_the_server() {
        let mock = Mock::start(Mode::Doc {
            body: doc("h").to_string(),
            etag: None,
        })
        .await;
        let headers = BTreeMap::from([
            ("Authorization".to_string(), "Bearer s3cret".to_string()),
            ("X-Instance".to_string(), "gw-1".to_string()),
        ]);
        let f = fixture(format!("http://{}/p?x=1", mock.addr), headers, 5);
        let mut state = PollState::default();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        let req = mock.last_request();
        assert_eq!(req[":request"], "GET /p?x=1 HTTP/1.1");
        assert_eq!(req["authorization"], "Bearer s3cret");
        assert_eq!(req["x-instance"], "gw-1");
    }

    #[tokio::test]
    async fn a_304_after_a_local_change_restores_the_polled_document() {
        let d1 = doc("polled");
        let mock = Mock::start(Mode::Doc {
            body: d1.to_string(),
            etag: Some("\"p\"".into()),
        })
        .await;
        let f = fixture(format!("http://{}/", mock.addr), BTreeMap::new(), 5);
        let mut state = PollState::default();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        f.poller
            .store
            .apply(Change::PutDynacode(doc("pushed")), ApplySource::Admin)
            .unwrap();
        assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
        assert_eq!(mock.last_request()["if-none-match"], "\"p\"");
        assert_eq!(f.running().unwrap().0, d1);
    }

    #[tokio::test]
    async fn service_polls_at_start_and_stops_on_shutdown() {
        let mock = Mock::start(Mode::Doc {
            body: doc("svc").to_string(),
            etag: None,
        })
        .await;
        let f = fixture(format!("http://{}/", mock.addr), BTreeMap::new(), 5);
        let poller = Arc::new(f.poller);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let p = Arc::clone(&poller);
        let task = tokio::spawn(async move { p.start(rx).await });
        for _ in 0..100 {
            if poller.store.resources().dynacode.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(poller.store.resources().dynacode.is_some(), "polled at start");
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stops on shutdown")
            .unwrap();
    }

    #[test]
    fn jitter_spreads_polls() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| next_delay(15, 5, &mut rng)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= Duration::from_secs(15) && *d <= Duration::from_secs(20)));
        assert!(delays.windows(2).all(|w| w[0] != w[1]), "consecutive delays differ");
        let spread = delays.iter().max().unwrap().as_millis() - delays.iter().min().unwrap().as_millis();
        assert!(spread > 4000, "covers the jitter range: {spread}ms");
        // Unseeded, as the service uses it.
        let a = next_delay(15, 5, &mut rand::rng());
        let b = next_delay(15, 5, &mut rand::rng());
        let c = next_delay(15, 5, &mut rand::rng());
        assert!(a != b || b != c);
        assert_eq!(next_delay(15, 0, &mut rng), Duration::from_secs(15));
    }

    #[test]
    fn urls() {
        let t = parse_url("https://cms.internal/plugins.json").unwrap();
        assert_eq!(
            t,
            Target {
                tls: true,
                host: "cms.internal".into(),
                port: 443,
                authority: "cms.internal".into(),
                path_and_query: "/plugins.json".into(),
            }
        );
        let t = parse_url("http://u:p@[::1]:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.path_and_query, "/");
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("not a url").is_err());
    }
}
