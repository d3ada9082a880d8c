//! Helpers shared by the Lua suites (`lua_*.rs`): serverless plugin configs,
//! Lua routes, log and metrics look-ups, and a background load generator.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::prom::{self, Sample};
use crate::support::*;

pub const PRE: &str = "serverless-pre-function";
pub const POST: &str = "serverless-post-function";

/// `return function(conf, ctx) <body> end`, the APISIX serverless shape.
pub fn func(body: &str) -> String {
    format!("return function(conf, ctx)\n{body}\nend")
}

/// One serverless plugin config: `{"phase": phase, "functions": [code]}`.
pub fn serverless(phase: &str, code: &str) -> Value {
    json!({"phase": phase, "functions": [code]})
}

/// `{"serverless-pre-function": {phase, [func(body)]}}`.
pub fn pre(phase: &str, body: &str) -> Value {
    json!({ PRE: serverless(phase, &func(body)) })
}

/// `{"serverless-post-function": {phase, [func(body)]}}`.
pub fn post(phase: &str, body: &str) -> Value {
    json!({ POST: serverless(phase, &func(body)) })
}

/// Both serverless plugins: `pre` = (phase, body), `post` = (phase, body).
pub fn pre_post(pre_: (&str, &str), post_: (&str, &str)) -> Value {
    json!({
        PRE: serverless(pre_.0, &func(pre_.1)),
        POST: serverless(post_.0, &func(post_.1)),
    })
}

pub fn upstream(b: &Backend) -> Value {
    json!({"type": "roundrobin", "nodes": {b.node(): 1}})
}

/// PUTs route `id` on `uri` with `plugins`, proxying to `backend` when given.
pub fn lua_route(gw: &Gateway, id: &str, uri: &str, backend: Option<&Backend>, plugins: Value) {
    let mut route = json!({"uri": uri, "plugins": plugins});
    if let Some(b) = backend {
        route["upstream"] = upstream(b);
    }
    gw.put(&format!("/routes/{id}"), route);
}

/// A gateway with `threads` workers and the given `lua:` section.
pub fn lua_gateway(threads: usize, lua: LuaOpts) -> Gateway {
    Gateway::start(GatewayOpts {
        threads,
        lua: Some(lua),
        ..Default::default()
    })
}

/// Waits until the gateway log has a line containing every needle; returns it.
pub fn wait_log_line(gw: &Gateway, needles: &[&str]) -> String {
    let mut found = None;
    let ok = wait_until(WAIT, || {
        found = gw
            .logs()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned);
        found.is_some()
    });
    assert!(
        ok,
        "no gateway log line contains all of {needles:?}; log tail:\n{}",
        tail(&gw.logs(), 40)
    );
    found.unwrap()
}

/// The gateway log split into entries: a timestamped line and the lines that
/// follow it up to the next timestamp (a Lua traceback spans several lines).
pub fn log_entries(logs: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in logs.lines() {
        let b = line.as_bytes();
        let starts_entry = b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-';
        match out.last_mut() {
            Some(last) if !starts_entry => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.to_owned()),
        }
    }
    out
}

/// Waits until one log entry (see `log_entries`) contains every needle.
pub fn wait_log_entry(gw: &Gateway, needles: &[&str]) -> String {
    let mut found = None;
    let ok = wait_until(WAIT, || {
        found = log_entries(&gw.logs())
            .into_iter()
            .find(|l| needles.iter().all(|n| l.contains(n)));
        found.is_some()
    });
    assert!(
        ok,
        "no gateway log entry contains all of {needles:?}; log tail:\n{}",
        tail(&gw.logs(), 40)
    );
    found.unwrap()
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn samples(gw: &Gateway) -> Vec<Sample> {
    prom::parse(&gw.metrics_text()).expect("metrics parse")
}

/// `portico_lua_errors_total` summed over samples having all `pairs`.
pub fn lua_errors(gw: &Gateway, pairs: &[(&str, &str)]) -> f64 {
    prom::sum(&samples(gw), "portico_lua_errors_total", pairs)
}

/// All values of a header (name case-insensitive), in order.
pub fn header_all(r: &Response, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Steady load on one path from a background thread over a keep-alive
/// connection; every response that is not `expect_status` (or a transport
/// error) is a failure.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ok: Arc<AtomicUsize>,
    pub failed: Arc<AtomicUsize>,
    pub failures: Arc<Mutex<Vec<String>>>,
    /// Slowest single request seen.
    pub max_latency: Arc<Mutex<Duration>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    pub fn start(gw: &Gateway, path: &str, expect_status: u16) -> Load {
        let addr = gw.proxy_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let max_latency = Arc::new(Mutex::new(Duration::ZERO));
        let (s, o, f, fs, ml) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            failures.clone(),
            max_latency.clone(),
        );
        let req = Request::get(path);
        let thread = std::thread::spawn(move || {
            let mut conn = Conn::new(addr);
            while !s.load(Ordering::SeqCst) {
                let t = Instant::now();
                let r = conn.send(&req);
                let took = t.elapsed();
                {
                    let mut m = ml.lock().unwrap();
                    if took > *m {
                        *m = took;
                    }
                }
                match r {
                    Ok(r) if r.status == expect_status => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        f.fetch_add(1, Ordering::SeqCst);
                        let mut v = fs.lock().unwrap();
                        if v.len() < 10 {
                            v.push(format!("{other:?}"));
                        }
                    }
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            failures,
            max_latency,
            thread: Some(thread),
        }
    }

    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// The slowest single request so far.
    pub fn max_latency(&self) -> Duration {
        *self.max_latency.lock().unwrap()
    }

    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more successful requests than now went through.
    pub fn wait_more(&self, n: usize) {
        let target = self.ok() + n;
        let ok = wait_until(WAIT, || self.ok() >= target || self.failed() > 0);
        assert!(
            ok,
            "load stalled: ok {} (wanted {target}), failed {}",
            self.ok(),
            self.failed()
        );
    }

    /// Stops the thread; returns (ok, failed, first failures).
    pub fn finish(mut self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        (
            self.ok(),
            self.failed(),
            self.failures.lock().unwrap().clone(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
