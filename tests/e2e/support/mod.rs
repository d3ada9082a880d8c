//! Shared harness: the real `portico` process, real loopback backends, an
//! HTTP/1.1 client and a Prometheus text parser.

#![allow(dead_code)] // not every suite uses every helper

pub mod backend;
pub mod cms;
pub mod etcd;
pub mod gateway;
pub mod grpc;
pub mod health;
pub mod http;
pub mod mariadb;
pub mod prom;
pub mod redis;
pub mod tls;
pub mod ws;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use backend::{dead_addr, Backend};
pub use cms::MockCms;
pub use etcd::EtcdServer;
pub use gateway::{Gateway, GatewayOpts, LuaOpts};
pub use http::{Conn, Request, Response};
pub use mariadb::MariaDb;
pub use redis::RedisServer;
pub use serde_json::{json, Value};

/// How long any "wait for a condition" may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// Poll interval of every wait loop.
pub const POLL: Duration = Duration::from_millis(20);

/// A port that was free a moment ago, handed out at most once per test run.
///
/// The port is released before the process under test binds it. A port from
/// `bind(127.0.0.1:0)` lies in the kernel's ephemeral range, so in that gap
/// the kernel may give the same number to a parallel test's `bind(:0)` or use
/// it as a connection's source port (in CI another test's listener once answered
/// on a gateway's admin port). Ports below the ephemeral range are never
/// assigned by the kernel, so they are picked from there when there is room;
/// only another process picking ports the same way could still collide.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((low, high)) = ports_below_ephemeral_range() {
        let span = u64::from(high - low);
        for _ in 0..1000 {
            let port = low + (random_u64() % span) as u16;
            if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                handed_out.insert(port);
                return port;
            }
        }
    }
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// `[10000, low)` where `low` starts the kernel's ephemeral port range, if
/// that leaves at least 4096 ports.
pub(crate) fn ports_below_ephemeral_range() -> Option<(u16, u16)> {
    const FLOOR: u16 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let low: u16 = range.split_whitespace().next()?.parse().ok()?;
    (low >= FLOOR + 4096).then_some((FLOOR, low))
}

/// Not cryptographic: std's randomly keyed hasher over a counter and the clock.
fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_usize(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Polls `cond` every 20 ms until it holds; false after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// A random-enough alphanumeric string (no `rand` dev-dependency needed).
pub fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut x = random_u64();
        for _ in 0..8 {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
            x /= ALPHABET.len() as u64;
        }
    }
    out
}

/// A temporary directory, removed on drop unless the test is panicking (then
/// it is kept and its path printed, for post-mortem).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            random_string(10)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(kept temp dir {})", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod selftest;
