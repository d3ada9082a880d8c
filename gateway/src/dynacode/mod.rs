//! lua-resty-dynacode documents: Lua snippets per domain and phase, pushed through the
//! admin API (`/apisix/admin/dynacode`) or polled from a URL, applied atomically through
//! the one apply path, compiled at apply time.
//!
//! A snippet that does not compile is skipped (the others apply) and reported with its
//! error; the document's shape must be valid or the whole change is refused.

mod doc;
mod poll;
mod runtime;

pub use doc::{DynacodeDoc, DynacodeDomain, DynacodeGeneral, DynacodeSnippet};
pub use poll::DynacodePoller;
pub use runtime::{DynacodeRuntime, SnippetState, SnippetStatus};

/// The key the document is stored under (APISIX-style).
pub const KEY: &str = "/apisix/dynacode";
