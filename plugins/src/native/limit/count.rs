//! APISIX's `limit-count` (priority 1002, access): at most `count` requests per
//! `time_window` seconds per key, fixed or sliding window, counted in this process
//! (`local`) or in Redis shared by every gateway (`redis`). Allowed and refused
//! responses carry `X-RateLimit-Limit`, `-Remaining` and `-Reset`.

use std::sync::Arc;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::count_window::{take, Decision, WindowState, WindowType};
use super::redis_policy::{split_redis, Policy, RedisBackend};
use super::registry::StateRegistry;
use super::table::{CounterTable, DEFAULT_CAPACITY};
use super::with_shared_fields;
use super::{
    default_key, default_rejected_code, now_ms, redis_failed, KeyType, LimitKey, Rejection,
};
use crate::native::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "limit-count",
    priority: 1002,
    phases: &[Phase::Access],
    schema,
    build,
    group: Some(group_of),
    metadata_schema: None,
};

fn schema() -> Value {
    with_shared_fields(json!({
        "type": "object",
        "properties": {
            "count": {"type": "integer", "exclusiveMinimum": 0},
            "time_window": {"type": "integer", "exclusiveMinimum": 0},
            "window_type": {"type": "string", "enum": ["fixed", "sliding"], "default": "fixed"},
            "allow_degradation": {"type": "boolean", "default": false},
            "show_limit_quota_header": {"type": "boolean", "default": true},
            "group": {"type": "string"}
        },
        "required": ["count", "time_window"]
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    count: u64,
    time_window: u64,
    #[serde(default)]
    window_type: WindowType,
    #[serde(default)]
    key_type: KeyType,
    #[serde(default = "default_key")]
    key: String,
    #[serde(default = "default_rejected_code")]
    rejected_code: u16,
    rejected_msg: Option<String>,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    allow_degradation: bool,
    #[serde(default = "default_true")]
    show_limit_quota_header: bool,
    group: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Routes naming the same `group` share one counter (and must configure it alike).
fn group_of(conf: &Value) -> Option<String> {
    conf.get("group")?.as_str().map(str::to_owned)
}

type Windows = CounterTable<WindowState>;

/// Local windows by identity, outliving snapshots.
static TABLES: StateRegistry<Windows> = StateRegistry::new();

enum Backend {
    Local(Arc<Windows>),
    Redis(RedisBackend),
}

struct LimitCount {
    limit: u64,
    window_ms: u64,
    window_type: WindowType,
    key: LimitKey,
    rejection: Rejection,
    backend: Backend,
    allow_degradation: bool,
    quota_headers: bool,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    // serde's own message names the field for unknown fields and wrong types.
    let (rest, redis) = split_redis(input.conf)?;
    let conf: Conf = serde_json::from_value(rest).map_err(|e| e.to_string())?;
    if conf.count == 0 {
        return Err("count: must be greater than 0".into());
    }
    if conf.time_window == 0 {
        return Err("time_window: must be greater than 0".into());
    }
    let identity = match &conf.group {
        Some(g) if g.is_empty() => return Err("group: must not be empty".into()),
        Some(g) => format!("group:{g}"),
        None => input.owner.to_owned(),
    };
    let backend = match RedisBackend::from_conf(conf.policy, &redis, PLUGIN.name, &identity)? {
        Some(r) => Backend::Redis(r),
        None => {
            Backend::Local(TABLES.get_or_create(&identity, || CounterTable::new(DEFAULT_CAPACITY)))
        }
    };
    Ok(Arc::new(LimitCount {
        limit: conf.count,
        window_ms: conf.time_window.saturating_mul(1000),
        window_type: conf.window_type,
        key: LimitKey::parse(conf.key_type, &conf.key)?,
        rejection: Rejection::new(conf.rejected_code, conf.rejected_msg.as_deref())?,
        backend,
        allow_degradation: conf.allow_degradation,
        quota_headers: conf.show_limit_quota_header,
    }))
}

const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

#[async_trait]
impl Plugin for LimitCount {
    async fn access(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        let key = self.key.resolve(req, cx);
        let decision = match &self.backend {
            Backend::Local(table) => {
                let now = now_ms();
                table.update(&key, now, |state| {
                    take(state, self.window_type, self.limit, self.window_ms, now)
                })
            }
            Backend::Redis(redis) => {
                match redis
                    .count(&key, self.window_type, self.limit, self.window_ms)
                    .await
                {
                    Ok(d) => d,
                    Err(e) => return redis_failed(PLUGIN.name, &e, self.allow_degradation),
                }
            }
        };
        if self.quota_headers {
            quota_headers(cx, self.limit, &decision);
        }
        if decision.allowed {
            NativeOutcome::Continue
        } else {
            self.rejection.outcome()
        }
    }
}

fn quota_headers(cx: &mut NativeCtx<'_>, limit: u64, d: &Decision) {
    for (name, value) in [(LIMIT, limit), (REMAINING, d.remaining), (RESET, d.reset_s)] {
        cx.response_headers.push((name, HeaderValue::from(value)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, build_at, TestRequest};

    fn run(p: &Arc<dyn Plugin>, ip: &str) -> (NativeOutcome, Vec<(HeaderName, HeaderValue)>) {
        let mut r = TestRequest::from_ip(ip);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let out = block_on(p.access(&mut req, &mut r.cx()));
        (out, r.response_headers)
    }

    #[test]
    fn counts_per_key_with_quota_headers() {
        let p = build_at(
            &PLUGIN,
            json!({"count": 2, "time_window": 60, "rejected_code": 429, "rejected_msg": "no"}),
            "t1",
        )
        .unwrap();
        let (o, h) = run(&p, "10.0.0.1");
        assert_eq!(o, NativeOutcome::Continue);
        assert_eq!(h[0], (LIMIT, HeaderValue::from(2u64)));
        assert_eq!(h[1], (REMAINING, HeaderValue::from(1u64)));
        assert_eq!(h[2].0, RESET);
        assert_eq!(run(&p, "10.0.0.1").0, NativeOutcome::Continue);
        let (o, h) = run(&p, "10.0.0.1");
        assert_eq!(
            o,
            NativeOutcome::Respond {
                status: 429,
                body: bytes::Bytes::from_static(br#"{"error_msg":"no"}"#)
            }
        );
        assert_eq!(h[1], (REMAINING, HeaderValue::from(0u64)));
        // Another client has its own window.
        assert_eq!(run(&p, "10.0.0.2").0, NativeOutcome::Continue);
    }

    #[test]
    fn a_rebuilt_instance_keeps_the_count_and_a_new_place_does_not() {
        let a = build_at(&PLUGIN, json!({"count": 3, "time_window": 60}), "t2").unwrap();
        run(&a, "10.0.0.1");
        run(&a, "10.0.0.1");
        // The threshold lowered to the usage: the next request is refused.
        let b = build_at(&PLUGIN, json!({"count": 2, "time_window": 60}), "t2").unwrap();
        assert_ne!(run(&b, "10.0.0.1").0, NativeOutcome::Continue);
        drop((a, b));
        let c = build_at(&PLUGIN, json!({"count": 2, "time_window": 60}), "t2").unwrap();
        assert_eq!(
            run(&c, "10.0.0.1").0,
            NativeOutcome::Continue,
            "dropped with its instances"
        );
    }

    #[test]
    fn a_group_shares_one_counter() {
        let conf = json!({"count": 1, "time_window": 60, "group": "g-test"});
        let a = build_at(&PLUGIN, conf.clone(), "routes[id=a].plugins.limit-count").unwrap();
        let b = build_at(&PLUGIN, conf.clone(), "routes[id=b].plugins.limit-count").unwrap();
        assert_eq!(run(&a, "10.0.0.1").0, NativeOutcome::Continue);
        assert_ne!(run(&b, "10.0.0.1").0, NativeOutcome::Continue);
        assert_eq!(group_of(&conf).as_deref(), Some("g-test"));
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let err = |v: Value| build_at(&PLUGIN, v, "t3").err().unwrap();
        assert!(err(json!({"count": 0, "time_window": 1})).starts_with("count"));
        assert!(err(json!({"count": 1, "time_window": 0})).starts_with("time_window"));
        assert!(err(json!({"count": 1})).contains("time_window"));
        assert!(err(json!({"count": 1, "time_window": 1, "bogus": 1})).contains("bogus"));
        assert!(
            err(json!({"count": 1, "time_window": 1, "policy": "redis"})).starts_with("redis_host")
        );
        assert!(
            err(json!({"count": 1, "time_window": 1, "policy": "redis-cluster"}))
                .starts_with("policy")
        );
        assert!(err(json!({"count": 1, "time_window": 1, "key": "nope"})).starts_with("key"));
    }
}
