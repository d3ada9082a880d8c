//! The leaky bucket of `resty.limit.req`, as one atomic step on a shared dictionary.
//!
//! A key's state is `excess` (requests above the rate still "in the bucket") and `last`
//! (when it was updated, ms since the Unix epoch), stored as a 16-byte string. A request
//! at `now` finds `excess' = max(excess - rate * |now - last| + 1, 0)` (0 for a key with
//! no state); `excess' > burst` rejects it, otherwise it is accepted with a delay of
//! `excess' / rate` seconds and, when committed, the state becomes `(excess', now)`.
//! The read and the write happen under the dictionary's lock, so requests on different
//! workers never both see the same state. A state expires 60 s after its bucket has
//! drained: a missing key then behaves exactly like a drained one.

use std::time::{SystemTime, UNIX_EPOCH};

use super::super::shared_dict::SharedDict;

/// How long a drained state is kept, in seconds (covers a later `set_rate` lowering the
/// rate, which makes the bucket drain more slowly).
const KEEP_AFTER_DRAINED: f64 = 60.0;

/// Milliseconds since the Unix epoch (the same clock on every worker).
pub(super) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn decode(bytes: &[u8]) -> Option<(f64, f64)> {
    let excess = f64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
    let last = f64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
    (bytes.len() == 16).then_some((excess, last))
}

fn encode(excess: f64, last: f64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&excess.to_le_bytes());
    v.extend_from_slice(&last.to_le_bytes());
    v
}

/// Seconds until a state with `excess` has drained at `rate`, plus the margin.
fn ttl(excess: f64, rate: f64) -> f64 {
    (excess + 1.0) / rate + KEEP_AFTER_DRAINED
}

/// What a request finds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Verdict {
    /// Accepted with this excess (requests); the delay is `excess / rate`.
    Accepted(f64),
    Rejected,
}

/// One request for `key` at `now` (ms). `Err` is the dictionary's error (no memory).
pub(super) fn incoming(
    dict: &SharedDict,
    key: &[u8],
    rate: f64,
    burst: f64,
    commit: bool,
    now: f64,
) -> Result<Verdict, &'static str> {
    dict.update(key, |current| {
        let excess = match current.and_then(decode) {
            Some((excess, last)) => (excess - rate * (now - last).abs() / 1000.0 + 1.0).max(0.0),
            None => 0.0,
        };
        if excess > burst {
            return (None, Verdict::Rejected);
        }
        let write = commit.then(|| (encode(excess, now), ttl(excess, rate)));
        (write, Verdict::Accepted(excess))
    })
}

/// Takes one request back out of `key`'s bucket. `Ok(false)`: the key has no state.
pub(super) fn uncommit(dict: &SharedDict, key: &[u8], rate: f64) -> Result<bool, &'static str> {
    dict.update(key, |current| match current.and_then(decode) {
        Some((excess, last)) => {
            let excess = (excess - 1.0).max(0.0);
            (Some((encode(excess, last), ttl(excess, rate))), true)
        }
        None => (None, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_fills_drains_and_rejects_above_the_burst() {
        let d = SharedDict::new("t", 64 * 1024);
        let t0 = 1_000_000.0;
        // rate 10/s, burst 2: 0, 1, 2 excess accepted at once, the 4th rejected.
        for want in [0.0, 1.0, 2.0] {
            assert_eq!(
                incoming(&d, b"k", 10.0, 2.0, true, t0),
                Ok(Verdict::Accepted(want))
            );
        }
        assert_eq!(
            incoming(&d, b"k", 10.0, 2.0, true, t0),
            Ok(Verdict::Rejected)
        );
        // 100 ms later one request has leaked out: excess 2 - 1 + 1 = 2.
        assert_eq!(
            incoming(&d, b"k", 10.0, 2.0, false, t0 + 100.0),
            Ok(Verdict::Accepted(2.0))
        );
        // A dry run changed nothing; uncommit takes one out.
        assert_eq!(uncommit(&d, b"k", 10.0), Ok(true));
        assert_eq!(
            incoming(&d, b"k", 10.0, 2.0, true, t0 + 100.0),
            Ok(Verdict::Accepted(1.0))
        );
        // Long idle: the bucket is empty again.
        assert_eq!(
            incoming(&d, b"k", 10.0, 2.0, true, t0 + 10_000.0),
            Ok(Verdict::Accepted(0.0))
        );
        assert_eq!(uncommit(&d, b"other", 10.0), Ok(false));
    }
}
