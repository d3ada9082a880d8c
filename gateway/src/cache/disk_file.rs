//! The file of one disk cache entry: header, primary key, serialized meta and body in
//! one file, with a CRC32 of everything before it at the end. A file that is short, has
//! another magic, inconsistent lengths or a wrong checksum does not decode: the caller
//! treats it as a miss (and removes it), never as a crash.
//!
//! ```text
//! magic "PCE1" | primary hash (16) | has variance (1) | variance (16)
//! | key len u32 | meta0 len u32 | meta1 len u32 | body len u64   (little endian)
//! | key | meta0 | meta1 | body | crc32 u32
//! ```

use bytes::Bytes;
use pingora_cache::key::{CompactCacheKey, HashBinary};

const MAGIC: &[u8; 4] = b"PCE1";
/// Bytes before the key.
pub const HEADER_LEN: usize = 4 + 16 + 1 + 16 + 4 + 4 + 4 + 8;
/// Keys longer than this are refused at write time (and a header claiming more is corrupt).
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// A decoded entry.
pub struct EntryFile {
    pub key: CompactCacheKey,
    pub primary: String,
    pub meta: (Vec<u8>, Vec<u8>),
    pub body: Bytes,
}

/// What the header says, enough to index an entry without reading its body.
pub struct EntryHeader {
    pub key: CompactCacheKey,
    pub primary: String,
}

struct Lengths {
    key: usize,
    meta0: usize,
    meta1: usize,
    body: usize,
}

pub fn encode(
    key: &CompactCacheKey,
    primary: &str,
    meta: &(Vec<u8>, Vec<u8>),
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        HEADER_LEN + primary.len() + meta.0.len() + meta.1.len() + body.len() + 4,
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&key.primary);
    match &key.variance {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v.as_ref());
        }
        None => {
            out.push(0);
            out.extend_from_slice(&[0; 16]);
        }
    }
    for len in [primary.len(), meta.0.len(), meta.1.len()] {
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(primary.as_bytes());
    out.extend_from_slice(&meta.0);
    out.extend_from_slice(&meta.1);
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

fn u64_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    usize::try_from(u64::from_le_bytes(bytes)).ok()
}

fn hash_at(b: &[u8], at: usize) -> Option<HashBinary> {
    b.get(at..at + 16)?.try_into().ok()
}

fn parse_header(b: &[u8]) -> Option<(CompactCacheKey, Lengths)> {
    if b.get(..4)? != MAGIC {
        return None;
    }
    let primary = hash_at(b, 4)?;
    let variance = match b.get(20)? {
        0 => None,
        1 => Some(Box::new(hash_at(b, 21)?)),
        _ => return None,
    };
    let lengths = Lengths {
        key: u32_at(b, 37)?,
        meta0: u32_at(b, 41)?,
        meta1: u32_at(b, 45)?,
        body: u64_at(b, 49)?,
    };
    if lengths.key > MAX_KEY_LEN {
        return None;
    }
    let key = CompactCacheKey {
        primary,
        variance,
        user_tag: "".into(),
    };
    Some((key, lengths))
}

/// The header and key of a file's first bytes (at least `HEADER_LEN + MAX_KEY_LEN`, or
/// the whole file if shorter).
pub fn decode_header(b: &[u8]) -> Option<EntryHeader> {
    let (key, len) = parse_header(b)?;
    let primary = b.get(HEADER_LEN..HEADER_LEN + len.key)?;
    Some(EntryHeader {
        key,
        primary: String::from_utf8(primary.to_vec()).ok()?,
    })
}

/// A whole file; `None` when it is corrupt or truncated.
pub fn decode(b: Bytes) -> Option<EntryFile> {
    let (key, len) = parse_header(&b)?;
    let total = HEADER_LEN
        .checked_add(len.key)?
        .checked_add(len.meta0)?
        .checked_add(len.meta1)?
        .checked_add(len.body)?;
    if b.len() != total.checked_add(4)? {
        return None;
    }
    let stored = u32_at(&b, total)?;
    if crc32fast::hash(&b[..total]) as usize != stored {
        return None;
    }
    let mut at = HEADER_LEN;
    let mut take = |n: usize| {
        let range = at..at + n;
        at += n;
        range
    };
    let primary = String::from_utf8(b[take(len.key)].to_vec()).ok()?;
    let meta0 = b[take(len.meta0)].to_vec();
    let meta1 = b[take(len.meta1)].to_vec();
    let body = b.slice(take(len.body));
    Some(EntryFile {
        key,
        primary,
        meta: (meta0, meta1),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let key = CompactCacheKey {
            primary: [7; 16],
            variance: Some(Box::new([9; 16])),
            user_tag: "".into(),
        };
        encode(
            &key,
            "host/path",
            &(vec![1, 2, 3], vec![4, 5]),
            b"body bytes",
        )
    }

    #[test]
    fn round_trips() {
        let e = decode(Bytes::from(sample())).unwrap();
        assert_eq!(e.primary, "host/path");
        assert_eq!(e.key.primary, [7; 16]);
        assert_eq!(e.key.variance.as_deref(), Some(&[9; 16]));
        assert_eq!(e.meta, (vec![1, 2, 3], vec![4, 5]));
        assert_eq!(e.body, "body bytes");
        assert_eq!(decode_header(&sample()).unwrap().primary, "host/path");
    }

    #[test]
    fn corrupt_or_truncated_files_do_not_decode() {
        let good = sample();
        for cut in [0, 3, HEADER_LEN, good.len() - 1] {
            assert!(
                decode(Bytes::from(good[..cut].to_vec())).is_none(),
                "cut {cut}"
            );
        }
        for i in [0, 25, HEADER_LEN + 2, good.len() - 6, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            assert!(decode(Bytes::from(bad)).is_none(), "flip {i}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(Bytes::from(longer)).is_none());
    }
}
