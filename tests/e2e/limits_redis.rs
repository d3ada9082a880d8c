//! The `redis` policy of the limit plugins (issue 13) against a real `redis-server`
//! started by the test: one count shared by two gateways, failing closed or open when
//! Redis goes away, and recovering when it comes back, without a restart.

use crate::limits::parallel;
use crate::lua_common::*;
use crate::support::prom;
use crate::support::*;

fn redis_count(redis: &RedisServer, extra: Value) -> Value {
    let mut conf = json!({"count": 10, "time_window": 120, "key_type": "constant", "key": "all",
                          "policy": "redis", "redis_host": "127.0.0.1", "redis_port": redis.port,
                          "redis_timeout": 500});
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    json!({"limit-count": conf})
}

#[test]
fn two_gateways_sharing_one_redis_pass_exactly_count() {
    let redis = RedisServer::start();
    let b = Backend::start("b");
    let gws = [Gateway::start_default(), Gateway::start_default()];
    for gw in &gws {
        gw.put(
            "/routes/shared",
            json!({"uri": "/shared", "plugins": redis_count(&redis, json!({})), "upstream": upstream(&b)}),
        );
        gw.sync();
    }
    let handles: Vec<_> = gws
        .iter()
        .map(|gw| parallel(gw, "/shared", 10, 30))
        .collect();
    let ok: usize = handles
        .iter()
        .map(|resps| resps.iter().filter(|r| r.status == 200).count())
        .sum();
    assert_eq!(ok, 10, "exactly count over both gateways");
    assert_eq!(b.hits(), 10);
    let last = gws[1].proxy_get("/shared");
    assert_eq!(last.status, 503);
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));

    // A sliding window on Redis counts the same way.
    gws[0].put(
        "/routes/sliding",
        json!({"uri": "/sliding", "upstream": upstream(&b),
               "plugins": redis_count(&redis, json!({"window_type": "sliding", "count": 5}))}),
    );
    gws[0].sync();
    let ok = (0..8)
        .filter(|_| gws[0].proxy_get("/sliding").status == 200)
        .count();
    assert_eq!(ok, 5);
}

#[test]
fn redis_gone_fails_closed_or_open_and_recovers_without_a_restart() {
    let mut redis = RedisServer::start();
    let b = Backend::start("b");
    let gw = Gateway::start_default();
    gw.put(
        "/routes/closed",
        json!({"uri": "/closed", "plugins": redis_count(&redis, json!({"count": 2})), "upstream": upstream(&b)}),
    );
    gw.put(
        "/routes/open",
        json!({"uri": "/open", "upstream": upstream(&b),
               "plugins": redis_count(&redis, json!({"count": 2, "allow_degradation": true}))}),
    );
    gw.put(
        "/routes/req",
        json!({"uri": "/req", "upstream": upstream(&b),
               "plugins": {"limit-req": {"rate": 1, "burst": 0, "nodelay": true, "key_type": "constant",
                                         "key": "k", "policy": "redis", "redis_host": "127.0.0.1",
                                         "redis_port": redis.port, "rejected_code": 429}}}),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/closed").status, 200);
    let statuses: Vec<u16> = (0..2).map(|_| gw.proxy_get("/req").status).collect();
    assert_eq!(statuses, [200, 429], "limit-req on redis");

    redis.stop();
    let r = gw.proxy_get("/closed");
    assert_eq!(r.status, 503, "fail closed");
    assert_eq!(r.json()["error_msg"], "rate limit backend unavailable");
    for _ in 0..5 {
        assert_eq!(
            gw.proxy_get("/open").status,
            200,
            "allow_degradation lets requests through"
        );
    }
    let samples = prom::parse(&gw.metrics_text()).unwrap();
    assert!(prom::sum(&samples, "portico_limit_redis_errors_total", &[]) >= 6.0);

    // Back (empty): counting resumes on the pooled target, no restart.
    redis.restart();
    let statuses: Vec<u16> = (0..3).map(|_| gw.proxy_get("/closed").status).collect();
    assert_eq!(statuses, [200, 200, 503]);
    assert!(redis
        .command(&["KEYS", "portico:limit-count:*"])
        .contains("closed"));
}
