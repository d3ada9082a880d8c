//! Upstream node selection: smooth weighted round-robin and consistent hashing.
//!
//! A [`Picker`] is built once per upstream when a config is applied and is then
//! shared (behind an `Arc`) by every request routed to that upstream, so it is
//! `Send + Sync` and `pick` takes `&self`.
//!
//! Both algorithms are nginx's:
//!
//! * [`SmoothWrr`] is `ngx_http_upstream_get_peer` (smooth weighted round-robin),
//!   the same sequence as nginx.
//! * [`ChashRing`] is the ketama ring of `hash $key consistent` (crc32), built on
//!   `pingora_ketama::Continuum` with 640 points per weight unit instead of
//!   nginx's 160, for an even spread (so keys map differently from nginx).
//!
//! Nodes are identified by their index in the slice passed to the constructor;
//! the caller keeps that slice (or an equivalent) to map the index back to a
//! peer. Health and retry state are *not* kept here: the caller passes an
//! `accept(index)` predicate on every pick, which lets the same immutable
//! picker serve requests that have tried different nodes.

use std::net::SocketAddr;

pub mod chash;
pub mod priority;
pub mod wrr;

pub use chash::ChashRing;
pub use priority::{PickerKind, PriorityPicker};
pub use wrr::SmoothWrr;

#[cfg(test)]
mod tests;

/// One upstream node as the balancer sees it (index = position in the slice
/// given to the constructor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BalancerNode {
    /// Address of the node; consistent hashing hashes its textual form.
    pub addr: SocketAddr,
    /// Relative weight. `0` means drained: the node is never picked.
    pub weight: u32,
}

/// Load-balancing strategy of one upstream, built once per upstream at
/// config-apply time and shared by all requests (`Send + Sync`).
#[derive(Debug)]
pub enum Picker {
    /// nginx smooth weighted round-robin.
    RoundRobin(SmoothWrr),
    /// Ketama consistent hashing (640 points per weight unit).
    Chash(ChashRing),
}

impl Picker {
    /// Smooth weighted round-robin over `nodes`.
    pub fn round_robin(nodes: &[BalancerNode]) -> Picker {
        Picker::RoundRobin(SmoothWrr::new(nodes))
    }

    /// Consistent hashing over `nodes` (see `ChashRing::new`).
    pub fn chash(nodes: &[BalancerNode]) -> Picker {
        Picker::Chash(ChashRing::new(nodes))
    }

    /// Pick a node index.
    ///
    /// `accept(i)` returns false for nodes to skip (already tried by this
    /// request, unhealthy). It may be called at most once per node and pick;
    /// it must not call back into this picker. `key` is only used by
    /// consistent hashing. Returns `None` when no node with weight > 0 is
    /// acceptable.
    pub fn pick(&self, key: &[u8], accept: impl Fn(usize) -> bool) -> Option<usize> {
        match self {
            Picker::RoundRobin(wrr) => wrr.pick(accept),
            Picker::Chash(ring) => ring.pick(key, accept),
        }
    }
}

/// A set of node indices that does not allocate for up to 128 nodes (the
/// common case), so the per-request hot path stays allocation-free.
#[derive(Debug)]
pub(crate) enum NodeSet {
    /// Bit `i` set = node `i` is in the set.
    Inline(u128),
    /// Bitset for upstreams with more than 128 nodes.
    Heap(Vec<u64>),
}

impl NodeSet {
    /// An empty set able to hold indices `0..capacity`.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        if capacity <= 128 {
            NodeSet::Inline(0)
        } else {
            NodeSet::Heap(vec![0; capacity.div_ceil(64)])
        }
    }

    /// Adds `i`; returns true if it was not already present.
    ///
    /// `i` must be below the capacity given to [`NodeSet::with_capacity`].
    pub(crate) fn insert(&mut self, i: usize) -> bool {
        match self {
            NodeSet::Inline(bits) => {
                let mask = 1u128 << i;
                let fresh = *bits & mask == 0;
                *bits |= mask;
                fresh
            }
            NodeSet::Heap(words) => {
                let mask = 1u64 << (i % 64);
                let word = &mut words[i / 64];
                let fresh = *word & mask == 0;
                *word |= mask;
                fresh
            }
        }
    }

    /// Whether `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        match self {
            NodeSet::Inline(bits) => bits & (1u128 << i) != 0,
            NodeSet::Heap(words) => words[i / 64] & (1u64 << (i % 64)) != 0,
        }
    }
}
