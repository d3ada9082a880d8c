//! One HTTP/1.1 request over a pooled connection: send, read the final response header
//! and the body up to a limit, retry once when a pooled connection turns out stale,
//! return the connection to the pool.

use std::time::Duration;

use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_http::{RequestHeader, ResponseHeader};

use crate::error::{is_stale, Error, ErrorKind, Stage};
use crate::Client;

/// What to send and how.
pub struct Request<'a> {
    pub header: &'a RequestHeader,
    /// Sent when not empty (the header says how: `Content-Length` or chunked).
    pub body: &'a [u8],
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    /// Largest body read; a larger one (declared or received) fails with `TooLarge`.
    pub max_body: usize,
    /// A failure on a reused pooled connection before any response is retried once on
    /// a fresh one. Only for idempotent requests: the server may have seen the first.
    pub retry_stale: bool,
    /// `Some(idle)`: the connection goes back to the pool afterwards (when the
    /// response allows keep-alive) for at most `idle`; `None`: it is closed.
    pub keepalive: Option<Duration>,
}

/// The final response, read whole.
#[derive(Debug)]
pub struct Response {
    pub header: ResponseHeader,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.header.status.as_u16()
    }

    /// A header's value as trimmed text (`None` when absent, empty or not text).
    pub fn header_text(&self, name: impl http::header::AsHeaderName) -> Option<String> {
        self.header
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }
}

fn too_large() -> Error {
    Error::new(ErrorKind::TooLarge, Stage::Body, "response body too large")
}

impl Client {
    /// Sends `req` to `peer` (a pooled connection when there is one) and reads the
    /// response.
    pub async fn request(&self, peer: &HttpPeer, req: &Request<'_>) -> Result<Response, Error> {
        let mut retried = false;
        loop {
            let (stream, reused) = self
                .transport
                .get_stream(peer)
                .await
                .map_err(|e| Error::from_pingora(&e, Stage::Connect))?;
            let mut session = HttpSession::new_with_options(stream, peer);
            session.read_timeout = req.read_timeout;
            session.write_timeout = req.write_timeout;
            match send(&mut session, req).await {
                Ok(()) => {}
                // The server closed the pooled connection meanwhile: one fresh try.
                Err(e) if reused && !retried && req.retry_stale && is_stale(&e) => {
                    retried = true;
                    continue;
                }
                Err(e) => return Err(Error::from_pingora(&e, Stage::Request)),
            }
            let response = read_response(&mut session, req.max_body).await?;
            if let Some(idle) = req.keepalive {
                // As Pingora's v1 `Connector::release_http_session` does.
                session.respect_keepalive();
                if let Some(stream) = session.reuse().await {
                    self.transport
                        .release_stream(stream, peer.reuse_hash(), Some(idle));
                }
            }
            return Ok(response);
        }
    }
}

/// Writes the request and reads the final response header.
async fn send(session: &mut HttpSession, req: &Request<'_>) -> pingora_core::Result<()> {
    session
        .write_request_header(Box::new(req.header.clone()))
        .await?;
    if !req.body.is_empty() {
        session.write_body(req.body).await?;
    }
    session.finish_body().await?;
    loop {
        session.read_response().await?;
        // Informational responses (100 Continue, 103 Early Hints) precede the real one.
        match session.get_status().map(|s| s.as_u16()) {
            Some(code) if (100..200).contains(&code) && code != 101 => continue,
            _ => return Ok(()),
        }
    }
}

async fn read_response(session: &mut HttpSession, max_body: usize) -> Result<Response, Error> {
    let Some(head) = session.resp_header() else {
        return Err(Error::new(
            ErrorKind::BadResponse,
            Stage::Request,
            "bad response: no status line",
        ));
    };
    let header = head.clone();
    // Refused before reading when the header already says it is too large.
    let declared = header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = session
        .read_body_ref()
        .await
        .map_err(|e| Error::from_pingora(&e, Stage::Body))?
    {
        if body.len() + chunk.len() > max_body {
            return Err(too_large());
        }
        body.extend_from_slice(chunk);
    }
    Ok(Response { header, body })
}
