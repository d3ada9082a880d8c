//! APISIX's `limit-req` (priority 1001, access): a leaky bucket per key, as
//! lua-resty-limit-traffic's `resty.limit.req`. Each request adds one to the key's
//! excess, which drains at `rate` per second:
//! `excess = max(excess - rate * elapsed + 1, 0)` (a key's first request: 0). Over
//! `burst` the request is refused (and not counted); otherwise it waits `excess / rate`
//! seconds (on a timer, never blocking the worker) unless `nodelay`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::redis_policy::{split_redis, Policy, RedisBackend};
use super::registry::StateRegistry;
use super::table::{CounterTable, Expiring, DEFAULT_CAPACITY};
use super::with_shared_fields;
use super::{
    default_key, default_rejected_code, now_ms, redis_failed, KeyType, LimitKey, Rejection,
};
use crate::native::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "limit-req",
    priority: 1001,
    phases: &[Phase::Access],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    with_shared_fields(json!({
        "type": "object",
        "properties": {
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "burst": {"type": "number", "minimum": 0},
            "nodelay": {"type": "boolean", "default": false},
            "allow_degradation": {"type": "boolean", "default": false}
        },
        "required": ["rate", "burst"]
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    rate: f64,
    burst: f64,
    #[serde(default)]
    key_type: KeyType,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_rejected_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    #[serde(default)]
    nodelay: bool,
    #[serde(default)]
    allow_degradation: bool,
    #[serde(default)]
    policy: Policy,
}

/// One key's bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    excess: f64,
    last_ms: u64,
    /// When the bucket is as good as new (drained, and the next request would start at
    /// 0 excess again).
    fresh_at_ms: u64,
}

impl Expiring for Bucket {
    fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.fresh_at_ms
    }
}

/// One request into `state`'s bucket: the excess after it, or `None` when refused.
pub fn leak(state: &mut Option<Bucket>, rate: f64, burst: f64, now_ms: u64) -> Option<f64> {
    let excess = match *state {
        Some(b) => {
            let elapsed_s = now_ms.abs_diff(b.last_ms) as f64 / 1000.0;
            (b.excess - rate * elapsed_s + 1.0).max(0.0)
        }
        None => 0.0,
    };
    if excess > burst {
        return None;
    }
    *state = Some(Bucket {
        excess,
        last_ms: now_ms,
        fresh_at_ms: now_ms + ((excess + 1.0) / rate * 1000.0).ceil() as u64,
    });
    Some(excess)
}

static TABLES: StateRegistry<CounterTable<Bucket>> = StateRegistry::new();

enum Backend {
    Local(Arc<CounterTable<Bucket>>),
    Redis(RedisBackend),
}

struct LimitReq {
    rate: f64,
    burst: f64,
    key: LimitKey,
    rejection: Rejection,
    nodelay: bool,
    allow_degradation: bool,
    backend: Backend,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let (rest, redis) = split_redis(input.conf)?;
    let conf: Conf = serde_json::from_value(rest).map_err(|e| e.to_string())?;
    if !(conf.rate > 0.0 && conf.rate.is_finite()) {
        return Err("rate: must be a number greater than 0".into());
    }
    if !(conf.burst >= 0.0 && conf.burst.is_finite()) {
        return Err("burst: must be a number of at least 0".into());
    }
    let backend = match RedisBackend::from_conf(conf.policy, &redis, PLUGIN.name, input.owner)? {
        Some(r) => Backend::Redis(r),
        None => Backend::Local(
            TABLES.get_or_create(input.owner, || CounterTable::new(DEFAULT_CAPACITY)),
        ),
    };
    Ok(Arc::new(LimitReq {
        rate: conf.rate,
        burst: conf.burst,
        key: LimitKey::parse(conf.key_type, &conf.key)?,
        rejection: Rejection::new(conf.rejected_code, conf.rejected_msg.as_deref())?,
        nodelay: conf.nodelay,
        allow_degradation: conf.allow_degradation,
        backend,
    }))
}

#[async_trait]
impl Plugin for LimitReq {
    async fn access(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let key = self.key.resolve(req, cx);
        let excess = match &self.backend {
            Backend::Local(table) => {
                let now = now_ms();
                table.update(&key, now, |state| leak(state, self.rate, self.burst, now))
            }
            Backend::Redis(redis) => match redis.leaky(&key, self.rate, self.burst).await {
                Ok(e) => e,
                Err(e) => return redis_failed(PLUGIN.name, &e, self.allow_degradation),
            },
        };
        let Some(excess) = excess else {
            return self.rejection.outcome();
        };
        if !self.nodelay && excess > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(excess / self.rate)).await;
        }
        NativeOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, build_at, TestRequest};

    #[test]
    fn the_bucket_drains_at_rate_and_refuses_over_burst() {
        let mut s = None;
        // rate 2/s, burst 1: the first passes at 0, the second at 1, the third is over.
        assert_eq!(leak(&mut s, 2.0, 1.0, 0), Some(0.0));
        assert_eq!(leak(&mut s, 2.0, 1.0, 0), Some(1.0));
        assert_eq!(leak(&mut s, 2.0, 1.0, 0), None);
        // 500 ms later one request has drained.
        assert_eq!(leak(&mut s, 2.0, 1.0, 500), Some(1.0));
        // Long after, the bucket is as good as new and the table may drop it.
        assert!(s.unwrap().expired(5_000));
    }

    #[test]
    fn a_request_in_the_burst_waits_and_nodelay_does_not() {
        let run = |conf: Value, owner: &str| {
            let p = build_at(&PLUGIN, conf, owner).unwrap();
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            block_on(async {
                let mut r = TestRequest::from_ip("10.0.0.1");
                assert_eq!(
                    p.access(&mut req, &mut r.cx()).await,
                    NativeOutcome::Continue
                );
                let started = std::time::Instant::now();
                let mut r = TestRequest::from_ip("10.0.0.1");
                assert_eq!(
                    p.access(&mut req, &mut r.cx()).await,
                    NativeOutcome::Continue
                );
                started.elapsed()
            })
        };
        let waited = run(json!({"rate": 10, "burst": 5}), "req-delay");
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        let waited = run(
            json!({"rate": 10, "burst": 5, "nodelay": true}),
            "req-nodelay",
        );
        assert!(waited < Duration::from_millis(50), "{waited:?}");
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let err = |v: Value| build_at(&PLUGIN, v, "req-bad").err().unwrap();
        assert!(err(json!({"rate": 0, "burst": 1})).starts_with("rate"));
        assert!(err(json!({"rate": 1, "burst": -1})).starts_with("burst"));
        assert!(err(json!({"rate": 1})).contains("burst"));
    }
}
