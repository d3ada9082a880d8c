//! The proxy's HTTP/1 keep-alive loop, replacing Pingora's so that an idle client
//! connection holds a small future instead of a whole request's state (benchmark S9).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

/// How long an idle client connection is kept open for its next request: Pingora's own
/// value (`ServerApp::process_new` in pingora-core's apps/mod.rs sets 60 s), applied by
/// [`IdleLight`] while it holds the connection instead of Pingora.
const CLIENT_KEEPALIVE_SECS: u64 = 60;

/// The most bytes [`IdleLight`] reads when a request starts to arrive; they become the
/// start of Pingora's header buffer (whose own first allocation is 4 KiB too).
const FIRST_READ: usize = 4096;

/// Pingora's HTTP proxy app, minus what it keeps allocated on an idle keep-alive
/// connection.
///
/// Between two requests Pingora waits for the next request header inside the next
/// request's `process_new_http` future: a 14 KB box sized for the whole request state
/// machine, plus the `HttpSession` (680 B) and its 4 KiB header buffer. Most of an idle
/// connection's memory (benchmark S9) was that. Here a plain HTTP/1 connection waits in
/// this small future instead, and Pingora's session starts only when bytes arrive; those
/// bytes go to the session as the start of its header buffer (its pipelined prefix), so
/// no byte is read twice and no syscall is added.
///
/// TLS, h2c and custom sessions go through Pingora's loop unchanged. HTTP/1 pipelining
/// must stay off (Pingora's default; Portico never enables it): with it on, a finished
/// request could carry the start of the next one in its `HttpPersistentSettings`, which
/// this wait could not see.
pub struct IdleLight<A> {
    inner: Arc<A>,
    /// Set by `cleanup` (shutdown): idle connections close, as Pingora's own do.
    closing: std::sync::atomic::AtomicBool,
    closed: tokio::sync::Notify,
}

impl<A> IdleLight<A> {
    pub fn new(inner: A) -> IdleLight<A> {
        IdleLight {
            inner: Arc::new(inner),
            closing: std::sync::atomic::AtomicBool::new(false),
            closed: tokio::sync::Notify::new(),
        }
    }

    /// Waits until the client sends bytes (the start of its next request) and returns
    /// them; `None` when it closes, the keep-alive timeout passes or the server shuts down.
    async fn next_request_start(&self, stream: &mut Stream) -> Option<bytes::BytesMut> {
        // Created before the flag is read: `notify_waiters` reaches it even unpolled.
        let closed = self.closed.notified();
        if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let read = std::future::poll_fn(|cx| read_available(stream, cx));
        let keepalive = std::time::Duration::from_secs(CLIENT_KEEPALIVE_SECS);
        tokio::select! {
            biased;
            read = tokio::time::timeout(keepalive, read) => read.ok()?.ok()?,
            _ = closed => None,
        }
    }
}

/// One read of whatever the client has sent, into a buffer on the stack (not kept in the
/// idle future); the bytes are copied into a header-sized buffer only when some arrived.
/// `Ok(None)`: the client closed the connection.
fn read_available(
    stream: &mut Stream,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<Option<bytes::BytesMut>>> {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_READ];
    let mut read = tokio::io::ReadBuf::uninit(&mut buf);
    std::task::ready!(tokio::io::AsyncRead::poll_read(
        std::pin::Pin::new(stream),
        cx,
        &mut read
    ))?;
    let got = read.filled();
    if got.is_empty() {
        return std::task::Poll::Ready(Ok(None));
    }
    let mut head = bytes::BytesMut::with_capacity(FIRST_READ);
    head.extend_from_slice(got);
    std::task::Poll::Ready(Ok(Some(head)))
}

#[async_trait]
impl<A> ServerApp for IdleLight<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let options = self.inner.server_options();
        let plain_http1 =
            stream.get_ssl_digest().is_none() && !options.is_some_and(|o| o.h2c || o.force_custom);
        if !plain_http1 {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        // What Pingora's loop does (pingora-core apps/mod.rs, `process_new`), with the
        // wait for each request moved out of Pingora's session.
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let start = self.next_request_start(&mut stream).await?;
            let mut session = ServerSession::new_http1(stream);
            if first {
                first = false;
                if *shutdown.borrow() {
                    session.set_keepalive(None);
                } else {
                    session.set_keepalive(Some(CLIENT_KEEPALIVE_SECS));
                }
                session.set_keepalive_reuses_remaining(
                    options.and_then(|o| o.keepalive_request_limit),
                );
            } else if let Some(settings) = persistent.take() {
                settings.apply_to_session(&mut session);
            }
            session.set_pipelined_prefix(start);
            let reused = self.inner.process_new_http(session, shutdown).await?;
            (stream, persistent) = reused.consume();
        }
    }

    async fn cleanup(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.closed.notify_waiters();
        ServerApp::cleanup(&*self.inner).await;
    }
}
