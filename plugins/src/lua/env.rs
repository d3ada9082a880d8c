//! Chunk environments, and `loadstring` compiling into them.
//!
//! Every chunk Portico loads gets its own environment table that reads through to the
//! read-only globals. Once the chunk is loaded, the environment is sealed: writing a
//! new global raises an error, because the environment is shared by every request the
//! worker serves (they interleave on one VM whenever one yields).
//!
//! Code compiled at runtime must follow the same rules, or it becomes the way around
//! them: mlua's `loadstring` gives the code the VM's writable global table, shared by
//! every route. Portico's `loadstring` instead gives the code the environment of the
//! chunk that calls it (so it sees that chunk's globals and is sealed like it), or a
//! fresh sealed environment when called from anywhere else.

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, Table, Value};

/// Set in the metatable of every environment Portico creates, so `loadstring` can tell
/// a chunk environment from any other table a function might have as its environment.
const ENV_MARK: &str = "__portico_env";

/// How many stack levels `loadstring` looks up for the calling chunk (`pcall`,
/// `xpcall` and other C functions can sit between it and the Lua caller).
const MAX_CALLER_DEPTH: usize = 8;

/// Longest source `loadstring` compiles. Compiling cannot be interrupted, so its time
/// must be bounded by its input; 1 MiB compiles in a few milliseconds.
pub(crate) const MAX_LOADSTRING_LEN: usize = 1024 * 1024;

/// A new environment reading through to `globals`: (env, its metatable).
pub(super) fn new_env(lua: &Lua, globals: &Table) -> mlua::Result<(Table, Table)> {
    let env = lua.create_table()?;
    let env_mt = lua.create_table()?;
    env_mt.raw_set("__index", globals.clone())?;
    env_mt.raw_set(ENV_MARK, true)?;
    env.set_metatable(Some(env_mt.clone()))?;
    // "Safe" is Luau's promise that the globals a chunk reads do not change under it:
    // true here, since the globals are read-only, a chunk's own globals are never
    // imported by the compiler and the environment is sealed after loading. Luau then
    // resolves import paths (`ngx.req.set_header`, `ngx.shared.d`) once at load, and
    // calls built-ins (`type`, `string.byte`, `math.floor`, `ipairs`) without a lookup.
    // Without it every `ngx.x` walked three tables and their metatables per use.
    // Loads run with no request current (`current::without_request`), so a
    // request-bound path (`ngx.ctx`, `ngx.var.uri`) stays unresolved.
    env.set_safeenv(true);
    Ok((env, env_mt))
}

/// From now on, writing a new global in this environment raises an error naming `label`.
pub(super) fn seal(lua: &Lua, env_mt: &Table, label: &str) -> mlua::Result<()> {
    let label = label.to_string();
    env_mt.raw_set(
        "__newindex",
        lua.create_function(move |_, (_t, k): (Value, Value)| -> mlua::Result<()> {
            Err(mlua::Error::runtime(format!(
                "{label}: writing a global variable ({}) is not allowed; use a local or ngx.ctx",
                k.to_string().unwrap_or_default()
            )))
        })?,
    )?;
    Ok(())
}

/// Replaces the global `loadstring` (call before the globals become read-only).
pub(super) fn install_loadstring(lua: &Lua, globals: &Table) -> mlua::Result<()> {
    let fallback_globals = globals.clone();
    let f = lua.create_function(
        move |lua,
              (src, name): (mlua::LuaString, Option<String>)|
              -> mlua::Result<(Value, Value)> {
            let name = name.unwrap_or_else(|| "=(loadstring)".to_string());
            if src.as_bytes().len() > MAX_LOADSTRING_LEN {
                let msg = format!("loadstring: source longer than {MAX_LOADSTRING_LEN} bytes");
                return Ok((Value::Nil, Value::String(lua.create_string(msg)?)));
            }
            let env = match caller_env(lua) {
                Some(env) => env,
                None => {
                    let (env, env_mt) = new_env(lua, &fallback_globals)?;
                    seal(lua, &env_mt, &name)?;
                    env
                }
            };
            // Source text only: the text mode never loads bytecode, so a crafted binary
            // chunk is a syntax error.
            let loaded = super::current::without_request(lua, || {
                lua.load(&*src.as_bytes())
                    .set_name(name)
                    .set_mode(ChunkMode::Text)
                    .set_environment(env)
                    .into_function()
            });
            match loaded {
                Ok(f) => Ok((Value::Function(f), Value::Nil)),
                // Lua 5.1: `nil, message` on a syntax error.
                Err(mlua::Error::SyntaxError { message, .. }) => {
                    Ok((Value::Nil, Value::String(lua.create_string(message)?)))
                }
                Err(e) => Err(e),
            }
        },
    )?;
    globals.raw_set("loadstring", f)?;
    Ok(())
}

/// The environment of the nearest Lua function on the stack, if Portico created it.
fn caller_env(lua: &Lua) -> Option<Table> {
    for level in 1..=MAX_CALLER_DEPTH {
        let func: Function = lua.inspect_stack(level, |d| d.function())?;
        let Some(env) = func.environment() else {
            continue; // a C function (pcall, ...): look further up
        };
        let marked = env
            .metatable()
            .map(|mt| matches!(mt.raw_get::<Value>(ENV_MARK), Ok(Value::Boolean(true))))
            .unwrap_or(false);
        // The nearest Lua caller decides: a function with any other environment gets a
        // fresh sealed one rather than a search further up the stack.
        return marked.then_some(env);
    }
    None
}
