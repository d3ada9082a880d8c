//! A real `etcd` (Debian's `etcd-server`) on ephemeral loopback ports with a temporary
//! data directory, stopped on drop. `scripts/setup.sh` installs it on a fresh machine.
//! Written to and read through its v3 JSON gateway, as APISIX (or `etcdctl`) would.

use std::process::{Child, Command, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

use super::http::{self, Request};
use super::{free_port, wait_until, TempDir, WAIT};

pub struct EtcdServer {
    pub client_port: u16,
    peer_port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    pub fn start() -> EtcdServer {
        let mut e = EtcdServer {
            client_port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new("portico-etcd"),
            child: None,
        };
        e.spawn();
        e
    }

    /// `http://127.0.0.1:PORT`, for `etcd.endpoints`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The `config_provider: etcd` static config for a gateway on this etcd.
    pub fn gateway_yaml(&self) -> String {
        self.gateway_yaml_with_timeout(5)
    }

    /// [`EtcdServer::gateway_yaml`] with another `etcd.timeout`.
    pub fn gateway_yaml_with_timeout(&self, seconds: u64) -> String {
        format!(
            "config_provider: etcd\netcd:\n  endpoints: [\"{}\"]\n  prefix: /apisix\n  timeout: {seconds}\n",
            self.endpoint()
        )
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg("portico-test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("portico-test={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (run ./scripts/setup.sh to install etcd-server)");
        self.child = Some(child);
        assert!(
            wait_until(WAIT, || self
                .try_call("/v3/kv/range", &json!({"key": b64("/")}))
                .is_some()),
            "etcd did not answer on port {}",
            self.client_port
        );
    }

    /// Stops the server; its data stays for [`EtcdServer::start_again`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports with the same data.
    pub fn start_again(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts it again on the same ports, empty (a new cluster, revisions from 1).
    pub fn restart_empty(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
        self.spawn();
    }

    fn try_call(&self, path: &str, body: &Value) -> Option<Value> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let resp = http::send(addr, &Request::new("POST", path).json(body)).ok()?;
        (resp.status == 200).then(|| resp.json())
    }

    fn call(&self, path: &str, body: Value) -> Value {
        self.try_call(path, &body)
            .unwrap_or_else(|| panic!("etcd {path} {body} failed"))
    }

    /// `etcdctl put KEY VALUE`; the revision it got.
    pub fn put(&self, key: &str, value: &str) -> u64 {
        let r = self.call("/v3/kv/put", json!({"key": b64(key), "value": b64(value)}));
        int(&r["header"]["revision"])
    }

    /// `etcdctl del KEY`.
    pub fn delete(&self, key: &str) -> u64 {
        let r = self.call("/v3/kv/deleterange", json!({"key": b64(key)}));
        int(&r["header"]["revision"])
    }

    /// `etcdctl get KEY`: the value and its (create, mod) revisions.
    pub fn get(&self, key: &str) -> Option<(String, u64, u64)> {
        let r = self.call("/v3/kv/range", json!({"key": b64(key)}));
        let kv = r["kvs"].get(0)?;
        let value = B64
            .decode(kv["value"].as_str().unwrap_or_default())
            .expect("base64");
        Some((
            String::from_utf8(value).expect("utf-8"),
            int(&kv["create_revision"]),
            int(&kv["mod_revision"]),
        ))
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        let r = self.call("/v3/kv/range", json!({"key": b64("/"), "count_only": true}));
        int(&r["header"]["revision"])
    }

    /// `etcdctl user add root; etcdctl auth enable`: from now on every request needs
    /// `root`'s token (this helper's own reads and writes stop working).
    pub fn enable_auth(&self, password: &str) {
        // The `root` role may exist already.
        let _ = self.try_call("/v3/auth/role/add", &json!({"name": "root"}));
        self.call(
            "/v3/auth/user/add",
            json!({"name": "root", "password": password}),
        );
        self.call(
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        );
        self.call("/v3/auth/enable", json!({}));
    }

    /// Whether an unauthenticated read is refused.
    pub fn refuses_anonymous(&self) -> bool {
        self.try_call("/v3/kv/range", &json!({"key": b64("/")}))
            .is_none()
    }

    /// `etcdctl compact REV`.
    pub fn compact(&self, revision: u64) {
        self.call(
            "/v3/kv/compaction",
            json!({"revision": revision.to_string(), "physical": true}),
        );
    }
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

fn int(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_u64())
        .unwrap_or(0)
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
