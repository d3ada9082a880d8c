//! A mock CMS for the dynacode poller: a keep-alive HTTP/1.1 server on loopback that
//! answers every GET with the current document and an `ETag` (`"v<generation>"`), a
//! 304 when `If-None-Match` names the current `ETag`, or a forced status (e.g. 500).
//! The body may be any bytes (invalid JSON, a document of the wrong shape). Every
//! request is recorded (arrival time, headers, what was answered). `stop()` closes the
//! listener and every open connection (connections are then refused).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::{header_value, read_headers};

/// One request the CMS received, and what it answered.
#[derive(Clone, Debug)]
pub struct CmsRequest {
    /// When the request head had been read.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    /// Status answered (200, 304, or the forced one).
    pub status: u16,
    /// Generation of the body current when it was answered (1 for the first).
    pub generation: u64,
}

impl CmsRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }
}

struct State {
    body: Vec<u8>,
    /// Bumped by every `set_body`; the `ETag` is `"v<generation>"`.
    generation: u64,
    /// Send `ETag` and honour `If-None-Match`.
    etags: bool,
    /// Answer this status (with a short text body) instead of the document.
    status: Option<u16>,
}

struct Shared {
    state: Mutex<State>,
    requests: Mutex<Vec<CmsRequest>>,
    /// Clones of the open connections, shut down by `stop()`.
    conns: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    /// Held while a response is recorded and written, so that `stop()` never cuts
    /// a response it has recorded (every recorded answer reached the poller).
    serving: Mutex<()>,
}

pub struct MockCms {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl MockCms {
    /// Serves `doc` (generation 1, `ETag: "v1"`).
    pub fn start(doc: &Value) -> MockCms {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind cms");
        let addr = listener.local_addr().expect("cms addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                body: doc.to_string().into_bytes(),
                generation: 1,
                etags: true,
                status: None,
            }),
            requests: Mutex::new(Vec::new()),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            serving: Mutex::new(()),
        });
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("mock-cms".to_owned())
            .spawn(move || {
                while !sh.stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_nodelay(true);
                            if let Ok(clone) = stream.try_clone() {
                                sh.conns.lock().expect("lock").push(clone);
                            }
                            let sh = Arc::clone(&sh);
                            std::thread::spawn(move || {
                                let _ = serve_conn(stream, &sh);
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
                // The listener is dropped here: new connections are refused.
            })
            .expect("spawn cms thread");
        MockCms {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The document URL to configure as `dynacode.url`.
    pub fn url(&self) -> String {
        format!("http://{}/plugins.json", self.addr)
    }

    /// Serves `doc` from now on, with a new `ETag`.
    pub fn set_document(&self, doc: &Value) {
        self.set_body(doc.to_string().into_bytes());
    }

    /// Serves these bytes (JSON or not) from now on, with a new `ETag`.
    pub fn set_body(&self, body: impl Into<Vec<u8>>) {
        let mut st = self.shared.state.lock().expect("lock");
        st.body = body.into();
        st.generation += 1;
    }

    /// `Some(status)`: answer it instead of the document; `None`: serve the document.
    pub fn set_status(&self, status: Option<u16>) {
        self.shared.state.lock().expect("lock").status = status;
    }

    /// `false`: no `ETag` and `If-None-Match` ignored (always a full 200).
    pub fn set_etags(&self, on: bool) {
        self.shared.state.lock().expect("lock").etags = on;
    }

    /// The current `ETag`, quotes included.
    pub fn etag(&self) -> String {
        format!(
            "\"v{}\"",
            self.shared.state.lock().expect("lock").generation
        )
    }

    pub fn generation(&self) -> u64 {
        self.shared.state.lock().expect("lock").generation
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<CmsRequest> {
        self.shared.requests.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().expect("lock").len()
    }

    /// Closes the listener and every open connection.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _serving = self.shared.serving.lock().expect("lock");
        for c in self.shared.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for MockCms {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_conn(stream: TcpStream, sh: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let headers = read_headers(&mut reader)?;
        let at = Instant::now();
        if let Some(len) = header_value(&headers, "content-length") {
            let mut body = vec![0; len.parse().unwrap_or(0)];
            reader.read_exact(&mut body)?;
        }
        let _serving = sh.serving.lock().expect("lock");
        if sh.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let (status, generation, response) = {
            let st = sh.state.lock().expect("lock");
            let etag = format!("\"v{}\"", st.generation);
            let matches = st.etags
                && header_value(&headers, "if-none-match").is_some_and(|v| {
                    v.split(',').any(|t| {
                        let t = t.trim();
                        t == "*" || t == etag || t.strip_prefix("W/") == Some(etag.as_str())
                    })
                });
            let (status, head_extra, body): (u16, String, &[u8]) = match st.status {
                Some(s) => (s, "Content-Type: text/plain\r\n".to_owned(), b"cms error\n"),
                None if matches => (304, format!("ETag: {etag}\r\n"), b""),
                None => {
                    let tag = if st.etags {
                        format!("ETag: {etag}\r\n")
                    } else {
                        String::new()
                    };
                    (
                        200,
                        format!("Content-Type: application/json\r\n{tag}"),
                        &st.body,
                    )
                }
            };
            let mut resp = format!("HTTP/1.1 {status} {}\r\n{head_extra}", reason(status));
            if status != 304 {
                resp += &format!("Content-Length: {}\r\n", body.len());
            }
            resp += "\r\n";
            let mut resp = resp.into_bytes();
            if status != 304 {
                resp.extend_from_slice(body);
            }
            (status, st.generation, resp)
        };
        sh.requests.lock().expect("lock").push(CmsRequest {
            at,
            method,
            path,
            headers,
            status,
            generation,
        });
        out.write_all(&response)?;
        out.flush()?;
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
