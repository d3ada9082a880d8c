//! What runs Lua on a VM right now (a request's phase function or a timer), as the `ngx`
//! API functions reach it.

use std::sync::Arc;

use mlua::Lua;
use parking_lot::Mutex;

use super::owned::Owned;
use super::request::SharedRequest;

/// The owner of the running slice: a request, or a timer (`ngx.timer.at`), which has no
/// request but owns sockets and light threads of its own.
#[derive(Clone)]
pub enum Running {
    Request(SharedRequest),
    Timer(Arc<Owned>),
}

impl Running {
    /// The sockets and light threads of the run, closed or stopped when it ends.
    pub fn owned(&self) -> Arc<Owned> {
        match self {
            Running::Request(r) => r.lock().owned(),
            Running::Timer(o) => Arc::clone(o),
        }
    }

    /// The context name of OpenResty's "API disabled in the context of ..." errors.
    pub fn context(&self) -> &'static str {
        match self {
            Running::Request(r) => r.lock().phase.name(),
            Running::Timer(_) => "timer",
        }
    }
}

/// The request (or timer) whose Lua is running on this VM right now.
#[derive(Default)]
pub struct CurrentRequest(Mutex<Option<Running>>);

impl CurrentRequest {
    pub fn set(&self, req: Option<SharedRequest>) {
        *self.0.lock() = req.map(Running::Request);
    }

    pub fn set_running(&self, running: Option<Running>) {
        *self.0.lock() = running;
    }

    pub fn running(&self) -> Option<Running> {
        self.0.lock().clone()
    }

    /// The running request, or a Lua error when called outside a request (in the outer
    /// chunk of a plugin, which runs when the code is loaded, or in a timer).
    pub fn get(&self) -> mlua::Result<SharedRequest> {
        match &*self.0.lock() {
            Some(Running::Request(r)) => Ok(Arc::clone(r)),
            Some(Running::Timer(_)) => Err(mlua::Error::runtime(
                "API disabled in the context of ngx.timer",
            )),
            None => Err(mlua::Error::runtime(
                "API disabled in the context of this code: no request is running",
            )),
        }
    }
}

/// Runs `load` (loading a chunk, which resolves its global imports) with no request or
/// timer current on this VM, and puts the current one back afterwards.
///
/// Chunk environments are "safe" (see `env::new_env`): Luau resolves each import path
/// such as `ngx.var.uri` or `ngx.ctx` once, while loading, and the function then uses that
/// value on every call. The request-bound fields answer only when a request is current,
/// so loading without one leaves them unresolved (looked up on every call); loading
/// during a request (`require`, `loadstring`) would freeze one request's values into
/// the function.
pub(crate) fn without_request<R>(lua: &Lua, load: impl FnOnce() -> R) -> R {
    // The app data borrow must end before `load` runs (it may reach app data itself).
    let current = lua
        .app_data_ref::<Arc<CurrentRequest>>()
        .map(|c| Arc::clone(&c));
    let Some(current) = current else {
        return load();
    };
    let previous = current.0.lock().take();
    let out = load();
    current.set_running(previous);
    out
}

pub(crate) fn err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}
