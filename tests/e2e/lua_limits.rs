//! OpenResty's `resty.limit.req`, `resty.limit.count`, `resty.limit.conn` and
//! `resty.limit.traffic` (issue 13, "Lua"): lua-resty-limit-traffic's README examples
//! run as serverless functions against a real gateway and real backends.
//!
//! The `README_*` constants are the bodies of the examples' `access_by_lua_block` and
//! `log_by_lua_block`, as published in lua-resty-limit-traffic's documentation (BSD
//! licence); `func()` wraps them in APISIX's `return function(conf, ctx) ... end`.
//! Where a test needs other thresholds than the examples', it replaces only the
//! numbers in the `new(...)` call (and the header literal that repeats them).

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::lua_common::*;
use crate::support::*;

const README_REQ: &str = r#"
                -- well, we could put the require() and new() calls in our own Lua
                -- modules to save overhead. here we put them below just for
                -- convenience.

                local limit_req = require "resty.limit.req"

                -- limit the requests under 200 req/sec with a burst of 100 req/sec,
                -- that is, we delay requests under 300 req/sec and above 200
                -- req/sec, and reject any requests exceeding 300 req/sec.
                local lim, err = limit_req.new("my_limit_req_store", 200, 100)
                if not lim then
                    ngx.log(ngx.ERR,
                            "failed to instantiate a resty.limit.req object: ", err)
                    return ngx.exit(500)
                end

                -- the following call must be per-request.
                -- here we use the remote (IP) address as the limiting key
                local key = ngx.var.binary_remote_addr
                local delay, err = lim:incoming(key, true)
                if not delay then
                    if err == "rejected" then
                        return ngx.exit(503)
                    end
                    ngx.log(ngx.ERR, "failed to limit req: ", err)
                    return ngx.exit(500)
                end

                if delay >= 0.001 then
                    -- the 2nd return value holds the number of excess requests
                    -- per second for the specified key. for example, number 31
                    -- means the current request rate is at 231 req/sec for the
                    -- specified key.
                    local excess = err

                    -- the request exceeding the 200 req/sec but below 300 req/sec,
                    -- so we intentionally delay it here a bit to conform to the
                    -- 200 req/sec rate.
                    ngx.sleep(delay)
                end
"#;

const README_COUNT: &str = r#"
                local limit_count = require "resty.limit.count"

                -- rate: 5000 requests per 3600s
                local lim, err = limit_count.new("my_limit_count_store", 5000, 3600)
                if not lim then
                    ngx.log(ngx.ERR, "failed to instantiate a resty.limit.count object: ", err)
                    return ngx.exit(500)
                end

                -- use the Authorization header as the limiting key
                local key = ngx.req.get_headers()["Authorization"] or "public"
                local delay, err = lim:incoming(key, true)

                if not delay then
                    if err == "rejected" then
                        ngx.header["X-RateLimit-Limit"] = "5000"
                        ngx.header["X-RateLimit-Remaining"] = 0
                        return ngx.exit(503)
                    end
                    ngx.log(ngx.ERR, "failed to limit count: ", err)
                    return ngx.exit(500)
                end

                -- the 2nd return value holds the current remaining number
                -- of requests for the specified key.
                local remaining = err

                ngx.header["X-RateLimit-Limit"] = "5000"
                ngx.header["X-RateLimit-Remaining"] = remaining
"#;

