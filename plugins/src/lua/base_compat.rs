//! Base-library behaviour OpenResty code relies on and Luau lacks:
//!
//! - **Coroutines that wrap cosocket calls.** In ngx_lua, `coroutine.resume` and
//!   `coroutine.wrap` cooperate with cosockets: a user coroutine that waits on a socket
//!   suspends the whole request until the socket is ready, then continues where it
//!   waited. lua-resty-http's body reader is such a coroutine. With mlua, an async Rust
//!   function that is not ready yields mlua's "pending" marker to the coroutine's
//!   resumer; plain `coroutine.resume` would hand that marker to the user's code as if
//!   the coroutine had yielded it. The versions here pass it on instead: they suspend
//!   their own coroutine with it (up to the executor, which waits for the waker), and
//!   resume the inner coroutine when they are resumed.
//! - **`debug.traceback` as an `xpcall` handler for any error value.** Lua 5.1 returns a
//!   message that is not a string unchanged; Luau raises, which `xpcall` reports as
//!   "error in error handling". Libraries do `xpcall(f, debug.traceback)` with errors
//!   that are tables, or errors raised by Portico's Rust side (a `require` that fails),
//!   which are userdata to Lua and strings in OpenResty: those get their text traced.

use mlua::{Lua, Table, Value};

const SHIMS: &str = r##"
local PENDING, co_resume, co_yield, co_status, co_create, traceback = ...
local select, type, error, pcall, tostring = select, type, error, pcall, tostring

local pass

-- Our coroutine was resumed after waiting with `co`: normally with no values, once the
-- socket is ready. With values, the executor is being dropped: pass its signal on to
-- `co` and stay suspended, as mlua expects of a terminated future's coroutine.
local function resumed(co, ...)
    if select("#", ...) > 0 then
        co_resume(co, ...)
        return co_yield()
    end
    return pass(co, co_resume(co))
end

-- `co` yielded (ok, ...): if that was a cosocket waiting, wait with it.
pass = function(co, ok, ...)
    if ok and select("#", ...) == 1 and (...) == PENDING and co_status(co) == "suspended" then
        return resumed(co, co_yield(PENDING))
    end
    return ok, ...
end

local function resume(co, ...)
    return pass(co, co_resume(co, ...))
end

local function unwrap(ok, ...)
    if not ok then
        error((...), 0)
    end
    return ...
end

local function wrap(f)
    local co = co_create(f)
    return function(...)
        return unwrap(pass(co, co_resume(co, ...)))
    end
end

local function tb(...)
    local msg = ...
    if type(msg) == "userdata" then
        -- An error raised by Portico's Rust side: a string in OpenResty.
        local ok, text = pcall(tostring, msg)
        if ok then
            return traceback(text, select(2, ...))
        end
    end
    if type(msg) ~= "thread" and msg ~= nil and type(msg) ~= "string" and type(msg) ~= "number" then
        return msg
    end
    return traceback(...)
end

return resume, wrap, tb
"##;

/// Replaces `coroutine.resume`, `coroutine.wrap` and `debug.traceback` (call before the
/// VM is sandboxed; `debug` is the sandbox's own `debug` table).
pub fn install(lua: &Lua, globals: &Table, debug: &Table) -> mlua::Result<()> {
    let coroutine: Table = globals.raw_get("coroutine")?;
    let traceback: Value = debug.raw_get("traceback")?;
    let make = lua
        .load(SHIMS)
        .set_name("=portico.base_compat")
        .into_function()?;
    let (resume, wrap, tb): (Value, Value, Value) = make.call((
        Value::LightUserData(Lua::poll_pending()),
        coroutine.raw_get::<Value>("resume")?,
        coroutine.raw_get::<Value>("yield")?,
        coroutine.raw_get::<Value>("status")?,
        coroutine.raw_get::<Value>("create")?,
        traceback,
    ))?;
    coroutine.raw_set("resume", resume)?;
    coroutine.raw_set("wrap", wrap)?;
    debug.raw_set("traceback", tb)?;
    Ok(())
}
