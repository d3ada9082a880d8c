//! Behavioural tests for the balancer (nginx sequences, ketama properties).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use pingora_ketama::{Bucket, Continuum};

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn node(a: &str, weight: u32) -> BalancerNode {
    BalancerNode {
        addr: addr(a),
        weight,
    }
}

/// `n` nodes 10.0.0.1:80 .. 10.0.0.n:80 with weight 1.
fn equal_nodes(n: usize) -> Vec<BalancerNode> {
    (1..=n)
        .map(|i| node(&format!("10.0.0.{i}:80"), 1))
        .collect()
}

/// Deterministic, well-mixed test keys (splitmix64 rendered as text).
fn keys(n: usize) -> Vec<Vec<u8>> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            format!("/api/v1/users/{z:016x}").into_bytes()
        })
        .collect()
}

fn all(_: usize) -> bool {
    true
}

fn picks(p: &Picker, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| p.pick(b"", all).expect("a node is available"))
        .collect()
}

// ---------------------------------------------------------------- SmoothWrr

#[test]
fn wrr_5_1_1_is_the_nginx_sequence() {
    let p = Picker::round_robin(&[
        node("10.0.0.1:80", 5),
        node("10.0.0.2:80", 1),
        node("10.0.0.3:80", 1),
    ]);
    let names: String = picks(&p, 21).iter().map(|&i| ["a", "b", "c"][i]).collect();
    assert_eq!(names, "aabacaa".repeat(3));
}

#[test]
fn wrr_5_1_ratio_is_exact() {
    let p = Picker::round_robin(&[node("10.0.0.1:80", 5), node("10.0.0.2:80", 1)]);
    let got = picks(&p, 600);
    assert_eq!(got.iter().filter(|&&i| i == 0).count(), 500);
    assert_eq!(got.iter().filter(|&&i| i == 1).count(), 100);
}

#[test]
fn wrr_zero_weight_is_never_picked() {
    let p = Picker::round_robin(&[
        node("10.0.0.1:80", 0),
        node("10.0.0.2:80", 3),
        node("10.0.0.3:80", 0),
        node("10.0.0.4:80", 1),
    ]);
    let got = picks(&p, 400);
    assert!(got.iter().all(|&i| i == 1 || i == 3));
    assert_eq!(got.iter().filter(|&&i| i == 1).count(), 300);
    // Drained nodes are not offered to `accept` and not returned even when accepted.
    assert_eq!(p.pick(b"", |i| i == 0 || i == 2), None);
}

#[test]
fn wrr_all_zero_or_empty_is_none() {
    let p = Picker::round_robin(&[node("10.0.0.1:80", 0), node("10.0.0.2:80", 0)]);
    assert_eq!(p.pick(b"", all), None);
    assert_eq!(Picker::round_robin(&[]).pick(b"", all), None);
    let p = Picker::round_robin(&[node("10.0.0.1:80", 2)]);
    assert_eq!(p.pick(b"", |_| false), None);
}

#[test]
fn wrr_skip_keeps_smooth_order_among_the_rest() {
    // b permanently rejected: a and c must follow the 5:1 smooth sequence,
    // exactly as a fresh 5:1 rotation over just those two nodes.
    let p = Picker::round_robin(&[
        node("10.0.0.1:80", 5),
        node("10.0.0.2:80", 1),
        node("10.0.0.3:80", 1),
    ]);
    let reference = Picker::round_robin(&[node("10.0.0.1:80", 5), node("10.0.0.3:80", 1)]);
    for _ in 0..60 {
        let got = p.pick(b"", |i| i != 1).expect("a and c are available");
        let want = [0, 2][reference.pick(b"", all).expect("reference has nodes")];
        assert_eq!(got, want);
    }
    let names: String = (0..6)
        .map(|_| ["a", "b", "c"][p.pick(b"", |i| i != 1).expect("available")])
        .collect();
    assert_eq!(names, "aaacaa");
}

