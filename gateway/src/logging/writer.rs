//! The access log's one writer thread: lines arrive over a bounded channel and are
//! written through a buffer, flushed whenever the channel runs empty; `SIGUSR1` makes it
//! reopen the file (logrotate's convention for nginx: rename, then signal).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

/// How often the writer looks at the reopen flag while no line arrives.
const IDLE_TICK: Duration = Duration::from_millis(100);

enum Sink {
    Stdout(io::Stdout),
    File(BufWriter<File>),
}

impl Sink {
    fn open(target: &Target) -> io::Result<Sink> {
        match target {
            Target::Stdout => Ok(Sink::Stdout(io::stdout())),
            Target::File(path) => Ok(Sink::File(BufWriter::with_capacity(
                64 * 1024,
                open_append(path)?,
            ))),
        }
    }

    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.lock().write_all(line),
            Sink::File(f) => f.write_all(line),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Stdout(s) => s.lock().flush(),
            Sink::File(f) => f.flush(),
        }
    }
}

/// Opens `path` for appending, creating it (mode 0640) and its directory when missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    options.open(path)
}

/// Starts the writer thread. It ends (after writing what is queued) when every sender
/// is dropped. The target is opened here, so a path that cannot be written fails
/// startup.
pub fn spawn(target: Target, lines: Receiver<Vec<u8>>, reopen: Arc<AtomicBool>) -> io::Result<()> {
    let mut sink = Sink::open(&target)?;
    std::thread::Builder::new()
        .name("portico-access-log".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                if reopen.swap(false, Ordering::AcqRel) {
                    let _ = sink.flush();
                    match Sink::open(&target) {
                        Ok(s) => {
                            sink = s;
                            tracing::info!("access log reopened");
                        }
                        Err(e) => tracing::error!("access log: cannot reopen: {e}"),
                    }
                }
                let line = match lines.recv_timeout(IDLE_TICK) {
                    Ok(line) => line,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                let mut result = sink.write_all(&line);
                while result.is_ok() {
                    match lines.try_recv() {
                        Ok(line) => result = sink.write_all(&line),
                        Err(_) => break,
                    }
                }
                let result = result.and_then(|()| sink.flush());
                // Reported once per failure streak, not once per line.
                match (result, failing) {
                    (Err(e), false) => {
                        tracing::error!("access log: write failed: {e}");
                        failing = true;
                    }
                    (Ok(()), true) => failing = false,
                    _ => {}
                }
            }
            let _ = sink.flush();
        })?;
    Ok(())
}
