//! Lua code swaps under load, and syntax errors rejected at apply time
//! (issue 4, "Must show": hot swap; syntax errors).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lua_common::*;
use crate::support::*;

/// The route's plugins at version `n`: access writes `n` into a request header
/// (echoed in the backend's body), header_filter writes `n` into a response
/// header. A request that mixed two versions would show two numbers.
fn versioned(n: usize) -> Value {
    pre_post(
        (
            "access",
            &format!(r#"ngx.req.set_header("X-Access-V", "{n}")"#),
        ),
        ("header_filter", &format!(r#"ngx.header["X-V"] = "{n}""#)),
    )
}

#[derive(Default)]
struct Seen {
    ok: AtomicUsize,
    failed: AtomicUsize,
    mixed: AtomicUsize,
    versions: Mutex<BTreeSet<usize>>,
    problems: Mutex<Vec<String>>,
}

impl Seen {
    fn record(&self, r: std::io::Result<Response>) {
        let problem = match r {
            Ok(r) if r.status == 200 => {
                let h = r.header("x-v").and_then(|v| v.parse::<usize>().ok());
                let b = r.json()["headers"]["x-access-v"]
                    .as_str()
                    .and_then(|v| v.parse::<usize>().ok());
                match (h, b) {
                    (Some(h), Some(b)) if h == b => {
                        self.ok.fetch_add(1, Ordering::SeqCst);
                        self.versions.lock().unwrap().insert(h);
                        return;
                    }
                    _ => {
                        self.mixed.fetch_add(1, Ordering::SeqCst);
                        format!("mixed versions: header {h:?}, body {b:?}: {r:?}")
                    }
                }
            }
            other => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                format!("{other:?}")
            }
        };
        let mut p = self.problems.lock().unwrap();
        if p.len() < 10 {
            p.push(problem);
        }
    }
}

/// 1,000 code changes while two clients (keep-alive and fresh connections)
/// loop requests: 0 failed, every response from one version, many versions seen.
#[test]
fn lua_hot_swap_1000_changes_under_load() {
    let gw = lua_gateway(2, LuaOpts::default());
    let b = Backend::start("b");
    lua_route(&gw, "hs", "/hs", Some(&b), versioned(0));
    gw.sync();
    assert_eq!(gw.proxy_get("/hs").header("x-v"), Some("0"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let addr = gw.proxy_addr();
    let clients: Vec<_> = [true, false]
        .into_iter()
        .map(|keep_alive| {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::new(addr);
                let req = Request::get("/hs");
                while !stop.load(Ordering::SeqCst) {
                    let r = if keep_alive {
                        conn.send(&req)
                    } else {
                        http::send(addr, &req)
                    };
                    seen.record(r);
                }
            })
        })
        .collect();

    const CHANGES: usize = 1000;
    let t = Instant::now();
    for n in 1..=CHANGES {
        gw.put(
            "/routes/hs",
            json!({"uri": "/hs", "upstream": upstream(&b), "plugins": versioned(n)}),
        );
    }
    let put_time = t.elapsed();
    // the last version reaches the data path
    let last = CHANGES.to_string();
    let ok = wait_until(WAIT, || {
        gw.proxy_get("/hs").header("x-v") == Some(last.as_str())
    });
    assert!(ok, "version {CHANGES} never served");
    let served = seen.ok.load(Ordering::SeqCst);
    let wait_more = wait_until(WAIT, || seen.ok.load(Ordering::SeqCst) > served + 20);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(wait_more, "clients stalled after the swaps");

    let ok = seen.ok.load(Ordering::SeqCst);
    let failed = seen.failed.load(Ordering::SeqCst);
    let mixed = seen.mixed.load(Ordering::SeqCst);
    let versions = seen.versions.lock().unwrap().len();
    eprintln!(
        "lua hot swap: {CHANGES} PUTs in {put_time:?}, {ok} ok responses, {versions} versions seen"
    );
    assert_eq!(
        (failed, mixed),
        (0, 0),
        "failed/mixed responses: {:?}",
        seen.problems.lock().unwrap()
    );
    assert!(
        versions >= 50,
        "only {versions} versions seen in {ok} responses"
    );
    assert!(
        put_time < Duration::from_secs(60),
        "{CHANGES} PUTs took {put_time:?}"
    );
}

/// A syntax error is a 400 naming the plugin and the line; the previous code
/// of the same route keeps serving. So are code that does not return a
/// function, an error in the outer chunk, and a runaway outer chunk.
#[test]
fn lua_syntax_error_rejected_with_line_previous_code_serves() {
    let gw = lua_gateway(2, LuaOpts::default());
    let good = json!({"uri": "/syn", "plugins": {PRE: serverless("access",
        "return function(conf, ctx)\n  return 200, 'good'\nend")}});
    gw.put("/routes/syn", good.clone());
    gw.sync();
    assert_eq!(gw.proxy_get("/syn").text(), "good");

    let cases = [
        (
            "syntax error on line 3",
            "return function(conf, ctx)\n  local x = 1\n  local y = = 2\nend",
            vec![PRE, "line 3"],
        ),
        (
            "unclosed function (error at end, line 3)",
            "return function(conf, ctx)\n  if true then\n",
            vec![PRE, "line 3"],
        ),
        (
            "does not return a function",
            "return 42",
            vec![PRE, "function"],
        ),
        (
            "outer chunk raises",
            "local x = 1\nerror('outer-boom')\nreturn function() end",
            vec![PRE, "outer-boom", "2"],
        ),
        (
            "outer chunk never ends",
            "while true do end\nreturn function() end",
            vec![PRE, "max_slice_ms"],
        ),
    ];
    for (what, code, needles) in &cases {
        let t = Instant::now();
        let (status, _, body) = gw.admin(
            "PUT",
            "/routes/syn",
            Some(json!({"uri": "/syn", "plugins": {PRE: serverless("access", code)}})),
        );
        assert_eq!(status, 400, "{what}: {body}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            t.elapsed()
        );
        let msg = body["error_msg"].as_str().unwrap_or_default();
        eprintln!("{what}: {status} {msg}");
        for n in needles {
            assert!(msg.contains(n), "{what}: error_msg lacks {n:?}: {body}");
        }
        // nothing was swapped
        let r = gw.proxy_get("/syn");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "good"),
            "{what}: {r:?}"
        );
    }
    // the stored route is the good one
    let stored = gw.get("/routes/syn");
    let code = stored["value"]["plugins"][PRE]["functions"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(code.contains("'good'"), "stored route: {stored}");
    // a bad phase name and an empty function list are rejected too
    for conf in [
        json!({"phase": "init_worker", "functions": ["return function() end"]}),
        json!({"phase": "access", "functions": []}),
    ] {
        let (status, _, body) = gw.admin(
            "PUT",
            "/routes/syn",
            Some(json!({"uri": "/syn", "plugins": {PRE: conf}})),
        );
        assert_eq!(status, 400, "{conf}: {body}");
    }
    assert_eq!(gw.proxy_get("/syn").text(), "good");
}