const README_CONN: &str = r#"
                -- well, we could put the require() and new() calls in our own Lua
                -- modules to save overhead. here we put them below just for
                -- convenience.

                local limit_conn = require "resty.limit.conn"

                -- limit the requests under 200 concurrent requests (normally just
                -- incoming connections unless protocols like SPDY is used) with
                -- a burst of 100 extra concurrent requests, that is, we delay
                -- requests under 300 concurrent connections and above 200
                -- connections, and reject any new requests exceeding 300
                -- connections.
                -- also, we assume a default request time of 0.5 sec, which can be
                -- dynamically adjusted by the leaving() call in log_by_lua below.
                local lim, err = limit_conn.new("my_limit_conn_store", 200, 100, 0.5)
                if not lim then
                    ngx.log(ngx.ERR,
                            "failed to instantiate a resty.limit.conn object: ", err)
                    return ngx.exit(500)
                end

                -- the following call must be per-request.
                -- here we use the remote (IP) address as the limiting key
                local key = ngx.var.binary_remote_addr
                local delay, err = lim:incoming(key, true)
                if not delay then
                    if err == "rejected" then
                        return ngx.exit(503)
                    end
                    ngx.log(ngx.ERR, "failed to limit req: ", err)
                    return ngx.exit(500)
                end

                if lim:is_committed() then
                    local ctx = ngx.ctx
                    ctx.limit_conn = lim
                    ctx.limit_conn_key = key
                    ctx.limit_conn_delay = delay
                end

                -- the 2nd return value holds the current concurrency level
                -- for the specified key.
                local conn = err

                if delay >= 0.001 then
                    -- the request exceeding the 200 connections ratio but below
                    -- 300 connections, so
                    -- we intentionally delay it here a bit to conform to the
                    -- 200 connection limit.
                    -- ngx.log(ngx.WARN, "delaying")
                    ngx.sleep(delay)
                end
"#;

const README_CONN_LOG: &str = r#"
                local ctx = ngx.ctx
                local lim = ctx.limit_conn
                if lim then
                    -- if you are using an upstream module in the content phase,
                    -- then you probably want to use $upstream_response_time
                    -- instead of ($request_time - ctx.limit_conn_delay) below.
                    local latency = tonumber(ngx.var.request_time) - ctx.limit_conn_delay
                    local key = ctx.limit_conn_key
                    assert(key)
                    local conn, err = lim:leaving(key, latency)
                    if not conn then
                        ngx.log(ngx.ERR,
                                "failed to record the connection leaving ",
                                "request: ", err)
                        return
                    end
                end
"#;

const README_TRAFFIC: &str = r#"
                local limit_conn = require "resty.limit.conn"
                local limit_req = require "resty.limit.req"
                local limit_traffic = require "resty.limit.traffic"

                local lim1, err = limit_req.new("my_req_store", 300, 200)
                assert(lim1, err)
                local lim2, err = limit_req.new("my_req_store", 200, 100)
                assert(lim2, err)
                local lim3, err = limit_conn.new("my_conn_store", 1000, 1000, 0.5)
                assert(lim3, err)

                local limiters = {lim1, lim2, lim3}

                local host = ngx.var.host
                local client = ngx.var.binary_remote_addr
                local keys = {host, client, client}

                local states = {}

                local delay, err = limit_traffic.combine(limiters, keys, states)
                if not delay then
                    if err == "rejected" then
                        return ngx.exit(503)
                    end
                    ngx.log(ngx.ERR, "failed to limit traffic: ", err)
                    return ngx.exit(500)
                end

                if lim3:is_committed() then
                    local ctx = ngx.ctx
                    ctx.limit_conn = lim3
                    ctx.limit_conn_key = keys[3]
                end

                print("sleeping ", delay, " sec, states: ",
                      table.concat(states, ", "))

                if delay >= 0.001 then
                    ngx.sleep(delay)
                end
"#;

const README_TRAFFIC_LOG: &str = r#"
                local ctx = ngx.ctx
                local lim = ctx.limit_conn
                if lim then
                    -- if you are using an upstream module in the content phase,
                    -- then you probably want to use $upstream_response_time
                    -- instead of $request_time below.
                    local latency = tonumber(ngx.var.request_time)
                    local key = ctx.limit_conn_key
                    assert(key)
                    local conn, err = lim:leaving(key, latency)
                    if not conn then
                        ngx.log(ngx.ERR,
                                "failed to record the connection leaving ",
                                "request: ", err)
                        return
                    end
                end
"#;

