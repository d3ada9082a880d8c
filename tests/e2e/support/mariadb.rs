//! A real MariaDB server (`mariadbd`) on an ephemeral loopback port with a temporary data
//! directory, stopped on drop. `scripts/setup.sh` installs `mariadb-server` when missing.

use std::process::{Child, Command, Stdio};

use super::{free_port, wait_until, TempDir, WAIT};

pub struct MariaDb {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// `--user=root` is required when the tests run as root (mariadbd refuses otherwise).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl MariaDb {
    /// Starts a server and runs `setup_sql` as root over its unix socket.
    pub fn start(setup_sql: &str) -> MariaDb {
        let dir = TempDir::new("portico-mariadb");
        let data = dir.path().join("data");
        let user = if running_as_root() {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db (run ./scripts/setup.sh to install mariadb-server)");
        assert!(install.success(), "mariadb-install-db failed");
        let port = free_port();
        let socket = dir.path().join("sock");
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--user={user}"))
            .args(["--skip-log-bin", "--innodb-buffer-pool-size=16M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        let db = MariaDb {
            port,
            dir,
            child: Some(child),
        };
        assert!(
            wait_until(WAIT, || db.sql("SELECT 1").is_ok()),
            "mariadbd did not answer on its socket"
        );
        if let Err(e) = db.sql(setup_sql) {
            panic!("setup SQL failed: {e}");
        }
        db
    }

    /// Runs SQL as root over the unix socket; its output, or the error text.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
