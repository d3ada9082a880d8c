//! Against a loopback server written with tokio: what each caller relies on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What the server does with request `n` (from 0) on connection `c` (from 0).
enum Answer {
    Send(String),
    Close,
    Hang,
}

struct Server {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

async fn server(answer: fn(usize, usize) -> Answer) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let c = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    // One request head (the tests send no bodies).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    match answer(c, n) {
                        Answer::Send(text) => {
                            if conn.write_all(text.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        Answer::Close => return,
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Server { addr, conns }
}

fn ok(body: &str) -> Answer {
    Answer::Send(format!(
        "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}

fn plain() -> PeerSpec {
    PeerSpec {
        tls: false,
        sni: String::new(),
        verify: true,
        connect_timeout: Some(Duration::from_secs(2)),
        total_connect_timeout: Some(Duration::from_secs(2)),
    }
}

fn get(host: &str) -> pingora_http::RequestHeader {
    let mut h = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
    h.insert_header("Host", host).unwrap();
    h
}

fn request(header: &pingora_http::RequestHeader) -> Request<'_> {
    Request {
        header,
        body: b"",
        read_timeout: Some(Duration::from_secs(2)),
        write_timeout: Some(Duration::from_secs(2)),
        max_body: 1024,
        retry_stale: true,
        keepalive: Some(Duration::from_secs(30)),
    }
}

#[tokio::test]
async fn status_headers_and_body_on_one_pooled_connection() {
    let srv = server(|_, _| ok("hello")).await;
    let client = Client::new(4).unwrap();
    let peer = plain().peer(srv.addr);
    let header = get("example.test");
    for _ in 0..3 {
        let res = client.request(&peer, &request(&header)).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.body, b"hello");
        assert_eq!(
            res.header_text(http::header::ETAG).as_deref(),
            Some("\"v1\"")
        );
        assert_eq!(res.header_text("x-missing"), None);
    }
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1, "kept alive and reused");

    // keepalive: None closes the connection after use.
    let mut once = request(&header);
    once.keepalive = None;
    let peer2 = plain().peer(srv.addr);
    client.request(&peer2, &once).await.unwrap();
    client.request(&peer2, &once).await.unwrap();
    assert_eq!(
        srv.conns.load(Ordering::SeqCst),
        2,
        "the pooled one, then a fresh one"
    );
}

#[tokio::test]
async fn informational_responses_are_skipped() {
    let srv = server(|_, _| {
        Answer::Send(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
             HTTP/1.1 204 No Content\r\n\r\n"
                .into(),
        )
    })
    .await;
    let client = Client::new(4).unwrap();
    let header = get("h");
    let res = client
        .request(&plain().peer(srv.addr), &request(&header))
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.body.is_empty());
}

#[tokio::test]
async fn body_limit_declared_or_received() {
    let srv = server(|_, n| match n {
        0 => ok(&"x".repeat(2000)),
        _ => Answer::Send(format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
            "y".repeat(0x400),
            "y".repeat(0x400)
        )),
    })
    .await;
    let client = Client::new(4).unwrap();
    let header = get("h");
    let mut req = request(&header);
    req.keepalive = None;
    for _ in 0..2 {
        let e = client
            .request(&plain().peer(srv.addr), &req)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert_eq!(e.to_string(), "response body too large");
    }
    // At the limit is fine.
    req.max_body = 2000;
    let res = client.request(&plain().peer(srv.addr), &req).await.unwrap();
    assert_eq!(res.body.len(), 2000);
}

#[tokio::test]
async fn read_timeout_is_timeout() {
    let srv = server(|_, _| Answer::Hang).await;
    let client = Client::new(4).unwrap();
    let header = get("h");
    let mut req = request(&header);
    req.read_timeout = Some(Duration::from_millis(150));
    let start = Instant::now();
    let e = client
        .request(&plain().peer(srv.addr), &req)
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.stage(), e.to_string().as_str()),
        (ErrorKind::Timeout, Stage::Request, "timeout")
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn refused_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(4).unwrap();
    let header = get("h");
    let e = client
        .request(&plain().peer(addr), &request(&header))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.stage(), e.to_string().as_str()),
        (ErrorKind::Refused, Stage::Connect, "connection refused")
    );
}

/// The server answers the first request of its first connection, then reads the
/// second and closes without answering: what a server closing an idle keep-alive
/// connection looks like when the close races the next request.
fn stale_after_one(c: usize, n: usize) -> Answer {
    match (c, n) {
        (0, 0) => ok("first"),
        (0, _) => Answer::Close,
        _ => ok("fresh"),
    }
}

