//! One classification and one message format for every outbound failure.
//!
//! The words are those of OpenResty's cosockets ("timeout", "connection refused",
//! "closed", "handshake failed (...)"), because `resty.http` hands them to Lua code
//! written against lua-resty-http; the prober and the dynacode poller use the same
//! words in their logs and decisions instead of keeping their own.

use std::fmt;
use std::io::ErrorKind as Io;

use pingora_core::{Error as PError, ErrorType};

/// What went wrong, for callers that decide on it (the prober: timeout or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The client could not be built (the system CA store failed to load).
    Unavailable,
    /// The host name did not resolve (or resolving took too long).
    Resolve,
    /// A connect, TLS handshake, read or write timeout.
    Timeout,
    /// The connection was refused.
    Refused,
    /// The TLS handshake failed (the message carries the TLS library's reason).
    Tls,
    /// The peer closed or reset the connection.
    Closed,
    /// The response could not be parsed.
    BadResponse,
    /// The response body exceeded the caller's limit.
    TooLarge,
    /// Anything else (no route to host, a local error, ...).
    Other,
}

/// Where it went wrong: lets a caller add its own context ("connect to X failed: ").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Setup,
    Resolve,
    /// Getting a connection (TCP connect and TLS handshake).
    Connect,
    /// Writing the request and reading the response header.
    Request,
    /// Reading the response body.
    Body,
}

/// An outbound failure: its kind, its stage and the message (`Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    stage: Stage,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, stage: Stage, message: impl Into<String>) -> Error {
        Error {
            kind,
            stage,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// A Pingora error in cosocket words.
    pub fn from_pingora(e: &PError, stage: Stage) -> Error {
        let (kind, message) = match e.etype() {
            ErrorType::ConnectTimedout
            | ErrorType::ReadTimedout
            | ErrorType::WriteTimedout
            | ErrorType::TLSHandshakeTimedout => (ErrorKind::Timeout, "timeout".to_string()),
            ErrorType::ConnectRefused => (ErrorKind::Refused, "connection refused".to_string()),
            ErrorType::ConnectNoRoute => (ErrorKind::Other, "no route to host".to_string()),
            ErrorType::TLSHandshakeFailure
            | ErrorType::InvalidCert
            | ErrorType::TLSWantX509Lookup
            | ErrorType::HandshakeError => (
                ErrorKind::Tls,
                match detail(e) {
                    Some(d) => format!("handshake failed ({d})"),
                    None => "handshake failed".to_string(),
                },
            ),
            ErrorType::ConnectionClosed => (ErrorKind::Closed, "closed".to_string()),
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectError => {
                let io = io_kind(e);
                if let Some((kind, text)) = io.and_then(words) {
                    (kind, text.to_string())
                } else if matches!(io, Some(Io::UnexpectedEof) | None)
                    && e.etype() != &ErrorType::ConnectError
                {
                    // A read or write that failed without an I/O cause: the peer went away.
                    (ErrorKind::Closed, "closed".to_string())
                } else {
                    (
                        ErrorKind::Other,
                        format!("connect failed ({})", e.root_cause()),
                    )
                }
            }
            ErrorType::InvalidHTTPHeader | ErrorType::H1Error => (
                ErrorKind::BadResponse,
                format!("bad response ({})", e.root_cause()),
            ),
            _ => (ErrorKind::Other, e.to_string()),
        };
        Error::new(kind, stage, message)
    }

    /// An I/O error of a raw stream (the prober's) in the same words.
    pub fn from_io(e: &std::io::Error, stage: Stage) -> Error {
        match words(e.kind()) {
            Some((kind, text)) => Error::new(kind, stage, text),
            None if e.kind() == Io::UnexpectedEof => Error::new(ErrorKind::Closed, stage, "closed"),
            None => Error::new(ErrorKind::Other, stage, e.to_string()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The I/O kinds that have a cosocket word of their own.
fn words(k: Io) -> Option<(ErrorKind, &'static str)> {
    Some(match k {
        Io::ConnectionReset => (ErrorKind::Closed, "connection reset by peer"),
        Io::BrokenPipe => (ErrorKind::Closed, "broken pipe"),
        Io::ConnectionRefused => (ErrorKind::Refused, "connection refused"),
        Io::TimedOut => (ErrorKind::Timeout, "timeout"),
        _ => return None,
    })
}

/// Whether a failure on a reused pooled connection looks like the server had closed it
/// meanwhile (worth one retry on a fresh connection).
pub fn is_stale(e: &PError) -> bool {
    matches!(
        e.etype(),
        ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
    )
}

fn io_kind(e: &PError) -> Option<Io> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.root_cause());
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// The innermost meaningful cause in Pingora's error text, e.g. "invalid peer
/// certificate: UnknownIssuer" (the root cause alone is often only the local address,
/// and the SNI suffix repeats what the caller knows).
fn detail(e: &PError) -> Option<String> {
    let text = e.to_string();
    text.split(" cause: ")
        .skip(1)
        .filter(|c| !c.trim().is_empty() && !c.starts_with("local address"))
        .last()
        .map(|c| c.split(", SNI:").next().unwrap_or(c).trim().to_string())
        .filter(|c| !c.is_empty())
}

/// A Pingora error that is not a network failure (building a request header) as
/// "Type: innermost cause".
pub fn pingora_reason(e: &PError) -> String {
    let etype = e.etype().as_str();
    match detail(e) {
        Some(d) => format!("{etype}: {d}"),
        None => etype.to_string(),
    }
}
