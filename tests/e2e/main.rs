//! End-to-end tests: the real `portico` binary (`CARGO_BIN_EXE_portico`)
//! against real HTTP/1.1 backends on loopback. Every test starts its own
//! gateway and backends on ephemeral ports, so tests run in parallel.
//!
//! The spec is issue 2 ("Portico core"); the admin API is the APISIX 3.x
//! Admin API dialect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod access_log;
mod admin_api;
mod admin_compat;
mod admin_race;
mod apisix_client;
mod balancer;
mod cli;
mod config_history;
mod consumers;
mod dashboard;
mod dynacode_poll;
mod dynacode_push;
mod error_pages;
mod etcd_cluster;
mod grpc;
mod health_active;
mod health_api;
mod health_chash;
mod health_config;
mod health_passive;
mod health_validation;
mod hostile_admin;
mod hostile_http;
mod hostile_lua;
mod hot_swap;
mod limits;
mod limits_redis;
mod lua_async;
mod lua_common;
mod lua_content_balancer;
mod lua_cosocket;
mod lua_db_clients;
mod lua_hot_swap;
mod lua_limits;
mod lua_modules;
mod lua_ngx_ext;
mod lua_phases;
mod lua_plugins;
mod lua_responses;
mod lua_safety;
mod metrics;
mod native_plugins;
mod persistence;
mod plugin_metadata;
mod plugins_access;
mod plugins_brotli;
mod plugins_response;
mod plugins_rewrite;
mod proxy_cache;
mod request_driver;
mod retries;
mod routing;
mod status;
mod tls;
mod upgrade;
mod upstream_keepalive;
mod websocket;
mod yaml_provider;
