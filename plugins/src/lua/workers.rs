//! One VM per proxy worker thread, created on the thread's first Lua call.
//!
//! The proxy runs on Pingora's no-work-stealing runtime, so a connection stays on its
//! thread and every request there uses that thread's VM without contention. A request
//! keeps its `Arc<LuaVm>` for all its phases, so even a request that did move would keep
//! one VM (and its `ngx.ctx`) throughout.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::shared_dict_registry::SharedDicts;
use super::vm::{LuaLimits, LuaVm};
use super::LuaFailure;

thread_local! {
    static THREAD_VM: RefCell<Option<Arc<LuaVm>>> = const { RefCell::new(None) };
}

/// Hands out this thread's VM.
pub struct WorkerVms {
    /// The limits new VMs get (`lua.max_slice_ms` in nanoseconds, `lua.max_memory_mb` in
    /// bytes); [`WorkerVms::set_limits`] changes them for new requests.
    max_slice_ns: AtomicU64,
    max_memory: AtomicUsize,
    max_pending_timers: AtomicUsize,
    dicts: Arc<SharedDicts>,
    workers: usize,
    next_id: AtomicUsize,
}

impl WorkerVms {
    /// `workers` is the proxy's thread count (`ngx.worker.count()`).
    pub fn new(limits: LuaLimits, workers: usize, dicts: Arc<SharedDicts>) -> WorkerVms {
        WorkerVms {
            max_slice_ns: AtomicU64::new(limits.max_slice.as_nanos() as u64),
            max_memory: AtomicUsize::new(limits.max_memory),
            max_pending_timers: AtomicUsize::new(limits.max_pending_timers),
            dicts,
            workers,
            next_id: AtomicUsize::new(0),
        }
    }

    /// The limits VMs are created with now.
    pub fn limits(&self) -> LuaLimits {
        LuaLimits {
            max_slice: Duration::from_nanos(self.max_slice_ns.load(Ordering::Relaxed)),
            max_memory: self.max_memory.load(Ordering::Relaxed),
            max_pending_timers: self.max_pending_timers.load(Ordering::Relaxed),
        }
    }

    /// New limits (a `SIGHUP` of the static config): each worker replaces its VM at its
    /// next Lua call, as it does a retired one; requests running on the old VM keep it
    /// until they finish.
    pub fn set_limits(&self, limits: LuaLimits) {
        self.max_slice_ns
            .store(limits.max_slice.as_nanos() as u64, Ordering::Relaxed);
        self.max_memory.store(limits.max_memory, Ordering::Relaxed);
        self.max_pending_timers
            .store(limits.max_pending_timers, Ordering::Relaxed);
    }

    /// The process is shutting down: pending timers run now with `premature` = true and
    /// `ngx.worker.exiting()` turns true (nginx's worker shutdown).
    pub fn shutdown(&self) {
        super::timer::shutdown();
    }

    /// This thread's VM, created on first use.
    /// A retired VM (one that stayed near its memory cap), or one made under other
    /// limits, is replaced by a fresh one with the same worker id; requests still running
    /// on it keep it until they finish.
    pub fn current(&self) -> Result<Arc<LuaVm>, LuaFailure> {
        let limits = self.limits();
        THREAD_VM.with(|slot| {
            let mut reuse_id = None;
            if let Some(vm) = slot.borrow().as_ref() {
                let same_limits = vm.limits.max_slice == limits.max_slice
                    && vm.limits.max_memory == limits.max_memory
                    && vm.limits.max_pending_timers == limits.max_pending_timers;
                if !vm.is_retired() && same_limits {
                    return Ok(Arc::clone(vm));
                }
                reuse_id = Some(vm.worker.0);
            }
            let id = reuse_id.unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed));
            let vm = Arc::new(
                LuaVm::new(limits, (id, self.workers), &self.dicts)
                    .map_err(|e| LuaFailure::Error(format!("cannot create a Lua VM: {e}")))?,
            );
            *slot.borrow_mut() = Some(Arc::clone(&vm));
            Ok(vm)
        })
    }
}
