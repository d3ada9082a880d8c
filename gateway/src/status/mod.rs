//! The status listener (`status.listen`, off unless set; no admin key): the gateway's
//! own health for load balancers, container and systemd checks.
//!
//! - `GET /status`: 200 `{"status":"ok"}` while the process runs;
//! - `GET /status/ready`: 200 `{"status":"ok","version":...,"config_version":...}` once
//!   a configuration is applied and the proxy workers accept connections; 503
//!   `{"status":"starting"|"draining",...}` before that and after SIGTERM/SIGINT.
//!
//! It runs on a thread of its own, not as a Pingora service: it answers from the start
//! of startup (before the stored configuration is loaded) until the process exits, while
//! Pingora's listeners stop accepting as soon as a shutdown begins.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::store::ConfigStore;

/// `status:` in the static config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// `ip:port` of the status listener; none when unset.
    pub listen: Option<String>,
}

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Where the process is in its life, as `/status/ready` reports it.
#[derive(Default)]
pub struct Readiness {
    state: AtomicU8,
    store: OnceLock<Arc<ConfigStore>>,
    /// `config_provider: etcd`: the connection to etcd.
    etcd: OnceLock<Arc<crate::providers::etcd::EtcdStatus>>,
}

impl Readiness {
    /// The configuration is applied (the store is open).
    pub fn set_store(&self, store: Arc<ConfigStore>) {
        let _ = self.store.set(store);
    }

    /// Report the connection to etcd in `/status/ready`.
    pub fn set_etcd(&self, etcd: Arc<crate::providers::etcd::EtcdStatus>) {
        let _ = self.etcd.set(etcd);
    }

    /// The proxy accepts connections (ignored once draining).
    pub fn mark_ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A shutdown began: not ready any more.
    pub fn mark_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// The status and JSON body for a request path; `None` for an unknown path.
    pub fn answer(&self, path: &str) -> Option<(u16, String)> {
        match path {
            "/status" => Some((200, r#"{"status":"ok"}"#.to_string())),
            "/status/ready" => {
                let version = self.store.get().map(|s| s.snapshot().version);
                let state = self.state.load(Ordering::Acquire);
                let (code, status) = match (state, version) {
                    (DRAINING, _) => (503, "draining"),
                    (READY, Some(_)) => (200, "ok"),
                    _ => (503, "starting"),
                };
                let mut body = serde_json::json!({
                    "status": status,
                    "version": crate::VERSION,
                    "config_version": version,
                });
                // Still ready while etcd is down: the last configuration is served.
                if let Some(etcd) = self.etcd.get() {
                    body["etcd"] = etcd.to_json();
                }
                Some((code, body.to_string()))
            }
            _ => None,
        }
    }
}

/// Binds `addr` now (an error fails startup) and serves it from a thread of its own.
///
/// `wait_if_busy` (a graceful upgrade): the old process still holds the address until it
/// exits, so a busy address is retried in the background instead of failing startup.
pub fn start_listener(
    addr: &str,
    readiness: Arc<Readiness>,
    wait_if_busy: bool,
) -> std::io::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(listener) => serve_on_thread(listener, readiness),
        Err(e) if wait_if_busy && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::info!("status.listen {addr} is busy (upgrade): binding once it is free");
            let addr = addr.to_string();
            std::thread::Builder::new()
                .name("portico-status-bind".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_millis(200));
                    if let Ok(listener) = std::net::TcpListener::bind(&addr) {
                        if let Err(e) = serve_on_thread(listener, readiness) {
                            tracing::error!("status listener: {e}");
                        }
                        return;
                    }
                })?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn serve_on_thread(
    std_listener: std::net::TcpListener,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    std_listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("portico-status".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("status listener: {e}");
                        return;
                    }
                };
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let readiness = Arc::clone(&readiness);
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), serve(stream, &readiness))
                                .await;
                    });
                }
            })
        })?;
    Ok(())
}

/// One request per connection, then close.
async fn serve(mut stream: tokio::net::TcpStream, readiness: &Readiness) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.unwrap_or("/");
                let path = path.split('?').next().unwrap_or(path);
                break (req.method.unwrap_or("").to_string(), path.to_string());
            }
            Ok(httparse::Status::Partial) if buf.len() < 8192 => continue,
            _ => {
                return write_reply(
                    &mut stream,
                    400,
                    r#"{"error_msg":"400 Bad Request"}"#,
                    false,
                )
                .await
            }
        }
    };
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return write_reply(
            &mut stream,
            405,
            r#"{"error_msg":"405 Not Allowed"}"#,
            false,
        )
        .await;
    }
    match readiness.answer(&path) {
        Some((code, body)) => write_reply(&mut stream, code, &body, head_only).await,
        None => {
            write_reply(
                &mut stream,
                404,
                r#"{"error_msg":"404 Not Found"}"#,
                head_only,
            )
            .await
        }
    }
}

async fn write_reply(
    stream: &mut tokio::net::TcpStream,
    code: u16,
    body: &str,
    head_only: bool,
) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nServer: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        crate::SERVER_NAME,
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Marks the gateway ready once the proxy's first listener accepts a connection (its
/// workers run), from a short-lived thread.
pub fn mark_ready_when_listening(proxy_listen: &str, readiness: Arc<Readiness>) {
    let Ok(mut addr) = proxy_listen.parse::<SocketAddr>() else {
        return;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let spawned = std::thread::Builder::new()
        .name("portico-ready".into())
        .spawn(move || loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                readiness.mark_ready();
                tracing::debug!("proxy accepts connections: ready");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the readiness watcher: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_between_start_and_drain() {
        let r = Readiness::default();
        assert_eq!(r.answer("/status").map(|a| a.0), Some(200));
        let (code, body) = r.answer("/status/ready").unwrap();
        assert_eq!(code, 503);
        assert!(body.contains(r#""status":"starting""#), "{body}");
        r.mark_ready();
        // No configuration applied yet: still starting.
        assert_eq!(r.answer("/status/ready").map(|a| a.0), Some(503));
        r.mark_draining();
        r.mark_ready();
        let (code, body) = r.answer("/status/ready").unwrap();
        assert_eq!(code, 503);
        assert!(body.contains("draining"), "{body}");
        assert!(r.answer("/nope").is_none());
    }
}
