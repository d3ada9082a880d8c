//! The running slice's deadline and the VM's memory cap, as the built-ins see them.
//!
//! Luau's interrupt stops Lua code and Lua string patterns, but not work done inside a
//! Rust built-in (`ngx.re.gsub` over a large subject, `cjson.encode` of a large table).
//! Such loops call [`check_slice`] and [`check_output`] so the budget and the cap hold
//! there too. The budget lives in the VM's app data, so every built-in reaches it
//! through the `Lua` handle it already has.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mlua::Lua;

use super::signal::SliceTimeout;

/// The limits a VM enforces, shared with its interrupt callback.
#[derive(Clone)]
pub(crate) struct Budget {
    /// Nanoseconds since `epoch` when the running slice must stop; 0 = no slice running.
    pub(crate) deadline: Arc<AtomicU64>,
    pub(crate) epoch: Instant,
    pub(crate) budget_ms: u64,
    pub(crate) max_memory: usize,
}

impl Budget {
    pub(crate) fn expired(&self) -> bool {
        let d = self.deadline.load(Ordering::Relaxed);
        d != 0 && self.epoch.elapsed().as_nanos() as u64 > d
    }

    pub(crate) fn timeout_error(&self) -> mlua::Error {
        mlua::Error::external(SliceTimeout(self.budget_ms))
    }
}

/// Checks for a loop inside a built-in: take one before the loop, call `check` each
/// round. Outside a Portico VM (no budget in the app data) every check passes.
pub(crate) struct WorkGuard {
    budget: Option<Budget>,
}

impl WorkGuard {
    pub(crate) fn new(lua: &Lua) -> WorkGuard {
        WorkGuard {
            budget: lua.app_data_ref::<Budget>().map(|b| b.clone()),
        }
    }

    /// Fails with the slice-timeout error once the running slice is past its deadline
    /// (the error the interrupt raises, so it counts as `kind="timeout"`), and with a
    /// memory error (`kind="memory"`) when a result of `len` bytes being built in Rust,
    /// on top of what the VM holds, would pass the VM's cap: the string would fail to
    /// enter the VM anyway, and building it first costs the time and process memory the
    /// cap is meant to bound.
    pub(crate) fn check(&self, lua: &Lua, len: usize, what: &str) -> mlua::Result<()> {
        let Some(b) = &self.budget else {
            return Ok(());
        };
        if b.expired() {
            return Err(b.timeout_error());
        }
        if len.saturating_add(lua.used_memory()) > b.max_memory {
            return Err(mlua::Error::MemoryError(format!(
                "{what}: the result would pass the Lua VM memory limit (lua.max_memory_mb)"
            )));
        }
        Ok(())
    }
}
