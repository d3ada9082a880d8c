//! gRPC for the e2e tests: a real server and client in Python (`grpcio`, Debian's
//! `python3-grpcio`, installed by `scripts/setup.sh`), driven by
//! `tests/e2e/grpc/peer.py` (generic handlers, raw-bytes messages).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use serde_json::Value;

use super::WAIT;

/// Debian's python3 when present: apt's `python3-grpcio` is on its path only (a pyenv
/// or venv `python3` first on PATH would not see it).
pub fn python() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/grpc/peer.py")
}

/// A gRPC server (`test.Echo`) on an ephemeral loopback port; killed on drop.
pub struct GrpcServer {
    child: Child,
    pub port: u16,
}

impl GrpcServer {
    /// h2c, or TLS with this certificate and key (PEM files).
    pub fn start(tls: Option<(&Path, &Path)>) -> GrpcServer {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script()).arg("server");
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the python gRPC server (scripts/setup.sh installs python3-grpcio)");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("the gRPC server did not report its port: {line:?}")
            });
        GrpcServer { child, port }
    }

    /// `127.0.0.1:port` for an upstream's `nodes`.
    pub fn node(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client's unary, server-streaming and failing calls against `target` with
/// `args` (`--tls CA --sni NAME`, `--authority A`) and returns what it got.
pub fn call_all(target: &str, args: &[&str]) -> Value {
    let mut child = Command::new(python())
        .arg(peer_script())
        .arg("client")
        .arg(target)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the python gRPC client");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(super::POLL);
    }
    let out = child.wait_with_output().expect("client output");
    assert!(
        out.status.success(),
        "gRPC client failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
