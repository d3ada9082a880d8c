//! The request whose Lua runs on a VM right now, as the `ngx` API functions reach it.

use parking_lot::Mutex;

use super::request::SharedRequest;

/// The request whose Lua is running on this VM right now.
#[derive(Default)]
pub struct CurrentRequest(Mutex<Option<SharedRequest>>);

impl CurrentRequest {
    pub fn set(&self, req: Option<SharedRequest>) {
        *self.0.lock() = req;
    }

    /// The running request, or a Lua error when called outside a request (in the outer
    /// chunk of a plugin, which runs when the code is loaded).
    pub fn get(&self) -> mlua::Result<SharedRequest> {
        self.0.lock().clone().ok_or_else(|| {
            mlua::Error::runtime("API disabled in the context of this code: no request is running")
        })
    }
}

pub(crate) fn err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}
