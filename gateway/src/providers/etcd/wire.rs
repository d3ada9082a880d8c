//! etcd v3's JSON gateway (grpc-gateway) messages: what `/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/deleterange`, `/v3/watch` and `/v3/auth/authenticate` take and answer.
//!
//! Keys and values are base64; 64-bit integers arrive as JSON strings (proto3's JSON
//! mapping) and fields with their default value (`0`, `false`, `PUT`) are left out, so
//! every field here is optional.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, String> {
    B64.decode(text).map_err(|e| format!("bad base64: {e}"))
}

/// The end of the key range that holds every key starting with `prefix`: `prefix` with
/// its last byte incremented (etcd's `WithPrefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the key space.
    vec![0]
}

/// An int64/uint64 that proto3 JSON writes as a string (or a number).
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        S(String),
        N(u64),
        I(i64),
    }
    match Num::deserialize(d)? {
        // cluster_id is a uint64; revisions are int64 (never negative in practice).
        Num::S(s) => s
            .parse::<u64>()
            .or_else(|_| s.parse::<i64>().map(|v| v.max(0) as u64))
            .map_err(serde::de::Error::custom),
        Num::N(n) => Ok(n),
        Num::I(i) => Ok(i.max(0) as u64),
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Header {
    #[serde(default, deserialize_with = "int")]
    pub cluster_id: u64,
    #[serde(default, deserialize_with = "int")]
    pub revision: u64,
}

/// One key-value as etcd stores it, keys and values decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

#[derive(Deserialize)]
struct RawKv {
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    create_revision: u64,
    #[serde(default, deserialize_with = "int")]
    mod_revision: u64,
}

impl RawKv {
    fn decode(self) -> Result<Kv, String> {
        Ok(Kv {
            key: unb64(&self.key)?,
            value: unb64(&self.value)?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }
}

/// A `/v3/kv/range` answer.
#[derive(Debug, Default)]
pub struct RangeReply {
    pub header: Header,
    pub kvs: Vec<Kv>,
}

pub fn range_request(prefix: &[u8], count_only: bool) -> Value {
    let mut req = json!({ "key": b64(prefix), "range_end": b64(&prefix_end(prefix)) });
    if count_only {
        req["count_only"] = Value::Bool(true);
    }
    req
}

pub fn parse_range(body: &[u8]) -> Result<RangeReply, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        header: Header,
        #[serde(default)]
        kvs: Vec<RawKv>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("bad range reply: {e}"))?;
    Ok(RangeReply {
        header: raw.header,
        kvs: raw
            .kvs
            .into_iter()
            .map(RawKv::decode)
            .collect::<Result<_, _>>()?,
    })
}

pub use crate::store::Expect;

fn compare(key: &[u8], expect: Expect) -> Vec<Value> {
    match expect {
        Expect::Any => Vec::new(),
        Expect::Absent => vec![json!({
            "key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
        })],
        Expect::ModRevision(rev) => vec![json!({
            "key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()
        })],
    }
}

/// A `/v3/kv/txn` that puts `value` under `key` when `expect` holds.
pub fn put_txn(key: &[u8], value: &[u8], expect: Expect) -> Value {
    json!({
        "compare": compare(key, expect),
        "success": [{ "request_put": { "key": b64(key), "value": b64(value) } }],
    })
}

/// A `/v3/kv/txn` that deletes `key` when `expect` holds.
pub fn delete_txn(key: &[u8], expect: Expect) -> Value {
    json!({
        "compare": compare(key, expect),
        "success": [{ "request_delete_range": { "key": b64(key) } }],
    })
}

/// A `/v3/kv/txn` of unconditional operations (`request_put`/`request_delete_range`).
pub fn ops_txn(ops: Vec<Value>) -> Value {
    json!({ "success": ops })
}

pub fn put_op(key: &[u8], value: &[u8]) -> Value {
    json!({ "request_put": { "key": b64(key), "value": b64(value) } })
}

pub fn delete_op(key: &[u8]) -> Value {
    json!({ "request_delete_range": { "key": b64(key) } })
}

/// A `/v3/kv/txn` answer: whether the comparison held, at which revision.
#[derive(Debug, Deserialize)]
pub struct TxnReply {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
}

pub fn parse_txn(body: &[u8]) -> Result<TxnReply, String> {
    serde_json::from_slice(body).map_err(|e| format!("bad txn reply: {e}"))
}

/// A `/v3/kv/put` (or any reply that has a header) answer.
pub fn parse_header(body: &[u8]) -> Result<Header, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        header: Header,
    }
    serde_json::from_slice::<Raw>(body)
        .map(|r| r.header)
        .map_err(|e| format!("bad reply: {e}"))
}

