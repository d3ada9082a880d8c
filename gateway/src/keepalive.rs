//! The proxy's HTTP/1 keep-alive loop, replacing Pingora's so that an idle client
//! connection holds a small future instead of a whole request's state (benchmark S9),
//! and so that every request head passes the edge's checks and limits
//! ([`crate::edge`]) before Pingora parses it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
// Not tokio's timers: a new tokio timer that is due before every other one (an idle
// wait starting when the other connections are busy) wakes the runtime's driver through
// its eventfd, a `write` syscall and an extra `epoll_wait` per request (benchmark K1).
// Pingora's wheel registers a timeout without a syscall; 10 ms resolution is plenty
// for the keep-alive and header timeouts.
use pingora_timeout::fast_timeout::fast_timeout;

use crate::edge::chunked::{ChunkedEnd, Feed};
use crate::edge::gate::{Budget, Gate};
use crate::edge::head::{self, Check, Framing, Head, Reject};
use crate::edge::{EdgeLimits, EdgeReply, HeaderSlot, HeaderSlots, ReplyObserver};

/// How long an idle client connection is kept open for its next request: Pingora's own
/// value (`ServerApp::process_new` in pingora-core's apps/mod.rs sets 60 s), applied by
/// [`IdleLight`] while it holds the connection instead of Pingora.
const CLIENT_KEEPALIVE_SECS: u64 = 60;

/// The most bytes [`IdleLight`] reads when a request starts to arrive; they become the
/// start of Pingora's header buffer (whose own first allocation is 4 KiB too).
const FIRST_READ: usize = 4096;

/// Pingora's HTTP proxy app, minus what it keeps allocated on an idle keep-alive
/// connection, behind the edge's checks.
///
/// Between two requests Pingora waits for the next request header inside the next
/// request's `process_new_http` future: a 14 KB box sized for the whole request state
/// machine, plus the `HttpSession` (680 B) and its 4 KiB header buffer. Most of an idle
/// connection's memory (benchmark S9) was that. Here a plain HTTP/1 connection waits in
/// this small future instead.
///
/// Each request head is then read here whole, within `client_header_timeout` (a total,
/// like nginx's; 408 when it passes), up to `client_max_header_size` (431 above), while
/// the connection counts against `max_header_connections`, and checked
/// ([`head::check`]: 400 for what nginx refuses). Only then does Pingora's session
/// start, with the head (and the body bytes that came with it) as its pipelined prefix,
/// so no byte is read twice. The client stream is wrapped in a [`Gate`] that stops
/// Pingora's reads at the end of the request: bytes of a pipelined next request wait in
/// the gate and start the next turn of this loop, in order.
///
/// TLS, h2c and custom sessions go through Pingora's loop unchanged.
pub struct IdleLight<A> {
    inner: Arc<A>,
    limits: EdgeLimits,
    header_slots: HeaderSlots,
    /// Set by `cleanup` (shutdown): idle connections close, as Pingora's own do.
    closing: std::sync::atomic::AtomicBool,
    closed: tokio::sync::Notify,
    /// Told of each answer written here.
    on_reply: Option<ReplyObserver>,
    /// Portico's own driver, for the requests it takes; `pingora-proxy`'s (`inner`)
    /// serves the others.
    driver: Option<crate::proxy::driver::H1Driver>,
}

/// Why no request head came.
enum HeadEnd {
    /// Answer this and close.
    Reply(EdgeReply),
    /// Close without an answer (the client went away, or too many are sending headers).
    Close,
}

impl<A> IdleLight<A> {
    pub fn new(inner: A, limits: EdgeLimits) -> IdleLight<A> {
        IdleLight {
            inner: Arc::new(inner),
            limits,
            header_slots: HeaderSlots::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            closed: tokio::sync::Notify::new(),
            on_reply: None,
            driver: None,
        }
    }

