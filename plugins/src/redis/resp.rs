//! RESP2, the Redis wire protocol: commands out, replies in. Pure functions over
//! buffers, so the connection code only moves bytes.

/// A reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    /// An error reply (`-ERR ...`, `-NOSCRIPT ...`).
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A reply that is not RESP, or nests deeper than any reply Portico asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// Nesting Portico's scripts never exceed; deeper replies are refused rather than
/// followed (a hostile or broken server must not exhaust the stack).
const MAX_DEPTH: usize = 4;
/// The largest bulk string accepted (the limit scripts return small integers).
const MAX_BULK: usize = 1 << 20;

/// Appends a command (an array of bulk strings) to `out`.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply at the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let Some(end) = find_crlf(buf) else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..end].split_first() else {
        return Err(ProtocolError("empty reply line".into()));
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let after = end + 2;
    match kind {
        b'+' => Ok(Some((Reply::Status(text()), after))),
        b'-' => Ok(Some((Reply::Error(text()), after))),
        b':' => Ok(Some((Reply::Int(int(line)?), after))),
        b'$' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bad length".into()))?;
            if len > MAX_BULK {
                return Err(ProtocolError(format!("bulk reply of {len} bytes")));
            }
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            if &buf[after + len..after + len + 2] != b"\r\n" {
                return Err(ProtocolError("bulk reply not ended by CRLF".into()));
            }
            Ok(Some((
                Reply::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            )))
        }
        b'*' => {
            let n = int(line)?;
            if n < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("reply nested too deep".into()));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..n {
                match parse_at(&buf[at..], depth + 1)? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(ProtocolError(format!(
            "unknown reply type byte 0x{other:02x}"
        ))),
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n")
}

fn int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            ProtocolError(format!(
                "`{}` is not an integer",
                String::from_utf8_lossy(line)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&[b"GET", b"k"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn replies_parse_whole_or_ask_for_more() {
        let full = b"*3\r\n:1\r\n$2\r\nok\r\n$-1\r\n";
        let (reply, used) = parse(full).unwrap().unwrap();
        assert_eq!(used, full.len());
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Bulk(Some(b"ok".to_vec())),
                Reply::Bulk(None)
            ]))
        );
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            parse(b"-NOSCRIPT no\r\n").unwrap().unwrap().0,
            Reply::Error("NOSCRIPT no".into())
        );
    }

    #[test]
    fn hostile_replies_are_errors() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":abc\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
    }
}