pub fn put_request(key: &[u8], value: &[u8]) -> Value {
    json!({ "key": b64(key), "value": b64(value) })
}

#[derive(Serialize)]
pub struct AuthRequest<'a> {
    pub name: &'a str,
    pub password: &'a str,
}

pub fn parse_token(body: &[u8]) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Raw {
        token: String,
    }
    serde_json::from_slice::<Raw>(body)
        .map(|r| r.token)
        .map_err(|e| format!("bad authenticate reply: {e}"))
}

/// The message of an error reply (`{"error": "...", "message": "...", "code": N}`).
pub fn error_message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = v
        .get("message")
        .or_else(|| v.get("error"))
        .or_else(|| v.pointer("/error/message"))
        .and_then(Value::as_str);
    match text {
        Some(t) => t.to_string(),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// `/v3/watch`'s first message: watch every key under `prefix` from `start_revision`.
pub fn watch_request(prefix: &[u8], start_revision: u64) -> Value {
    json!({ "create_request": {
        "key": b64(prefix),
        "range_end": b64(&prefix_end(prefix)),
        "start_revision": start_revision.to_string(),
    }})
}

/// One event of a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    /// The key, at the revision of its deletion.
    Delete {
        key: Vec<u8>,
        revision: u64,
    },
}

/// One message of the watch stream.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch exists (first message).
    Created {
        header: Header,
    },
    Events {
        header: Header,
        events: Vec<Event>,
    },
    /// The start revision was compacted (or the watch ended): read everything again.
    Canceled {
        compact_revision: u64,
        reason: String,
    },
    /// Nothing for us (a progress notification).
    Progress {
        header: Header,
    },
}

/// Parses one message of the watch stream (`{"result": {...}}` or `{"error": {...}}`).
pub fn parse_watch_message(line: &[u8]) -> Result<WatchMessage, String> {
    #[derive(Deserialize)]
    struct RawEvent {
        #[serde(default, rename = "type")]
        kind: Option<String>,
        kv: RawKv,
    }
    #[derive(Deserialize)]
    struct Result {
        #[serde(default)]
        header: Header,
        #[serde(default)]
        created: bool,
        #[serde(default)]
        canceled: bool,
        #[serde(default, deserialize_with = "int")]
        compact_revision: u64,
        #[serde(default)]
        cancel_reason: String,
        #[serde(default)]
        events: Vec<RawEvent>,
    }
    #[derive(Deserialize)]
    struct Envelope {
        result: Option<Result>,
        error: Option<Value>,
    }
    let env: Envelope =
        serde_json::from_slice(line).map_err(|e| format!("bad watch message: {e}"))?;
    if let Some(err) = env.error {
        return Err(format!(
            "watch failed: {}",
            err.get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
        ));
    }
    let r = env.result.ok_or("watch message without a result")?;
    if r.canceled || r.compact_revision > 0 {
        return Ok(WatchMessage::Canceled {
            compact_revision: r.compact_revision,
            reason: r.cancel_reason,
        });
    }
    if r.created {
        return Ok(WatchMessage::Created { header: r.header });
    }
    if r.events.is_empty() {
        return Ok(WatchMessage::Progress { header: r.header });
    }
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let kv = e.kv.decode()?;
            Ok(match e.kind.as_deref() {
                Some("DELETE") => Event::Delete {
                    key: kv.key,
                    revision: kv.mod_revision,
                },
                _ => Event::Put(kv),
            })
        })
        .collect::<std::result::Result<_, String>>()?;
    Ok(WatchMessage::Events {
        header: r.header,
        events,
    })
}

