//! A real HTTP/1.1 backend on loopback: keep-alive, answers every request with
//! a JSON echo of what it received, counts hits, can answer a fixed status or
//! delay its answer, and can be stopped (listener and every open connection
//! closed) to play a dead node.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

#[derive(Clone, Debug)]
struct Behaviour {
    status: u16,
    delay: Duration,
}

struct Shared {
    name: String,
    hits: AtomicUsize,
    connections: AtomicUsize,
    behaviour: Mutex<Behaviour>,
}

pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
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
        let listener = StdListener::bind("127.0.0.1:0").expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("backend addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            behaviour: Mutex::new(Behaviour { status, delay }),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
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
                            tokio::spawn(serve_conn(stream, sh.clone()));
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
        Backend {
            addr,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
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

async fn read_line(r: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
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

async fn serve_conn(stream: TcpStream, sh: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::new(stream);
    while let Ok(true) = serve_one(&mut r, &sh).await {}
}

/// Serves one request; `Ok(true)` when the connection may be reused.
async fn serve_one(r: &mut BufReader<TcpStream>, sh: &Shared) -> io::Result<bool> {
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
    let close = version == "HTTP/1.0"
        || get("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    let head = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Backend: {}\r\n{}\r\n",
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
