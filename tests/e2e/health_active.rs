//! Active health checks (issue 3) against real backends: a node killed under load,
//! a slow node, tcp probes, https probes against a self-signed backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::health::*;
use crate::support::*;

/// One client request of the load thread.
#[derive(Debug, Clone)]
struct Sent {
    start: Instant,
    /// Ok(backend name) for a 200, Err(description) for anything else.
    outcome: Result<String, String>,
}

/// A client thread looping GET `path` through the gateway on a keep-alive connection.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &Gateway, path: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = gw.proxy_addr();
        let path = path.to_owned();
        let (st, lg) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut conn = Conn::new(addr);
            let req = Request::get(&path);
            while !st.load(Ordering::SeqCst) {
                let start = Instant::now();
                let outcome = match conn.send(&req) {
                    Ok(r) if r.status == 200 => r.backend().ok_or_else(|| format!("{r:?}")),
                    Ok(r) => Err(format!("{r:?}")),
                    Err(e) => Err(format!("transport error: {e}")),
                };
                lg.lock().unwrap().push(Sent { start, outcome });
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Sent> {
        self.log.lock().unwrap().clone()
    }

    fn count_since(&self, t: Instant) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.start >= t)
            .count()
    }

    /// Waits until at least `n` requests started after `t` were answered.
    fn wait_for(&self, t: Instant, n: usize) {
        let ok = wait_until(WAIT, || self.count_since(t) >= n);
        assert!(
            ok,
            "load: {n} requests after {t:?}; got {}",
            self.count_since(t)
        );
    }

    fn finish(mut self) -> Vec<Sent> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("load thread");
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn killed_backend_is_ejected_under_load_and_readmitted_after_restart() {
    const TCP_FAILURES: u64 = 3;
    const SUCCESSES: u64 = 2;
    let gw = Gateway::start_default();
    let mut a = Backend::start("a");
    let b = Backend::start("b");
    let c = Backend::start("c");
    // no `retries`: the default (nodes - 1) covers the window before ejection
    gw.put(
        "/upstreams/u",
        json!({"type": "roundrobin",
               "nodes": {a.node(): 1, b.node(): 1, c.node(): 1},
               "checks": {"active": {"type": "http", "http_path": "/hc", "timeout": 1,
                   "healthy": {"interval": 1, "successes": SUCCESSES},
                   "unhealthy": {"interval": 1, "tcp_failures": TCP_FAILURES}}}}),
    );
    gw.put("/routes/load", json!({"uri": "/load", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[a.port(), b.port(), c.port()]);
    let node_a = a.node();
    let up_a = [("upstream", "u"), ("node", node_a.as_str())];
    wait_metric(
        &gw,
        "portico_upstream_node_healthy",
        &up_a,
        "a starts healthy (1)",
        |v| v == 1.0,
    );

    let load = Load::start(&gw, "/load");
    let t0 = Instant::now();
    load.wait_for(t0, 30);
    assert!(a.path_hits("/load") > 0, "a served traffic before it died");

    // kill a: ejected after exactly TCP_FAILURES failed probes
    a.stop();
    let t_kill = Instant::now();
    let down = watch(&gw, "u", a.port(), "unhealthy", "tcp_failure", HC_WAIT);
    assert_eq!(
        down.max_before,
        TCP_FAILURES - 1,
        "a stays healthy until its {TCP_FAILURES}th failed probe; seen {:?}",
        down.seen
    );
    let t_eject = down.at;
    for p in [b.port(), c.port()] {
        assert_eq!(node_status(&gw, "u", p).as_deref(), Some("healthy"));
    }
    wait_metric(
        &gw,
        "portico_upstream_node_healthy",
        &up_a,
        "a is 0 once ejected",
        |v| v == 0.0,
    );
    wait_metric(
        &gw,
        "portico_upstream_health_transitions_total",
        &[
            ("upstream", "u"),
            ("node", node_a.as_str()),
            ("to", "unhealthy"),
        ],
        "one transition to unhealthy",
        |v| v == 1.0,
    );

    // traffic keeps flowing on b and c
    load.wait_for(t_eject, 100);
    let hits_b = b.path_hits("/load");
    let hits_c = c.path_hits("/load");
    load.wait_for(Instant::now(), 40);
    assert!(
        b.path_hits("/load") > hits_b && c.path_hits("/load") > hits_c,
        "b and c share the traffic while a is out"
    );

    // restart a on the same port: readmitted after SUCCESSES successful probes
    let probes_before = a.path_hits("/hc");
    let load_before = a.path_hits("/load");
    a.restart();
    let up = watch(&gw, "u", a.port(), "healthy", "success", HC_WAIT);
    assert_eq!(
        up.max_before,
        SUCCESSES - 1,
        "a stays unhealthy until its {SUCCESSES}th successful probe; seen {:?}",
        up.seen
    );
    let probes = a.path_hits("/hc") - probes_before;
    assert!(
        probes >= SUCCESSES as usize,
        "readmitted after {probes} probes, want >= {SUCCESSES}"
    );
    let ok = wait_until(WAIT, || a.path_hits("/load") > load_before + 5);
    assert!(ok, "a receives traffic again after readmission");
    wait_metric(
        &gw,
        "portico_upstream_node_healthy",
        &up_a,
        "a is 1 again",
        |v| v == 1.0,
    );
    wait_metric(
        &gw,
        "portico_upstream_health_transitions_total",
        &[
            ("upstream", "u"),
            ("node", node_a.as_str()),
            ("to", "healthy"),
        ],
        "one transition back to healthy",
        |v| v == 1.0,
    );

    let log = load.finish();
    let failed_after: Vec<&Sent> = log
        .iter()
        .filter(|s| s.start >= t_eject && s.outcome.is_err())
        .collect();
    assert!(
        failed_after.is_empty(),
        "no failed client request after ejection ({} of {} failed): {:?}",
        failed_after.len(),
        log.iter().filter(|s| s.start >= t_eject).count(),
        failed_after.iter().take(5).collect::<Vec<_>>()
    );
    let failed: Vec<&Sent> = log.iter().filter(|s| s.outcome.is_err()).collect();
    assert!(
        failed.is_empty(),
        "retries cover the window before ejection too: {} of {} requests failed, first {:?} (kill at +{:?}, ejection at +{:?})",
        failed.len(),
        log.len(),
        failed.iter().take(3).map(|s| (s.start - t0, &s.outcome)).collect::<Vec<_>>(),
        t_kill - t0,
        t_eject - t0
    );
}

#[test]
fn slow_backend_is_ejected_by_timeouts_and_readmitted_when_fast() {
    let gw = Gateway::start_default();
    let fast = Backend::start("fast");
    let slow = Backend::start("slow");
    gw.put(
        "/upstreams/u",
        json!({"nodes": {fast.node(): 1, slow.node(): 1},
               "checks": {"active": {"http_path": "/hc", "timeout": 1,
                   "healthy": {"interval": 1, "successes": 1},
                   "unhealthy": {"interval": 1, "timeouts": 2, "http_failures": 2}}}}),
    );
    gw.put("/routes/r", json!({"uri": "/r", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[fast.port(), slow.port()]);
    slow.set_delay(Duration::from_secs(2));

    let down = watch(
        &gw,
        "u",
        slow.port(),
        "unhealthy",
        "timeout_failure",
        HC_WAIT,
    );
    assert_eq!(
        down.max_before, 1,
        "ejected on the 2nd timeout, seen {:?}",
        down.seen
    );
    // no other counter caused it
    assert!(
        down.seen
            .iter()
            .all(|(_, c)| c["http_failure"] == 0 && c["tcp_failure"] == 0),
        "timeouts, not http/tcp failures: {:?}",
        down.seen
    );
    assert_eq!(
        node_status(&gw, "u", fast.port()).as_deref(),
        Some("healthy")
    );

    // the proxy skips it: every request is fast and answered by `fast`
    let slow_before = slow.path_hits("/r");
    let mut conn = gw.proxy_conn();
    let t = Instant::now();
    for i in 0..20 {
        let r = conn.send(&Request::get("/r")).unwrap();
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("fast"), "request {i}");
    }
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(
        slow.path_hits("/r"),
        slow_before,
        "no traffic to the slow node"
    );

    // fast again: readmitted by the next successful probe (successes 1)
    slow.set_delay(Duration::ZERO);
    watch(&gw, "u", slow.port(), "healthy", "success", HC_WAIT);
    let ok = wait_until(WAIT, || {
        gw.proxy_get("/r").backend().as_deref() == Some("slow")
    });
    assert!(ok, "slow node receives traffic again");
}

#[test]
fn tcp_checks_eject_a_closed_port_and_readmit_it() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let mut b = Backend::start("b");
    gw.put(
        "/upstreams/t",
        json!({"nodes": {a.node(): 1, b.node(): 1},
               "checks": {"active": {"type": "tcp", "timeout": 1,
                   "healthy": {"interval": 1, "successes": 2},
                   "unhealthy": {"interval": 1, "tcp_failures": 2}}}}),
    );
    gw.put("/routes/r", json!({"uri": "/r", "upstream_id": "t"}));
    gw.sync();
    let body = wait_checked(&gw, "t", &[a.port(), b.port()]);
    assert_eq!(body["type"], "tcp", "{body}");

    // tcp probes connect and send nothing (checkers run without any traffic)
    let ok = wait_until(WAIT, || a.connections() >= 2 && b.connections() >= 2);
    assert!(
        ok,
        "probes connect: a {} b {}",
        a.connections(),
        b.connections()
    );
    assert_eq!(a.hits() + b.hits(), 0, "a tcp probe sends no request");

    b.stop();
    let down = watch(&gw, "t", b.port(), "unhealthy", "tcp_failure", HC_WAIT);
    assert_eq!(
        down.max_before, 1,
        "ejected on the 2nd refused connect: {:?}",
        down.seen
    );
    assert_eq!(node_status(&gw, "t", a.port()).as_deref(), Some("healthy"));
    // the balancer skips b: on a fresh connection every request lands on a, first try
    for i in 0..10 {
        let r = gw.proxy_get("/r");
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.backend().as_deref(), Some("a"));
    }

    let conns = b.connections();
    b.restart();
    let up = watch(&gw, "t", b.port(), "healthy", "success", HC_WAIT);
    assert_eq!(
        up.max_before, 1,
        "readmitted on the 2nd successful connect: {:?}",
        up.seen
    );
    assert!(
        b.connections() >= conns + 2,
        "readmitted by probes that connected"
    );
    let ok = wait_until(WAIT, || {
        gw.proxy_get("/r").backend().as_deref() == Some("b")
    });
    assert!(ok, "b receives traffic again");
}

#[test]
fn https_checks_against_a_self_signed_backend() {
    let gw = Gateway::start_default();
    let tls = Backend::start_tls("tls");
    let checks = |verify: bool| {
        json!({"active": {"type": "https", "http_path": "/hc", "timeout": 1,
            "https_verify_certificate": verify,
            "healthy": {"interval": 1, "successes": 1},
            "unhealthy": {"interval": 1, "tcp_failures": 2, "http_failures": 2}}})
    };
    // the harness's TLS backend really is TLS-only and self-signed
    assert!(
        http::send(tls.addr(), &Request::get("/hc")).map_or(true, |r| r.status != 200),
        "plain HTTP must not work against the TLS backend"
    );

    gw.put(
        "/upstreams/noverify",
        json!({"nodes": {tls.node(): 1}, "checks": checks(false)}),
    );
    gw.put(
        "/upstreams/verify",
        json!({"nodes": {tls.node(): 1}, "checks": checks(true)}),
    );
    gw.sync();
    let body = wait_checked(&gw, "noverify", &[tls.port()]);
    assert_eq!(body["type"], "https", "{body}");

    // verify on: the self-signed certificate fails the handshake -> tcp failures -> unhealthy
    let down = watch(
        &gw,
        "verify",
        tls.port(),
        "unhealthy",
        "tcp_failure",
        HC_WAIT,
    );
    assert_eq!(down.max_before, 1, "{:?}", down.seen);

    // verify off: probes complete over TLS (the backend answers them) and succeed
    let ok = wait_until(HC_WAIT, || {
        tls.path_hits("/hc") >= 3
            && node_hc(&gw, "noverify", tls.port())
                .is_some_and(|n| n["counter"]["success"].as_u64() >= Some(2))
    });
    assert!(
        ok,
        "https probes with verification off succeed: hits {} node {:?}",
        tls.path_hits("/hc"),
        node_hc(&gw, "noverify", tls.port())
    );
    let n = node_hc(&gw, "noverify", tls.port()).unwrap();
    assert_eq!(n["status"], "healthy", "{n}");
    assert_eq!(n["counter"]["tcp_failure"], 0, "{n}");
    assert_eq!(n["counter"]["http_failure"], 0, "{n}");
    // same node, two upstreams: state is per (upstream, node)
    assert_eq!(
        node_status(&gw, "verify", tls.port()).as_deref(),
        Some("unhealthy")
    );
}

#[test]
fn round_robin_keeps_its_weights_over_the_healthy_nodes() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    let c = Backend::start("c");
    gw.put(
        "/upstreams/u",
        json!({"type": "roundrobin",
               "nodes": [{"host": "127.0.0.1", "port": a.port(), "weight": 5},
                         {"host": "127.0.0.1", "port": c.port(), "weight": 1},
                         {"host": "127.0.0.1", "port": b.port(), "weight": 1}],
               "checks": {"active": {"http_path": "/hc",
                   "healthy": {"interval": 1, "successes": 1},
                   "unhealthy": {"interval": 1, "http_failures": 1}}}}),
    );
    gw.put("/routes/rr", json!({"uri": "/rr", "upstream_id": "u"}));
    gw.sync();
    wait_checked(&gw, "u", &[a.port(), b.port(), c.port()]);
    c.set_status(503);
    watch(&gw, "u", c.port(), "unhealthy", "http_failure", HC_WAIT);

    let mut conn = gw.proxy_conn();
    let seq: Vec<String> = (0..600)
        .map(|i| {
            let r = conn.send(&Request::get("/rr")).unwrap();
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            r.backend().unwrap()
        })
        .collect();
    let count = |n: &str| seq.iter().filter(|x| *x == n).count();
    assert_eq!(count("c"), 0, "the unhealthy node gets nothing");
    assert!(
        count("a").abs_diff(500) <= 6 && count("b").abs_diff(100) <= 6,
        "5:1 over the healthy nodes: a {} b {}",
        count("a"),
        count("b")
    );
    // smooth: b is spread out (never twice in a row), as nginx's smooth WRR over {a:5, b:1}
    let first: Vec<&str> = seq[..12].iter().map(String::as_str).collect();
    let bs: Vec<usize> = (0..12).filter(|&i| first[i] == "b").collect();
    assert!(
        bs.len() == 2 && bs[1] - bs[0] == 6,
        "smooth 5:1 order, one b every 6 picks: {first:?}"
    );
}
