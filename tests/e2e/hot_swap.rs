//! Config swaps under continuous load: not one request fails.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::support::*;

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    seen: Mutex<BTreeSet<String>>,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, result: std::io::Result<Response>) {
        match result {
            Ok(r) if (200..300).contains(&r.status) => {
                self.ok.fetch_add(1, Ordering::SeqCst);
                if let Some(b) = r.backend() {
                    self.seen.lock().unwrap().insert(b);
                }
            }
            other => {
                self.failed.fetch_add(1, Ordering::SeqCst);
                let mut f = self.failures.lock().unwrap();
                if f.len() < 10 {
                    f.push(format!("{other:?}"));
                }
            }
        }
    }
}

/// Sends requests until `stop`: over one keep-alive connection (`keep_alive`)
/// or a fresh connection each time.
fn client(
    gw: &Gateway,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> JoinHandle<()> {
    let addr = gw.proxy_addr();
    std::thread::spawn(move || {
        let mut conn = Conn::new(addr);
        let req = Request::get("/hs?client=1");
        while !stop.load(Ordering::SeqCst) {
            let result = if keep_alive {
                conn.send(&req)
            } else {
                http::send(addr, &req)
            };
            tally.record(result);
        }
    })
}

#[test]
fn swaps_under_load_fail_no_request() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    let up = |x: &Backend| json!({"type": "roundrobin", "nodes": {x.node(): 1}});
    gw.put("/upstreams/u1", up(&a));
    gw.put("/upstreams/u2", up(&b));
    gw.put("/routes/hs", json!({"uri": "/hs", "upstream_id": "u1"}));
    gw.sync();

    let stop = Arc::new(AtomicBool::new(false));
    let keep = Arc::new(Tally::default());
    let fresh = Arc::new(Tally::default());
    let threads = [
        client(&gw, true, stop.clone(), keep.clone()),
        client(&gw, false, stop.clone(), fresh.clone()),
    ];
    let total = |t: &Tally| t.ok.load(Ordering::SeqCst) + t.failed.load(Ordering::SeqCst);

    for i in 0..50 {
        // let traffic flow between swaps
        let (k0, f0) = (total(&keep), total(&fresh));
        assert!(
            wait_until(WAIT, || total(&keep) >= k0 + 3 && total(&fresh) > f0),
            "clients are making progress"
        );
        if i % 2 == 0 {
            // route flips between two upstreams (and changes shape)
            let target = if i % 4 == 0 { "u2" } else { "u1" };
            gw.put(
                "/routes/hs",
                json!({"uri": "/hs", "upstream_id": target, "desc": format!("swap {i}")}),
            );
        } else {
            // upstream u1 flips its node between the two backends
            let x = if i % 4 == 1 { &b } else { &a };
            gw.put("/upstreams/u1", up(x));
        }
    }
    let (k0, f0) = (total(&keep), total(&fresh));
    assert!(wait_until(WAIT, || total(&keep) >= k0 + 3 && total(&fresh) > f0));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }

    for (name, t) in [
        ("keep-alive client", &keep),
        ("new-connection client", &fresh),
    ] {
        let ok = t.ok.load(Ordering::SeqCst);
        let failed = t.failed.load(Ordering::SeqCst);
        eprintln!("{name}: {ok} ok, {failed} failed");
        assert_eq!(
            failed,
            0,
            "{name}: failed requests during swaps: {:?}",
            t.failures.lock().unwrap()
        );
        assert!(ok > 50, "{name}: {ok} requests");
    }
    let seen: BTreeSet<String> = keep
        .seen
        .lock()
        .unwrap()
        .union(&fresh.seen.lock().unwrap())
        .cloned()
        .collect();
    assert_eq!(
        seen,
        ["a", "b"].iter().map(|s| s.to_string()).collect(),
        "both backends served during the swaps"
    );
    assert!(a.hits() > 0 && b.hits() > 0);
}