#[tokio::test]
async fn stale_pooled_connection_is_retried_once() {
    let srv = server(stale_after_one).await;
    let client = Client::new(4).unwrap();
    let peer = plain().peer(srv.addr);
    let header = get("h");
    let first = client.request(&peer, &request(&header)).await.unwrap();
    assert_eq!(first.body, b"first");
    let second = client.request(&peer, &request(&header)).await.unwrap();
    assert_eq!(second.body, b"fresh");
    assert_eq!(srv.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn stale_pooled_connection_not_retried_when_not_idempotent() {
    let srv = server(stale_after_one).await;
    let client = Client::new(4).unwrap();
    let peer = plain().peer(srv.addr);
    let header = get("h");
    client.request(&peer, &request(&header)).await.unwrap();
    let mut req = request(&header);
    req.retry_stale = false;
    let e = client.request(&peer, &req).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert_eq!(e.to_string(), "closed");
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tls_to_a_plain_server_fails_the_handshake() {
    // A plain HTTP server answering the ClientHello as a bad request.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut chunk = [0u8; 1024];
            let _ = conn.read(&mut chunk).await;
            let _ = conn
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    let client = Client::new(4).unwrap();
    let spec = PeerSpec {
        tls: true,
        sni: "localhost".into(),
        verify: false,
        ..plain()
    };
    let header = get("h");
    let e = client
        .request(&spec.peer(addr), &request(&header))
        .await
        .unwrap_err();
    assert_eq!((e.kind(), e.stage()), (ErrorKind::Tls, Stage::Connect));
    assert!(e.to_string().starts_with("handshake failed"), "{e}");
    // The raw path classifies it the same way.
    let e = client.connect(&spec.peer(addr)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
}

#[tokio::test]
async fn raw_request_and_status_line_only() {
    let srv = server(|_, _| ok(&"b".repeat(100_000))).await;
    let client = Client::new(1).unwrap();
    let mut stream = client.connect(&plain().peer(srv.addr)).await.unwrap();
    write_raw(
        &mut stream,
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let line = read_status_only(&mut stream, 1024).await.unwrap().unwrap();
    assert_eq!(line, b"HTTP/1.1 200 OK\r");
    assert_eq!(parse_status(&line), Some(200));

    // Closed before a byte: None.
    let srv = server(|_, _| Answer::Close).await;
    let mut stream = client.connect(&plain().peer(srv.addr)).await.unwrap();
    write_raw(&mut stream, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_status_only(&mut stream, 1024).await.unwrap(), None);

    // No line end: at most about `max` bytes.
    let mut endless: &[u8] = &[b'x'; 5000];
    let line = read_status_only(&mut endless, 1024).await.unwrap().unwrap();
    assert!(
        line.len() >= 1024 && line.len() < 1024 + 256,
        "{}",
        line.len()
    );
    assert_eq!(parse_status(&line), None);
}

#[test]
fn status_lines() {
    assert_eq!(parse_status(b"HTTP/1.1 200 OK\r"), Some(200));
    assert_eq!(parse_status(b"HTTP/1.0 503"), Some(503));
    assert_eq!(parse_status(b"HTTP/1.1 20 OK"), None);
    assert_eq!(parse_status(b"HTTP/x.1 200 OK"), None);
    assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
    assert_eq!(parse_status(&[0xff, 0xfe]), None);
}

#[test]
fn io_errors_in_the_same_words() {
    use std::io::{Error as IoError, ErrorKind as Io};
    let words = |k: Io| {
        let e = Error::from_io(&IoError::new(k, "x"), Stage::Request);
        (e.kind(), e.to_string())
    };
    assert_eq!(words(Io::TimedOut), (ErrorKind::Timeout, "timeout".into()));
    assert_eq!(
        words(Io::ConnectionReset),
        (ErrorKind::Closed, "connection reset by peer".into())
    );
    assert_eq!(
        words(Io::UnexpectedEof),
        (ErrorKind::Closed, "closed".into())
    );
    assert_eq!(
        words(Io::ConnectionRefused),
        (ErrorKind::Refused, "connection refused".into())
    );
    assert_eq!(words(Io::Other).0, ErrorKind::Other);
}

#[tokio::test]
async fn resolution() {
    let a = resolve("127.0.0.1", 80, None).await.unwrap();
    assert_eq!(a, "127.0.0.1:80".parse().unwrap());
    let a = resolve("::1", 8080, None).await.unwrap();
    assert_eq!(a, "[::1]:8080".parse().unwrap());
    let a = resolve_cached("localhost", 81, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(a.port(), 81);
    assert!(a.ip().is_loopback());
    let e = resolve("no-such-host.invalid", 80, Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!((e.kind(), e.stage()), (ErrorKind::Resolve, Stage::Resolve));
    assert!(
        e.to_string()
            .starts_with("no-such-host.invalid could not be resolved ("),
        "{e}"
    );
}

#[test]
fn peer_settings() {
    let spec = PeerSpec {
        tls: true,
        sni: "[::1]".into(),
        verify: false,
        connect_timeout: Some(Duration::from_secs(3)),
        total_connect_timeout: None,
    };
    let p = spec.peer("[::1]:443".parse().unwrap());
    assert_eq!(p.sni, "::1");
    assert!(!p.options.verify_cert && !p.options.verify_hostname);
    assert_eq!(p.options.connection_timeout, Some(Duration::from_secs(3)));
    let p = PeerSpec { tls: false, ..spec }.peer("127.0.0.1:80".parse().unwrap());
    assert_eq!(p.sni, "", "no SNI without TLS");
}
