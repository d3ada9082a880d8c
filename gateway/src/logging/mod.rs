//! The gateway's own logs: the access log (one line per request, written off the request
//! path), the error log's format (`tracing`), `SIGUSR1` reopening, and the rate-limited
//! messages of failures that repeat per request.
//!
//! - [`format`]: the access log format, parsed once at startup into segments;
//! - [`record`]: the values of one finished request a line is made of;
//! - [`access`]: the handle the proxy formats lines with and hands them to the writer;
//! - [`writer`]: the one thread that writes lines, and reopens the file on `SIGUSR1`;
//! - [`edge_replies`]: the client edge's own answers, counted and logged;
//! - [`error_log`]: `tracing` setup, plain text or one JSON object per line;
//! - [`throttle`]: "once per key per interval" for messages such as a refused upstream.

pub mod access;
pub mod edge_replies;
pub mod error_log;
pub mod filter;
pub mod format;
pub mod record;
pub mod throttle;
pub mod writer;

use serde::Deserialize;

pub use access::AccessLog;

/// nginx's/APISIX's combined-style access log line.
pub const DEFAULT_ACCESS_FORMAT: &str = "$remote_addr - $remote_user [$time_local] $http_host \"$request\" $status $body_bytes_sent $request_time \"$http_referer\" \"$http_user_agent\" $upstream_addr $upstream_status $upstream_response_time \"$upstream_scheme://$upstream_host$upstream_uri\"";

/// `log:` in the static config.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// The error log (`tracing`, on stderr) as one JSON object per line.
    pub json: bool,
    /// The error log's filter (`info`, `warn,portico=debug`; default `info`);
    /// `PORTICO_LOG` overrides it. `SIGHUP` applies a change.
    pub level: Option<String>,
    pub access: AccessLogSettings,
}

/// `log.access:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSettings {
    /// A file (created with its directory when missing), `stdout`, or `off`.
    pub path: String,
    /// `$var` names and literal text.
    pub format: String,
    /// One JSON object per line, with a member per variable of `format`.
    pub json: bool,
    /// Lines waiting for the writer; beyond it lines are dropped and counted.
    pub buffer_lines: usize,
}

impl Default for AccessLogSettings {
    fn default() -> Self {
        AccessLogSettings {
            path: "logs/access.log".to_string(),
            format: DEFAULT_ACCESS_FORMAT.to_string(),
            json: false,
            buffer_lines: 16 * 1024,
        }
    }
}

impl AccessLogSettings {
    /// Problems with these settings, each naming its key.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.path.is_empty() {
            errors.push("log.access.path: must be a file, `stdout` or `off`".to_string());
        }
        if let Err(e) = format::LogFormat::parse(&self.format, self.json) {
            errors.push(format!("log.access.format: {e}"));
        }
        if self.buffer_lines == 0 {
            errors.push("log.access.buffer_lines: must be at least 1".to_string());
        }
        errors
    }
}