    /// Serves the requests `driver` takes with it, instead of `inner`.
    pub fn with_driver(mut self, driver: crate::proxy::driver::H1Driver) -> IdleLight<A> {
        self.driver = Some(driver);
        self
    }

    /// Reports every answer the edge writes (400, 405, 408, 431) to `observer`.
    pub fn with_reply_observer(mut self, observer: ReplyObserver) -> IdleLight<A> {
        self.on_reply = Some(observer);
        self
    }

    /// Waits until the client sends bytes (the start of its next request) and returns
    /// them; `None` when it closes or `wait` passes. Once the server shuts down, the
    /// wait is cut to [`DRAIN_IDLE`](crate::drain::DRAIN_IDLE) from then: a request
    /// that comes is still answered (with `Connection: close`), so a client sending one
    /// just as the drain begins does not find its connection closed under it.
    async fn next_request_start(&self, stream: &mut Stream, wait: Duration) -> Option<BytesMut> {
        // Created before the flag is read: `notify_waiters` reaches it even unpolled.
        let closed = self.closed.notified();
        let read = std::future::poll_fn(|cx| read_available(stream, cx));
        tokio::pin!(read);
        if !self.closing.load(std::sync::atomic::Ordering::Acquire) {
            tokio::select! {
                biased;
                read = fast_timeout(wait, &mut read) => return read.ok()?.ok()?,
                _ = closed => {}
            }
        }
        let drain = crate::drain::DRAIN_IDLE.min(wait);
        fast_timeout(drain, read).await.ok()?.ok()?
    }

