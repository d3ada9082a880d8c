//! Rate limits (issue 13): `limit-count`, `limit-req` and `limit-conn` on the local
//! policy, against the real gateway and real backends.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lua_common::*;
use crate::support::prom;
use crate::support::*;

/// Sends `total` requests from `threads` threads at once (fresh connections); returns
/// every response.
pub fn parallel(gw: &Gateway, path: &str, threads: usize, total: usize) -> Vec<Response> {
    let addr = gw.proxy_addr();
    let start = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let start = Arc::clone(&start);
            let path = path.to_string();
            std::thread::spawn(move || {
                start.wait();
                (0..total)
                    .filter(|i| i % threads == t)
                    .map(|_| http::send(addr, &Request::get(&path)).expect("proxy"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect()
}

use crate::support::http;

fn statuses(resps: &[Response]) -> (usize, usize) {
    let ok = resps.iter().filter(|r| r.status == 200).count();
    (ok, resps.len() - ok)
}

fn limited_route(gw: &Gateway, id: &str, b: &Backend, plugins: Value) {
    gw.put(
        &format!("/routes/{id}"),
        json!({"uri": format!("/{id}"), "plugins": plugins, "upstream": upstream(b)}),
    );
}

#[test]
fn limit_count_passes_exactly_count_under_concurrency_with_headers() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    limited_route(
        &gw,
        "c",
        &b,
        json!({"limit-count": {"count": 100, "time_window": 60, "rejected_code": 429,
                               "rejected_msg": "too many requests"}}),
    );
    gw.sync();
    let resps = parallel(&gw, "/c", 30, 300);
    let (ok, refused) = statuses(&resps);
    assert_eq!((ok, refused), (100, 200), "exactly count pass");
    for r in &resps {
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
        let reset: u64 = r.header("x-ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
        if r.status == 429 {
            assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
            assert_eq!(r.json(), json!({"error_msg": "too many requests"}));
        }
    }
    let mut remaining: Vec<u64> = resps
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("x-ratelimit-remaining").unwrap().parse().unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..100).collect::<Vec<_>>(),
        "each pass sees its own count"
    );
    assert_eq!(b.hits(), 100);

    let samples = prom::parse(&gw.metrics_text()).unwrap();
    assert_eq!(
        prom::sum(
            &samples,
            "portico_plugin_rejected_total",
            &[("plugin", "limit-count"), ("route", "c")]
        ),
        200.0
    );
}

#[test]
fn a_threshold_changed_mid_window_keeps_the_count() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let conf = |count: u64| json!({"limit-count": {"count": count, "time_window": 300}});
    limited_route(&gw, "t", &b, conf(10));
    gw.sync();
    let pass = |n: usize| (0..n).filter(|_| gw.proxy_get("/t").status == 200).count();
    assert_eq!(pass(6), 6);
    // Raised: the six used stay used.
    limited_route(&gw, "t", &b, conf(8));
    assert_eq!(pass(5), 2, "8 - 6 more pass");
    // Lowered under the usage: refused at once.
    limited_route(&gw, "t", &b, conf(5));
    assert_eq!(pass(3), 0);
    // Raised again: exactly the difference.
    limited_route(&gw, "t", &b, conf(12));
    let r = gw.proxy_get("/t");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("3"));
    assert_eq!(pass(5), 3);

    // Deleting the route drops its counters: the same route made again starts fresh.
    let (status, _, _) = gw.admin("DELETE", "/routes/t", None);
    assert_eq!(status, 200);
    limited_route(&gw, "t", &b, conf(12));
    assert_eq!(pass(12), 12);
}

#[test]
fn a_group_shares_one_counter_and_must_be_configured_alike() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let conf = json!({"limit-count": {"count": 4, "time_window": 60, "group": "shared"}});
    limited_route(&gw, "g1", &b, conf.clone());
    limited_route(&gw, "g2", &b, conf);
    gw.sync();
    let ok = (0..3).filter(|_| gw.proxy_get("/g1").status == 200).count()
        + (0..3).filter(|_| gw.proxy_get("/g2").status == 200).count();
    assert_eq!(ok, 4, "one counter for the group");

    let (status, _, body) = gw.admin(
        "PUT",
        "/routes/g3",
        Some(json!({"uri": "/g3", "upstream": upstream(&b),
                    "plugins": {"limit-count": {"count": 5, "time_window": 60, "group": "shared"}}})),
    );
    assert_eq!(status, 400, "{body}");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("limit-count.group"), "{msg}");
}

#[test]
fn limit_count_rejects_bad_configurations_naming_the_field() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    for (conf, field) in [
        (json!({"count": 0, "time_window": 1}), "count"),
        (json!({"count": 1}), "time_window"),
        (
            json!({"count": 1, "time_window": 1, "policy": "redis"}),
            "redis_host",
        ),
        (
            json!({"count": 1, "time_window": 1, "policy": "redis-cluster"}),
            "policy",
        ),
        (
            json!({"count": 1, "time_window": 1, "key": "no_such_var"}),
            "key",
        ),
        (
            json!({"count": 1, "time_window": 1, "colour": "red"}),
            "colour",
        ),
    ] {
        let (status, _, body) = gw.admin(
            "PUT",
            "/routes/bad",
            Some(
                json!({"uri": "/bad", "upstream": upstream(&b), "plugins": {"limit-count": conf}}),
            ),
        );
        assert_eq!(status, 400, "{conf}: {body}");
        let msg = body["error_msg"].as_str().unwrap();
        assert!(msg.contains(field), "{conf}: {msg}");
    }
}