#[test]
fn wrr_never_returns_a_rejected_node() {
    let p = Picker::round_robin(&[
        node("10.0.0.1:80", 5),
        node("10.0.0.2:80", 1),
        node("10.0.0.3:80", 1),
        node("10.0.0.4:80", 3),
    ]);
    for round in 0..2000usize {
        // Varying rejection patterns, like retries excluding tried nodes.
        let rejected = round % 16;
        let got = p.pick(b"", |i| rejected & (1 << i) == 0);
        match got {
            Some(i) => assert_eq!(rejected & (1 << i), 0, "round {round}"),
            None => assert_eq!(rejected, 0b1111, "round {round}"),
        }
    }
}

#[test]
fn wrr_accept_is_asked_once_per_weighted_node() {
    let p = Picker::round_robin(&[
        node("10.0.0.1:80", 1),
        node("10.0.0.2:80", 0),
        node("10.0.0.3:80", 1),
    ]);
    let asked = std::cell::RefCell::new(Vec::new());
    p.pick(b"", |i| {
        asked.borrow_mut().push(i);
        true
    });
    assert_eq!(asked.into_inner(), vec![0, 2]);
}

#[test]
fn wrr_is_exact_under_concurrency() {
    let p = Arc::new(Picker::round_robin(&[
        node("10.0.0.1:80", 5),
        node("10.0.0.2:80", 1),
        node("10.0.0.3:80", 1),
    ]));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                let mut counts = [0usize; 3];
                for _ in 0..7 * 125 {
                    counts[p.pick(b"", all).expect("available")] += 1;
                }
                counts
            })
        })
        .collect();
    let mut total = [0usize; 3];
    for t in threads {
        for (sum, n) in total.iter_mut().zip(t.join().expect("thread ran")) {
            *sum += n;
        }
    }
    // 7000 picks = 1000 full cycles, whatever the interleaving.
    assert_eq!(total, [5000, 1000, 1000]);
}

#[test]
fn picker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Picker>();
}

// ---------------------------------------------------------------- ChashRing

#[test]
fn chash_same_key_same_node() {
    let p = Picker::chash(&equal_nodes(10));
    let first = p.pick(b"/some/path?user=42", all);
    assert!(first.is_some());
    for _ in 0..1000 {
        assert_eq!(p.pick(b"/some/path?user=42", all), first);
    }
}

#[test]
fn chash_distribution_over_equal_nodes() {
    // With nginx's 160 points per node these 10 nodes owned between -12.4%
    // and +14.0% of the ring; with 640 points each one owns within ±10%
    // (the benchmark target), checked with 100,000 keys.
    let p = Picker::chash(&equal_nodes(10));
    let mut counts = [0usize; 10];
    for k in keys(100_000) {
        counts[p.pick(&k, all).expect("available")] += 1;
    }
    for (i, &c) in counts.iter().enumerate() {
        assert!(
            (9_000..=11_000).contains(&c),
            "node {i} got {c} keys: {counts:?}"
        );
    }
}

#[test]
fn chash_adding_a_node_only_moves_keys_to_it() {
    let before = Picker::chash(&equal_nodes(10));
    let after = Picker::chash(&equal_nodes(11));
    let ks = keys(10_000);
    let mut moved = 0usize;
    for k in &ks {
        let old = before.pick(k, all).expect("available");
        let new = after.pick(k, all).expect("available");
        if old != new {
            moved += 1;
            assert_eq!(new, 10, "a remapped key must move to the new node");
        }
    }
    let share = moved as f64 / ks.len() as f64;
    assert!((0.05..=0.15).contains(&share), "moved share {share}");
}

