//! APISIX's three limit plugins as native plugins: `limit-count` (requests per
//! window), `limit-req` (a leaky bucket) and `limit-conn` (concurrent requests).
//!
//! What they share lives here: the key a request is counted under, the rejection
//! answer, the clock. Their counters live in [`registry`]s outside the snapshot, so a
//! threshold changed through the admin API applies to the next request while the
//! counts carry on (APISIX puts the configuration's version in the counter key, which
//! resets every counter on any change).

mod conn;
mod count;
mod count_window;
mod redis_policy;
mod registry;
mod req;
pub(crate) mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use bytes::Bytes;
use pingora_http::RequestHeader;
use serde::Deserialize;

use super::{NativeCtx, NativeOutcome};
use crate::vars::{Template, Var};

pub use conn::PLUGIN as LIMIT_CONN;
pub use count::PLUGIN as LIMIT_COUNT;
pub use req::PLUGIN as LIMIT_REQ;

/// Counts the limit plugins export as metrics (over all instances).
pub struct LimitStats {
    /// Keys evicted from a full table while their window was still open.
    pub evictions: u64,
    /// Redis calls that failed (connect, timeout, error reply).
    pub redis_errors: u64,
    /// Requests holding a `limit-conn` slot now.
    pub conn_in_flight: i64,
}

pub fn stats() -> LimitStats {
    LimitStats {
        evictions: table::EVICTIONS.load(Ordering::Relaxed),
        redis_errors: REDIS_ERRORS.load(Ordering::Relaxed),
        conn_in_flight: conn::IN_FLIGHT.load(Ordering::Relaxed),
    }
}

static REDIS_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Milliseconds on a monotonic clock (windows must not jump with the wall clock).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// APISIX's `key_type`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    #[default]
    Var,
    VarCombination,
    Constant,
}

/// What a request is counted under, parsed at apply time.
#[derive(Debug, Clone)]
enum LimitKey {
    Var(Var),
    Combination(Template),
    Constant(String),
}

impl LimitKey {
    /// `key` read as `key_type` says; the error names the field.
    fn parse(key_type: KeyType, key: &str) -> Result<LimitKey, String> {
        match key_type {
            KeyType::Var => Var::parse(key.trim_start_matches('$'))
                .map(LimitKey::Var)
                .map_err(|e| format!("key: {e}")),
            KeyType::VarCombination => Template::parse(key)
                .map(LimitKey::Combination)
                .map_err(|e| format!("key: {e}")),
            KeyType::Constant => Ok(LimitKey::Constant(key.to_owned())),
        }
    }

    /// The key of this request. An empty value falls back to the client address, as in
    /// APISIX (so a missing header does not put every client in one bucket).
    fn resolve(&self, req: &RequestHeader, cx: &NativeCtx<'_>) -> String {
        let view = cx.view(req);
        let value = match self {
            LimitKey::Var(v) => v.resolve(&view).map(|v| v.into_owned()),
            LimitKey::Combination(t) => t.render(&view),
            LimitKey::Constant(c) => Some(c.clone()),
        };
        match value {
            Some(v) if !v.is_empty() => v,
            _ => cx.client_ip().map(|ip| ip.to_string()).unwrap_or_default(),
        }
    }
}

/// How a limit answers a request it refuses.
#[derive(Debug, Clone)]
struct Rejection {
    status: u16,
    /// `{"error_msg": rejected_msg}`, or empty.
    body: Bytes,
}

impl Rejection {
    fn new(status: u16, msg: Option<&str>) -> Result<Rejection, String> {
        if !(200..=599).contains(&status) {
            return Err(format!("rejected_code: {status} is not in 200..=599"));
        }
        let body = match msg {
            Some("") => return Err("rejected_msg: must not be empty".into()),
            Some(m) => Bytes::from(serde_json::json!({ "error_msg": m }).to_string()),
            None => Bytes::new(),
        };
        Ok(Rejection { status, body })
    }

    fn outcome(&self) -> NativeOutcome {
        NativeOutcome::Respond {
            status: self.status,
            body: self.body.clone(),
        }
    }
}

