//! The real `portico` process under test.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{self, Conn, Request, Response};
use super::{free_port, random_string, wait_until, TempDir, POLL, WAIT};

/// Path of the binary under test.
pub fn portico_bin() -> &'static str {
    env!("CARGO_BIN_EXE_portico")
}

/// A `portico` command with a clean environment for the admin key.
pub fn portico_cmd() -> Command {
    let mut cmd = Command::new(portico_bin());
    cmd.env_remove("PORTICO_ADMIN_KEY")
        .env("RUST_BACKTRACE", "1");
    cmd
}

/// Runs `portico <args>` to completion (killed and failed after `WAIT`).
pub fn run_portico(args: &[&str]) -> Output {
    let mut child = portico_cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn portico");
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "portico {args:?} did not exit within {WAIT:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(POLL);
    }
}

#[derive(Clone, Debug)]
pub struct GatewayOpts {
    /// `Some(contents)`: `config_provider: yaml` with `yaml_config` pointing
    /// at a file holding `contents` (rewrite it with `Gateway::write_yaml_config`).
    pub yaml_provider: Option<String>,
    /// Reuse an existing data directory (default: `<tmp>/data`).
    pub data_dir: Option<PathBuf>,
    /// Write `admin.keys` (admin + viewer). Without keys the gateway must
    /// generate `data_dir/admin.key`.
    pub admin_keys: bool,
    /// Host for the admin listener (default `127.0.0.1`).
    pub admin_host: String,
    /// Appended verbatim at the top level of `portico.yaml`.
    pub extra_yaml: String,
    /// Appended verbatim inside the `metrics:` section (e.g. `"  naming: apisix\n"`).
    pub metrics_extra: String,
    /// Appended verbatim inside the `proxy:` section (indented keys, one per line,
    /// e.g. `"  client_header_timeout: 1\n"`).
    pub proxy_extra: String,
    /// Extra environment variables for the process.
    pub env: Vec<(String, String)>,
    /// Start the process with this `RLIMIT_NOFILE` (through `sh -c 'ulimit -n N; exec ...'`).
    pub fd_limit: Option<u64>,
    /// Proxy worker threads (`threads:`; default 2).
    pub threads: usize,
    /// The `lua:` section of `portico.yaml` (`None`: defaults, with the test budget).
    pub lua: Option<LuaOpts>,
    /// The `dynacode:` (poller) section of `portico.yaml`, written inline as JSON
    /// (a YAML flow mapping), e.g. `json!({"url": cms.url(), "interval": 1})`.
    pub dynacode: Option<Value>,
}

/// The `lua:` static config section; `None` fields are left out (gateway defaults),
/// except `max_slice_ms`, which defaults to [`TEST_MAX_SLICE_MS`].
#[derive(Clone, Debug, Default)]
pub struct LuaOpts {
    pub max_slice_ms: Option<u64>,
    pub max_memory_mb: Option<u64>,
    /// `lua.shared_dicts: {name: size}`, e.g. `("counters", "1m")`.
    pub shared_dicts: Vec<(String, String)>,
    /// `lua.max_pending_timers`.
    pub max_pending_timers: Option<u64>,
}

/// The CPU budget of tests that are not about it. The budget is wall-clock time, and a
/// loaded 2-core CI machine can stall a slice (a first regex compile in a debug build)
/// past the product's 100 ms; the safety tests set their budget explicitly.
const TEST_MAX_SLICE_MS: u64 = 1000;

impl LuaOpts {
    fn yaml(&self) -> String {
        let mut s = "lua:\n".to_owned();
        s += &format!(
            "  max_slice_ms: {}\n",
            self.max_slice_ms.unwrap_or(TEST_MAX_SLICE_MS)
        );
        if let Some(mb) = self.max_memory_mb {
            s += &format!("  max_memory_mb: {mb}\n");
        }
        if let Some(n) = self.max_pending_timers {
            s += &format!("  max_pending_timers: {n}\n");
        }
        if !self.shared_dicts.is_empty() {
            s += "  shared_dicts:\n";
            for (name, size) in &self.shared_dicts {
                s += &format!("    {name}: \"{size}\"\n");
            }
        }
        s
    }
}

impl Default for GatewayOpts {
    fn default() -> Self {
        GatewayOpts {
            yaml_provider: None,
            data_dir: None,
            admin_keys: true,
            admin_host: "127.0.0.1".to_owned(),
            extra_yaml: String::new(),
            proxy_extra: String::new(),
            metrics_extra: String::new(),
            env: Vec::new(),
            fd_limit: None,
            threads: 2,
            lua: None,
            dynacode: None,
        }
    }
}

pub struct Gateway {
    pub dir: TempDir,
    pub opts: GatewayOpts,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub yaml_config_path: PathBuf,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub metrics_port: u16,
    /// Key used by `admin()`; for a keyless start, set it from `admin.key`.
    pub admin_key: String,
    pub viewer_key: String,
    child: Option<Child>,
    sync_counter: AtomicUsize,
}