/// Latencies of `n` requests sent at once, sorted, with their statuses.
fn simultaneous(gw: &Gateway, path: &str, n: usize) -> Vec<(Duration, u16)> {
    let addr = gw.proxy_addr();
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let path = path.to_string();
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                let r = http::send(addr, &Request::get(&path)).expect("proxy");
                (t.elapsed(), r.status)
            })
        })
        .collect();
    let mut out: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    out.sort();
    out
}

#[test]
fn limit_req_delays_within_the_burst_and_refuses_over_it() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    // 5 requests/s, burst 2: at once, excess is 0, 1, 2 (waits 0, 200, 400 ms), then over.
    limited_route(
        &gw,
        "req",
        &b,
        json!({"limit-req": {"rate": 5, "burst": 2, "key_type": "constant", "key": "k", "rejected_code": 429}}),
    );
    limited_route(
        &gw,
        "nodelay",
        &b,
        json!({"limit-req": {"rate": 5, "burst": 2, "nodelay": true, "key_type": "constant", "key": "k"}}),
    );
    gw.sync();
    let got = simultaneous(&gw, "/req", 4);
    let refused: Vec<_> = got.iter().filter(|(_, s)| *s == 429).collect();
    assert_eq!(refused.len(), 1, "{got:?}");
    assert!(
        refused[0].0 < Duration::from_millis(150),
        "refused at once: {got:?}"
    );
    let passed: Vec<Duration> = got
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(d, _)| *d)
        .collect();
    assert!(passed[0] < Duration::from_millis(150), "{got:?}");
    assert!(
        passed[1] >= Duration::from_millis(170) && passed[1] < Duration::from_millis(1200),
        "{got:?}"
    );
    assert!(
        passed[2] >= Duration::from_millis(370) && passed[2] < Duration::from_millis(1500),
        "{got:?}"
    );

    let got = simultaneous(&gw, "/nodelay", 4);
    let passed: Vec<_> = got.iter().filter(|(_, s)| *s == 200).collect();
    assert_eq!(passed.len(), 3, "{got:?}");
    assert!(
        passed.iter().all(|(d, _)| *d < Duration::from_millis(150)),
        "nodelay: {got:?}"
    );
    assert_eq!(got.iter().filter(|(_, s)| *s == 503).count(), 1, "{got:?}");
}

#[test]
fn limit_conn_caps_requests_in_flight_on_slow_upstreams() {
    let gw = Gateway::start_default();
    let slow = Backend::start_with("slow", 200, Duration::from_millis(800));
    limited_route(
        &gw,
        "conn",
        &slow,
        json!({"limit-conn": {"conn": 2, "burst": 1, "default_conn_delay": 0.1, "key_type": "constant", "key": "k"}}),
    );
    gw.sync();
    let got = simultaneous(&gw, "/conn", 5);
    let ok = got.iter().filter(|(_, s)| *s == 200).count();
    assert_eq!(ok, 3, "conn + burst pass: {got:?}");
    assert_eq!(got.iter().filter(|(_, s)| *s == 503).count(), 2, "{got:?}");
    // Slots come back: the same again passes the same.
    wait_until(WAIT, || in_flight(&gw) == 0.0);
    let got = simultaneous(&gw, "/conn", 3);
    assert!(got.iter().all(|(_, s)| *s == 200), "{got:?}");
}

fn in_flight(gw: &Gateway) -> f64 {
    let samples = prom::parse(&gw.metrics_text()).unwrap();
    prom::sum(&samples, "portico_limit_conn_in_flight", &[])
}

/// A client that sends a request and hangs up before the answer.
fn abort(gw: &Gateway, path: &str) {
    let mut s = TcpStream::connect(gw.proxy_addr()).expect("connect");
    let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(5));
    drop(s);
}

#[test]
fn limit_conn_leaks_no_slot_after_ten_thousand_mixed_requests() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    let slow = Backend::start_with("slow", 200, Duration::from_millis(300));
    let conn = json!({"conn": 64, "burst": 0, "default_conn_delay": 0.01, "key_type": "constant", "key": "all"});
    limited_route(&gw, "ok", &b, json!({"limit-conn": conn.clone()}));
    limited_route(&gw, "slow", &slow, json!({"limit-conn": conn.clone()}));
    gw.put(
        "/routes/dead",
        json!({"uri": "/dead", "plugins": {"limit-conn": conn.clone()},
               "upstream": {"type": "roundrobin", "nodes": {dead_addr(): 1}}}),
    );
    let mut lua_fails = json!({"limit-conn": conn.clone()});
    lua_fails[POST] = serverless("access", &func("error('boom')"));
    limited_route(&gw, "luaerr", &b, lua_fails);
    gw.sync();

    let kinds = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = gw.proxy_addr();
            let kinds = Arc::clone(&kinds);
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                for i in 0..1250 {
                    let path = match (i + t) % 10 {
                        0 => "/dead",
                        1 => "/luaerr",
                        _ => "/ok",
                    };
                    // Error answers may close the connection: those go on their own.
                    let r = if path == "/ok" {
                        conn.send(&Request::get(path))
                    } else {
                        http::send(addr, &Request::get(path))
                    }
                    .expect("proxy");
                    assert!(
                        matches!(r.status, 200 | 500 | 502 | 503),
                        "{path}: {}",
                        r.status
                    );
                    kinds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for _ in 0..50 {
        abort(&gw, "/slow");
    }
    for h in threads {
        h.join().unwrap();
    }
    assert_eq!(kinds.load(Ordering::Relaxed), 10_000);
    assert!(
        wait_until(WAIT, || in_flight(&gw) == 0.0),
        "slots leaked: {} still held",
        in_flight(&gw)
    );
    // And the full allowance is there: 64 slow requests at once all pass.
    let got = simultaneous(&gw, "/slow", 64);
    assert!(
        got.iter().all(|(_, s)| *s == 200),
        "{:?}",
        got.iter().filter(|(_, s)| *s != 200).count()
    );
}
