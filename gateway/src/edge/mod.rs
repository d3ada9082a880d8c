//! The client edge of the proxy: what happens to a connection's bytes before Pingora's
//! HTTP session sees them (docs/security.md, "HTTP edge").
//!
//! - [`head`]: checks of the raw request head (the requests nginx refuses) and the
//!   framing of its body;
//! - [`gate`]: the client stream cut at the end of each request, so pipelined requests
//!   are answered in order; [`chunked`] finds the end of a chunked body for it;
//! - this module: the limits (`proxy.client_header_timeout`, ...), the count of
//!   connections still sending a header, and the answers written here (400, 408, 431).
//!
//! The keep-alive loop that uses them is [`crate::keepalive`].

pub mod chunked;
pub mod gate;
pub mod head;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::settings::ProxySettings;

/// The client-side limits of the proxy listener.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Time for a whole request header (nginx `client_header_timeout`).
    pub header_timeout: Duration,
    /// Time between two reads of a request body (nginx `client_body_timeout`).
    pub body_timeout: Duration,
    /// Most connections at once still sending a request header.
    pub max_header_connections: usize,
    /// Largest request head in bytes.
    pub max_header_size: usize,
    /// The `Server` header of the answers written here (`server_header`).
    pub server_header: Option<http::HeaderValue>,
}

impl EdgeLimits {
    pub fn from_settings(proxy: &ProxySettings) -> EdgeLimits {
        EdgeLimits {
            header_timeout: Duration::from_secs(proxy.client_header_timeout),
            body_timeout: Duration::from_secs(proxy.client_body_timeout),
            max_header_connections: proxy.max_header_connections,
            max_header_size: proxy.client_max_header_size,
            server_header: Some(http::HeaderValue::from_static(crate::SERVER_NAME)),
        }
    }

    /// The same limits, answering with this `Server` header (`None`: none).
    pub fn with_server_header(mut self, server: Option<http::HeaderValue>) -> EdgeLimits {
        self.server_header = server;
        self
    }
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits::from_settings(&ProxySettings::default())
    }
}

/// The number of connections still sending a request header, with its cap.
#[derive(Debug, Default, Clone)]
pub struct HeaderSlots {
    in_use: Arc<AtomicUsize>,
}

/// One connection counted by [`HeaderSlots`] until dropped.
#[derive(Debug)]
pub struct HeaderSlot {
    in_use: Arc<AtomicUsize>,
}

impl HeaderSlots {
    /// Counts one more connection sending a header; `None` when `max` are already.
    pub fn acquire(&self, max: usize) -> Option<HeaderSlot> {
        let prev = self.in_use.fetch_add(1, Ordering::AcqRel);
        let slot = HeaderSlot {
            in_use: Arc::clone(&self.in_use),
        };
        (prev < max).then_some(slot)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Acquire)
    }
}

impl Drop for HeaderSlot {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Told of every answer the edge writes (metrics, access log), with the client's
/// address.
pub type ReplyObserver = Arc<dyn Fn(EdgeReply, Option<std::net::SocketAddr>) + Send + Sync>;

/// A response the edge writes itself, then closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeReply {
    BadRequest,
    MethodNotAllowed,
    RequestTimeout,
    HeaderTooLarge,
}

impl EdgeReply {
    /// The status written.
    pub fn status(self) -> u16 {
        match self {
            EdgeReply::BadRequest => 400,
            EdgeReply::MethodNotAllowed => 405,
            EdgeReply::RequestTimeout => 408,
            EdgeReply::HeaderTooLarge => 431,
        }
    }

    /// The whole response; the JSON bodies match the gateway's other error pages
    /// (proxy/error.rs).
    fn bytes(self, server: Option<&http::HeaderValue>) -> Vec<u8> {
        let (line, body) = match self {
            EdgeReply::BadRequest => ("400 Bad Request", r#"{"error_msg":"400 Bad Request"}"#),
            EdgeReply::MethodNotAllowed => {
                ("405 Not Allowed", r#"{"error_msg":"405 Not Allowed"}"#)
            }
            EdgeReply::RequestTimeout => (
                "408 Request Time-out",
                r#"{"error_msg":"408 Request Time-out"}"#,
            ),
            EdgeReply::HeaderTooLarge => (
                "431 Request Header Fields Too Large",
                r#"{"error_msg":"431 Request Header Fields Too Large"}"#,
            ),
        };
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(server) = server {
            out.extend_from_slice(b"Server: ");
            out.extend_from_slice(server.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        out
    }

    /// Writes the response and closes the connection the way nginx's lingering close
    /// does: the write side first, then whatever the client still sends is read and
    /// dropped for a moment, so the kernel does not answer it with a reset that could
    /// destroy the response before the client reads it.
    pub async fn send_and_close(self, mut stream: Stream, server: Option<&http::HeaderValue>) {
        const LINGER: Duration = Duration::from_secs(2);
        const LINGER_BYTES: usize = 1 << 20;
        let write = async {
            stream.write_all(&self.bytes(server)).await?;
            stream.flush().await?;
            AsyncWriteExt::shutdown(&mut stream).await
        };
        if !matches!(tokio::time::timeout(LINGER, write).await, Ok(Ok(()))) {
            return;
        }
        let drain = async {
            let mut buf = [0u8; 4096];
            let mut total = 0;
            while total < LINGER_BYTES {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_lengths_match_bodies() {
        for r in [
            EdgeReply::BadRequest,
            EdgeReply::MethodNotAllowed,
            EdgeReply::RequestTimeout,
            EdgeReply::HeaderTooLarge,
        ] {
            let bytes = r.bytes(Some(&http::HeaderValue::from_static("x")));
            let text = std::str::from_utf8(&bytes).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{head}");
        }
    }

    #[test]
    fn slots_count_and_cap() {
        let slots = HeaderSlots::default();
        let a = slots.acquire(2).unwrap();
        let b = slots.acquire(2).unwrap();
        assert!(slots.acquire(2).is_none());
        assert_eq!(slots.in_use(), 2);
        drop(a);
        let _c = slots.acquire(2).unwrap();
        drop(b);
        assert_eq!(slots.in_use(), 1);
    }
}
