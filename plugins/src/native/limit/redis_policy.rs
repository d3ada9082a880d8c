//! The `redis` policy: one count shared by every gateway that names the same Redis.
//! Each request is one `EVALSHA` of a script that reads, decides and writes atomically
//! on the server, with the server's clock (`TIME`), so gateways with skewed clocks
//! still agree. Like the local policy, the stored state is what was used (never what
//! remains), so a changed threshold applies to the same usage.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;

use super::count_window::{Decision, WindowType};
use crate::redis::{RedisError, RedisPool, RedisTarget, Reply, Script};

/// APISIX's `policy`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    #[default]
    Local,
    Redis,
    RedisCluster,
}

/// The Redis fields of a limit plugin's configuration (APISIX's names and defaults).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RedisConf {
    pub redis_host: Option<String>,
    #[serde(default = "default_port")]
    pub redis_port: u16,
    pub redis_username: Option<String>,
    pub redis_password: Option<String>,
    #[serde(default)]
    pub redis_database: u32,
    /// Milliseconds for the whole call, connect included.
    #[serde(default = "default_timeout")]
    pub redis_timeout: u64,
    #[serde(default)]
    pub redis_ssl: bool,
}

/// Splits a configuration into its `redis_*` fields and the rest, so each half can
/// refuse unknown fields (serde cannot `flatten` and `deny_unknown_fields` at once).
pub fn split_redis(conf: &serde_json::Value) -> Result<(serde_json::Value, RedisConf), String> {
    let Some(map) = conf.as_object() else {
        return Err("configuration must be an object".into());
    };
    let (redis, rest): (serde_json::Map<_, _>, serde_json::Map<_, _>) = map
        .clone()
        .into_iter()
        .partition(|(k, _)| k.starts_with("redis_"));
    let redis =
        serde_json::from_value(serde_json::Value::Object(redis)).map_err(|e| e.to_string())?;
    Ok((serde_json::Value::Object(rest), redis))
}

fn default_port() -> u16 {
    6379
}
fn default_timeout() -> u64 {
    1000
}

/// A Redis to count in, checked at apply time.
pub struct RedisBackend {
    pool: Arc<RedisPool>,
    timeout: Duration,
    /// `portico:<plugin>:<identity>:`; the request's key follows.
    prefix: String,
}

