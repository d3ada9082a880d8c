//! chash with health checks (issue 3): an unhealthy node's keys walk the ring to the
//! next healthy node, no other key moves, and they all come back after recovery.

use std::collections::BTreeMap;

use crate::support::health::*;
use crate::support::*;

const KEYS: usize = 200;

fn key_map(gw: &Gateway) -> Vec<String> {
    let mut conn = gw.proxy_conn();
    (0..KEYS)
        .map(|i| {
            let req = Request::get("/ch").header("X-User", &format!("user-{i}"));
            let r = conn.send(&req).unwrap_or_else(|e| panic!("key {i}: {e}"));
            assert_eq!(r.status, 200, "key {i}: {r:?}");
            r.backend().expect("backend echo")
        })
        .collect()
}

fn histogram(map: &[String]) -> BTreeMap<&str, usize> {
    let mut h = BTreeMap::new();
    for n in map {
        *h.entry(n.as_str()).or_default() += 1;
    }
    h
}

#[test]
fn chash_only_the_dead_nodes_keys_move_and_they_move_back() {
    let gw = Gateway::start_default();
    let a = Backend::start("a");
    let mut b = Backend::start("b");
    let c = Backend::start("c");
    gw.put(
        "/upstreams/ch",
        json!({"type": "chash", "hash_on": "header", "key": "x-user",
               "nodes": {a.node(): 1, b.node(): 1, c.node(): 1},
               "checks": {"active": {"type": "http", "http_path": "/hc",
                   "healthy": {"interval": 1, "successes": 2},
                   "unhealthy": {"interval": 1, "tcp_failures": 2}}}}),
    );
    gw.put("/routes/ch", json!({"uri": "/ch", "upstream_id": "ch"}));
    gw.sync();
    wait_checked(&gw, "ch", &[a.port(), b.port(), c.port()]);

    let before = key_map(&gw);
    assert_eq!(key_map(&gw), before, "the mapping is stable");
    let on_b = before.iter().filter(|n| *n == "b").count();
    assert!(
        (10..KEYS).contains(&on_b),
        "b owns some keys, not all: {:?}",
        histogram(&before)
    );

    b.stop();
    watch(&gw, "ch", b.port(), "unhealthy", "tcp_failure", HC_WAIT);
    let during = key_map(&gw);
    let mut moved_to = BTreeMap::new();
    for i in 0..KEYS {
        if before[i] == "b" {
            assert_ne!(during[i], "b", "key {i} still on the dead node");
            *moved_to.entry(during[i].clone()).or_insert(0) += 1;
        } else {
            assert_eq!(
                during[i], before[i],
                "key user-{i} was on healthy {} and moved to {} while b is out",
                before[i], during[i]
            );
        }
    }
    // walking the ring spreads b's keys over the remaining nodes rather than dumping
    // them all on one (informational unless b owned very few keys)
    eprintln!("b's {on_b} keys moved to {moved_to:?}");

    b.restart();
    watch(&gw, "ch", b.port(), "healthy", "success", HC_WAIT);
    let after = key_map(&gw);
    let back: Vec<usize> = (0..KEYS).filter(|&i| after[i] != before[i]).collect();
    assert!(
        back.is_empty(),
        "after readmission every key is on its original node; {} differ, e.g. user-{} {} -> {}",
        back.len(),
        back.first().copied().unwrap_or(0),
        back.first().map_or("", |&i| before[i].as_str()),
        back.first().map_or("", |&i| after[i].as_str()),
    );
}
