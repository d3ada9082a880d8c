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

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use portico_outbound::{pingora_reason, resolve, Client, ErrorKind, PeerSpec, Request, Stage};
use rand::Rng;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::settings::DynacodePollSettings;
use crate::store::{ApplyError, ApplySource, Change, ConfigStore};

/// Largest document accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Idle connections the poller's client keeps (it talks to one server).
const POOL_SIZE: usize = 4;
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
    client: Option<Arc<Client>>,
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
                self.apply(
                    state,
                    doc,
                    fetched.etag,
                    fetched.last_modified,
                    "restored the polled document",
                )
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
                self.apply(
                    state,
                    doc,
                    fetched.etag,
                    fetched.last_modified,
                    "new document",
                )
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
                    format!("invalid document: {}", crate::config::describe(&errors)),
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

    /// GETs the URL over the shared outbound client (pooled; one retry on a pooled
    /// connection the server had closed).
    async fn fetch(&self, state: &mut PollState, timeout: Duration) -> Result<Fetched, String> {
        let target = parse_url(&self.settings.url)?;
        let client = match &state.client {
            Some(c) => Arc::clone(c),
            None => {
                let c = Arc::new(Client::new(POOL_SIZE).map_err(|e| e.to_string())?);
                state.client = Some(Arc::clone(&c));
                c
            }
        };
        // No lookup limit of its own: the whole poll is bounded by `timeout`.
        let addr = resolve(&target.host, target.port, None)
            .await
            .map_err(|e| e.to_string())?;
        let peer = PeerSpec {
            tls: target.tls,
            sni: target.host.clone(),
            verify: true,
            connect_timeout: Some(timeout),
            total_connect_timeout: Some(timeout),
        }
        .peer(addr);
        let header = self.request(&target, state)?;
        let request = Request {
            header: &header,
            body: b"",
            read_timeout: Some(timeout),
            write_timeout: Some(timeout),
            max_body: MAX_BODY,
            retry_stale: true,
            keepalive: Some(IDLE_KEEPALIVE),
        };
        let response = client
            .request(&peer, &request)
            .await
            .map_err(|e| match e.stage() {
                Stage::Connect => format!("connect to {addr} failed: {e}"),
                Stage::Body if e.kind() != ErrorKind::TooLarge => {
                    format!("reading the body failed: {e}")
                }
                _ => e.to_string(),
            })?;
        Ok(Fetched {
            status: response.status(),
            etag: response.header_text(http::header::ETAG),
            last_modified: response.header_text(http::header::LAST_MODIFIED),
            body: response.body,
        })
    }
}

#[cfg(test)]
mod tests;
