//! Slices: each resume of a coroutine on a VM is one slice, bound to its owner (the
//! request or timer the Lua serves) and timed by the CPU budget. The VM's own calls,
//! timers and light threads all start and end slices through this one handle, kept in
//! the VM's app data so code holding only a `Lua` (a timer task) reaches it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mlua::Lua;

use super::budget::Budget;
use super::current::{CurrentRequest, Running};
use super::ngx_lib::TimeCache;

#[derive(Clone)]
pub(crate) struct Slicer {
    pub(crate) current: Arc<CurrentRequest>,
    pub(crate) budget: Budget,
    pub(crate) max_slice: Duration,
    /// `ngx.now()`'s cache, marked stale per slice as `LuaVm::enter` does: a timer or a
    /// light thread resumed after `ngx.sleep` must not see the time from before it.
    pub(crate) clock: Option<TimeCache>,
}

impl Slicer {
    /// The VM's slicer (every Portico VM has one).
    pub(crate) fn of(lua: &Lua) -> mlua::Result<Slicer> {
        lua.app_data_ref::<Slicer>()
            .map(|s| s.clone())
            .ok_or_else(|| mlua::Error::runtime("not a Portico Lua VM"))
    }

    /// Starts a slice for `running`: Lua calls on this VM now belong to it, and the CPU
    /// budget runs.
    pub(crate) fn enter(&self, running: Option<Running>) {
        self.current.set_running(running);
        if let Some(c) = &self.clock {
            c.mark_stale();
        }
        let limit = self.budget.epoch.elapsed() + self.max_slice;
        self.budget
            .deadline
            .store(limit.as_nanos().max(1) as u64, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.budget.deadline.store(0, Ordering::Relaxed);
        self.current.set_running(None);
    }

    /// Polls `fut` (a coroutine) with every poll one slice of `running`.
    pub(crate) async fn drive<F: Future>(&self, running: Running, fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        std::future::poll_fn(|cx| {
            self.enter(Some(running.clone()));
            let r = fut.as_mut().poll(cx);
            self.leave();
            r
        })
        .await
    }
}

/// The request or timer running now, when cosockets (and other yielding APIs: light
/// threads, semaphore waits) are allowed in its context.
pub(crate) fn yieldable_context(lua: &Lua, api: &str) -> mlua::Result<Running> {
    let running = Slicer::of(lua)?.current.running().ok_or_else(|| {
        mlua::Error::runtime(format!(
            "{api}: API disabled in the context of this code: no request is running"
        ))
    })?;
    if let Running::Request(r) = &running {
        if r.lock().plain_call {
            return Err(plain_call_error(api));
        }
    }
    match running.context() {
        "rewrite" | "access" | "content" | "timer" => Ok(running),
        other => {
            let context = if other == "before_proxy" {
                "balancer"
            } else {
                other
            };
            Err(mlua::Error::runtime(format!(
                "API disabled in the context of {context}_by_lua*"
            )))
        }
    }
}

/// A yielding API reached from code that runs as a plain call: the code does not name
/// it, so Portico did not give it a coroutine (`CompiledFunction::may_yield`).
pub(crate) fn plain_call_error(api: &str) -> mlua::Error {
    mlua::Error::runtime(format!(
        "{api}: API disabled in the context of this code: it names no yielding API \
         (cosocket, ngx.sleep, ngx.thread, semaphore, read_body, coroutine, require), so \
         it runs without a coroutine; name the API in the function's own code"
    ))
}
