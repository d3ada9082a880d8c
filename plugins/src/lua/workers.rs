//! One VM per proxy worker thread, created on the thread's first Lua call.
//!
//! The proxy runs on Pingora's no-work-stealing runtime, so a connection stays on its
//! thread and every request there uses that thread's VM without contention. A request
//! keeps its `Arc<LuaVm>` for all its phases, so even a request that did move would keep
//! one VM (and its `ngx.ctx`) throughout.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::shared_dict_registry::SharedDicts;
use super::vm::{LuaLimits, LuaVm};
use super::LuaFailure;

thread_local! {
    static THREAD_VM: RefCell<Option<Arc<LuaVm>>> = const { RefCell::new(None) };
}

/// Hands out this thread's VM.
pub struct WorkerVms {
    limits: LuaLimits,
    dicts: Arc<SharedDicts>,
    workers: usize,
    next_id: AtomicUsize,
}

impl WorkerVms {
    /// `workers` is the proxy's thread count (`ngx.worker.count()`).
    pub fn new(limits: LuaLimits, workers: usize, dicts: Arc<SharedDicts>) -> WorkerVms {
        WorkerVms {
            limits,
            dicts,
            workers,
            next_id: AtomicUsize::new(0),
        }
    }

    /// This thread's VM, created on first use.
    /// A retired VM (one that stayed near its memory cap) is replaced by a fresh one with
    /// the same worker id; requests still running on it keep it until they finish.
    pub fn current(&self) -> Result<Arc<LuaVm>, LuaFailure> {
        THREAD_VM.with(|slot| {
            let mut reuse_id = None;
            if let Some(vm) = slot.borrow().as_ref() {
                if !vm.is_retired() {
                    return Ok(Arc::clone(vm));
                }
                reuse_id = Some(vm.worker.0);
            }
            let id = reuse_id.unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed));
            let vm = Arc::new(
                LuaVm::new(self.limits, (id, self.workers), &self.dicts)
                    .map_err(|e| LuaFailure::Error(format!("cannot create a Lua VM: {e}")))?,
            );
            *slot.borrow_mut() = Some(Arc::clone(&vm));
            Ok(vm)
        })
    }
}