impl Gateway {
    /// Starts with the default options.
    pub fn start_default() -> Gateway {
        Self::start(GatewayOpts::default())
    }

    /// Writes `portico.yaml`, spawns `portico -c portico.yaml` and waits until
    /// the admin API answers and the proxy and metrics ports accept TCP.
    pub fn start(opts: GatewayOpts) -> Gateway {
        // A port picked by `free_port` can be taken by someone else before
        // portico binds it; retry with new ports in that (rare) case.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut gw = Self::prepare(opts.clone());
            gw.spawn();
            match gw.wait_ready() {
                Ok(()) => return gw,
                Err(msg) => {
                    let logs = gw.logs();
                    if attempt < 3 && logs.to_ascii_lowercase().contains("in use") {
                        eprintln!("port clash ({msg}); retrying with new ports");
                        gw.kill9();
                        continue;
                    }
                    panic!("{msg}\n{}", gw.log_dump());
                }
            }
        }
    }

    /// Creates the temp dir and config without starting the process.
    pub fn prepare(opts: GatewayOpts) -> Gateway {
        let dir = TempDir::new("portico-e2e");
        let config_path = dir.path().join("portico.yaml");
        let data_dir = opts
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let yaml_config_path = dir.path().join("apisix.yaml");
        let gw = Gateway {
            config_path,
            data_dir,
            yaml_config_path,
            proxy_port: free_port(),
            admin_port: free_port(),
            metrics_port: free_port(),
            admin_key: random_string(32),
            viewer_key: random_string(32),
            child: None,
            sync_counter: AtomicUsize::new(0),
            opts,
            dir,
        };
        if let Some(contents) = &gw.opts.yaml_provider {
            gw.write_yaml_config(contents);
        }
        std::fs::write(&gw.config_path, gw.config_text()).expect("write portico.yaml");
        gw
    }

    /// The static config this gateway runs with.
    pub fn config_text(&self) -> String {
        let mut s = format!("proxy:\n  listen: [\"127.0.0.1:{}\"]\n", self.proxy_port);
        s += &self.opts.proxy_extra;
        s += &format!(
            "admin:\n  listen: \"{}:{}\"\n",
            self.opts.admin_host, self.admin_port
        );
        if self.opts.admin_keys {
            s += &format!(
                "  keys:\n    - {{ name: admin, key: \"{}\", role: admin }}\n    - {{ name: viewer, key: \"{}\", role: viewer }}\n",
                self.admin_key, self.viewer_key
            );
        }
        s += &format!("metrics:\n  listen: \"127.0.0.1:{}\"\n", self.metrics_port);
        s += &self.opts.metrics_extra;
        s += &format!("data_dir: \"{}\"\n", self.data_dir.display());
        s += &format!("threads: {}\n", self.opts.threads);
        s += &self.opts.lua.clone().unwrap_or_default().yaml();
        if let Some(dynacode) = &self.opts.dynacode {
            s += &format!("dynacode: {dynacode}\n");
        }
        if self.opts.yaml_provider.is_some() {
            s += "config_provider: yaml\n";
            s += &format!("yaml_config: \"{}\"\n", self.yaml_config_path.display());
        }
        s += &self.opts.extra_yaml;
        s
    }

    /// Rewrites the declarative (yaml provider) file in place.
    pub fn write_yaml_config(&self, contents: &str) {
        std::fs::write(&self.yaml_config_path, contents).expect("write apisix.yaml");
    }

    fn log_file(&self, name: &str) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .expect("open log file")
    }

    /// Spawns the process (does not wait for readiness).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "portico already running");
        let mut out = self.log_file("stdout.log");
        let mut err = self.log_file("stderr.log");
        let _ = writeln!(out, "===== spawn =====");
        let _ = writeln!(err, "===== spawn =====");
        let mut cmd = match self.opts.fd_limit {
            None => portico_cmd(),
            Some(n) => {
                // `exec` keeps the pid, so kill/terminate reach portico itself.
                let mut c = Command::new("sh");
                c.env_remove("PORTICO_ADMIN_KEY")
                    .env("RUST_BACKTRACE", "1")
                    .arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(portico_bin());
                c
            }
        };
        cmd.arg("-c")
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn portico"));
    }

    /// Waits until the process is serving; `Err` with a reason otherwise.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        let need_200 = self.opts.admin_keys && self.opts.yaml_provider.is_none();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("portico exited during startup: {status}"));
            }
            // With keys, the answer must be an Admin API list envelope: a
            // listener that took the port first (see `free_port`) would
            // otherwise pass for a ready gateway.
            let admin_ok = match self.admin_raw("GET", "/routes", None, Some(&self.admin_key)) {
                Ok(r) => !need_200 || (r.status == 200 && r.json().get("list").is_some()),
                Err(_) => false,
            };
            if admin_ok
                && TcpStream::connect(self.proxy_addr()).is_ok()
                && TcpStream::connect(self.metrics_addr()).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("portico not ready within {WAIT:?}"));
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.proxy_port))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin_port))
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("portico not running").id()
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().expect("try_wait");
            if let Some(status) = status {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    // ---------------------------------------------------------------- admin

    /// An admin request with an explicit key (`None`: no key at all); `path`
    /// is relative to `/apisix/admin` and may carry a query string.
    pub fn admin_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        key: Option<&str>,
    ) -> std::io::Result<Response> {
        let mut req = Request::new(method, &format!("/apisix/admin{path}"));
        if let Some(k) = key {
            req = req.header("X-API-KEY", k);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        http::send(self.admin_addr(), &req)
    }

    /// Admin request with the admin key: `(status, headers, json body)`.
    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Vec<(String, String)>, Value) {
        let key = self.admin_key.clone();
        self.admin_with_key(method, path, body, Some(&key))
    }

    pub fn admin_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Vec<(String, String)>, Value) {
        let resp = self
            .admin_raw(method, path, body.map(|b| b.to_string().into_bytes()), key)
            .unwrap_or_else(|e| panic!("admin {method} {path}: transport error {e}"));
        let json = resp.json();
        (resp.status, resp.headers, json)
    }

    /// PUT/POST/PATCH that must succeed (2xx); returns the body.
    pub fn write_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, _, resp) = self.admin(method, path, Some(body.clone()));
        assert!(
            (200..300).contains(&status),
            "admin {method} {path} {body} -> {status} {resp}"
        );
        resp
    }

    pub fn put(&self, path: &str, body: Value) -> Value {
        self.write_ok("PUT", path, body)
    }

    /// GET that must answer 200; returns the body.
    pub fn get(&self, path: &str) -> Value {
        let (status, _, resp) = self.admin("GET", path, None);
        assert_eq!(status, 200, "admin GET {path} -> {resp}");
        resp
    }

    /// Barrier for admin writes: PUTs a throw-away route and waits until the
    /// proxy routes to it, so every earlier write is visible on the data path
    /// too (writes are applied in order). Sends no traffic to other routes.
    pub fn sync(&self) {
        let n = self.sync_counter.fetch_add(1, Ordering::SeqCst);
        let uri = format!("/__portico_sync/{n}");
        self.put(
            "/routes/zz-sync",
            json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1": 1}}}),
        );
        let ok = wait_until(WAIT, || {
            self.try_proxy(Request::get(&uri))
                .is_ok_and(|r| r.status != 404)
        });
        assert!(ok, "sync route {uri} never became routable");
    }

    // ---------------------------------------------------------------- proxy

    pub fn try_proxy(&self, req: Request) -> std::io::Result<Response> {
        http::send(self.proxy_addr(), &req)
    }

    /// One request through the proxy on a fresh connection.
    pub fn proxy(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.proxy_req(Request::new(method, path).headers(headers))
    }

    pub fn proxy_get(&self, path: &str) -> Response {
        self.proxy("GET", path, &[])
    }

    pub fn proxy_req(&self, req: Request) -> Response {
        let desc = format!("{} {}", req.method, req.path);
        self.try_proxy(req)
            .unwrap_or_else(|e| panic!("proxy {desc}: transport error {e}"))
    }

    /// A keep-alive connection to the proxy port.
    pub fn proxy_conn(&self) -> Conn {
        Conn::new(self.proxy_addr())
    }

    // ---------------------------------------------------------------- metrics

    pub fn metrics_text(&self) -> String {
        let resp = http::send(self.metrics_addr(), &Request::get("/metrics"))
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(resp.status, 200, "GET /metrics -> {resp:?}");
        resp.text()
    }

    // ---------------------------------------------------------------- process

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (graceful shutdown) and wait for the exit (fails after 60 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid();
        let st = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(st.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let c = self.child.as_mut().expect("child");
            if let Some(status) = c.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "portico did not exit within 60 s of SIGTERM\n{}",
                    self.log_dump()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// A new process on the same config and data dir (terminates a running one first).
    pub fn restart(&mut self) {
        if self.is_running() {
            self.terminate();
        }
        self.child = None;
        self.spawn();
        if let Err(msg) = self.wait_ready() {
            panic!("restart: {msg}\n{}", self.log_dump());
        }
    }

    /// stdout + stderr so far.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    fn log_dump(&self) -> String {
        let tail = |n: &str| {
            let s = std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(200)..].join("\n")
        };
        format!(
            "----- portico stdout ({}) -----\n{}\n----- portico stderr -----\n{}\n-----",
            self.dir.path().display(),
            tail("stdout.log"),
            tail("stderr.log")
        )
    }

    pub fn dir_path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("{}", self.log_dump());
        }
    }
}
