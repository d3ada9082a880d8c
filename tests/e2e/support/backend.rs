//! A real HTTP/1.1 backend on loopback: keep-alive, answers every request with
//! a JSON echo of what it received, counts hits, can answer a fixed status or
//! delay its answer, and can be stopped (listener and every open connection
//! closed) to play a dead node, and restarted on the same port. `start_tls`
//! serves the same over TLS with a self-signed certificate.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

#[derive(Clone, Debug)]
struct Behaviour {
    status: u16,
    delay: Duration,
    /// Answer with `Transfer-Encoding: chunked`, the body in several chunks
    /// written (and flushed) a few milliseconds apart.
    chunked: bool,
}

struct Shared {
    name: String,
    hits: AtomicUsize,
    connections: AtomicUsize,
    /// Requests received per path (without the query string).
    paths: Mutex<HashMap<String, usize>>,
    behaviour: Mutex<Behaviour>,
}

pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// A backend answering 200 immediately.
    pub fn start(name: &str) -> Backend {
        Self::start_with(name, 200, Duration::ZERO)
    }

    /// A backend answering `status` after `delay`.
    pub fn start_with(name: &str, status: u16, delay: Duration) -> Backend {
        Self::start_inner(name, status, delay, None)
    }

    /// An HTTPS backend (self-signed certificate for `localhost` / `127.0.0.1`,
    /// `tls_cert_path()` / `tls_key_path()`) answering 200 immediately.
    pub fn start_tls(name: &str) -> Backend {
        Self::start_inner(name, 200, Duration::ZERO, Some(tls_acceptor()))
    }

    fn start_inner(name: &str, status: u16, delay: Duration, tls: Option<TlsAcceptor>) -> Backend {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            paths: Mutex::new(HashMap::new()),
            behaviour: Mutex::new(Behaviour {
                status,
                delay,
                chunked: false,
            }),
        });
        let mut b = Backend {
            addr,
            shared,
            tls,
            shutdown: None,
            thread: None,
        };
        b.serve(listener);
        b
    }

    /// Serves on `listener` from a new thread (the backend must be stopped).
    fn serve(&mut self, listener: StdListener) {
        assert!(self.thread.is_none(), "backend already running");
        listener.set_nonblocking(true).expect("nonblocking");
        let (tx, rx) = oneshot::channel::<()>();
        let sh = self.shared.clone();
        let tls = self.tls.clone();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{}", self.shared.name))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("backend runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    let accept = async {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            sh.connections.fetch_add(1, Ordering::SeqCst);
                            let _ = stream.set_nodelay(true);
                            match &tls {
                                None => {
                                    tokio::spawn(serve_conn(stream, sh.clone()));
                                }
                                Some(acceptor) => {
                                    let acceptor = acceptor.clone();
                                    let sh = sh.clone();
                                    tokio::spawn(async move {
                                        if let Ok(s) = acceptor.accept(stream).await {
                                            serve_conn(s, sh).await;
                                        }
                                    });
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime cancels every connection task, which
                // closes every socket, including kept-alive ones.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn backend thread");
        self.shutdown = Some(tx);
        self.thread = Some(thread);
    }

    /// Starts a stopped backend again on the SAME port (same name, behaviour
    /// and counters). Retries the bind for a while: the port may briefly be
    /// unavailable after the stop.
    pub fn restart(&mut self) {
        assert!(self.thread.is_none(), "restart: backend is still running");
        let deadline = Instant::now() + Duration::from_secs(15);
        let listener = loop {
            match StdListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "restart backend {} on {}: {e}",
                        self.shared.name,
                        self.addr
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        self.serve(listener);
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `"127.0.0.1:<port>"`, the APISIX node key.
    pub fn node(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received (counted when the request head has been read).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Requests received on `path` (the query string is not part of it).
    pub fn path_hits(&self, path: &str) -> usize {
        self.shared
            .paths
            .lock()
            .expect("lock")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.shared.behaviour.lock().expect("lock").status = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared.behaviour.lock().expect("lock").delay = delay;
    }

    /// Chunked responses: the echo body in 3 chunks, flushed 30 ms apart.
    pub fn set_chunked(&self, chunked: bool) {
        self.shared.behaviour.lock().expect("lock").chunked = chunked;
    }

    /// Closes the listener and every open connection; the port then refuses
    /// connections (a dead node).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An address with nothing listening on it (connections are refused).
pub fn dead_addr() -> String {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    addr.to_string()
}

/// The self-signed certificate the TLS backend serves (CN/SAN `localhost`, `127.0.0.1`).
pub fn tls_cert_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../healthcheck/src/testdata/cert.pem")
}

pub fn tls_key_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../healthcheck/src/testdata/key.pem")
}

fn tls_acceptor() -> TlsAcceptor {
    let cert_pem = std::fs::read(tls_cert_path()).expect("read test cert");
    let key_pem = std::fs::read(tls_key_path()).expect("read test key");
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .expect("parse test cert");
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .expect("parse test key")
        .expect("a private key in key.pem");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert");
    TlsAcceptor::from(Arc::new(config))
}

async fn read_line<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf).await?;
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "eof")
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(stream: S, sh: Arc<Shared>) {
    let mut r = BufReader::new(stream);
    while let Ok(true) = serve_one(&mut r, &sh).await {}
}

/// Serves one request; `Ok(true)` when the connection may be reused.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    sh: &Shared,
) -> io::Result<bool> {
    let Some(request_line) = read_line(r).await? else {
        return Ok(false);
    };
    if request_line.is_empty() {
        return Ok(true); // tolerate a stray CRLF between requests
    }
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let version = parts.next().unwrap_or("").to_owned();

    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let line = read_line(r).await?.ok_or_else(eof)?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    sh.hits.fetch_add(1, Ordering::SeqCst);
    {
        let path = target.split('?').next().unwrap_or("").to_owned();
        *sh.paths.lock().expect("lock").entry(path).or_default() += 1;
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    // request body
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let size_line = read_line(r).await?.ok_or_else(eof)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
            if size == 0 {
                while !read_line(r).await?.ok_or_else(eof)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await?;
            read_line(r).await?;
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body).await?;
    }

    let behaviour = sh.behaviour.lock().expect("lock").clone();
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }

    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let mut hmap: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &headers {
        hmap.entry(k.clone())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    let echo: Value = json!({
        "backend": sh.name,
        "method": method,
        "path": path,
        "query": query,
        "headers": hmap,
        "body_len": body.len(),
    });
    let payload = echo.to_string();
    // `x-reply-<name>: value` in the request: `<name>: value` in the response (how tests
    // give a response Cache-Control, Vary, Set-Cookie...).
    let extra: String = headers
        .iter()
        .filter_map(|(k, v)| Some(format!("{}: {v}\r\n", k.strip_prefix("x-reply-")?)))
        .collect();
    let close = version == "HTTP/1.0"
        || get("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    if behaviour.chunked {
        let head = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nX-Backend: {}\r\n{}\r\n",
            behaviour.status,
            sh.name,
            if close { "Connection: close\r\n" } else { "" },
        );
        let w = r.get_mut();
        w.write_all(head.as_bytes()).await?;
        w.flush().await?;
        if method != "HEAD" {
            let bytes = payload.as_bytes();
            let third = bytes.len().div_ceil(3).max(1);
            for part in bytes.chunks(third) {
                tokio::time::sleep(Duration::from_millis(30)).await;
                w.write_all(format!("{:x}\r\n", part.len()).as_bytes())
                    .await?;
                w.write_all(part).await?;
                w.write_all(b"\r\n").await?;
                w.flush().await?;
            }
            w.write_all(b"0\r\n\r\n").await?;
            w.flush().await?;
        }
        return Ok(!close);
    }
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Backend: {}\r\n{extra}{}\r\n",
        behaviour.status,
        payload.len(),
        sh.name,
        if close { "Connection: close\r\n" } else { "" },
    );
    let w = r.get_mut();
    w.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        w.write_all(payload.as_bytes()).await?;
    }
    w.flush().await?;
    Ok(!close)
}