    /// Reads until `buf` holds a whole request head, and checks it. `slot` counts this
    /// connection as sending a header while it does (taken here if it is not yet).
    async fn read_head(
        &self,
        gate: &mut Gate,
        mut buf: BytesMut,
        deadline: Instant,
        slot: &mut Option<HeaderSlot>,
    ) -> Result<(BytesMut, Head), HeadEnd> {
        let max = self.limits.max_header_size;
        // Where the search for the blank line resumes, so a trickled head is scanned
        // once, not once per read.
        let mut scanned = 0;
        loop {
            if head::blank_line_seen(&buf, &mut scanned) || buf.len() > max {
                match head::check(&buf, max) {
                    Check::Complete(h) => return Ok((buf, h)),
                    Check::Reject(Reject::TooLarge) => {
                        return Err(HeadEnd::Reply(EdgeReply::HeaderTooLarge))
                    }
                    Check::Reject(Reject::MethodNotAllowed) => {
                        return Err(HeadEnd::Reply(EdgeReply::MethodNotAllowed))
                    }
                    Check::Reject(Reject::BadRequest(why)) => {
                        tracing::debug!("400 before routing: {why}");
                        return Err(HeadEnd::Reply(EdgeReply::BadRequest));
                    }
                    Check::Partial => {}
                }
            }
            if slot.is_none() {
                *slot = Some(
                    self.header_slots
                        .acquire(self.limits.max_header_connections)
                        .ok_or(HeadEnd::Close)?,
                );
            }
            buf.reserve(FIRST_READ.min(max + 1 - buf.len().min(max)));
            let read = tokio::io::AsyncReadExt::read_buf(gate.inner_mut(), &mut buf);
            let left = deadline.saturating_duration_since(Instant::now());
            match fast_timeout(left, read).await {
                Err(_) => return Err(HeadEnd::Reply(EdgeReply::RequestTimeout)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(HeadEnd::Close),
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Splits a checked head (with whatever followed it in `buf`) into Pingora's prefix,
/// the bytes past the end of the request, and what is left of the request on the socket.
fn split_request(mut buf: BytesMut, head: Head) -> (BytesMut, Option<BytesMut>, Budget) {
    let extra = (buf.len() - head.len) as u64;
    let (end, budget) = match head.framing {
        Framing::Empty => (head.len, Budget::Bytes(0)),
        Framing::Length(n) => {
            let take = extra.min(n);
            // `take` <= `extra`, which is a usize.
            (head.len + take as usize, Budget::Bytes(n - take))
        }
        Framing::Chunked => {
            let mut end = Box::<ChunkedEnd>::default();
            match end.feed(&buf[head.len..]) {
                Feed::Ends(k) => (head.len + k, Budget::Bytes(0)),
                Feed::More => (buf.len(), Budget::Chunked(end)),
                Feed::Invalid => (buf.len(), Budget::Unbounded),
            }
        }
        Framing::Tunnel => (buf.len(), Budget::Unbounded),
    };
    let rest = buf.split_off(end);
    (buf, (!rest.is_empty()).then_some(rest), budget)
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
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _active = crate::connections::Active::accept();
        let options = self.inner.server_options();
        let plain_http1 =
            stream.get_ssl_digest().is_none() && !options.is_some_and(|o| o.h2c || o.force_custom);
        if !plain_http1 {
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        // A new connection is sending its first header from the accept on (nginx's
        // `client_header_timeout` also starts there).
        let first_deadline = Instant::now() + self.limits.header_timeout;
        let Some(first_slot) = self
            .header_slots
            .acquire(self.limits.max_header_connections)
        else {
            tracing::debug!("max_header_connections reached: closing a new connection");
            return None;
        };
        let mut slot = Some(first_slot);
        let mut gate = Box::new(Gate::new(stream));
        // What Pingora's loop does (pingora-core apps/mod.rs, `process_new`), with the
        // wait for each request moved out of Pingora's session.
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // The upstream connection this client connection keeps between requests served
        // by Portico's driver; back to the pool when the loop ends, however it ends.
        let mut own_driver = self.driver.as_ref().map(|d| (d, d.held()));
        loop {
            let start = match gate.take_ahead() {
                Some(pipelined) => pipelined,
                None => {
                    let (wait, state) = if first {
                        (
                            first_deadline.saturating_duration_since(Instant::now()),
                            crate::connections::State::Reading,
                        )
                    } else {
                        (
                            Duration::from_secs(CLIENT_KEEPALIVE_SECS),
                            crate::connections::State::Waiting,
                        )
                    };
                    let _state = crate::connections::InState::enter(state);
                    self.next_request_start(gate.inner_mut(), wait).await?
                }
            };
            // A kept-alive connection's head is timed from its first byte (one clock
            // read per request: the first head's deadline runs from the accept).
            let deadline = if first {
                first_deadline
            } else {
                Instant::now() + self.limits.header_timeout
            };
            let reading = crate::connections::InState::enter(crate::connections::State::Reading);
            let read = self.read_head(&mut gate, start, deadline, &mut slot).await;
            drop(reading);
            let (buf, head) = match read {
                Ok(read) => read,
                Err(HeadEnd::Reply(reply)) => {
                    // Boxed: its drain buffer would otherwise be part of every idle
                    // connection's future.
                    if let Some(observer) = &self.on_reply {
                        let client = gate
                            .inner_mut()
                            .get_socket_digest()
                            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
                        observer(reply, client);
                    }
                    let server = self.limits.server_header.as_ref();
                    Box::pin(reply.send_and_close(gate, server)).await;
                    return None;
                }
                Err(HeadEnd::Close) => return None,
            };
            slot = None;
            let own = own_driver
                .as_mut()
                .and_then(|(d, held)| Some((*d, held, d.takes(&head)?)));
            let (prefix, rest, budget) = split_request(buf, head);
            let unbounded = matches!(budget, Budget::Unbounded);
            gate.set_budget(budget);
            if let Some(rest) = rest {
                gate.put_ahead(rest);
            }
            // A tunnel (or a body Pingora is about to refuse) passes through the gate
            // unbounded, so the gate cannot keep a pipelined request apart: Pingora's
            // pipelining keeps bytes that arrive while the response is on its way from
            // failing this request, and the connection closes after it (the gateway
            // answers upgrade requests with `Connection: close` unless they switch).
            let is_first = std::mem::replace(&mut first, false);
            let configure = |session: &mut ServerSession| {
                if is_first {
                    if *shutdown.borrow() {
                        session.set_keepalive(None);
                    } else {
                        session.set_keepalive(Some(CLIENT_KEEPALIVE_SECS));
                    }
                    session.set_keepalive_reuses_remaining(
                        options.and_then(|o| o.keepalive_request_limit),
                    );
                } else if let Some(settings) = persistent.take() {
                    settings.apply_to_session(session);
                }
                session.set_read_timeout(Some(self.limits.body_timeout));
                session.set_pipelining_enabled(unbounded);
                session.set_pipelined_prefix(prefix);
            };
            let reused = match own {
                Some((driver, held, snapshot)) => {
                    let mut session = driver.session(gate);
                    configure(&mut session.downstream_session);
                    // Boxed, as `pingora-proxy`'s request future is: inline, its states
                    // would make every idle connection's future (this one) as large
                    // (S9, S11: 25 KB per idle connection instead of 14).
                    Box::pin(driver.serve(snapshot, session, shutdown, held)).await?
                }
                None => {
                    let mut session = ServerSession::new_http1(gate);
                    configure(&mut session);
                    self.inner.process_new_http(session, shutdown).await?
                }
            };
            if unbounded {
                return None;
            }
            let stream;
            (stream, persistent) = reused.consume();
            gate = stream.into_any().downcast::<Gate>().ok()?;
        }
    }

    async fn cleanup(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.closed.notify_waiters();
        // Pingora's own loop (TLS, h2c) drops its idle connections at its cleanup; it
        // gets the same `DRAIN_IDLE` first (meanwhile its requests are answered with
        // `Connection: close`, as the shutdown has begun).
        tokio::time::sleep(crate::drain::DRAIN_IDLE).await;
        ServerApp::cleanup(&*self.inner).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(text: &str) -> (BytesMut, Head) {
        let buf = BytesMut::from(text.as_bytes());
        match head::check(&buf, 1 << 15) {
            Check::Complete(h) => (buf, h),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_are_split_at_the_end_of_the_first() {
        let (buf, h) = head_of("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n");
        let (prefix, rest, budget) = split_request(buf, h);
        assert_eq!(&prefix[..], b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(rest.as_deref(), Some(&b"GET /b HTTP/1.1\r\n"[..]));
        assert!(matches!(budget, Budget::Bytes(0)));
    }

    #[test]
    fn a_body_stays_with_its_request() {
        let (buf, h) = head_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET");
        let (prefix, rest, budget) = split_request(buf, h);
        assert!(prefix.ends_with(b"\r\n\r\nhello"));
        assert_eq!(rest.as_deref(), Some(&b"GET"[..]));
        assert!(matches!(budget, Budget::Bytes(0)));
        let (buf, h) = head_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe");
        let (prefix, rest, budget) = split_request(buf, h);
        assert!(prefix.ends_with(b"\r\n\r\nhe"));
        assert!(rest.is_none());
        assert!(matches!(budget, Budget::Bytes(3)));
    }

    #[test]
    fn a_chunked_body_is_split_at_its_end() {
        let (buf, h) =
            head_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET");
        let (prefix, rest, budget) = split_request(buf, h);
        assert!(prefix.ends_with(b"\r\n\r\n0\r\n\r\n"));
        assert_eq!(rest.as_deref(), Some(&b"GET"[..]));
        assert!(matches!(budget, Budget::Bytes(0)));
        let (buf, h) =
            head_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe");
        let (prefix, rest, budget) = split_request(buf, h);
        assert!(prefix.ends_with(b"5\r\nhe"));
        assert!(rest.is_none());
        assert!(matches!(budget, Budget::Chunked(_)));
    }
}
