//! The error log's filter: `PORTICO_LOG` when set (it always wins), else the static
//! config's `log.level` (`EnvFilter` directives such as `info` or `warn,portico=debug`),
//! changed live by `SIGHUP`.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The environment variable whose filter overrides `log.level`.
pub const LOG_ENV: &str = "PORTICO_LOG";

/// The level when `log.level` is not set.
pub const DEFAULT_LEVEL: &str = "info";

type Setter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SETTER: OnceLock<Setter> = OnceLock::new();

/// Called by the subscriber's init with the way to swap its filter.
pub(super) fn install(setter: Setter) {
    let _ = SETTER.set(setter);
}

/// Whether `PORTICO_LOG` decides the filter (then `log.level` is ignored).
pub fn env_overrides() -> bool {
    std::env::var_os(LOG_ENV).is_some()
}

/// Checks a `log.level` value; the error says why it is not a filter.
pub fn parse_level(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| format!("`{directives}` is not a log filter: {e}"))
}

/// Makes `level` (or [`DEFAULT_LEVEL`]) the filter, unless `PORTICO_LOG` is set.
/// Whether it changed anything.
pub fn set_level(level: Option<&str>) -> Result<bool, String> {
    if env_overrides() {
        return Ok(false);
    }
    let filter = parse_level(level.unwrap_or(DEFAULT_LEVEL))?;
    match SETTER.get() {
        Some(set) => set(filter)
            .map(|_| true)
            .map_err(|e| format!("cannot change the log filter: {e}")),
        None => Ok(false),
    }
}