impl RedisBackend {
    /// The backend `policy` asks for (`None` for `local`); errors name the field.
    pub fn from_conf(
        policy: Policy,
        conf: &RedisConf,
        plugin: &str,
        identity: &str,
    ) -> Result<Option<RedisBackend>, String> {
        match policy {
            Policy::Local => return Ok(None),
            Policy::RedisCluster => {
                return Err(
                    "policy: `redis-cluster` is not built into Portico; use `redis` (one \
                     Redis, or a proxy in front of a cluster) or `local`"
                        .into(),
                )
            }
            Policy::Redis => {}
        }
        let host = match conf.redis_host.as_deref() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err("redis_host: required when policy is `redis`".into()),
        };
        if conf.redis_ssl {
            return Err("redis_ssl: TLS to Redis is not supported yet".into());
        }
        if conf.redis_timeout == 0 {
            return Err("redis_timeout: must be greater than 0".into());
        }
        if conf.redis_username.is_some() && conf.redis_password.is_none() {
            return Err("redis_password: required with redis_username".into());
        }
        let target = RedisTarget {
            host,
            port: conf.redis_port,
            username: conf.redis_username.clone(),
            password: conf.redis_password.clone(),
            database: conf.redis_database,
        };
        Ok(Some(RedisBackend {
            pool: crate::redis::pool(&target),
            timeout: Duration::from_millis(conf.redis_timeout),
            prefix: format!("portico:{plugin}:{identity}:"),
        }))
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(self.prefix.as_bytes());
        k.extend_from_slice(key.as_bytes());
        k
    }

    async fn eval(
        &self,
        script: &Script,
        key: &str,
        args: &[&[u8]],
    ) -> Result<Vec<Reply>, RedisError> {
        let full = self.key(key);
        let reply = self.pool.eval(script, &[&full], args, self.timeout).await;
        match reply {
            Ok(Reply::Array(Some(items))) => Ok(items),
            Ok(other) => Err(RedisError::Protocol(format!("unexpected reply {other:?}"))),
            Err(e) => Err(e),
        }
        .inspect_err(|_| {
            super::REDIS_ERRORS.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// `limit-count`: one request against `key`'s window.
    pub async fn count(
        &self,
        key: &str,
        kind: WindowType,
        limit: u64,
        window_ms: u64,
    ) -> Result<Decision, RedisError> {
        let limit_s = limit.to_string();
        let window_s = window_ms.to_string();
        let script = match kind {
            WindowType::Fixed => fixed_script(),
            WindowType::Sliding => sliding_script(),
        };
        let items = self
            .eval(script, key, &[limit_s.as_bytes(), window_s.as_bytes()])
            .await?;
        let allowed = int_at(&items, 0)? == 1;
        let used = int_at(&items, 1)?.max(0) as u64;
        let reset_ms = int_at(&items, 2)?.max(0) as u64;
        Ok(Decision {
            allowed,
            remaining: limit.saturating_sub(used),
            reset_s: reset_ms.div_ceil(1000).max(1),
        })
    }

    /// `limit-req`: the excess (in requests) after this one, or `None` when rejected.
    pub async fn leaky(&self, key: &str, rate: f64, burst: f64) -> Result<Option<f64>, RedisError> {
        let rate_s = rate.to_string();
        let burst_s = burst.to_string();
        let items = self
            .eval(
                leaky_script(),
                key,
                &[rate_s.as_bytes(), burst_s.as_bytes()],
            )
            .await?;
        let excess = match items.get(1) {
            Some(Reply::Bulk(Some(b))) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
            _ => None,
        }
        .ok_or_else(|| RedisError::Protocol("limit-req script: no excess".into()))?;
        Ok((int_at(&items, 0)? == 1).then_some(excess))
    }
}

fn int_at(items: &[Reply], i: usize) -> Result<i64, RedisError> {
    match items.get(i) {
        Some(Reply::Int(n)) => Ok(*n),
        other => Err(RedisError::Protocol(format!("item {i}: {other:?}"))),
    }
}

/// KEYS[1]: the counter; ARGV: limit, window (ms). Returns {allowed, used, reset ms}.
/// The window starts at the key's first request; a refused request is not counted.
fn fixed_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local used = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if used > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return {0, used - 1, ttl}
end
return {1, used, ttl}
"#,
        )
    })
}

/// KEYS[1]: the counter's prefix (one key per aligned window); ARGV: limit, window
/// (ms). The same estimate as the local sliding window.
fn sliding_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[2])
local limit = tonumber(ARGV[1])
local idx = math.floor(now / w)
local cur_key = KEYS[1] .. ':' .. string.format('%d', idx)
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. string.format('%d', idx - 1)) or '0')
local cur = tonumber(redis.call('GET', cur_key) or '0')
local weight = (w - (now - idx * w)) / w
local reset = (idx + 1) * w - now
if prev * weight + cur + 1 > limit then
  return {0, math.ceil(prev * weight + cur), reset}
end
redis.call('INCR', cur_key)
redis.call('PEXPIRE', cur_key, 2 * w)
return {1, math.ceil(prev * weight + cur + 1), reset}
"#,
        )
    })
}

/// KEYS[1]: the bucket; ARGV: rate (requests/s), burst. Returns {allowed, excess}.
/// `excess = max(excess - rate * elapsed + 1, 0)`, as resty.limit.req; a refused
/// request leaves the bucket as it was.
fn leaky_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| {
        Script::new(
            r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'excess', 'last')
local excess = 0
if v[1] then
  local elapsed = math.abs(now - tonumber(v[2]))
  excess = math.max(tonumber(v[1]) - rate * elapsed / 1000 + 1, 0)
end
if excess > burst then
  return {0, tostring(excess)}
end
redis.call('HSET', KEYS[1], 'excess', tostring(excess), 'last', string.format('%d', now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst + 1) / rate * 1000) + 1000)
return {1, tostring(excess)}
"#,
        )
    })
}