#[test]
fn chash_rejecting_a_node_moves_only_its_keys() {
    let p = Picker::chash(&equal_nodes(10));
    let down = 3;
    let mut moved = 0usize;
    for k in keys(10_000) {
        let home = p.pick(&k, all).expect("available");
        let got = p.pick(&k, |i| i != down).expect("nine nodes left");
        if home == down {
            assert_ne!(got, down);
            moved += 1;
        } else {
            assert_eq!(got, home, "keys of healthy nodes must stay");
        }
    }
    assert!(moved > 0);
}

#[test]
fn chash_rejecting_everything_is_none_and_bounded() {
    let p = Picker::chash(&equal_nodes(10));
    let asked = std::cell::RefCell::new(Vec::new());
    let got = p.pick(b"key", |i| {
        asked.borrow_mut().push(i);
        false
    });
    assert_eq!(got, None);
    let mut asked = asked.into_inner();
    assert_eq!(asked.len(), 10, "each distinct node asked exactly once");
    asked.sort_unstable();
    assert_eq!(asked, (0..10).collect::<Vec<_>>());
    // Only one node acceptable: every key lands on it.
    for k in keys(100) {
        assert_eq!(p.pick(&k, |i| i == 7), Some(7));
    }
}

#[test]
fn chash_weights_1_1_2() {
    let p = Picker::chash(&[
        node("10.0.0.1:80", 1),
        node("10.0.0.2:80", 1),
        node("10.0.0.3:80", 2),
    ]);
    let ks = keys(10_000);
    let heavy = ks.iter().filter(|k| p.pick(k, all) == Some(2)).count();
    let share = heavy as f64 / ks.len() as f64;
    assert!((0.45..=0.55).contains(&share), "weight-2 share {share}");
}

#[test]
fn chash_gcd_normalisation() {
    let a = ChashRing::new(&[
        node("10.0.0.1:80", 1),
        node("10.0.0.2:80", 1),
        node("10.0.0.3:80", 2),
    ]);
    let b = ChashRing::new(&[
        node("10.0.0.1:80", 2),
        node("10.0.0.2:80", 2),
        node("10.0.0.3:80", 4),
    ]);
    assert_eq!(a.points(), b.points());
    for k in keys(1000) {
        assert_eq!(a.pick(&k, all), b.pick(&k, all));
    }
}

#[test]
fn chash_zero_weight_nodes_keep_their_indices_but_are_never_picked() {
    let with_drained = Picker::chash(&[
        node("10.0.0.9:80", 0),
        node("10.0.0.1:80", 1),
        node("10.0.0.8:80", 0),
        node("10.0.0.2:80", 1),
    ]);
    let plain = Picker::chash(&[node("10.0.0.1:80", 1), node("10.0.0.2:80", 1)]);
    for k in keys(1000) {
        let got = with_drained.pick(&k, all).expect("available");
        assert!(got == 1 || got == 3);
        let want = plain.pick(&k, all).expect("available");
        assert_eq!(got, [1, 3][want]);
    }
    assert_eq!(with_drained.pick(b"k", |i| i == 0 || i == 2), None);
    let all_zero = Picker::chash(&[node("10.0.0.1:80", 0)]);
    assert_eq!(all_zero.pick(b"k", all), None);
    assert_eq!(Picker::chash(&[]).pick(b"k", all), None);
}

#[test]
fn chash_duplicate_addresses_collapse_to_the_first_index() {
    let ring = ChashRing::new(&[
        node("10.0.0.1:80", 1),
        node("10.0.0.2:80", 1),
        node("10.0.0.1:80", 1),
    ]);
    assert_eq!(ring.index_of(&addr("10.0.0.1:80")), Some(0));
    let mut seen = HashSet::new();
    for k in keys(2000) {
        seen.insert(ring.pick(&k, all).expect("available"));
    }
    assert_eq!(seen, HashSet::from([0, 1]));
    // Bounded even though index 2 never appears on the ring.
    assert_eq!(ring.pick(b"k", |i| i == 2), None);
}

