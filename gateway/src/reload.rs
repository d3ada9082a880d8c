//! `SIGHUP`: re-read the static config file and apply what can change without a
//! restart; log each changed setting that needs one.
//!
//! Applied live: `log.level` (unless `PORTICO_LOG` is set), `log.access.format` and
//! `log.access.json`, `admin.keys` (and the
//! `PORTICO_ADMIN_KEY` override, re-read), `history.keep`, `lua.max_slice_ms`,
//! `lua.max_memory_mb` and `lua.max_pending_timers` (each worker's next request gets a VM with the new limits). A
//! file that does not parse or check changes nothing. Everything else (listeners,
//! `threads`, `data_dir`, the provider, `lua.shared_dicts`, `dynacode`, `proxy` limits,
//! `shutdown_grace_seconds`, `log.json`, `log.access.path`, `status`, `server_header`) is
//! logged as needing a restart and keeps its running value.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::admin_keys::{self, ResolvedKeys};
use crate::settings::{AdminKey, Settings};
use crate::store::ConfigStore;

/// The admin keys in force, swapped by a reload.
pub type LiveKeys = Arc<ArcSwap<Vec<AdminKey>>>;

/// The background service that waits for `SIGHUP`.
pub struct Reloader {
    pub conf: PathBuf,
    /// The settings the process runs with (live fields updated by each reload).
    pub running: Mutex<Settings>,
    pub keys: LiveKeys,
    pub store: Arc<ConfigStore>,
    /// The proxy workers' Lua VMs, whose limits a reload changes.
    pub lua: Arc<portico_plugins::lua::WorkerVms>,
    /// The access log, whose format a reload changes.
    pub access_log: Arc<crate::logging::AccessLog>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::error!("cannot install the SIGHUP handler; reloads are off");
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup.recv() => self.reload(),
            }
        }
    }
}

impl Reloader {
    /// One reload: read, check, apply the live settings, report the rest.
    pub fn reload(&self) {
        let path = self.conf.display();
        let next = match Settings::load(&self.conf) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("SIGHUP: {e}; nothing changed");
                return;
            }
        };
        let errors = next.check();
        if !errors.is_empty() {
            tracing::error!("SIGHUP: {path}: {}; nothing changed", errors.join("; "));
            return;
        }
        let mut running = self.running.lock();
        let mut applied = Vec::new();

        if next.log.level != running.log.level {
            let level = next.log.level.as_deref();
            match crate::logging::filter::set_level(level) {
                Ok(true) => applied.push(format!(
                    "log.level `{}`",
                    level.unwrap_or(crate::logging::filter::DEFAULT_LEVEL)
                )),
                Ok(false) => tracing::warn!(
                    "SIGHUP: log.level changed but {} is set and decides the filter",
                    crate::logging::filter::LOG_ENV
                ),
                Err(e) => tracing::error!("SIGHUP: log.level: {e}"),
            }
            running.log.level = next.log.level.clone();
        }

        let (old_access, new_access) = (&running.log.access, &next.log.access);
        if new_access.format != old_access.format || new_access.json != old_access.json {
            match crate::logging::format::LogFormat::parse(&new_access.format, new_access.json) {
                Ok(format) => {
                    self.access_log.set_format(format);
                    applied.push("log.access.format".to_string());
                    running.log.access.format = next.log.access.format.clone();
                    running.log.access.json = next.log.access.json;
                }
                Err(e) => tracing::error!("SIGHUP: log.access.format: {e}"),
            }
        }

        // Keys are resolved as at startup (the environment override, a generated key,
        // the short-key refusal) against the running listener.
        let mut for_keys = running.clone();
        for_keys.admin.keys = next.admin.keys.clone();
        match admin_keys::resolve(&for_keys, admin_keys::env_key()) {
            Ok(ResolvedKeys { keys, .. }) => {
                if **self.keys.load() != keys {
                    applied.push(format!("admin keys ({})", keys.len()));
                    self.keys.store(Arc::new(keys));
                }
                running.admin.keys = next.admin.keys.clone();
            }
            Err(e) => tracing::error!("SIGHUP: admin.keys not changed: {e}"),
        }

        if next.history.keep != running.history.keep {
            self.store.set_history_keep(next.history.keep);
            applied.push(format!("history.keep {}", next.history.keep));
            running.history.keep = next.history.keep;
        }

        if next.lua.max_slice_ms != running.lua.max_slice_ms
            || next.lua.max_memory_mb != running.lua.max_memory_mb
            || next.lua.max_pending_timers != running.lua.max_pending_timers
        {
            self.lua.set_limits(next.lua.limits());
            applied.push(format!(
                "lua.max_slice_ms {}, lua.max_memory_mb {}, lua.max_pending_timers {}",
                next.lua.max_slice_ms, next.lua.max_memory_mb, next.lua.max_pending_timers
            ));
            running.lua.max_slice_ms = next.lua.max_slice_ms;
            running.lua.max_memory_mb = next.lua.max_memory_mb;
            running.lua.max_pending_timers = next.lua.max_pending_timers;
        }

        for name in needs_restart(&running, &next) {
            tracing::warn!("SIGHUP: {name} changed; it takes effect after a restart");
        }
        tracing::info!(
            applied = %if applied.is_empty() { "nothing".to_string() } else { applied.join(", ") },
            "SIGHUP: static configuration re-read from {path}"
        );
    }
}

/// The settings that differ between `running` and `next` and that only a restart
/// applies.
fn needs_restart(running: &Settings, next: &Settings) -> Vec<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let checks: [(&'static str, bool); 18] = [
        ("proxy", differs(&running.proxy, &next.proxy)),
        ("admin.listen", running.admin.listen != next.admin.listen),
        ("metrics", differs(&running.metrics, &next.metrics)),
        ("data_dir", running.data_dir != next.data_dir),
        (
            "config_provider",
            running.config_provider != next.config_provider,
        ),
        ("yaml_config", running.yaml_config != next.yaml_config),
        ("seed_config", running.seed_config != next.seed_config),
        ("threads", running.threads != next.threads),
        (
            "shutdown_grace_seconds",
            running.shutdown_grace_seconds != next.shutdown_grace_seconds,
        ),
        (
            "lua.shared_dicts",
            running.lua.shared_dicts != next.lua.shared_dicts,
        ),
        ("dynacode", differs(&running.dynacode, &next.dynacode)),
        ("log.json", running.log.json != next.log.json),
        (
            "log.access.path",
            running.log.access.path != next.log.access.path,
        ),
        (
            "log.access.buffer_lines",
            running.log.access.buffer_lines != next.log.access.buffer_lines,
        ),
        ("status", differs(&running.status, &next.status)),
        ("server_header", running.server_header != next.server_header),
        ("etcd", running.etcd != next.etcd),
        ("cache", differs(&running.cache, &next.cache)),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(name, _)| name)
        .collect()
}
