//! Getting a VM's memory back after a request used a lot of it.
//!
//! Luau has no emergency collection: when an allocation would pass the cap, it fails
//! at once. Its incremental collector sets the next cycle's start to twice the heap that
//! was live at the end of the last cycle. After a request that held half the cap or
//! more (a table-growing bomb stopped by the budget, an ordinary function building a
//! large table), that start lies above the cap, so no cycle starts again before
//! allocations fail: the garbage of finished and stopped requests is never collected
//! and every Lua request on the worker fails with a memory error, for good.
//!
//! So after a call, a VM whose memory grew by a quarter of its cap since its last full
//! collection runs a full collection, and so does a VM where a call just failed on
//! memory. Luau's own cycles normally keep the growth below that, so this runs only
//! when its pacing falls behind. If more than three quarters of the cap are still in use
//! after that (live data: upvalues, suspended requests), the VM is
//! retired: new requests get a fresh VM, rebuilt from the compiled code of the snapshot
//! they run (functions load on first use), while requests already on the old VM finish
//! there and drop it. `ngx.shared` dictionaries live outside the VMs and are kept.

use std::sync::atomic::Ordering;

use super::vm::LuaVm;
use super::LuaFailure;

impl LuaVm {
    /// Called after every call on this VM, outside Lua.
    pub(super) fn relieve_memory<T>(&self, result: &Result<T, LuaFailure>) {
        let failed = matches!(result, Err(LuaFailure::Memory(_)));
        let cap = self.limits.max_memory;
        let high = cap / 4 * 3;
        let used = self.lua.used_memory();
        // Measured from what the last collection left (live data), so a VM that
        // legitimately holds much does not collect after every call.
        let trigger = self.gc_floor.load(Ordering::Relaxed) + cap / 4;
        if !failed && used <= trigger {
            return;
        }
        if let Err(e) = self.lua.gc_collect() {
            tracing::warn!("Lua VM full garbage collection failed: {e}");
        }
        let after = self.lua.used_memory();
        self.gc_floor.store(after, Ordering::Relaxed);
        if after > high && !self.retired.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                used = after,
                cap,
                "Lua VM stays near lua.max_memory_mb after a full garbage collection; new requests get a fresh VM"
            );
        }
    }

    /// The VM no longer takes new requests.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }
}
