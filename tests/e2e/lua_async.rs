//! Yielding Lua: `ngx.sleep`, `ngx.shared.DICT` across workers, and
//! `resty.http` calling a second backend (issue 4, "Must show").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lua_common::*;
use crate::support::*;

/// Each request's response and its latency, or a transport error.
type Timed = Result<(Response, Duration), String>;

/// Sends `n` concurrent requests to `path` (fresh connections); returns the
/// responses (or errors) and the wall time until the last one finished.
fn concurrent(gw: &Gateway, path: &str, n: usize) -> (Vec<Timed>, Duration) {
    let addr = gw.proxy_addr();
    let barrier = Arc::new(std::sync::Barrier::new(n + 1));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let barrier = barrier.clone();
            let path = path.to_owned();
            std::thread::spawn(move || {
                barrier.wait();
                let t = Instant::now();
                http::send(addr, &Request::get(&path))
                    .map(|r| (r, t.elapsed()))
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    let out = threads.into_iter().map(|t| t.join().unwrap()).collect();
    (out, t.elapsed())
}

/// `ngx.sleep` in access yields: on a single worker thread, concurrent sleeping
/// requests overlap and a fast route stays fast meanwhile.
#[test]
fn lua_sleep_does_not_block_the_worker() {
    let gw = lua_gateway(1, LuaOpts::default());
    let b = Backend::start("b");
    lua_route(
        &gw,
        "s05",
        "/sleep005",
        Some(&b),
        pre("access", "ngx.sleep(0.05) return 200, 'slept'"),
    );
    lua_route(
        &gw,
        "s1",
        "/sleep1",
        Some(&b),
        pre("access", "ngx.sleep(1) return 200, 'slept'"),
    );
    lua_route(
        &gw,
        "s3",
        "/sleep03",
        Some(&b),
        pre(
            "access",
            "local t0 = ngx.now() ngx.sleep(0.3) ngx.update_time() return 200, string.format('%.3f', ngx.now() - t0)",
        ),
    );
    lua_route(
        &gw,
        "fast",
        "/fast",
        Some(&b),
        pre("access", "ngx.ctx.f = 1"),
    );
    gw.sync();
    // warm up the VM and the connections
    assert_eq!(gw.proxy_get("/sleep005").status, 200);

    // The issue's case: 10 × ngx.sleep(0.05) concurrently.
    let (rs, total) = concurrent(&gw, "/sleep005", 10);
    for r in &rs {
        let (r, _) = r.as_ref().expect("transport");
        assert_eq!((r.status, r.text().as_str()), (200, "slept"), "{r:?}");
    }
    assert!(
        total < Duration::from_secs(1),
        "10 × sleep(0.05) took {total:?}"
    );

    // A sharper one: 10 × sleep(0.3) serialised would take ≥ 3 s.
    let load = Load::start(&gw, "/fast", 200);
    load.wait_more(5);
    let fast_before = load.ok();
    let (rs, total) = concurrent(&gw, "/sleep03", 10);
    let fast_during = load.ok() - fast_before;
    let (_, failed, failures) = load.finish();
    for r in &rs {
        let (r, took) = r.as_ref().expect("transport");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(
            *took >= Duration::from_millis(290),
            "ngx.sleep(0.3) returned after {took:?}"
        );
        let slept: f64 = r.text().parse().unwrap_or(0.0);
        assert!(
            slept >= 0.29,
            "ngx.now() advanced only {slept} s across ngx.sleep(0.3)"
        );
    }
    // Serialised they would take at least 3 s; the margin absorbs a loaded CI machine.
    assert!(
        total < Duration::from_millis(2200),
        "10 × sleep(0.3) took {total:?}: not overlapping"
    );
    assert_eq!(failed, 0, "{failures:?}");
    assert!(
        fast_during >= 5,
        "only {fast_during} fast requests completed during {total:?} of sleeping requests"
    );
    // A fast request while sleepers are in flight answers long before they wake up: a
    // blocked worker would hold it for most of the sleepers' 1 s.
    let addr = gw.proxy_addr();
    let sleepers: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || http::send(addr, &Request::get("/sleep1"))))
        .collect();
    std::thread::sleep(Duration::from_millis(50)); // let the sleepers get in first
    let t = Instant::now();
    let r = gw.proxy_get("/fast");
    let fast = t.elapsed();
    assert_eq!(r.status, 200);
    for s in sleepers {
        assert_eq!(s.join().unwrap().unwrap().status, 200);
    }
    assert!(
        fast < Duration::from_millis(800),
        "/fast took {fast:?} while sleepers were in flight"
    );
}

