//! The Rust side of a light thread (`ngx.thread`): its outcome, a way to wait for its
//! end, and a way to stop it. Kept apart from the Lua API so a run's owner
//! ([`super::owned`]) can wait for or stop its threads without knowing the API.

use std::sync::atomic::{AtomicBool, Ordering};

use mlua::Value;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The end of a light thread: its return values or its error message.
pub(crate) type Outcome = Result<Vec<Value>, String>;

pub(crate) struct LightThread {
    pub(crate) outcome: Mutex<Option<Outcome>>,
    finished: AtomicBool,
    done: Notify,
    /// Its outcome was handed to `wait`, or it was killed: it cannot be waited again.
    pub(crate) collected: AtomicBool,
    pub(crate) task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl LightThread {
    pub(crate) fn new() -> LightThread {
        LightThread {
            outcome: Mutex::new(None),
            finished: AtomicBool::new(false),
            done: Notify::new(),
            collected: AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    pub(crate) fn finish(&self, outcome: Outcome) {
        let mut o = self.outcome.lock();
        if o.is_none() {
            *o = Some(outcome);
        }
        drop(o);
        self.finished.store(true, Ordering::Release);
        self.done.notify_waiters();
    }

    pub(crate) async fn finished(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_finished() {
                return;
            }
            notified.await;
        }
    }

    /// Stops the thread where it is suspended (its coroutine is dropped).
    pub(crate) fn kill(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
        self.finish(Err("killed".to_string()));
    }
}
