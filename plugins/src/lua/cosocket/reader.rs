//! What `receive`, `receiveany` and `receiveuntil` take out of a socket's read buffer:
//! pure functions over the bytes already read, so the framing is tested without a
//! network. `None` means "read more first".

use bytes::{Bytes, BytesMut};

/// `receive`'s pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// `*l`: a line, LF-terminated, a CR before the LF dropped, neither returned.
    Line,
    /// `*a`: everything until the peer closes.
    All,
    /// A number: exactly that many bytes.
    Size(usize),
}

/// The next complete unit of `pattern` in `buf`, taken out of it.
pub(crate) fn take(buf: &mut BytesMut, pattern: Pattern) -> Option<Bytes> {
    match pattern {
        Pattern::Line => {
            let lf = memchr::memchr(b'\n', buf)?;
            let mut line = buf.split_to(lf + 1);
            line.truncate(lf);
            if line.last() == Some(&b'\r') {
                line.truncate(lf - 1);
            }
            Some(line.freeze())
        }
        Pattern::All => None,
        Pattern::Size(n) => (buf.len() >= n).then(|| buf.split_to(n).freeze()),
    }
}

/// The state of one `receiveuntil` iterator.
#[derive(Debug)]
pub(crate) struct Until {
    pattern: Vec<u8>,
    inclusive: bool,
    /// Sized reads: the pattern was returned (inclusive); the next call returns nil.
    ended: bool,
}

/// What one iterator call returns.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UntilStep {
    Data(Bytes),
    /// The pattern was reached (sized reads): the iterator returns `nil`, no error.
    End,
}

impl Until {
    pub(crate) fn new(pattern: Vec<u8>, inclusive: bool) -> Until {
        Until {
            pattern,
            inclusive,
            ended: false,
        }
    }

    /// The next step out of `buf`, or `None` to read more. `size`: the iterator was
    /// called with a size (return at most that much, then `End` at the pattern).
    pub(crate) fn step(&mut self, buf: &mut BytesMut, size: Option<usize>) -> Option<UntilStep> {
        let plen = self.pattern.len();
        let found = memchr::memmem::find(buf, &self.pattern);
        let Some(size) = size else {
            let at = found?;
            let mut data = buf.split_to(at + plen);
            if !self.inclusive {
                data.truncate(at);
            }
            return Some(UntilStep::Data(data.freeze()));
        };
        if self.ended {
            self.ended = false;
            return Some(UntilStep::End);
        }
        let size = size.max(1);
        match found {
            Some(0) => {
                let pat = buf.split_to(plen);
                if self.inclusive {
                    self.ended = true;
                    Some(UntilStep::Data(pat.freeze()))
                } else {
                    Some(UntilStep::End)
                }
            }
            Some(at) => Some(UntilStep::Data(buf.split_to(at.min(size)).freeze())),
            None => {
                // Bytes that cannot start a match are safe to return.
                let safe = buf.len().saturating_sub(plen - 1);
                (safe >= size).then(|| UntilStep::Data(buf.split_to(size).freeze()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(s: &str) -> BytesMut {
        BytesMut::from(s.as_bytes())
    }

    #[test]
    fn lines_drop_their_cr_lf_and_wait_for_the_lf() {
        let mut b = buf("a\r\nb\nc");
        assert_eq!(take(&mut b, Pattern::Line).unwrap(), "a");
        assert_eq!(take(&mut b, Pattern::Line).unwrap(), "b");
        assert_eq!(take(&mut b, Pattern::Line), None);
        assert_eq!(take(&mut b, Pattern::Size(1)).unwrap(), "c");
    }

    #[test]
    fn until_without_size_returns_what_is_before_the_pattern() {
        let mut u = Until::new(b"\r\n--b".to_vec(), false);
        let mut b = buf("hello\r\n-");
        assert_eq!(u.step(&mut b, None), None);
        b.extend_from_slice(b"-brest");
        assert_eq!(u.step(&mut b, None), Some(UntilStep::Data("hello".into())));
        assert_eq!(&b[..], b"rest");
        let mut u = Until::new(b"--".to_vec(), true);
        let mut b = buf("x--y");
        assert_eq!(u.step(&mut b, None), Some(UntilStep::Data("x--".into())));
    }

    #[test]
    fn until_with_size_returns_chunks_then_ends_at_the_pattern() {
        let mut u = Until::new(b"END".to_vec(), false);
        let mut b = buf("abcdefEND!");
        assert_eq!(
            u.step(&mut b, Some(4)),
            Some(UntilStep::Data("abcd".into()))
        );
        assert_eq!(u.step(&mut b, Some(4)), Some(UntilStep::Data("ef".into())));
        assert_eq!(u.step(&mut b, Some(4)), Some(UntilStep::End));
        assert_eq!(&b[..], b"!");
        // A possible start of the pattern at the end is kept until more is read.
        let mut b = buf("abcdEN");
        assert_eq!(
            u.step(&mut b, Some(4)),
            Some(UntilStep::Data("abcd".into()))
        );
        assert_eq!(u.step(&mut b, Some(4)), None);
        let mut u = Until::new(b"END".to_vec(), true);
        let mut b = buf("END");
        assert_eq!(u.step(&mut b, Some(4)), Some(UntilStep::Data("END".into())));
        assert_eq!(u.step(&mut b, Some(4)), Some(UntilStep::End));
    }
}