fn shared_gw(threads: usize) -> Gateway {
    lua_gateway(
        threads,
        LuaOpts {
            shared_dicts: vec![("counters".into(), "1m".into()), ("kv".into(), "1m".into())],
            ..Default::default()
        },
    )
}

/// `ngx.shared.counters:incr` from many concurrent requests on 2 workers: the
/// final value equals the number of requests, and both workers took part.
#[test]
fn lua_shared_dict_counter_across_workers() {
    let gw = shared_gw(2);
    let b = Backend::start("b");
    lua_route(
        &gw,
        "incr",
        "/incr",
        Some(&b),
        pre(
            "access",
            r#"local v, err = ngx.shared.counters:incr("hits", 1, 0)
               if not v then return 500, "incr: " .. tostring(err) end
               ngx.header["X-Worker"] = ngx.worker.id()
               return 200, tostring(v)"#,
        ),
    );
    lua_route(
        &gw,
        "get",
        "/get",
        Some(&b),
        pre(
            "access",
            r#"return 200, tostring(ngx.shared.counters:get("hits"))"#,
        ),
    );
    gw.sync();

    const THREADS: usize = 8;
    const PER_THREAD: usize = 50;
    let addr = gw.proxy_addr();
    let workers = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    let values = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (workers, values, failed) = (workers.clone(), values.clone(), failed.clone());
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    match http::send(addr, &Request::get("/incr")) {
                        Ok(r) if r.status == 200 => {
                            if let Some(w) = r.header("x-worker") {
                                workers.lock().unwrap().insert(w.to_owned());
                            }
                            values
                                .lock()
                                .unwrap()
                                .push(r.text().parse::<u64>().unwrap_or(0));
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            eprintln!("incr failed: {other:?}");
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    let total = THREADS * PER_THREAD;
    let r = gw.proxy_get("/get");
    assert_eq!(
        (r.status, r.text()),
        (200, total.to_string()),
        "final counter"
    );
    let mut v = values.lock().unwrap().clone();
    v.sort_unstable();
    v.dedup();
    assert_eq!(v.len(), total, "every incr returned a distinct value");
    assert_eq!(v.first(), Some(&1));
    assert_eq!(v.last(), Some(&(total as u64)));
    let workers = workers.lock().unwrap().clone();
    assert_eq!(workers.len(), 2, "both workers served /incr: {workers:?}");
}

/// get/set/add/replace/incr/delete/get_keys/flush_all/ttl/expire with
/// OpenResty's return values.
#[test]
fn lua_shared_dict_api() {
    let gw = shared_gw(2);
    let b = Backend::start("b");
    let code = r#"
        local d = ngx.shared.kv
        local function s(...) local t = table.pack(...) local o = {}
          for i = 1, t.n do o[i] = tostring(t[i]) end return table.concat(o, ",") end
        local r = {}
        d:flush_all()
        r.set = s(d:set("a", "1"))
        r.get_a = s(d:get("a"))
        r.set_num = s(d:set("n", 10))
        r.type_n = type(d:get("n"))
        r.set_bool = s(d:set("flag", true))
        r.get_bool = s(d:get("flag"))
        r.get_missing = s(d:get("missing"))
        r.add_existing = s(d:add("a", "x"))
        r.add_new = s(d:add("b", "B"))
        r.get_b = s(d:get("b"))
        r.replace_missing = s(d:replace("zz", 1))
        r.replace = s(d:replace("a", "2"))
        r.get_a2 = s(d:get("a"))
        r.incr = s(d:incr("n", 5))
        r.incr_neg = s(d:incr("n", -3))
        r.incr_missing = s(d:incr("missing", 1))
        r.incr_init = s(d:incr("c", 2, 10))
        r.incr_str = s(pcall(d.incr, d, "a", 1))
        r.delete = s(d:delete("b"))
        r.get_b2 = s(d:get("b"))
        local keys = d:get_keys()
        table.sort(keys)
        r.keys = table.concat(keys, ",")
        r.ttl_none = s(d:ttl("a"))
        r.set_ttl = s(d:set("t", "v", 100))
        local ttl = d:ttl("t")
        r.ttl_t = ttl > 99 and ttl <= 100
        r.expire = s(d:expire("a", 50))
        local ttl_a = d:ttl("a")
        r.ttl_a = ttl_a > 49 and ttl_a <= 50
        r.expire_missing = s(d:expire("nope", 1))
        r.ttl_missing = s(d:ttl("nope"))
        r.set_short = s(d:set("short", "s", 0.2))
        r.get_short = s(d:get("short"))
        r.set_nil_deletes = s(d:set("n2", 1)) .. "|" .. s(d:set("n2", nil)) .. "|" .. s(d:get("n2"))
        return 200, r"#;
    lua_route(&gw, "api", "/api", Some(&b), pre("access", code));
    lua_route(
        &gw,
        "kvget",
        "/kvget",
        Some(&b),
        pre(
            "access",
            r#"local v = ngx.shared.kv:get(ngx.var.arg_k) return 200, tostring(v)"#,
        ),
    );
    lua_route(
        &gw,
        "flush",
        "/flush",
        Some(&b),
        pre(
            "access",
            r#"ngx.shared.kv:flush_all() return 200, tostring(#ngx.shared.kv:get_keys())"#,
        ),
    );
    lua_route(
        &gw,
        "nodict",
        "/nodict",
        Some(&b),
        pre("access", r#"return 200, tostring(ngx.shared.nope)"#),
    );
    gw.sync();

    let r = gw.proxy_get("/api");
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    let expect = json!({
        "set": "true,nil,false",
        "get_a": "1",
        "set_num": "true,nil,false",
        "type_n": "number",
        "set_bool": "true,nil,false",
        "get_bool": "true",
        "get_missing": "nil",
        "add_existing": "false,exists,false",
        "add_new": "true,nil,false",
        "get_b": "B",
        "replace_missing": "false,not found,false",
        "replace": "true,nil,false",
        "get_a2": "2",
        "incr": "15",
        "incr_neg": "12",
        "incr_missing": "nil,not found",
        "incr_init": "12,nil,false",
        "delete": "true,nil,false",
        "get_b2": "nil",
        "keys": "a,c,flag,n",
        "ttl_none": "0",
        "set_ttl": "true,nil,false",
        "ttl_t": true,
        "expire": "true",
        "ttl_a": true,
        "expire_missing": "nil,not found",
        "ttl_missing": "nil,not found",
        "set_short": "true,nil,false",
        "get_short": "s",
        "set_nil_deletes": "true,nil,false|true,nil,false|nil",
    });
    let mut wrong = Vec::new();
    for (k, v) in expect.as_object().unwrap() {
        if &j[k] != v {
            wrong.push(format!("{k}: want {v}, got {}", j[k]));
        }
    }
    // incr on a string value: OpenResty (lua-resty-core) returns nil, "not a number"
    let incr_str = j["incr_str"].as_str().unwrap_or("");
    if incr_str != "true,nil,not a number" {
        wrong.push(format!(
            "incr_str: want pcall -> true,nil,not a number; got {incr_str}"
        ));
    }
    assert!(
        wrong.is_empty(),
        "ngx.shared.DICT differs from OpenResty:\n{}\nfull: {j}",
        wrong.join("\n")
    );

    // seen from another request (either worker)
    assert_eq!(gw.proxy_get("/kvget?k=a").text(), "2");
    // "short" expires after 0.2 s
    let ok = wait_until(WAIT, || gw.proxy_get("/kvget?k=short").text() == "nil");
    assert!(ok, "key with 0.2 s ttl never expired");
    assert_eq!(gw.proxy_get("/kvget?k=t").text(), "v");
    let r = gw.proxy_get("/flush");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "0"),
        "get_keys after flush_all: {r:?}"
    );
    assert_eq!(gw.proxy_get("/kvget?k=t").text(), "nil");
    let r = gw.proxy_get("/nodict");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "nil"),
        "undeclared dict is nil: {r:?}"
    );
}

