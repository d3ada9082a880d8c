//! Configuration sources besides the admin API. Each produces a [`Change`] and hands it
//! to [`ConfigStore::apply`], the one writer; none depends on the admin HTTP handlers.
//!
//! - [`yaml`]: `config_provider: yaml`, an APISIX standalone-style file, reloaded on
//!   change;
//! - [`dynacode_poll`]: the lua-resty-dynacode document, polled from a URL;
//! - [`etcd`]: `config_provider: etcd`, a shared etcd in APISIX's layout, watched.
//!
//! [`Change`]: crate::store::Change
//! [`ConfigStore::apply`]: crate::store::ConfigStore::apply

pub mod dynacode_poll;
pub mod etcd;
pub mod yaml;

pub use dynacode_poll::DynacodePoller;
