//! [`Gate`]: the client connection as Pingora's HTTP/1 session sees it, cut at the end of
//! each request so that pipelined requests are answered in order.
//!
//! Pingora's session reads the client for the request body and, while the response is
//! on its way, probes it for a close (`read_body_or_idle`). Bytes that arrive then
//! belong to the next, pipelined request; with Pingora's pipelining off (its default)
//! they failed the request in flight with a 400 and a reset, although the origin had
//! executed it; with it on they end up in Pingora's private `HttpPersistentSettings`,
//! out of reach of the keep-alive loop ([`crate::keepalive`]), which reads and checks
//! every request head itself. So the gate knows where the current request ends (the
//! loop tells it, from the head's framing) and gives Pingora no byte past that end: a
//! read past it is answered from the socket into [`Gate::ahead`] and left pending, as
//! Pingora's own pipelining does, and the loop starts the next request from those bytes
//! once the response is written. An end of stream past the end is passed on (Pingora
//! aborts the request when the client closes, as before).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::chunked::{ChunkedEnd, Feed};

/// The most bytes of the next request read ahead while the current one is in flight;
/// the rest stays in the socket (and the client is held back by TCP).
const AHEAD_READ: usize = 4096;

/// What is left of the current request on the socket.
#[derive(Debug)]
pub enum Budget {
    /// No end known (a tunnel, or a body Pingora is about to refuse): reads pass through.
    Unbounded,
    /// This many bytes (0: the request has ended).
    Bytes(u64),
    /// A chunked body, ending where [`ChunkedEnd`] finds its end.
    Chunked(Box<ChunkedEnd>),
}

/// A client stream whose reads stop at the end of the current request.
#[derive(Debug)]
pub struct Gate {
    inner: Stream,
    /// Bytes read past the end of the current request: the start of the next one.
    ahead: BytesMut,
    budget: Budget,
}

impl Gate {
    pub fn new(inner: Stream) -> Gate {
        Gate {
            inner,
            ahead: BytesMut::new(),
            budget: Budget::Unbounded,
        }
    }

    /// The underlying stream, for the keep-alive loop's own reads and writes.
    pub fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }

    /// Bytes of the next request already read, if any.
    pub fn take_ahead(&mut self) -> Option<BytesMut> {
        (!self.ahead.is_empty()).then(|| std::mem::take(&mut self.ahead))
    }

    /// Keeps `bytes` (past the end of the current request) for the next request.
    pub fn put_ahead(&mut self, bytes: BytesMut) {
        debug_assert!(self.ahead.is_empty(), "bytes ahead already kept");
        self.ahead = bytes;
    }

    /// Sets what is left of the current request on the socket.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// A read past the end of the current request: keep what arrives for the next one.
    fn poll_past_end(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.ahead.is_empty() {
            // Already holding the next request's start; read nothing more until the
            // current response is done (the session is not waiting on this read only).
            return Poll::Pending;
        }
        let mut tmp = [0u8; AHEAD_READ];
        let mut buf = ReadBuf::new(&mut tmp);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        if buf.filled().is_empty() {
            return Poll::Ready(Ok(())); // the client closed: Pingora sees the end of stream
        }
        self.ahead.extend_from_slice(buf.filled());
        Poll::Pending
    }
}

impl AsyncRead for Gate {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        match &mut this.budget {
            Budget::Unbounded => Pin::new(&mut this.inner).poll_read(cx, buf),
            Budget::Bytes(0) => this.poll_past_end(cx),
            Budget::Bytes(budget) => {
                let budget = *budget;
                let before = buf.filled().len();
                if (buf.remaining() as u64) <= budget {
                    // Pingora caps body reads at what is left of the body: the usual case.
                    ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                } else {
                    let limit = usize::try_from(budget).unwrap_or(usize::MAX);
                    let dst = buf.initialize_unfilled_to(limit);
                    let mut sub = ReadBuf::new(dst);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut sub))?;
                    let got = sub.filled().len();
                    buf.advance(got);
                }
                let got = (buf.filled().len() - before) as u64;
                this.budget = Budget::Bytes(budget.saturating_sub(got));
                Poll::Ready(Ok(()))
            }
            Budget::Chunked(end) => {
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                match end.feed(&buf.filled()[before..]) {
                    Feed::More => {}
                    Feed::Ends(k) => {
                        // The bytes after the body are the next request's.
                        this.ahead.extend_from_slice(&buf.filled()[before + k..]);
                        buf.set_filled(before + k);
                        this.budget = Budget::Bytes(0);
                    }
                    Feed::Invalid => this.budget = Budget::Unbounded,
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Gate {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Gate {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Gate {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Gate {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Gate {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Gate {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Gate {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Gate {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if !self.ahead.is_empty() {
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A gate over a real loopback connection whose peer sent `data` and closed.
    async fn gate(data: &'static [u8]) -> Gate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(data).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let (server, _) = listener.accept().await.unwrap();
        let _peer = peer.await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        Gate::new(stream)
    }

    #[tokio::test]
    async fn reads_stop_at_the_budget_and_the_rest_waits_ahead() {
        let mut g = gate(b"abcdefgh").await;
        g.set_budget(Budget::Bytes(3));
        let mut buf = [0u8; 16];
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"abc");
        // Past the end: the next bytes are kept, the read stays pending.
        let pending = tokio::time::timeout(Duration::from_millis(50), g.read(&mut buf)).await;
        assert!(pending.is_err());
        assert_eq!(g.take_ahead().as_deref(), Some(&b"defgh"[..]));
        assert!(g.take_ahead().is_none());
    }

    #[tokio::test]
    async fn end_of_stream_past_the_end_is_passed_on() {
        let mut g = gate(b"").await;
        g.set_budget(Budget::Bytes(0));
        let mut buf = [0u8; 4];
        assert_eq!(g.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_chunked_body_ends_where_its_last_chunk_does() {
        let mut g = gate(b"3\r\nabc\r\n0\r\n\r\nGET /next").await;
        g.set_budget(Budget::Chunked(Box::default()));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 13 {
            let n = g.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"3\r\nabc\r\n0\r\n\r\n");
        let pending = tokio::time::timeout(Duration::from_millis(50), g.read(&mut buf)).await;
        assert!(pending.is_err());
        assert_eq!(g.take_ahead().as_deref(), Some(&b"GET /next"[..]));
    }

    #[tokio::test]
    async fn no_budget_passes_everything() {
        let mut g = gate(b"abcdef").await;
        let mut buf = [0u8; 16];
        let n = g.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"abcdef");
    }
}