/// `require "resty.http"` from access calls a second backend and returns its
/// answer; a refused connection gives `nil, err`.
#[test]
fn lua_resty_http_calls_a_second_backend() {
    let gw = lua_gateway(2, LuaOpts::default());
    let b = Backend::start("main");
    let svc = Backend::start("svc2");
    let dead = dead_addr();
    let code = format!(
        r#"local http = require "resty.http"
           local httpc = http.new()
           local res, err = httpc:request_uri("http://{}/inner/path", {{
             method = "POST",
             headers = {{ ["X-Inner"] = "yes", ["Content-Type"] = "text/plain" }},
             body = "hello",
             query = {{ q = "1" }},
           }})
           if not res then return 502, "err: " .. tostring(err) end
           ngx.header["X-Inner-Status"] = res.status
           ngx.header["X-Inner-Backend"] = res.headers["X-Backend"]
           return res.status, res.body"#,
        svc.node()
    );
    lua_route(&gw, "rh", "/rh", Some(&b), pre("access", &code));
    lua_route(
        &gw,
        "rhdead",
        "/rhdead",
        Some(&b),
        pre(
            "access",
            &format!(
                r#"local httpc = require("resty.http").new()
                   local res, err = httpc:request_uri("http://{dead}/x")
                   if not res then return 502, "err: " .. tostring(err) end
                   return 200, "unexpected""#
            ),
        ),
    );
    // status passthrough from the second backend, GET by default
    let svc503 = Backend::start_with("svc503", 503, Duration::ZERO);
    lua_route(
        &gw,
        "rh503",
        "/rh503",
        Some(&b),
        pre(
            "access",
            &format!(
                r#"local res, err = require("resty.http").new():request_uri("http://{}/s?a=b")
                   if not res then return 502, "err: " .. tostring(err) end
                   ngx.ctx.body = res.body
                   return 200, {{ status = res.status, body = require("cjson").decode(res.body) }}"#,
                svc503.node()
            ),
        ),
    );
    gw.sync();

    let r = gw.proxy_get("/rh");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-inner-status"), Some("200"), "{r:?}");
    assert_eq!(
        r.header("x-inner-backend"),
        Some("svc2"),
        "res.headers: {r:?}"
    );
    let j = r.json();
    assert_eq!(j["backend"], "svc2", "{j}");
    assert_eq!(j["method"], "POST", "{j}");
    assert_eq!(j["path"], "/inner/path", "{j}");
    assert_eq!(j["query"], "q=1", "{j}");
    assert_eq!(j["headers"]["x-inner"], "yes", "{j}");
    assert_eq!(j["body_len"], 5, "{j}");
    assert_eq!(
        b.hits(),
        0,
        "access answered; the route's upstream is not used"
    );
    assert_eq!(svc.path_hits("/inner/path"), 1);

    let r = gw.proxy_get("/rh503");
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], 503, "{j}");
    assert_eq!(j["body"]["method"], "GET", "{j}");
    assert_eq!(j["body"]["query"], "a=b", "{j}");

    let r = gw.proxy_get("/rhdead");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.text().starts_with("err: "), "{r:?}");
    assert!(r.text().len() > "err: ".len() + 3, "a useful error: {r:?}");
}
