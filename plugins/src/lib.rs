//! Portico plugins: the registry of plugins the gateway knows, plugin chains per phase,
//! the built-in plugins, and the Lua runtime with its OpenResty-compatible `ngx` API.
//!
//! This crate never depends on the gateway: the gateway hands each plugin its JSON
//! configuration at apply time (a bad configuration or a Lua syntax error is a 400 from
//! the admin API, never an error on the request path), and runs the compiled chains in
//! its Pingora hooks through the plain-data [`lua::LuaRequest`].

#![forbid(unsafe_code)]

mod chain;
pub mod consumer;
mod instance;
pub mod lua;
mod lua_module;
pub mod native;
pub mod phase;
mod redis;
mod registry;
pub mod schema;
mod serverless;
pub mod vars;

pub use chain::{ChainEntry, PluginChain};
pub use instance::{PluginInstance, Step};
pub use lua_module::LuaModule;
pub use native::{ClientAddr, ConnInfo, NativeBuildInput, NativeCtx, NativeOutcome, Plugin};
pub use phase::Phase;
pub use registry::{PluginError, PluginRegistry};
