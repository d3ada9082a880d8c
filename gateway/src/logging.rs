//! The error log (`tracing` to stderr) and its filter, which `SIGHUP` can change.
//!
//! The filter is `PORTICO_LOG` when set (it always wins), else the static config's
//! `log_level` (an `EnvFilter` directive list such as `info` or `warn,portico=debug`).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The environment variable whose filter overrides `log_level`.
pub const LOG_ENV: &str = "PORTICO_LOG";

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber with `PORTICO_LOG`, or `info` until
/// [`set_level`] is called with the static config's `log_level`.
pub fn init() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Whether `PORTICO_LOG` decides the filter (then `log_level` is ignored).
pub fn env_overrides() -> bool {
    std::env::var_os(LOG_ENV).is_some()
}

/// Checks a `log_level` value; the error says why it is not a filter.
pub fn parse_level(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| format!("`{directives}` is not a log filter: {e}"))
}

/// Makes `directives` the filter, unless `PORTICO_LOG` is set. Whether it changed.
pub fn set_level(directives: &str) -> Result<bool, String> {
    if env_overrides() {
        return Ok(false);
    }
    let filter = parse_level(directives)?;
    match FILTER.get() {
        Some(handle) => handle
            .reload(filter)
            .map(|_| true)
            .map_err(|e| format!("cannot change the log filter: {e}")),
        None => Ok(false),
    }
}
