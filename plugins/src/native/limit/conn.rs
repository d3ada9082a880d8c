//! APISIX's `limit-conn` (priority 1003, access): at most `conn` requests of one key
//! in flight, plus `burst` more that are delayed. The slot a request takes is a guard
//! kept in the request's plugin state, so it is given back when the request ends,
//! however it ends (done, client gone, upstream error, a Lua error): nothing depends on
//! the log phase running.
//!
//! Delay, as `resty.limit.conn`: a request over `conn` waits
//! `floor((in_flight - 1) / conn) * default_conn_delay` seconds, or exactly
//! `default_conn_delay` with `only_use_default_delay`. APISIX's adjustment of the delay
//! by measured request latency (`leaving(key, latency)`) is not done.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::redis_policy::Policy;
use super::registry::StateRegistry;
use super::{default_key, default_rejected_code, KeyType, LimitKey, Rejection};
use crate::native::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "limit-conn",
    priority: 1003,
    phases: &[Phase::Access],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

/// Requests holding a `limit-conn` slot, over all instances (a metric, and how a test
/// proves no slot leaks).
pub static IN_FLIGHT: AtomicI64 = AtomicI64::new(0);

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "conn": {"type": "integer", "exclusiveMinimum": 0},
            "burst": {"type": "integer", "minimum": 0},
            "default_conn_delay": {"type": "number", "exclusiveMinimum": 0},
            "only_use_default_delay": {"type": "boolean", "default": false},
            "key_type": {"type": "string", "enum": ["var", "var_combination", "constant"], "default": "var"},
            "key": {"type": "string", "default": "remote_addr"},
            "rejected_code": {"type": "integer", "minimum": 200, "maximum": 599, "default": 503},
            "rejected_msg": {"type": "string", "minLength": 1},
            "allow_degradation": {"type": "boolean", "default": false},
            "policy": {"type": "string", "enum": ["local"], "default": "local"}
        },
        "required": ["conn", "burst", "default_conn_delay"]
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    conn: u64,
    burst: u64,
    default_conn_delay: f64,
    #[serde(default)]
    only_use_default_delay: bool,
    #[serde(default)]
    key_type: KeyType,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_rejected_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    /// Accepted for APISIX compatibility: counting in-process cannot fail.
    #[serde(default)]
    #[allow(dead_code)]
    allow_degradation: bool,
    #[serde(default)]
    policy: Policy,
}

const SHARDS: usize = 16;

/// In-flight counts by key; a key is removed when its count returns to 0, so the
/// table is as large as the set of keys with requests in flight.
pub struct ConnTable {
    shards: Box<[Mutex<HashMap<String, u64>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl ConnTable {
    fn new() -> ConnTable {
        ConnTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<String, u64>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Takes a slot unless `limit` are taken: the count including this request.
    fn acquire(&self, key: &str, limit: u64) -> Option<u64> {
        let mut map = self.shard(key).lock();
        let n = map.get(key).copied().unwrap_or(0);
        if n >= limit {
            return None;
        }
        map.insert(key.to_owned(), n + 1);
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Some(n + 1)
    }

    fn release(&self, key: &str) {
        let mut map = self.shard(key).lock();
        if let Some(n) = map.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                map.remove(key);
            }
            IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub fn in_flight(&self, key: &str) -> u64 {
        self.shard(key).lock().get(key).copied().unwrap_or(0)
    }
}

/// A slot held by a request; dropping it gives the slot back.
struct Slot {
    table: Arc<ConnTable>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.release(&self.key);
    }
}

/// The slots a request holds (one per `limit-conn` in its chain), kept in its plugin
/// state. Extensions hold one value per type and want `Clone`, hence the shared list.
#[derive(Clone, Default)]
struct Slots(Arc<Mutex<Vec<Slot>>>);

static TABLES: StateRegistry<ConnTable> = StateRegistry::new();

struct LimitConn {
    conn: u64,
    burst: u64,
    delay: Duration,
    only_default_delay: bool,
    key: LimitKey,
    rejection: Rejection,
    table: Arc<ConnTable>,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    if conf.conn == 0 {
        return Err("conn: must be greater than 0".into());
    }
    if !(conf.default_conn_delay > 0.0 && conf.default_conn_delay.is_finite()) {
        return Err("default_conn_delay: must be a number greater than 0".into());
    }
    if conf.policy != Policy::Local {
        return Err("policy: limit-conn counts in this process only (`local`)".into());
    }
    Ok(Arc::new(LimitConn {
        conn: conf.conn,
        burst: conf.burst,
        delay: Duration::from_secs_f64(conf.default_conn_delay),
        only_default_delay: conf.only_use_default_delay,
        key: LimitKey::parse(conf.key_type, &conf.key)?,
        rejection: Rejection::new(conf.rejected_code, conf.rejected_msg.as_deref())?,
        table: TABLES.get_or_create(input.owner, ConnTable::new),
    }))
}

#[async_trait]
impl Plugin for LimitConn {
    async fn access(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let key = self.key.resolve(req, cx);
        let Some(n) = self.table.acquire(&key, self.conn + self.burst) else {
            return self.rejection.outcome();
        };
        let slot = Slot {
            table: Arc::clone(&self.table),
            key,
        };
        cx.state
            .get_or_insert_default::<Slots>()
            .0
            .lock()
            .push(slot);
        if n > self.conn {
            let wait = if self.only_default_delay {
                self.delay
            } else {
                self.delay * ((n - 1) / self.conn) as u32
            };
            tokio::time::sleep(wait).await;
        }
        NativeOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, build_at, TestRequest};

    #[test]
    fn slots_are_taken_up_to_conn_plus_burst_and_given_back_on_drop() {
        let p = build_at(
            &PLUGIN,
            json!({"conn": 1, "burst": 1, "default_conn_delay": 0.01, "rejected_code": 429}),
            "conn-slots",
        )
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut a = TestRequest::from_ip("10.0.0.1");
        let mut b = TestRequest::from_ip("10.0.0.1");
        let mut c = TestRequest::from_ip("10.0.0.1");
        block_on(async {
            assert_eq!(
                p.access(&mut req, &mut a.cx()).await,
                NativeOutcome::Continue
            );
            assert_eq!(
                p.access(&mut req, &mut b.cx()).await,
                NativeOutcome::Continue
            );
            assert!(matches!(
                p.access(&mut req, &mut c.cx()).await,
                NativeOutcome::Respond { status: 429, .. }
            ));
        });
        let table = TABLES.get_or_create("conn-slots", ConnTable::new);
        assert_eq!(table.in_flight("10.0.0.1"), 2);
        drop(a);
        drop(b);
        assert_eq!(table.in_flight("10.0.0.1"), 0);
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let err = |v: Value| build_at(&PLUGIN, v, "conn-bad").err().unwrap();
        assert!(err(json!({"conn": 0, "burst": 0, "default_conn_delay": 1})).starts_with("conn"));
        assert!(err(json!({"conn": 1, "burst": 0, "default_conn_delay": 0}))
            .starts_with("default_conn_delay"));
        assert!(
            err(json!({"conn": 1, "burst": 0, "default_conn_delay": 1, "policy": "redis"}))
                .starts_with("policy")
        );
    }
}
