//! The access log handle the proxy uses: it formats a line into a buffer and hands it to
//! the writer thread without waiting; when the writer is behind by `buffer_lines` the
//! line is dropped and counted (`portico_access_log_dropped_total`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::IntCounter;

use super::format::LogFormat;
use super::record::LogRecord;
use super::writer::{self, Target};
use super::AccessLogSettings;

/// Typical line length: the buffer is allocated once at this size.
const LINE_CAPACITY: usize = 320;

pub struct AccessLog {
    /// Swappable so a reload can change the format without a restart.
    format: ArcSwap<LogFormat>,
    /// `None` when the access log is off.
    lines: Option<SyncSender<Vec<u8>>>,
    dropped: IntCounter,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// An access log that writes nothing (`log.access.path: off`).
    pub fn off(dropped: IntCounter) -> AccessLog {
        AccessLog {
            format: ArcSwap::from_pointee(
                LogFormat::parse("", false).expect("the empty format has no variable to reject"),
            ),
            lines: None,
            dropped,
            reopen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Parses the format and starts the writer; errors name the setting.
    pub fn start(settings: &AccessLogSettings, dropped: IntCounter) -> Result<AccessLog, String> {
        let format = LogFormat::parse(&settings.format, settings.json)
            .map_err(|e| format!("log.access.format: {e}"))?;
        let target = match settings.path.as_str() {
            "off" => return Ok(AccessLog::off(dropped)),
            "stdout" => Target::Stdout,
            path => Target::File(path.into()),
        };
        let (tx, rx) = sync_channel(settings.buffer_lines.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        writer::spawn(target, rx, Arc::clone(&reopen))
            .map_err(|e| format!("log.access.path: cannot open `{}`: {e}", settings.path))?;
        Ok(AccessLog {
            format: ArcSwap::from_pointee(format),
            lines: Some(tx),
            dropped,
            reopen,
        })
    }

    pub fn enabled(&self) -> bool {
        self.lines.is_some()
    }

    /// Whether the current format has `$request_id`.
    pub fn uses_request_id(&self) -> bool {
        self.format.load().uses_request_id()
    }

    /// Formats and queues one line; never blocks.
    pub fn log(&self, rec: &LogRecord<'_>) {
        let Some(lines) = &self.lines else {
            return;
        };
        let mut line = Vec::with_capacity(LINE_CAPACITY);
        self.format.load().write_line(rec, &mut line);
        match lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Replaces the format (a reload of the static settings).
    pub fn set_format(&self, format: LogFormat) {
        self.format.store(Arc::new(format));
    }

    /// Asks the writer to reopen its file (after a rename by logrotate).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Reopens the file on every `SIGUSR1`, from a small thread of its own. The handler
    /// is installed before this returns, so a signal sent after startup never takes the
    /// default action (ending the process).
    pub fn reopen_on_usr1(self: &Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        let mut usr1 = runtime.block_on(async { signal(SignalKind::user_defined1()) })?;
        let log = Arc::clone(self);
        std::thread::Builder::new()
            .name("portico-usr1".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while usr1.recv().await.is_some() {
                        tracing::info!("SIGUSR1: reopening log files");
                        log.reopen();
                    }
                })
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::record::LogRecord;

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dropped = IntCounter::new("dropped", "test").unwrap();
        let (tx, rx) = sync_channel(2);
        let log = AccessLog {
            format: ArcSwap::from_pointee(LogFormat::parse("$status", false).unwrap()),
            lines: Some(tx),
            dropped: dropped.clone(),
            reopen: Arc::new(AtomicBool::new(false)),
        };
        for _ in 0..5 {
            log.log(&LogRecord::bare(None, 204));
        }
        assert_eq!(dropped.get(), 3);
        assert_eq!(rx.try_recv().unwrap(), b"204\n");
        assert!(!log.uses_request_id());
    }
}
