//! The Lua runtime: Luau VMs (one per proxy worker thread), the `ngx` API, phase
//! execution with a CPU budget per slice and a memory cap per VM.

mod base_compat;
mod budget;
mod compile;
mod convert;
mod cosocket;
mod current;
mod env;
mod exec;
mod libraries;
mod light_task;
mod light_thread;
mod lua_scan;
mod memory;
mod missing;
mod ngx_balancer;
mod ngx_lib;
mod ngx_out;
mod ngx_req;
mod owned;
mod request;
mod resty_http;
mod resty_limit;
mod semaphore;
mod shared_dict;
mod shared_dict_lua;
mod shared_dict_registry;
mod signal;
mod slice;
mod strlib;
mod timer;
mod vm;
mod workers;

pub use compile::{compile, compile_module, compile_statements, ChunkKind, CompiledFunction};
pub use exec::{CallOutcome, ModuleInfo, Validator};
pub use libraries::{compile_library, required_modules, reserved_name, LuaLibraries, LuaLibrary};
pub use owned::Owned;
pub use request::{
    method_name, BodyState, ConnVars, LuaRequest, RequestLine, SharedRequest, MAX_READ_BODY,
};
pub use shared_dict_registry::{checked_size, parse_size, SharedDicts};
pub use timer::shutdown as begin_shutdown;
pub use vm::{LuaLimits, LuaVm};
pub use workers::WorkerVms;

/// Why a Lua call failed; `kind()` is the `kind` label of `portico_lua_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LuaFailure {
    /// A runtime error (message includes the code's label and line).
    Error(String),
    /// The slice ran past `lua.max_slice_ms`.
    Timeout(String),
    /// The VM hit `lua.max_memory_mb`.
    Memory(String),
}

impl LuaFailure {
    /// The metric label and log field of the failure.
    pub fn kind(&self) -> &'static str {
        match self {
            LuaFailure::Error(_) => "error",
            LuaFailure::Timeout(_) => "timeout",
            LuaFailure::Memory(_) => "memory",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            LuaFailure::Error(m) | LuaFailure::Timeout(m) | LuaFailure::Memory(m) => m,
        }
    }

    pub(crate) fn from_error(e: &mlua::Error) -> LuaFailure {
        if let Some(t) = signal::find::<signal::SliceTimeout>(e) {
            return LuaFailure::Timeout(t.to_string());
        }
        if is_memory(e) {
            return LuaFailure::Memory(
                "Lua VM memory limit (lua.max_memory_mb) reached".to_string(),
            );
        }
        LuaFailure::Error(e.to_string())
    }
}

fn is_memory(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_memory(cause)
        }
        _ => false,
    }
}

impl std::fmt::Display for LuaFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(test)]
mod convert_fuzz;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod libraries_tests;
#[cfg(test)]
mod ngx_ext_tests;
#[cfg(test)]
mod tests;
