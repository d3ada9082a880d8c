//! The prober's side: a request written as text on a raw stream, and only the status
//! line read back. A probe must not wait for (or buffer) a body, and its request text
//! carries user-written header lines as they are.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Stage};

/// Writes `bytes` and flushes.
pub async fn write_raw<S: AsyncWrite + Unpin + ?Sized>(
    stream: &mut S,
    bytes: &[u8],
) -> Result<(), Error> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| Error::from_io(&e, Stage::Request))?;
    stream
        .flush()
        .await
        .map_err(|e| Error::from_io(&e, Stage::Request))
}

/// Reads up to the first line end (or `max` bytes). `Ok(None)`: closed before any byte
/// arrived.
pub async fn read_status_only<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    max: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| Error::from_io(&e, Stage::Request))?;
        if n == 0 {
            return Ok((!buf.is_empty()).then_some(buf));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.iter().position(|b| *b == b'\n') {
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() >= max {
            return Ok(Some(buf));
        }
    }
}

/// The status of `HTTP/x.y NNN ...`, or `None` when the line is not a status line.
pub fn parse_status(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let version = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (major, minor) = version.strip_prefix("HTTP/")?.split_once('.')?;
    if !digits(major) || !digits(minor) {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 || !digits(code) {
        return None;
    }
    code.parse().ok()
}
