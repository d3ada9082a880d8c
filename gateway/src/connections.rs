//! Client connection counts, nginx `stub_status` style: accepted and handled (ever),
//! active now, and of those, reading a request header or waiting idle between requests
//! (the rest are writing: a request is in progress). Kept in process-wide atomics updated
//! by the listener's connection loop (`keepalive.rs`) with guards, so a connection that
//! ends any way is counted out; read at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicI64 = AtomicI64::new(0);
static READING: AtomicI64 = AtomicI64::new(0);
static WAITING: AtomicI64 = AtomicI64::new(0);

/// A snapshot of the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCounts {
    pub accepted: u64,
    pub active: i64,
    pub reading: i64,
    pub writing: i64,
    pub waiting: i64,
}

impl ConnectionCounts {
    /// The counts by nginx `stub_status` state name, as both metric namings label them
    /// (`handled` equals `accepted`: every accepted connection is handled).
    pub fn by_state(&self) -> [(&'static str, i64); 6] {
        [
            ("active", self.active),
            ("reading", self.reading),
            ("writing", self.writing),
            ("waiting", self.waiting),
            ("accepted", self.accepted as i64),
            ("handled", self.accepted as i64),
        ]
    }
}

pub fn counts() -> ConnectionCounts {
    let active = ACTIVE.load(Ordering::Relaxed);
    let reading = READING.load(Ordering::Relaxed);
    let waiting = WAITING.load(Ordering::Relaxed);
    ConnectionCounts {
        accepted: ACCEPTED.load(Ordering::Relaxed),
        active,
        reading,
        writing: (active - reading - waiting).max(0),
        waiting,
    }
}

/// Held for a connection's life.
pub struct Active(());

impl Active {
    pub fn accept() -> Active {
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        Active(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection is doing, while the guard lives.
pub enum State {
    Reading,
    Waiting,
}

pub struct InState(&'static AtomicI64);

impl InState {
    pub fn enter(state: State) -> InState {
        let counter = match state {
            State::Reading => &READING,
            State::Waiting => &WAITING,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        InState(counter)
    }
}

impl Drop for InState {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_in_and_out() {
        let before = counts();
        let a = Active::accept();
        let r = InState::enter(State::Reading);
        let now = counts();
        assert_eq!(now.accepted, before.accepted + 1);
        assert!(now.active > before.active - 1);
        drop((r, a));
        assert!(counts().accepted > before.accepted);
    }
}
