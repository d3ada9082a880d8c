//! `limit-count`'s arithmetic, pure: one key's window and the decision for one request.
//!
//! - Fixed window: the window starts at the key's first request and lasts
//!   `time_window`; at most `count` requests pass in it.
//! - Sliding window (APISIX's estimate): windows are aligned to multiples of
//!   `time_window`; a request passes when
//!   `prev * (time_window - elapsed) / time_window + cur + 1 <= count`, where `prev` and
//!   `cur` are the previous and current windows' passed requests and `elapsed` the time
//!   since the current window began. It smooths the burst a fixed window allows at its
//!   boundary without storing every request's time.
//!
//! The state records what was used, never what remains, so a changed `count` applies to
//! the next request against the same usage.

use serde::Deserialize;

use super::table::Expiring;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowType {
    #[default]
    Fixed,
    Sliding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    Fixed {
        start_ms: u64,
        window_ms: u64,
        used: u64,
    },
    Sliding {
        index: u64,
        window_ms: u64,
        prev: u64,
        cur: u64,
    },
}

impl Expiring for WindowState {
    fn expired(&self, now_ms: u64) -> bool {
        match *self {
            WindowState::Fixed {
                start_ms,
                window_ms,
                ..
            } => now_ms >= start_ms.saturating_add(window_ms),
            // The previous window still weighs on the next one.
            WindowState::Sliding {
                index, window_ms, ..
            } => now_ms >= (index + 2).saturating_mul(window_ms),
        }
    }
}

/// What one request gets, and what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u64,
    /// Seconds until the window resets; at least 1 while it is open.
    pub reset_s: u64,
}

/// Counts one request against `state` (None: a new key). `window_ms` > 0.
pub fn take(
    state: &mut Option<WindowState>,
    kind: WindowType,
    limit: u64,
    window_ms: u64,
    now_ms: u64,
) -> Decision {
    match kind {
        WindowType::Fixed => take_fixed(state, limit, window_ms, now_ms),
        WindowType::Sliding => take_sliding(state, limit, window_ms, now_ms),
    }
}

fn take_fixed(
    state: &mut Option<WindowState>,
    limit: u64,
    window_ms: u64,
    now_ms: u64,
) -> Decision {
    let (start, used) = match *state {
        Some(WindowState::Fixed { start_ms, used, .. })
            if now_ms < start_ms.saturating_add(window_ms) =>
        {
            (start_ms, used)
        }
        _ => (now_ms, 0),
    };
    let allowed = used < limit;
    let used = if allowed { used + 1 } else { used };
    *state = Some(WindowState::Fixed {
        start_ms: start,
        window_ms,
        used,
    });
    Decision {
        allowed,
        remaining: limit.saturating_sub(used),
        reset_s: seconds_until(start + window_ms, now_ms),
    }
}

fn take_sliding(
    state: &mut Option<WindowState>,
    limit: u64,
    window_ms: u64,
    now_ms: u64,
) -> Decision {
    let index = now_ms / window_ms;
    let (prev, cur) = match *state {
        // A changed window length keeps the counts in the window now open.
        Some(WindowState::Sliding {
            window_ms: w,
            prev,
            cur,
            ..
        }) if w != window_ms => (prev, cur),
        Some(WindowState::Sliding {
            index: i,
            prev,
            cur,
            ..
        }) if i == index => (prev, cur),
        Some(WindowState::Sliding { index: i, cur, .. }) if i + 1 == index => (cur, 0),
        _ => (0, 0),
    };
    let elapsed = now_ms - index * window_ms;
    let weight = (window_ms - elapsed) as f64 / window_ms as f64;
    let estimate = prev as f64 * weight + cur as f64;
    let allowed = estimate + 1.0 <= limit as f64;
    let cur = if allowed { cur + 1 } else { cur };
    *state = Some(WindowState::Sliding {
        index,
        window_ms,
        prev,
        cur,
    });
    let used = prev as f64 * weight + cur as f64;
    Decision {
        allowed,
        remaining: (limit as f64 - used).floor().max(0.0) as u64,
        reset_s: seconds_until((index + 1) * window_ms, now_ms),
    }
}

fn seconds_until(end_ms: u64, now_ms: u64) -> u64 {
    end_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_window_passes_exactly_count_then_resets() {
        let mut s = None;
        for i in 0..3 {
            let d = take(&mut s, WindowType::Fixed, 3, 60_000, 1_000 + i);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
        }
        let d = take(&mut s, WindowType::Fixed, 3, 60_000, 30_000);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                remaining: 0,
                reset_s: 31
            }
        );
        assert!(take(&mut s, WindowType::Fixed, 3, 60_000, 61_000).allowed);
    }

    #[test]
    fn reset_is_never_zero_while_the_window_is_open() {
        let mut s = None;
        take(&mut s, WindowType::Fixed, 5, 1_000, 0);
        assert_eq!(take(&mut s, WindowType::Fixed, 5, 1_000, 999).reset_s, 1);
    }

    #[test]
    fn a_changed_count_keeps_the_usage() {
        let mut s = None;
        for _ in 0..5 {
            assert!(take(&mut s, WindowType::Fixed, 10, 60_000, 0).allowed);
        }
        // Lowered below what was used: refused at once.
        assert!(!take(&mut s, WindowType::Fixed, 4, 60_000, 1).allowed);
        // Raised: exactly the difference passes.
        let passed = (0..10)
            .filter(|_| take(&mut s, WindowType::Fixed, 8, 60_000, 2).allowed)
            .count();
        assert_eq!(passed, 3);
    }

    #[test]
    fn a_sliding_window_weighs_the_previous_one() {
        let mut s = None;
        // Window [0, 10s): 10 of 10 used.
        for _ in 0..10 {
            assert!(take(&mut s, WindowType::Sliding, 10, 10_000, 9_000).allowed);
        }
        // At 12.5 s, 75% of the previous window still counts: 7.5 used, 2 more pass.
        let passed = (0..10)
            .filter(|_| take(&mut s, WindowType::Sliding, 10, 10_000, 12_500).allowed)
            .count();
        assert_eq!(passed, 2);
        // Two windows later nothing weighs.
        let d = take(&mut s, WindowType::Sliding, 10, 10_000, 30_000);
        assert!(d.allowed);
        assert_eq!(d.remaining, 9);
    }

    #[test]
    fn states_expire_when_they_stop_mattering() {
        let f = WindowState::Fixed {
            start_ms: 0,
            window_ms: 10,
            used: 1,
        };
        assert!(!f.expired(9) && f.expired(10));
        let s = WindowState::Sliding {
            index: 1,
            window_ms: 10,
            prev: 0,
            cur: 1,
        };
        assert!(!s.expired(29) && s.expired(30));
    }
}

/// The memory figure of docs/plugins.md: `cargo test -p portico-plugins --release --lib
/// -- --ignored --nocapture million_keys`.
#[cfg(test)]
mod memory {
    use super::*;
    use crate::native::limit::table::CounterTable;

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    #[ignore = "a measurement, run by hand"]
    fn million_keys() {
        let before = rss_bytes();
        let table: CounterTable<WindowState> = CounterTable::new(1 << 20);
        for i in 0..1_000_000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            table.update(&ip, 0, |s| {
                take(s, WindowType::Fixed, 100, 60_000, 0);
            });
        }
        let after = rss_bytes();
        println!(
            "1,000,000 IPv4 keys: {} MB resident, {} bytes per key",
            (after - before) / 1_000_000,
            (after - before) / 1_000_000
        );
        assert_eq!(table.len(), 1_000_000);
    }
}
