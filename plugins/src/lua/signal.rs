//! Errors that are control flow, carried through Lua as external errors.

use std::fmt;

/// `ngx.exit(code)` / `ngx.redirect`: unwinds the running function.
#[derive(Debug, Clone, Copy)]
pub struct Exit(pub i64);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ngx.exit({})", self.0)
    }
}

impl std::error::Error for Exit {}

/// The CPU budget of one slice of Lua execution ran out.
#[derive(Debug, Clone, Copy)]
pub struct SliceTimeout(pub u64);

impl fmt::Display for SliceTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Lua code ran longer than lua.max_slice_ms ({} ms) without yielding; stopped",
            self.0
        )
    }
}

impl std::error::Error for SliceTimeout {}

/// Finds a control-flow error inside an mlua error (callbacks wrap errors in layers).
pub fn find<T: std::error::Error + Copy + 'static>(e: &mlua::Error) -> Option<T> {
    match e {
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<T>().copied(),
        mlua::Error::CallbackError { cause, .. } => find(cause),
        mlua::Error::WithContext { cause, .. } => find(cause),
        _ => None,
    }
}
