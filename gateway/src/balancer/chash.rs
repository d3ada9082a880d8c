//! Ketama consistent hashing on top of `pingora_ketama`, with four times nginx's points.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use pingora_ketama::{Bucket, Continuum};

use super::{BalancerNode, NodeSet};

/// Most nodes a ring can hold: `pingora_ketama` stores a point's node as a
/// `u16`, so further nodes would silently alias earlier ones. Positive-weight
/// nodes beyond this are left out of the ring (config validation should
/// reject such upstreams long before).
pub const MAX_CHASH_NODES: usize = u16::MAX as usize + 1;

/// `pingora_ketama` weight given per normalised weight unit: each of its weight
/// units is 160 points (nginx's count), so a unit here is 640 points.
///
/// nginx's 160 points per node leave a ring uneven: over 10 equal nodes one
/// owns up to 11-14% more keys than the mean (measured on loopback addresses,
/// `docs/benchmarks.md` S4). Four times the points brings that under ±5%, at
/// the price of nginx key compatibility (APISIX's resty.chash ring is not
/// nginx's either) and 4x ring memory, which is small (7.7 KB per node).
pub const POINTS_FACTOR: u32 = 4;

/// Most weight units (after gcd normalisation) a ring is built with. Every
/// unit costs 640 ring points (12 bytes each: 8 in the `Continuum`, 4 in our
/// position table), so this caps a ring at 163,840 points / about 2 MB (plus
/// up to one unit per node from rounding up). Larger totals are scaled down
/// proportionally, each node keeping at least one unit, so weights are kept
/// to a precision of 1/256: a `1:16383` upstream rings as `1:255`. It was
/// 16,384 units (126 MB per ring): a 2 KB `PUT /configs` with eight such
/// upstreams took 6 s and 1 GB to apply.
pub const MAX_RING_WEIGHT_UNITS: u64 = 256;

/// Points one ring of nodes with these weights holds (before hash collisions):
/// what [`ChashRing::new`] will allocate, for the snapshot-wide cap checked
/// before any ring is built.
pub fn ring_points(weights: impl Iterator<Item = u32> + Clone) -> u64 {
    let units: u64 = ring_weight_units(weights.filter(|&w| w > 0))
        .iter()
        .map(|&u| u64::from(u))
        .sum();
    units * 160 * u64::from(POINTS_FACTOR)
}

/// Ketama consistent-hash ring (the algorithm of nginx `hash $key consistent`,
/// with [`POINTS_FACTOR`] times its points).
///
/// Built with `pingora_ketama::Continuum`: each node contributes
/// `640 × weight` points whose hashes chain from
/// `crc32("<ip>\0<port>" ‖ previous point hash)`; a key maps to the first
/// point whose hash is ≥ `crc32(key)`, wrapping around. nginx's ring is the
/// same chain cut at 160 points per weight unit, so its points are a subset of
/// ours and keys map differently from nginx.
///
/// Before building, zero-weight (drained) nodes are left out and the
/// remaining weights are divided by their gcd, so `2:2:4` and `1:1:2` give the
/// same ring.
///
/// The ring covers every node with weight > 0 and is never rebuilt on health
/// changes: an unacceptable node is skipped by walking on to the next point,
/// so only that node's keys move, and they spread over the other nodes in
/// ring order.
///
/// Duplicate addresses (which config validation rejects) share one hash
/// chain: the ring holds the chain once, long enough for the largest of their
/// weights, and all of its points map to the *first* of the duplicate
/// indices; the later duplicates are never picked.
pub struct ChashRing {
    /// The ketama ring; used for the key → ring position lookup.
    continuum: Continuum,
    /// Node index for every ring position, parallel to the continuum's
    /// sorted points. Lets `pick` walk the ring without hashing addresses.
    positions: Box<[u32]>,
    /// Address → node index of the nodes on the ring.
    index_of: HashMap<SocketAddr, usize>,
    /// Number of distinct node indices present in `positions`.
    distinct: usize,
    /// Length of the node slice the ring was built from.
    node_count: usize,
}

impl ChashRing {
    /// Builds the ring over the nodes with weight > 0; node `i` is `nodes[i]`.
    pub fn new(nodes: &[BalancerNode]) -> Self {
        let ring_nodes: Vec<(usize, &BalancerNode)> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.weight > 0)
            .take(MAX_CHASH_NODES)
            .collect();

        let units = ring_weight_units(ring_nodes.iter().map(|(_, n)| n.weight));
        let buckets: Vec<Bucket> = ring_nodes
            .iter()
            .zip(&units)
            .map(|((_, n), &w)| Bucket::new(n.addr, w * POINTS_FACTOR))
            .collect();

