//! A minimal HTTP/1.1 keep-alive reverse proxy: `floor-proxy LISTEN ORIGIN`.
//!
//! It does what every peer of benchmark S1 does and nothing more: parse the request head,
//! add the same forwarding headers (X-Forwarded-For/Proto/Host/Port, X-Real-IP), forward
//! it on a kept-alive origin connection, parse the response head and relay a
//! Content-Length body. One thread (tokio's current-thread runtime), like nginx's one
//! worker. Each client connection owns one origin connection, opened on its first
//! request: the smallest possible pooling, which is what a floor should measure.
//! Chunked bodies and upgrades are out of scope (answered 501): S1 sends neither.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(origin)) = (args.next(), args.next()) else {
        eprintln!("usage: floor-proxy LISTEN_ADDR ORIGIN_ADDR");
        std::process::exit(2);
    };
    let origin: SocketAddr = origin
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        loop {
            let (client, peer) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = serve(client, peer, origin).await;
            });
        }
    })
}

/// Bytes read but not yet consumed, for one direction of one connection.
struct Inbound {
    buf: Vec<u8>,
    start: usize,
}

impl Inbound {
    fn new() -> Self {
        Inbound {
            buf: Vec::with_capacity(4096),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self, s: &mut TcpStream) -> io::Result<bool> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 8192, 0);
        let n = s.read(&mut self.buf[len..]).await?;
        self.buf.truncate(len + n);
        Ok(n > 0)
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The body length of a head's headers; `Err` for framings the floor does not do.
fn content_length(headers: &[httparse::Header]) -> io::Result<usize> {
    let mut len = 0;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(invalid("content-length"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            return Err(invalid("unsupported framing"));
        }
    }
    Ok(len)
}

async fn serve(mut client: TcpStream, peer: SocketAddr, origin: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut from_client = Inbound::new();
    let mut from_origin = Inbound::new();
    let mut upstream: Option<TcpStream> = None;
    let mut out = Vec::with_capacity(4096);
    let client_ip = peer.ip().to_string();
    loop {
        // The request head.
        let (head_len, body_len, head_request) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req
                .parse(from_client.pending())
                .map_err(|_| invalid("request head"))?
            {
                httparse::Status::Complete(n) => {
                    let body_len = match content_length(req.headers) {
                        Ok(l) => l,
                        Err(_) => {
                            client.write_all(b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await?;
                            return Ok(());
                        }
                    };
                    out.clear();
                    out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                    out.push(b' ');
                    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                    out.extend_from_slice(b" HTTP/1.1\r\n");
                    let mut host: &[u8] = b"";
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("host") {
                            host = h.value;
                        }
                        if h.name.eq_ignore_ascii_case("connection")
                            || h.name.eq_ignore_ascii_case("x-forwarded-for")
                        {
                            continue;
                        }
                        out.extend_from_slice(h.name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(h.value);
                        out.extend_from_slice(b"\r\n");
                    }
                    for (name, value) in [
                        ("X-Real-IP", client_ip.as_bytes()),
                        ("X-Forwarded-For", client_ip.as_bytes()),
                        ("X-Forwarded-Proto", b"http".as_slice()),
                        ("X-Forwarded-Host", host),
                    ] {
                        out.extend_from_slice(name.as_bytes());
                        out.extend_from_slice(b": ");
                        out.extend_from_slice(value);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"\r\n");
                    break (n, body_len, req.method == Some("HEAD"));
                }
                httparse::Status::Partial => {
                    if from_client.pending().len() > MAX_HEAD {
                        return Err(invalid("request head too large"));
                    }
                    if !from_client.fill(&mut client).await? {
                        return Ok(()); // the client closed between requests
                    }
                }
            }
        };
        from_client.consume(head_len);
        let up = match upstream.as_mut() {
            Some(up) => up,
            None => {
                let s = TcpStream::connect(origin).await?;
                s.set_nodelay(true)?;
                upstream.insert(s)
            }
        };
        // The request body, relayed as it comes.
        let mut left = body_len;
        let take = left.min(from_client.pending().len());
        out.extend_from_slice(&from_client.pending()[..take]);
        from_client.consume(take);
        left -= take;
        up.write_all(&out).await?;
        while left > 0 {
            if !from_client.fill(&mut client).await? {
                return Err(invalid("client closed mid-body"));
            }
            let take = left.min(from_client.pending().len());
            up.write_all(&from_client.pending()[..take]).await?;
            from_client.consume(take);
            left -= take;
        }
        // The response head and body.
        let (head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res
                .parse(from_origin.pending())
                .map_err(|_| invalid("response head"))?
            {
                // A HEAD response announces a length it does not send.
                httparse::Status::Complete(n) if head_request => break (n, 0),
                httparse::Status::Complete(n) => break (n, content_length(res.headers)?),
                httparse::Status::Partial => {
                    if !from_origin.fill(up).await? {
                        return Err(invalid("origin closed"));
                    }
                }
            }
        };
        let mut left = head_len + body_len;
        let take = left.min(from_origin.pending().len());
        client.write_all(&from_origin.pending()[..take]).await?;
        from_origin.consume(take);
        left -= take;
        while left > 0 {
            if !from_origin.fill(up).await? {
                return Err(invalid("origin closed mid-body"));
            }
            let take = left.min(from_origin.pending().len());
            client.write_all(&from_origin.pending()[..take]).await?;
            from_origin.consume(take);
            left -= take;
        }
    }
}