#[test]
fn chash_is_pingora_ketama() {
    let nodes = [
        node("10.0.0.1:443", 1),
        node("10.0.0.2:443", 3),
        node("10.0.0.3:443", 2),
        node("[2001:db8::1]:8080", 1),
        node("192.168.7.20:9000", 5),
    ];
    let ring = ChashRing::new(&nodes);
    let buckets: Vec<Bucket> = nodes
        .iter()
        .map(|n| Bucket::new(n.addr, n.weight * chash::POINTS_FACTOR))
        .collect();
    let reference = Continuum::new(&buckets);
    let fixed: [&[u8]; 6] = [
        b"",
        b"a",
        b"/some/path",
        b"user-1234",
        b"\xff\x00\x10",
        b"/i/am/a/rather/long/uri?with=query&and=more",
    ];
    for k in fixed.into_iter().map(<[u8]>::to_vec).chain(keys(2000)) {
        let got = ring.pick(&k, all).map(|i| nodes[i].addr);
        assert_eq!(got, reference.node(&k), "key {k:?}");
    }
}

#[test]
fn chash_ring_has_640_points_per_weight_unit() {
    // Four times nginx's 160 (see chash::POINTS_FACTOR); ketama drops the
    // rare colliding point.
    let ring = ChashRing::new(&equal_nodes(3));
    assert!(
        (3 * 640 - 3..=3 * 640).contains(&ring.points()),
        "{}",
        ring.points()
    );
}

#[test]
fn chash_failover_follows_the_ring_order() {
    // The failover order for a key is the order of first appearance of each
    // node along pingora-ketama's `node_iter`.
    let nodes = equal_nodes(5);
    let ring = ChashRing::new(&nodes);
    let buckets: Vec<Bucket> = nodes
        .iter()
        .map(|n| Bucket::new(n.addr, n.weight * chash::POINTS_FACTOR))
        .collect();
    let reference = Continuum::new(&buckets);
    for k in keys(200) {
        let mut order: Vec<SocketAddr> = Vec::new();
        for a in reference.node_iter(&k).take(ring.points()) {
            if !order.contains(a) {
                order.push(*a);
            }
        }
        let mut rejected: Vec<usize> = Vec::new();
        for want in order {
            let got = ring
                .pick(&k, |i| !rejected.contains(&i))
                .expect("available");
            assert_eq!(nodes[got].addr, want);
            rejected.push(got);
        }
        assert_eq!(ring.pick(&k, |i| !rejected.contains(&i)), None);
    }
}

#[test]
fn weight_units_are_normalised_and_capped() {
    assert_eq!(
        chash::ring_weight_units([6u32, 9, 3].into_iter()),
        vec![2, 3, 1]
    );
    assert_eq!(chash::ring_weight_units([7u32].into_iter()), vec![1]);
    let huge = chash::ring_weight_units([u32::MAX, 1].into_iter());
    assert!(huge.iter().map(|&w| u64::from(w)).sum::<u64>() <= chash::MAX_RING_WEIGHT_UNITS + 2);
    assert_eq!(huge[1], 1);
}

#[test]
fn node_set_inline_and_heap() {
    for cap in [3usize, 128, 129, 1000] {
        let mut s = NodeSet::with_capacity(cap);
        assert!(s.insert(cap - 1));
        assert!(!s.insert(cap - 1));
        assert!(s.contains(cap - 1));
        assert!(!s.contains(0));
    }
}

#[test]
fn chash_ring_size_is_capped() {
    let nodes = [
        BalancerNode {
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
        },
        BalancerNode {
            addr: "127.0.0.1:2".parse().unwrap(),
            weight: 16383,
        },
    ];
    let ring = ChashRing::new(&nodes);
    let cap = (chash::MAX_RING_WEIGHT_UNITS as usize + nodes.len()) * 640;
    assert!(ring.points() <= cap, "{} points", ring.points());
    assert_eq!(
        chash::ring_points(nodes.iter().map(|n| n.weight)),
        256 * 640,
        "1:16383 rings as 1:255"
    );
}
