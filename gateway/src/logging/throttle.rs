//! "Once per key per interval" for messages a failure would otherwise repeat on every
//! request (an upstream node refusing connections).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Keys kept at most; past it the table starts over (a few keys may log early).
const MAX_KEYS: usize = 4096;

pub struct Throttle {
    interval: Duration,
    /// Per key: when it last logged, and how many messages were held back since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(held back since the last one)` when a message for `key` may be logged now;
    /// `None` (and one more held back) otherwise.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if let Some((last, held)) = seen.get_mut(key) {
            if now.duration_since(*last) < self.interval {
                *held += 1;
                return None;
            }
            let before = *held;
            *last = now;
            *held = 0;
            return Some(before);
        }
        if seen.len() >= MAX_KEYS {
            seen.clear();
        }
        seen.insert(key.to_string(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_interval() {
        let t = Throttle::new(Duration::from_millis(50));
        assert_eq!(t.allow("a"), Some(0));
        assert_eq!(t.allow("a"), None);
        assert_eq!(t.allow("a"), None);
        assert_eq!(t.allow("b"), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.allow("a"), Some(2));
    }
}
