//! Where limit state outlives snapshots: one long-lived registry per kind of state,
//! mapping a stable identity (the plugin's place, `routes[id=1].plugins.limit-count`, or
//! its `group`) to a `Weak` handle. A build looks the identity up and shares the state
//! the previous snapshot's instance used, so a swap (a threshold change included) keeps
//! the counts; when the last snapshot holding an instance is gone (the plugin or route
//! was deleted), the state is freed with it. This is the shape of `HealthRegistry`.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

pub struct StateRegistry<T> {
    entries: Mutex<BTreeMap<String, Weak<T>>>,
}

impl<T> StateRegistry<T> {
    pub const fn new() -> StateRegistry<T> {
        StateRegistry {
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// The state of `identity`: the live one if an instance still holds it, else a new
    /// one from `make`.
    pub fn get_or_create(&self, identity: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = self.entries.lock();
        if let Some(live) = entries.get(identity).and_then(Weak::upgrade) {
            return live;
        }
        // Builds are rare (admin writes); dropping dead handles here keeps the map as
        // small as the set of configured plugins.
        entries.retain(|_, w| w.strong_count() > 0);
        let state = Arc::new(make());
        entries.insert(identity.to_owned(), Arc::downgrade(&state));
        state
    }

    /// Identities with live state (for tests and diagnostics).
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_shared_while_held_and_fresh_after() {
        let r: StateRegistry<Mutex<u32>> = StateRegistry::new();
        let a = r.get_or_create("x", || Mutex::new(0));
        *a.lock() = 7;
        let b = r.get_or_create("x", || Mutex::new(0));
        assert_eq!(*b.lock(), 7);
        drop((a, b));
        let c = r.get_or_create("x", || Mutex::new(0));
        assert_eq!(*c.lock(), 0);
        assert_eq!(r.live(), 1);
    }
}
