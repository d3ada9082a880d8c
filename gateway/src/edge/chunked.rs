//! [`ChunkedEnd`]: finds where a chunked request body ends, as bytes pass, so the
//! [`Gate`](super::gate::Gate) can keep a pipelined next request apart from it.
//!
//! It follows the grammar Pingora's body reader accepts (pingora-core `v1/body.rs`):
//! chunk-size lines parsed by `httparse::parse_chunk_size` (the same function), data,
//! a strict CRLF, and after the last chunk (size 0) trailer lines, each ending in CRLF,
//! up to an empty line. It is never stricter than Pingora: what it calls
//! [`Feed::Invalid`] Pingora refuses too (400, connection closed), and then the gate
//! simply stops cutting. Its size-line limit is above Pingora's for the same reason.

/// Longest chunk-size line (with extensions) kept; Pingora refuses above 8 KiB.
const SIZE_LINE_LIMIT: usize = 16 * 1024;

/// What a slice of body bytes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The body ends after this many bytes of the slice.
    Ends(usize),
    /// The whole slice belongs to the body, which goes on.
    More,
    /// Not a chunked body Pingora would accept.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line (kept in `line`).
    Size,
    /// In chunk data, this many bytes to go.
    Data(u64),
    /// After chunk data: expecting CR, then LF.
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final empty one).
    LineStart,
    /// Inside a trailer line.
    InLine,
    /// After the CR ending a trailer line.
    LineLf,
    /// After the CR of the final empty line.
    EndLf,
    Ended,
    Invalid,
}

/// The position in a chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
    line: Vec<u8>,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        ChunkedEnd {
            state: State::Size,
            line: Vec::new(),
        }
    }
}

impl ChunkedEnd {
    /// Takes the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8]) -> Feed {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Ended | State::Invalid => break,
                State::Data(n) => {
                    let take = (bytes.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size => self.size_byte(b),
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size,
                State::DataCr | State::DataLf => State::Invalid,
                State::LineStart if b == b'\r' => State::EndLf,
                State::LineStart | State::InLine if b == b'\n' => State::Invalid,
                State::LineStart | State::InLine if b == b'\r' => State::LineLf,
                State::LineStart | State::InLine => State::InLine,
                State::LineLf if b == b'\n' => State::LineStart,
                State::EndLf if b == b'\n' => State::Ended,
                State::LineLf | State::EndLf => State::Invalid,
            };
            i += 1;
            if self.state == State::Ended {
                return Feed::Ends(i);
            }
        }
        match self.state {
            State::Invalid => Feed::Invalid,
            State::Ended => Feed::Ends(0),
            _ => Feed::More,
        }
    }

    fn size_byte(&mut self, b: u8) -> State {
        self.line.push(b);
        if self.line.len() > SIZE_LINE_LIMIT {
            return State::Invalid;
        }
        if b != b'\n' {
            return State::Size;
        }
        let parsed = httparse::parse_chunk_size(&self.line);
        match parsed {
            Ok(httparse::Status::Complete((_, size))) => {
                self.line.clear();
                if size == 0 {
                    State::LineStart
                } else {
                    State::Data(size)
                }
            }
            // An LF inside a chunk extension: the line goes on to its CRLF.
            Ok(httparse::Status::Partial) => State::Size,
            Err(_) => State::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Feed {
        ChunkedEnd::default().feed(body)
    }

    /// Feeds `body` split at every position and in single bytes: the end is found at
    /// the same place.
    fn end_everywhere(body: &[u8]) -> Option<usize> {
        let want = match whole(body) {
            Feed::Ends(k) => Some(k),
            _ => None,
        };
        for split in 0..=body.len() {
            let mut t = ChunkedEnd::default();
            let got = match t.feed(&body[..split]) {
                Feed::Ends(k) => Some(k),
                Feed::More => match t.feed(&body[split..]) {
                    Feed::Ends(k) => Some(split + k),
                    _ => None,
                },
                Feed::Invalid => None,
            };
            assert_eq!(got, want, "split at {split}");
        }
        let mut t = ChunkedEnd::default();
        let bytewise = body
            .iter()
            .enumerate()
            .find_map(|(i, b)| match t.feed(&[*b]) {
                Feed::Ends(1) => Some(i + 1),
                _ => None,
            });
        assert_eq!(bytewise, want, "byte by byte");
        want
    }

    #[test]
    fn finds_the_end_of_the_body() {
        let body = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        assert_eq!(end_everywhere(body), Some(15));
        let body = b"3;name=\"v\"\r\nabc\r\nA\r\n0123456789\r\n0;x\r\nX-T: 1\r\nY: 2\r\n\r\nrest";
        assert_eq!(end_everywhere(body), Some(body.len() - 4));
        assert_eq!(end_everywhere(b"0\r\n\r\n"), Some(5));
    }

    #[test]
    fn an_unfinished_body_wants_more() {
        assert_eq!(whole(b"5\r\nhel"), Feed::More);
        assert_eq!(whole(b"5\r\nhello\r\n0\r\n"), Feed::More);
        assert_eq!(whole(b"5\r\nhello\r\n0\r\nX: y\r\n"), Feed::More);
    }

    #[test]
    fn what_pingora_refuses_is_invalid() {
        assert_eq!(whole(b"zz\r\n"), Feed::Invalid);
        assert_eq!(whole(b"5\r\nhelloXX"), Feed::Invalid);
        assert_eq!(whole(b"5\nhello\r\n"), Feed::Invalid);
        assert_eq!(whole(b"0\r\n\n"), Feed::Invalid);
        assert_eq!(whole(b"0\r\nX: y\n\r\n"), Feed::Invalid);
        let long = format!("1;{}\r\n", "e".repeat(SIZE_LINE_LIMIT));
        assert_eq!(whole(long.as_bytes()), Feed::Invalid);
    }
}
