//! nginx smooth weighted round-robin (`ngx_http_upstream_get_peer`).

use parking_lot::Mutex;

use super::{BalancerNode, NodeSet};

/// Smooth weighted round-robin, exactly as nginx's `ngx_http_upstream_get_peer`.
///
/// Every pick adds each acceptable node's effective weight to its current
/// weight, selects the node with the highest current weight (the first one in
/// node order on ties) and subtracts the sum of the added weights from the
/// winner. Weights 5:1:1 therefore give `a a b a c a a` per cycle instead of
/// `a a a a a b c`.
///
/// Differences from nginx, all deliberate:
/// * the effective weight is always the configured weight: nginx lowers it
///   after upstream failures, Portico handles failures through health checks
///   and the `accept` predicate instead;
/// * weight 0 (not allowed by nginx) means drained: the node takes no part in
///   the rotation at all.
///
/// Like nginx, nodes rejected by `accept` are skipped entirely: their current
/// weight neither grows nor shrinks, so the remaining nodes keep their smooth
/// order among themselves.
///
/// # Locking
/// The current weights are shared mutable state, kept in one
/// `parking_lot::Mutex` per upstream. The lock is held only for an
/// allocation-free pass of integer additions over the node list (a few ns for
/// typical upstreams); `accept` is evaluated *before* the lock is taken, so no
/// user code, I/O or other lock ever runs under it. An uncontended
/// `parking_lot` lock is a single atomic CAS, and under contention it spins
/// briefly before parking, so with such a short critical section the lock is
/// far cheaper than the proxying work it serves. Atomics per node would not be
/// enough anyway: the algorithm needs a consistent view of all current weights
/// to pick a single winner (nginx gets this for free by being per worker).
#[derive(Debug)]
pub struct SmoothWrr {
    /// Effective weight per node, as `i64` to avoid casts in the hot loop.
    /// 0 = drained.
    weights: Box<[i64]>,
    /// `current_weight` per node (nginx's `peer->current_weight`). The values
    /// always sum to 0, and each stays within about ±(node count × total
    /// weight), far from `i64` limits for `u32` weights.
    current: Mutex<Vec<i64>>,
}

impl SmoothWrr {
    /// Builds the rotation over `nodes`; node `i` is `nodes[i]`.
    pub fn new(nodes: &[BalancerNode]) -> Self {
        let weights: Box<[i64]> = nodes.iter().map(|n| i64::from(n.weight)).collect();
        let current = Mutex::new(vec![0; weights.len()]);
        SmoothWrr { weights, current }
    }

    /// Picks the next node index among the nodes with weight > 0 for which
    /// `accept` returns true; `None` if there is none.
    ///
    /// `accept` is called once per node with weight > 0, before the lock is
    /// taken.
    pub fn pick<F: Fn(usize) -> bool>(&self, accept: F) -> Option<usize> {
        let mut acceptable = NodeSet::with_capacity(self.weights.len());
        let mut count = 0usize;
        let mut only = 0usize;
        for (i, &weight) in self.weights.iter().enumerate() {
            if weight > 0 && accept(i) {
                acceptable.insert(i);
                count += 1;
                only = i;
            }
        }
        match count {
            0 => None,
            // With a single candidate nginx adds its weight and subtracts the
            // same total again: no state change, so the lock can be skipped.
            1 => Some(only),
            _ => Some(self.pick_locked(&acceptable)),
        }
    }

    /// The nginx loop proper, over a non-empty set of acceptable nodes.
    fn pick_locked(&self, acceptable: &NodeSet) -> usize {
        let mut current = self.current.lock();
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, (cur, &weight)) in current.iter_mut().zip(self.weights.iter()).enumerate() {
            if !acceptable.contains(i) {
                continue;
            }
            *cur += weight;
            total += weight;
            // Strictly greater: the first node wins ties, as in nginx.
            if best.is_none_or(|(_, best_cur)| *cur > best_cur) {
                best = Some((i, *cur));
            }
        }
        let (best, _) = best.expect("caller guarantees at least one acceptable node");
        current[best] -= total;
        best
    }
}