/// `README` with its `new(...)` arguments `from` replaced by `to` (must occur).
fn with_numbers(readme: &str, from: &str, to: &str) -> String {
    assert!(readme.contains(from), "{from} not in the example");
    readme.replace(from, to)
}

/// Status and client-side latency of one request.
type Timed = (Response, Duration);

/// Sends `n` requests at once (one connection each, released together by a barrier).
fn parallel(gw: &Gateway, req: &Request, n: usize) -> (Vec<Timed>, Duration) {
    let addr = gw.proxy_addr();
    let barrier = Arc::new(Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, req) = (barrier.clone(), req.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                let r = http::send(addr, &req).expect("request");
                (r, t.elapsed())
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let out = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (out, t.elapsed())
}

fn count_status(out: &[Timed], status: u16) -> usize {
    out.iter().filter(|(r, _)| r.status == status).count()
}

fn gateway(threads: usize, dicts: &[&str]) -> Gateway {
    lua_gateway(
        threads,
        LuaOpts {
            shared_dicts: dicts
                .iter()
                .map(|d| (d.to_string(), "100m".to_string()))
                .collect(),
            ..Default::default()
        },
    )
}

/// A route that answers the value `ngx.shared[dict]` holds for this client's
/// `binary_remote_addr` (`nil` when none).
fn probe_route(gw: &Gateway, dict: &str) {
    lua_route(
        gw,
        "probe",
        "/probe",
        None,
        pre(
            "access",
            &format!(
                r#"return 200, tostring(ngx.shared["{dict}"]:get(ngx.var.binary_remote_addr))"#
            ),
        ),
    );
}

fn wait_probe(gw: &Gateway, want: &str) {
    let mut last = String::new();
    let ok = wait_until(WAIT, || {
        last = gw.proxy_get("/probe").text();
        last == want
    });
    assert!(ok, "probe: {last}, want {want}");
}

#[test]
fn binary_remote_addr_is_four_raw_bytes() {
    let gw = gateway(1, &[]);
    lua_route(
        &gw,
        "addr",
        "/addr",
        None,
        pre(
            "access",
            r#"local b = ngx.var.binary_remote_addr
               return 200, #b .. ":" .. string.format("%d.%d.%d.%d", b:byte(1, 4))"#,
        ),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/addr").text(), "4:127.0.0.1");
}

/// The README's limit.req example, unchanged (200 req/s, burst 100): at least the
/// 101 requests of the burst pass, no more than the burst plus what the rate let in
/// meanwhile, and a rejection implies the requests near the burst were delayed.
#[test]
fn readme_limit_req_example_runs_unchanged() {
    let gw = gateway(2, &["my_limit_req_store"]);
    let b = Backend::start("b");
    lua_route(&gw, "req", "/req", Some(&b), pre("access", README_REQ));
    gw.sync();
    let (out, wall) = parallel(&gw, &Request::get("/req"), 300);
    let (ok, rejected) = (count_status(&out, 200), count_status(&out, 503));
    assert_eq!(ok + rejected, 300, "only 200 and 503");
    let most = 101 + (200.0 * wall.as_secs_f64()).ceil() as usize + 1;
    assert!(
        (101..=most).contains(&ok),
        "{ok} passed in {wall:?}, expected 101..={most}"
    );
    if rejected > 0 {
        let slowest = out
            .iter()
            .filter(|(r, _)| r.status == 200)
            .map(|(_, t)| *t)
            .max()
            .unwrap();
        assert!(
            slowest >= Duration::from_millis(400),
            "the bucket was full but no request waited (slowest {slowest:?})"
        );
    }
}

/// Exact counts: 300 parallel requests against rate 0.1/s, burst 49 (no waiting: the
/// delay is returned, not slept) let exactly 50 through, across 2 workers.
#[test]
fn limit_req_lets_exactly_the_burst_through_under_concurrency() {
    let gw = gateway(2, &["my_limit_req_store"]);
    lua_route(
        &gw,
        "req",
        "/req",
        None,
        pre(
            "access",
            r#"local lim = assert(require("resty.limit.req").new("my_limit_req_store", 0.1, 49))
               local delay, err = lim:incoming(ngx.var.binary_remote_addr, true)
               if not delay then
                   return err == "rejected" and 503 or 500, err
               end
               return 200, string.format("%.0f", err)"#,
        ),
    );
    gw.sync();
    let (out, _) = parallel(&gw, &Request::get("/req"), 300);
    assert_eq!(count_status(&out, 200), 50);
    assert_eq!(count_status(&out, 503), 250);
    // Every excess from 0 to 49 was handed out exactly once.
    let mut excess: Vec<u32> = out
        .iter()
        .filter(|(r, _)| r.status == 200)
        .map(|(r, _)| r.text().parse().unwrap())
        .collect();
    excess.sort_unstable();
    assert_eq!(excess, (0..50).collect::<Vec<_>>());
}

/// The README's delays, at 10 req/s with a burst of 5 (numbers changed): a sequential
/// client is paced to 10 req/s (each request after the first waits ~0.1 s), and
/// parallel sleepers on one worker thread overlap instead of blocking it.
#[test]
fn limit_req_delays_pace_a_client_without_blocking_the_worker() {
    let code = with_numbers(
        README_REQ,
        r#"limit_req.new("my_limit_req_store", 200, 100)"#,
        r#"limit_req.new("my_limit_req_store", 10, 5)"#,
    );
    let gw = gateway(1, &["my_limit_req_store"]);
    let b = Backend::start("b");
    lua_route(&gw, "req", "/req", Some(&b), pre("access", &code));
    lua_route(&gw, "fast", "/fast", Some(&b), json!({}));
    gw.sync();

    // Five at once on one worker: delays 0, 0.1 .. 0.4 s (sum 1 s) overlap.
    let (out, wall) = parallel(&gw, &Request::get("/req"), 5);
    assert_eq!(count_status(&out, 200), 5);
    let slowest = out.iter().map(|(_, t)| *t).max().unwrap();
    assert!(
        slowest >= Duration::from_millis(250),
        "the later requests were not delayed: {slowest:?}"
    );
    assert!(
        wall < Duration::from_millis(900),
        "sleeps did not overlap: {wall:?}"
    );

    // A sequential client once the burst has drained (5 requests at 10/s: 0.5 s):
    // 11 requests take ~1 s.
    std::thread::sleep(Duration::from_millis(600));
    let mut conn = gw.proxy_conn();
    let t = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..11 {
        let s = Instant::now();
        assert_eq!(conn.send(&Request::get("/req")).unwrap().status, 200);
        lat.push(s.elapsed());
    }
    let total = t.elapsed();
    assert!(
        (Duration::from_millis(850)..Duration::from_millis(1600)).contains(&total),
        "11 requests at 10/s took {total:?} ({lat:?})"
    );
    // Each later request waits about 1/rate; one that arrived late (client or
    // scheduling overhead) finds the bucket more drained and waits less.
    let mut paced = lat[1..].to_vec();
    paced.sort();
    let median = paced[paced.len() / 2];
    assert!(
        (Duration::from_millis(80)..Duration::from_millis(150)).contains(&median),
        "median paced request {median:?} ({lat:?})"
    );
    assert!(
        paced[paced.len() - 1] < Duration::from_millis(400),
        "{lat:?}"
    );
    // Meanwhile another route on the same worker is not held up.
    let t = Instant::now();
    assert_eq!(gw.proxy_get("/fast").status, 200);
    assert!(t.elapsed() < Duration::from_millis(500));
}

fn count_route(gw: &Gateway, code: &str) {
    lua_route(
        gw,
        "count",
        "/count",
        None,
        pre_post(("access", code), ("content", r#"return 200, "ok""#)),
    );
}

/// The README's limit.count example, unchanged (5000 per hour): 300 parallel requests
/// each get a distinct `X-RateLimit-Remaining`, 4999 down to 4700.
#[test]
fn readme_limit_count_example_runs_unchanged() {
    let gw = gateway(2, &["my_limit_count_store"]);
    count_route(&gw, README_COUNT);
    gw.sync();
    let req = Request::get("/count").header("Authorization", "token-a");
    let (out, _) = parallel(&gw, &req, 300);
    assert_eq!(count_status(&out, 200), 300);
    let mut remaining: Vec<u32> = out
        .iter()
        .map(|(r, _)| {
            assert_eq!(r.header("x-ratelimit-limit"), Some("5000"));
            r.header("x-ratelimit-remaining").unwrap().parse().unwrap()
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (4700..5000).collect::<Vec<_>>());
    // Another key has its own count.
    let r = gw.proxy_get("/count");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("4999"));
}

/// Exact counts with a limit of 100 (numbers changed): 100 of 300 parallel requests
/// pass, 200 get the example's 503 with `X-RateLimit-Remaining: 0`.
#[test]
fn limit_count_allows_exactly_the_limit_under_concurrency() {
    let code = README_COUNT.replace("5000", "100");
    let gw = gateway(2, &["my_limit_count_store"]);
    count_route(&gw, &code);
    gw.sync();
    let (out, _) = parallel(&gw, &Request::get("/count"), 300);
    assert_eq!(count_status(&out, 200), 100);
    assert_eq!(count_status(&out, 503), 200);
    for (r, _) in out.iter().filter(|(r, _)| r.status == 503) {
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    }
}

/// The README's limit.conn example (access + log) with max 2, burst 1, 0.5 s
/// (numbers changed) in front of a slow upstream: 2 pass at once, the 3rd waits
/// 0.5 s, the 4th is rejected; `leaving` in the log phase brings the count back to 0,
/// also after upstream errors.
#[test]
fn limit_conn_example_with_slow_upstreams_and_leaving() {
    let code = with_numbers(
        README_CONN,
        r#"limit_conn.new("my_limit_conn_store", 200, 100, 0.5)"#,
        r#"limit_conn.new("my_limit_conn_store", 2, 1, 0.5)"#,
    );
    let gw = gateway(2, &["my_limit_conn_store"]);
    let slow = Backend::start_with("slow", 200, Duration::from_millis(1500));
    lua_route(
        &gw,
        "conn",
        "/conn",
        Some(&slow),
        pre_post(("access", &code), ("log", README_CONN_LOG)),
    );
    probe_route(&gw, "my_limit_conn_store");
    gw.sync();

    let (out, _) = parallel(&gw, &Request::get("/conn"), 4);
    let mut statuses: Vec<u16> = out.iter().map(|(r, _)| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 503], "{out:?}");
    let mut ok: Vec<Duration> = out
        .iter()
        .filter(|(r, _)| r.status == 200)
        .map(|(_, t)| *t)
        .collect();
    ok.sort();
    // Two take the upstream's 1.5 s; the third waited 0.5 s more.
    assert!(ok[1] < Duration::from_millis(1900), "{ok:?}");
    assert!(
        ok[2] >= ok[0] + Duration::from_millis(400),
        "the 3rd request was not delayed: {ok:?}"
    );
    wait_probe(&gw, "0");

    // Upstream errors (a dead node: 502) still run the log phase.
    let mut dead =
        json!({"uri": "/dead", "plugins": pre_post(("access", &code), ("log", README_CONN_LOG))});
    dead["upstream"] = json!({"type": "roundrobin", "nodes": {dead_addr(): 1}});
    gw.put("/routes/dead", dead);
    gw.sync();
    let (out, _) = parallel(&gw, &Request::get("/dead"), 3);
    assert!(out.iter().all(|(r, _)| r.status == 502 || r.status == 503));
    wait_probe(&gw, "0");
}

/// The README's limit.conn example unchanged (200, burst 100): 50 parallel requests
/// pass without delay and the count returns to 0.
#[test]
fn readme_limit_conn_example_runs_unchanged() {
    let gw = gateway(2, &["my_limit_conn_store"]);
    let b = Backend::start("b");
    lua_route(
        &gw,
        "conn",
        "/conn",
        Some(&b),
        pre_post(("access", README_CONN), ("log", README_CONN_LOG)),
    );
    probe_route(&gw, "my_limit_conn_store");
    gw.sync();
    let (out, _) = parallel(&gw, &Request::get("/conn"), 50);
    assert_eq!(count_status(&out, 200), 50);
    wait_probe(&gw, "0");
}

/// The README's limit.traffic example unchanged: sequential requests pass and log
/// their states; a parallel burst lets at least the 101 of the per-client bucket
/// through, and rejected requests leave the connection count untouched.
#[test]
fn readme_limit_traffic_example_runs_unchanged() {
    let gw = gateway(2, &["my_req_store", "my_conn_store"]);
    let b = Backend::start("b");
    lua_route(
        &gw,
        "traffic",
        "/traffic",
        Some(&b),
        pre_post(("access", README_TRAFFIC), ("log", README_TRAFFIC_LOG)),
    );
    probe_route(&gw, "my_conn_store");
    gw.sync();
    for _ in 0..5 {
        assert_eq!(gw.proxy_get("/traffic").status, 200);
    }
    wait_log_line(&gw, &["sleeping ", " sec, states: "]);

    let (out, wall) = parallel(&gw, &Request::get("/traffic"), 300);
    let ok = count_status(&out, 200);
    assert_eq!(ok + count_status(&out, 503), 300);
    let most = 101 + 5 + (200.0 * wall.as_secs_f64()).ceil() as usize + 1;
    assert!(
        (101..=most).contains(&ok),
        "{ok} passed, expected 101..={most}"
    );
    wait_probe(&gw, "0");
}

/// A Lua plugin module declares the dictionary it needs; it is created when the
/// module is applied, without a restart and without a static `lua.shared_dicts`.
#[test]
fn a_module_declares_its_shared_dict() {
    let gw = gateway(2, &[]);
    lua_route(
        &gw,
        "before",
        "/before",
        None,
        pre("access", r#"return 200, tostring(ngx.shared.mod_limit)"#),
    );
    gw.sync();
    assert_eq!(gw.proxy_get("/before").text(), "nil");

    let code = r#"
        local limit_count = require "resty.limit.count"
        return {
            priority = 1000,
            shared_dicts = { mod_limit = "1m" },
            schema = { type = "object", properties = { count = { type = "integer" } } },
            access = function(conf)
                local lim = assert(limit_count.new("mod_limit", conf.count, 60))
                local delay, err = lim:incoming(ngx.var.binary_remote_addr, true)
                if not delay then
                    return 503, { error_msg = err }
                end
            end,
        }"#;
    let (status, _, body) = gw.admin("PUT", "/lua_plugins/count-3", Some(json!({"code": code})));
    assert_eq!(status, 201, "{body}");
    let b = Backend::start("b");
    lua_route(
        &gw,
        "limited",
        "/limited",
        Some(&b),
        json!({"count-3": {"count": 3}}),
    );
    gw.sync();
    let statuses: Vec<u16> = (0..5).map(|_| gw.proxy_get("/limited").status).collect();
    assert_eq!(statuses, [200, 200, 200, 503, 503]);
    assert_eq!(gw.proxy_get("/limited").json()["error_msg"], "rejected");
    assert!(gw
        .proxy_get("/before")
        .text()
        .starts_with("ngx.shared.mod_limit"));

    // A size that is not one is refused, naming the field.
    let bad = code.replace(r#""1m""#, r#""lots""#);
    let (status, _, body) = gw.admin("PUT", "/lua_plugins/count-bad", Some(json!({"code": bad})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("shared_dicts.mod_limit"),
        "{body}"
    );
}
