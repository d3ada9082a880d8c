//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Hand-written on purpose: the tests need exact control over keep-alive
//! (one connection for a whole request sequence), over the `Host` header, and
//! over what counts as a transport error, and it keeps the dev-dependencies
//! down to `serde_json` and `tokio`.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Generous: CI has two cores and a debug build.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed HTTP response.
#[derive(Clone)]
pub struct Response {
    pub status: u16,
    /// Header names are lowercased; order and duplicates are kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; a body that is not JSON becomes `Value::String(text)`
    /// so that assertions print it instead of failing to parse.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| Value::String(self.text()))
    }

    /// The `backend` field of the mock backend's echo body, if any.
    pub fn backend(&self) -> Option<String> {
        self.json()
            .get("backend")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// True when the server announced it will close the connection.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {:?} {}", self.status, self.headers, self.text())
    }
}

pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn headers(mut self, headers: &[(&str, &str)]) -> Self {
        for (k, v) in headers {
            self.headers.push(((*k).to_owned(), (*v).to_owned()));
        }
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub fn json(self, value: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(value.to_string())
    }

    pub fn encode(&self, addr: SocketAddr) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        if header_value(&self.headers, "host").is_none() {
            out.extend_from_slice(format!("Host: {addr}\r\n").as_bytes());
        }
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        let has_len = header_value(&self.headers, "content-length").is_some();
        match &self.body {
            Some(b) if !has_len => {
                out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes())
            }
            None if !has_len && matches!(self.method.as_str(), "POST" | "PUT" | "PATCH") => {
                out.extend_from_slice(b"Content-Length: 0\r\n")
            }
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        if let Some(b) = &self.body {
            out.extend_from_slice(b);
        }
        out
    }
}

/// A persistent (keep-alive) HTTP/1.1 connection.
///
/// It reconnects only when the previous response carried `Connection: close`
/// (or there was no previous connection): a server that silently drops a
/// kept-alive connection shows up as an error, which is what the hot-swap
/// test wants to catch.
pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// Number of TCP connections opened so far.
    pub connects: usize,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Conn {
            addr,
            stream: None,
            connects: 0,
        }
    }

    pub fn send(&mut self, req: &Request) -> io::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
            self.connects += 1;
        }
        let result = self.exchange(req);
        match &result {
            Ok(resp) if !resp.wants_close() => {}
            _ => self.stream = None,
        }
        result
    }

    fn exchange(&mut self, req: &Request) -> io::Result<Response> {
        let reader = self.stream.as_mut().expect("connected");
        reader.get_mut().write_all(&req.encode(self.addr))?;
        reader.get_mut().flush()?;
        let (resp, until_eof) = read_response(reader, req.method == "HEAD")?;
        if until_eof {
            self.stream = None;
        }
        Ok(resp)
    }
}

/// Send one request on a fresh connection.
pub fn send(addr: SocketAddr, req: &Request) -> io::Result<Response> {
    Conn::new(addr).send(req)
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    r.read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads headers (name lowercased) up to the empty line.
pub fn read_headers(r: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
}

/// Reads a message body framed by `Transfer-Encoding: chunked` or
/// `Content-Length`; returns `None` when neither is present.
pub fn read_framed_body(
    r: &mut impl BufRead,
    headers: &[(String, String)],
) -> io::Result<Option<Vec<u8>>> {
    let chunked = header_value(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let size_line = read_line(r)?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // trailers, up to the empty line
                while !read_line(r)?.is_empty() {}
                return Ok(Some(body));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(r)?; // CRLF after the chunk
        }
    }
    if let Some(len) = header_value(headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        return Ok(Some(body));
    }
    Ok(None)
}

/// Reads one response (of a request that was not `HEAD`) from a raw connection.
pub fn read_one(r: &mut impl BufRead) -> io::Result<Response> {
    read_response(r, false).map(|(resp, _)| resp)
}

/// Returns the response and whether it was delimited by connection close.
fn read_response(r: &mut impl BufRead, head: bool) -> io::Result<(Response, bool)> {
    loop {
        let status_line = read_line(r)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(invalid(format!("bad status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let headers = read_headers(r)?;
        if (100..200).contains(&status) {
            continue; // interim response
        }
        if head || status == 204 || status == 304 {
            return Ok((
                Response {
                    status,
                    headers,
                    body: Vec::new(),
                },
                false,
            ));
        }
        return match read_framed_body(r, &headers)? {
            Some(body) => Ok((
                Response {
                    status,
                    headers,
                    body,
                },
                false,
            )),
            None => {
                let mut body = Vec::new();
                r.read_to_end(&mut body)?;
                Ok((
                    Response {
                        status,
                        headers,
                        body,
                    },
                    true,
                ))
            }
        };
    }
}
