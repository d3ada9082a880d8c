//! Portico: a programmable API gateway on Pingora.
//!
//! Layering (dependencies point down):
//! - [`server`] assembles listeners and services from [`settings`];
//! - [`admin`] (control plane) writes through [`store::ConfigStore::apply`], the one writer;
//! - [`store`] validates [`config`] objects, builds a [`snapshot`] and swaps it atomically;
//! - [`proxy`] (data plane) reads one snapshot per request: [`router`] picks the route,
//!   [`balancer`] the node;
//! - [`metrics`] is updated from the proxy's log phase and the apply path.

#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_keys;
pub mod balancer;
pub mod cache;
pub mod config;
pub mod connections;
pub mod data_dir;
pub mod drain;
pub mod edge;
pub mod handover;
pub mod hash_key;
pub mod health;
pub mod keepalive;
pub mod logging;
pub mod metrics;
pub mod metrics_apisix;
pub mod metrics_cache;
pub mod metrics_etcd;
pub mod metrics_node;
pub mod metrics_plugins;
pub mod metrics_service;
pub mod providers;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod server;
pub mod settings;
pub mod settings_cache;
pub mod settings_check;
pub mod settings_etcd;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod store_cli;
pub mod tls_accept;
pub mod uri_path;
pub use portico_plugins::vars;

#[cfg(test)]
mod edge_fuzz_tests;
#[cfg(test)]
mod fuzz_tests;

/// The crate version, reported by `portico --version` and at startup.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The `Server` header value on responses the gateway writes itself.
pub const SERVER_NAME: &str = concat!("Portico/", env!("CARGO_PKG_VERSION"));
