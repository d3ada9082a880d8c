//! Websockets for the e2e tests: a real echo backend and a real client, both
//! `tokio-tungstenite`, each on its own tokio runtime so the tests stay synchronous.
//!
//! The backend answers a websocket handshake with 101 and echoes every message; the
//! text message `close` makes it close the websocket itself (a server-side close). A
//! request that is not a handshake gets a plain 200 whose body names the `Upgrade` and
//! `Connection` headers it arrived with, so a test can see what the gateway forwarded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::handshake::server::{Request as WsRequest, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::tls::ClientOpts;

#[derive(Default)]
struct Counts {
    /// Handshakes answered with 101.
    upgrades: AtomicUsize,
    /// Websockets whose stream has ended (either side closed).
    ended: AtomicUsize,
    /// Plain requests (no handshake).
    plain: AtomicUsize,
    /// The last handshake's request headers, lower-case names.
    last_headers: Mutex<Vec<(String, String)>>,
}

/// A websocket echo backend on an ephemeral loopback port.
pub struct WsBackend {
    addr: SocketAddr,
    counts: Arc<Counts>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl WsBackend {
    pub fn start() -> WsBackend {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("backend runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the websocket backend");
        let addr = listener.local_addr().expect("local addr");
        let counts = Arc::new(Counts::default());
        let shared = Arc::clone(&counts);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        WsBackend {
            addr,
            counts,
            runtime: Some(runtime),
        }
    }

    /// `host:port` for an upstream's `nodes`.
    pub fn node(&self) -> String {
        self.addr.to_string()
    }

    pub fn upgrades(&self) -> usize {
        self.counts.upgrades.load(Ordering::SeqCst)
    }

    pub fn ended(&self) -> usize {
        self.counts.ended.load(Ordering::SeqCst)
    }

    pub fn plain(&self) -> usize {
        self.counts.plain.load(Ordering::SeqCst)
    }

    /// A header of the last handshake the backend accepted.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let headers = self.counts.last_headers.lock().expect("headers lock");
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The request head, read with `peek` so the handshake (when it is one) can still
/// read it from the stream.
async fn peek_head(stream: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(end) = text.find("\r\n\r\n") {
            return Some(text[..end].to_string());
        }
        if n == buf.len() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serve(mut stream: TcpStream, counts: Arc<Counts>) {
    let Some(head) = peek_head(&stream).await else {
        return;
    };
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("upgrade").is_none() {
        counts.plain.fetch_add(1, Ordering::SeqCst);
        let mut skip = vec![0u8; head.len() + 4];
        if stream.read_exact(&mut skip).await.is_err() {
            return;
        }
        let body = format!(
            "upgrade={};connection={}",
            header("upgrade").unwrap_or_default(),
            header("connection").unwrap_or_default()
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    let seen = Arc::clone(&counts);
    // The callback's signature is tungstenite's (its error type is a whole response).
    #[allow(clippy::result_large_err)]
    let callback = move |req: &WsRequest, resp: Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        *seen.last_headers.lock().expect("headers lock") = headers;
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    counts.upgrades.fetch_add(1, Ordering::SeqCst);
    while let Some(msg) = next_message(&mut ws).await {
        let echo = match msg {
            Message::Text(t) if t.as_str() == "close" => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "bye".into(),
                };
                let _ = ws.close(Some(frame)).await;
                continue;
            }
            Message::Text(_) | Message::Binary(_) => msg,
            // Pings are answered and closes acknowledged by tungstenite itself.
            _ => continue,
        };
        if send_message(&mut ws, echo).await.is_err() {
            break;
        }
    }
    counts.ended.fetch_add(1, Ordering::SeqCst);
}

/// A connected websocket client with its own runtime.
pub struct WsClient {
    runtime: tokio::runtime::Runtime,
    ws: Option<WsConn>,
}

/// The client's websocket over plain TCP or rustls.
enum WsConn {
    Plain(Box<WebSocketStream<TcpStream>>),
    Tls(Box<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// How a handshake attempt ended.
#[derive(Debug)]
pub enum Handshake {
    /// 101: the websocket is open.
    Open(Box<WsClient>),
    /// Refused with this status and body.
    Refused(u16, String),
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsClient")
    }
}

impl WsClient {
    /// `ws://host/path` on `addr` (Host: `host`).
    pub fn connect(addr: SocketAddr, host: &str, path: &str) -> Handshake {
        let rt = runtime();
        let result = rt.block_on(async {
            let tcp = TcpStream::connect(addr)
                .await
                .expect("connect to the gateway");
            let url = format!("ws://{host}{path}");
            tokio_tungstenite::client_async(url, tcp)
                .await
                .map(|(ws, _)| WsConn::Plain(Box::new(ws)))
        });
        finish(rt, result)
    }

    /// `wss://host/path` on `addr`, TLS with `opts` (SNI, any certificate accepted).
    pub fn connect_tls(addr: SocketAddr, host: &str, path: &str, opts: &ClientOpts) -> Handshake {
        let rt = runtime();
        let config = super::tls::client_config(opts);
        let result = rt.block_on(async {
            let tcp = TcpStream::connect(addr)
                .await
                .expect("connect to the gateway");
            let name =
                rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .expect("TLS handshake with the gateway");
            let url = format!("wss://{host}{path}");
            tokio_tungstenite::client_async(url, tls)
                .await
                .map(|(ws, _)| WsConn::Tls(Box::new(ws)))
        });
        finish(rt, result)
    }

    /// Sends a text message.
    pub fn send(&mut self, text: &str) {
        let msg = Message::text(text);
        let ws = self.ws.as_mut().expect("open websocket");
        self.runtime
            .block_on(async {
                match ws {
                    WsConn::Plain(w) => send_message(w, msg).await,
                    WsConn::Tls(w) => send_message(w, msg).await,
                }
            })
            .expect("send a websocket message");
    }

    /// The next message within 10 s; `None` when the stream ended.
    pub fn recv(&mut self) -> Option<Message> {
        let ws = self.ws.as_mut().expect("open websocket");
        self.runtime.block_on(async {
            let next = async {
                match ws {
                    WsConn::Plain(w) => next_message(w).await,
                    WsConn::Tls(w) => next_message(w).await,
                }
            };
            tokio::time::timeout(Duration::from_secs(10), next)
                .await
                .expect("a websocket message within 10 s")
        })
    }

    /// Sends `text` and expects it echoed.
    pub fn echo(&mut self, text: &str) {
        self.send(text);
        match self.recv() {
            Some(Message::Text(t)) => assert_eq!(t.as_str(), text),
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }

    /// Closes from the client side and waits for the server's close and the end of
    /// the stream.
    pub fn close(&mut self) {
        let ws = self.ws.as_mut().expect("open websocket");
        self.runtime
            .block_on(async {
                match ws {
                    WsConn::Plain(w) => WebSocketStream::close(w, None).await,
                    WsConn::Tls(w) => WebSocketStream::close(w, None).await,
                }
            })
            .expect("send a close frame");
        loop {
            match self.recv() {
                None => break,
                Some(Message::Close(_)) => {}
                Some(other) => panic!("unexpected message after close: {other:?}"),
            }
        }
    }
}

fn finish(
    runtime: tokio::runtime::Runtime,
    result: Result<WsConn, tokio_tungstenite::tungstenite::Error>,
) -> Handshake {
    use tokio_tungstenite::tungstenite::Error;
    match result {
        Ok(ws) => Handshake::Open(Box::new(WsClient {
            runtime,
            ws: Some(ws),
        })),
        Err(Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Handshake::Refused(resp.status().as_u16(), body)
        }
        Err(e) => panic!("websocket handshake failed: {e}"),
    }
}

async fn next_message<S>(ws: &mut WebSocketStream<S>) -> Option<Message>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.next().await.and_then(Result::ok)
}

async fn send_message<S>(
    ws: &mut WebSocketStream<S>,
    msg: Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(msg).await
}
