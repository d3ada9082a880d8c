//! The response cache of the `proxy-cache` plugin, on Pingora's HTTP cache.
//!
//! - [`zone`]: the zones of `cache.zones`, process-wide (storages, eviction managers,
//!   cache locks), looked up by name at apply time;
//! - [`memory`] and [`disk`] ([`disk_file`]): the two storages, [`hit`] their hit handler;
//! - [`route`]: a route's configuration resolved against its zone (apply time);
//! - [`policy`]: key, bypass, storability, TTL, `Vary`, status (pure functions);
//! - [`request`]: what the cache decided for one request (kept in its context);
//! - the Pingora hooks live in `crate::proxy::cache` and delegate here.

pub mod disk;
pub mod disk_file;
pub mod hit;
pub mod memory;
pub mod policy;
pub mod request;
pub mod route;
pub mod zone;