/// The answer when a shared counter's backend (Redis) cannot be reached: fail closed
/// with 503, or let the request through with `allow_degradation`. The failure is
/// counted per call (`REDIS_ERRORS`) but logged at most once a second, so a Redis that
/// is down does not turn every request into a log line.
fn redis_failed(
    plugin: &str,
    err: &crate::redis::RedisError,
    allow_degradation: bool,
) -> NativeOutcome {
    static LAST_LOG_S: AtomicU64 = AtomicU64::new(u64::MAX);
    let now_s = now_ms() / 1000;
    let last = LAST_LOG_S.swap(now_s, Ordering::Relaxed);
    if last != now_s {
        tracing::warn!("{plugin}: {err}");
    }
    if allow_degradation {
        NativeOutcome::Continue
    } else {
        NativeOutcome::Respond {
            status: 503,
            body: Bytes::from_static(br#"{"error_msg":"rate limit backend unavailable"}"#),
        }
    }
}

/// Adds the schema properties `limit-count` and `limit-req` share (key, refusal,
/// policy and the Redis fields) to `schema`.
fn with_shared_fields(mut schema: serde_json::Value) -> serde_json::Value {
    let shared = serde_json::json!({
        "key_type": {"type": "string", "enum": ["var", "var_combination", "constant"], "default": "var"},
        "key": {"type": "string", "default": "remote_addr"},
        "rejected_code": {"type": "integer", "minimum": 200, "maximum": 599, "default": 503},
        "rejected_msg": {"type": "string", "minLength": 1},
        "policy": {"type": "string", "enum": ["local", "redis", "redis-cluster"], "default": "local"},
        "redis_host": {"type": "string"},
        "redis_port": {"type": "integer", "minimum": 1, "default": 6379},
        "redis_username": {"type": "string"},
        "redis_password": {"type": "string"},
        "redis_database": {"type": "integer", "minimum": 0, "default": 0},
        "redis_timeout": {"type": "integer", "minimum": 1, "default": 1000},
        "redis_ssl": {"type": "boolean", "default": false}
    });
    if let (Some(props), Some(shared)) = (
        schema.get_mut("properties").and_then(|p| p.as_object_mut()),
        shared.as_object(),
    ) {
        for (k, v) in shared {
            props.insert(k.clone(), v.clone());
        }
    }
    schema
}

fn default_key() -> String {
    "remote_addr".to_string()
}
fn default_rejected_code() -> u16 {
    503
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::TestRequest;

    #[test]
    fn keys_resolve_and_fall_back_to_the_client_address() {
        let mut r = TestRequest::from_ip("10.1.2.3");
        let mut req = RequestHeader::build("GET", b"/p?user=ann", None).unwrap();
        req.insert_header("X-Team", "blue").unwrap();
        let cx = r.cx();
        let key = |t, k| LimitKey::parse(t, k).unwrap().resolve(&req, &cx);
        assert_eq!(key(KeyType::Var, "remote_addr"), "10.1.2.3");
        assert_eq!(key(KeyType::Var, "arg_user"), "ann");
        assert_eq!(key(KeyType::Var, "http_x_missing"), "10.1.2.3");
        assert_eq!(
            key(KeyType::VarCombination, "$http_x_team:$arg_user"),
            "blue:ann"
        );
        assert_eq!(key(KeyType::VarCombination, "$http_x_none"), "10.1.2.3");
        assert_eq!(key(KeyType::Constant, "all"), "all");
    }

    #[test]
    fn both_schemas_carry_the_shared_fields() {
        for plugin in [LIMIT_COUNT, LIMIT_REQ] {
            let schema = (plugin.schema)();
            for field in [
                "key",
                "rejected_code",
                "policy",
                "redis_host",
                "redis_timeout",
            ] {
                assert!(
                    schema["properties"][field].is_object(),
                    "{}: {field}",
                    plugin.name
                );
            }
        }
    }

    #[test]
    fn bad_keys_and_codes_name_the_field() {
        assert!(LimitKey::parse(KeyType::Var, "nope")
            .unwrap_err()
            .starts_with("key:"));
        assert!(Rejection::new(99, None)
            .unwrap_err()
            .starts_with("rejected_code"));
        let r = Rejection::new(429, Some("slow down")).unwrap();
        assert_eq!(&r.body[..], br#"{"error_msg":"slow down"}"#);
    }
}