        let mut index_of = HashMap::with_capacity(ring_nodes.len());
        for &(i, n) in &ring_nodes {
            // First occurrence wins for duplicate addresses (see type docs).
            index_of.entry(n.addr).or_insert(i);
        }

        let continuum = Continuum::new(&buckets);
        let positions = position_table(&continuum, &index_of);
        let mut seen = NodeSet::with_capacity(nodes.len());
        let distinct = positions
            .iter()
            .filter(|&&i| seen.insert(i as usize))
            .count();

        ChashRing {
            continuum,
            positions,
            index_of,
            distinct,
            node_count: nodes.len(),
        }
    }

    /// Number of points on the ring (640 per normalised weight unit, minus
    /// the rare hash collisions that ketama removes). For diagnostics.
    #[allow(dead_code, reason = "diagnostic accessor; the gateway may not call it")]
    pub fn points(&self) -> usize {
        self.positions.len()
    }

    /// Index of the node with this address, if it is on the ring (for
    /// duplicate addresses: the first index).
    #[allow(dead_code, reason = "lookup for callers; the gateway may not call it")]
    pub fn index_of(&self, addr: &SocketAddr) -> Option<usize> {
        self.index_of.get(addr).copied()
    }

    /// Picks the node owning `key`, or, if `accept` rejects it, the next
    /// acceptable node found walking the ring clockwise.
    ///
    /// `accept` is called at most once per distinct node. The walk gives up
    /// (returns `None`) once every distinct node on the ring has been
    /// rejected, and in any case after one full turn of the ring.
    pub fn pick<F: Fn(usize) -> bool>(&self, key: &[u8], accept: F) -> Option<usize> {
        let len = self.positions.len();
        if len == 0 {
            return None;
        }
        // Same lookup as `Continuum::node`: crc32(key), first point ≥ it.
        let start = self.continuum.node_idx(key);
        let first = self.node_at(start);
        if accept(first) {
            return Some(first);
        }
        if self.distinct <= 1 {
            return None;
        }

        let mut seen = NodeSet::with_capacity(self.node_count);
        seen.insert(first);
        let mut rejected = 1usize;
        for pos in (start + 1..len).chain(0..start) {
            let node = self.node_at(pos);
            if !seen.insert(node) {
                continue;
            }
            if accept(node) {
                return Some(node);
            }
            rejected += 1;
            if rejected == self.distinct {
                break;
            }
        }
        None
    }

    /// Node index of ring position `pos` (`pos < self.positions.len()`).
    fn node_at(&self, pos: usize) -> usize {
        self.positions[pos] as usize
    }
}

impl fmt::Debug for ChashRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChashRing")
            .field("nodes", &self.node_count)
            .field("distinct_on_ring", &self.distinct)
            .field("points", &self.positions.len())
            .finish()
    }
}

/// Ring weight units for positive `weights`: divided by their gcd, then
/// scaled down proportionally if the total exceeds [`MAX_RING_WEIGHT_UNITS`].
pub(super) fn ring_weight_units(weights: impl Iterator<Item = u32> + Clone) -> Vec<u32> {
    let divisor = weights.clone().fold(0, gcd).max(1);
    let units: Vec<u32> = weights.map(|w| w / divisor).collect();
    let total: u64 = units.iter().map(|&w| u64::from(w)).sum();
    if total <= MAX_RING_WEIGHT_UNITS {
        return units;
    }
    units
        .iter()
        .map(|&w| {
            let scaled = u64::from(w) * MAX_RING_WEIGHT_UNITS / total;
            // scaled <= MAX_RING_WEIGHT_UNITS, so the conversion cannot fail.
            u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
        })
        .collect()
}

/// Greatest common divisor (`gcd(0, x) = x`).
fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Walks the continuum once from position 0 and records the node index of
/// every point, in ring order.
fn position_table(continuum: &Continuum, index_of: &HashMap<SocketAddr, usize>) -> Box<[u32]> {
    let mut positions = Vec::new();
    let mut pos = 0usize;
    // `get_addr` advances `pos` modulo the ring length, so returning to 0
    // means one full turn; an empty ring yields `None` at once.
    while let Some(addr) = continuum.get_addr(&mut pos) {
        let index = index_of
            .get(addr)
            .copied()
            .expect("every ring address comes from a bucket built from index_of's nodes");
        let index = u32::try_from(index).expect("node indices fit in u32");
        positions.push(index);
        if pos == 0 {
            break;
        }
    }
    positions.into_boxed_slice()
}