/// Splits complete newline-ended JSON messages off the front of `buf` (the watch stream
/// is one JSON object per line; a chunk can end anywhere).
pub fn take_lines(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buf.drain(..=pos).collect();
        let trimmed = line.trim_ascii();
        if !trimmed.is_empty() {
            out.push(trimmed.to_vec());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/apisix/"), b"/apisix0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn range_replies_decode_string_integers_and_base64() {
        let body = br#"{"header":{"cluster_id":"14841639068965178418","member_id":"1","revision":"9","raft_term":"2"},
            "kvs":[{"key":"L2FwaXNpeC9yb3V0ZXMvMQ==","create_revision":"5","mod_revision":"7","version":"2","value":"eyJ1cmkiOiIvYSJ9"}],"count":"1"}"#;
        let r = parse_range(body).unwrap();
        assert_eq!(r.header.revision, 9);
        assert_eq!(r.header.cluster_id, 14841639068965178418);
        assert_eq!(r.kvs[0].key, b"/apisix/routes/1");
        assert_eq!(r.kvs[0].value, br#"{"uri":"/a"}"#);
        assert_eq!((r.kvs[0].create_revision, r.kvs[0].mod_revision), (5, 7));
        // An empty range has no `kvs` at all.
        assert!(parse_range(br#"{"header":{"revision":"3"}}"#)
            .unwrap()
            .kvs
            .is_empty());
    }

    #[test]
    fn txn_compares_by_expectation() {
        let t = put_txn(b"k", b"v", Expect::ModRevision(7));
        assert_eq!(t["compare"][0]["target"], "MOD");
        assert_eq!(t["compare"][0]["mod_revision"], "7");
        assert_eq!(t["success"][0]["request_put"]["value"], b64(b"v"));
        let t = put_txn(b"k", b"v", Expect::Absent);
        assert_eq!(t["compare"][0]["target"], "CREATE");
        assert!(put_txn(b"k", b"v", Expect::Any)["compare"]
            .as_array()
            .unwrap()
            .is_empty());
        // `succeeded: false` is left out of the reply.
        assert!(
            !parse_txn(br#"{"header":{"revision":"4"}}"#)
                .unwrap()
                .succeeded
        );
        assert!(
            parse_txn(br#"{"header":{"revision":"4"},"succeeded":true}"#)
                .unwrap()
                .succeeded
        );
    }

    #[test]
    fn watch_messages() {
        let created = br#"{"result":{"header":{"revision":"3"},"created":true}}"#;
        assert!(matches!(
            parse_watch_message(created).unwrap(),
            WatchMessage::Created { .. }
        ));
        let events = br#"{"result":{"header":{"revision":"5"},"events":[
            {"kv":{"key":"YQ==","create_revision":"4","mod_revision":"4","version":"1","value":"Yg=="}},
            {"type":"DELETE","kv":{"key":"Yw==","mod_revision":"5"}}]}}"#;
        match parse_watch_message(events).unwrap() {
            WatchMessage::Events { header, events } => {
                assert_eq!(header.revision, 5);
                assert_eq!(
                    events,
                    vec![
                        Event::Put(Kv {
                            key: b"a".to_vec(),
                            value: b"b".to_vec(),
                            create_revision: 4,
                            mod_revision: 4
                        }),
                        Event::Delete {
                            key: b"c".to_vec(),
                            revision: 5
                        }
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        let compacted =
            br#"{"result":{"header":{"revision":"50"},"canceled":true,"compact_revision":"40"}}"#;
        assert_eq!(
            parse_watch_message(compacted).unwrap(),
            WatchMessage::Canceled {
                compact_revision: 40,
                reason: String::new()
            }
        );
        assert!(parse_watch_message(br#"{"error":{"grpc_code":14,"message":"x"}}"#).is_err());
    }

    #[test]
    fn lines_split_across_chunks() {
        let mut buf = b"{\"a\":1}\n{\"b\"".to_vec();
        assert_eq!(take_lines(&mut buf), vec![b"{\"a\":1}".to_vec()]);
        buf.extend_from_slice(b":2}\n\n");
        assert_eq!(take_lines(&mut buf), vec![b"{\"b\":2}".to_vec()]);
        assert!(buf.is_empty());
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":"etcdserver: invalid auth token","code":16,"message":"etcdserver: invalid auth token"}"#),
            "etcdserver: invalid auth token"
        );
    }
}
