//! The Grafana dashboard (`deploy/grafana/portico.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) against a real Prometheus (Debian's `prometheus`,
//! installed by `scripts/setup.sh`) scraping a real gateway under traffic: every panel's
//! query returns data, and `promtool check rules` accepts the rules.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::lua_common::*;
use crate::support::*;

fn deploy_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join(rel)
}

/// Every `expr` of the dashboard's panels.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy_file("grafana/portico.json")).expect("dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push((
                panel["title"].as_str().unwrap_or("?").to_string(),
                target["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Prometheus {
        let dir = TempDir::new("portico-prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n  - job_name: portico\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (run ./scripts/setup.sh to install it)");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        assert!(
            wait_until(WAIT, || http::send(addr, &Request::get("/-/ready"))
                .map(|r| r.status == 200)
                .unwrap_or(false)),
            "prometheus did not become ready"
        );
        p
    }

    /// The instant query's result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(expr));
        let Ok(resp) = http::send(self.addr, &Request::get(&path)) else {
            return Vec::new();
        };
        let body = resp.json();
        assert_eq!(body["status"], "success", "{expr}: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use crate::support::http;

#[test]
fn every_dashboard_panel_has_data_from_a_real_prometheus() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/upstreams/u",
        json!({"type": "roundrobin", "nodes": {b.node(): 1},
               "checks": {"active": {"type": "http", "http_path": "/hc", "timeout": 1,
                   "healthy": {"interval": 1}, "unhealthy": {"interval": 1}}}}),
    );
    gw.put("/routes/ok", json!({"uri": "/ok", "upstream_id": "u"}));
    gw.put(
        "/routes/limited",
        json!({"uri": "/limited", "upstream_id": "u",
               "plugins": {"limit-count": {"count": 1, "time_window": 3600}}}),
    );
    let lua = pre("access", "if ngx.var.arg_fail then error('boom') end");
    gw.put(
        "/routes/lua",
        json!({"uri": "/lua", "upstream_id": "u", "plugins": lua}),
    );
    gw.sync();

    let prom = Prometheus::start(gw.metrics_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        let addr = gw.proxy_addr();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for path in ["/ok", "/limited", "/lua", "/lua?fail=1", "/nope"] {
                    let _ = http::send(addr, &Request::get(path));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let queries = dashboard_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    let mut empty = Vec::new();
    for (title, expr) in &queries {
        if !wait_until(Duration::from_secs(60), || !prom.query(expr).is_empty()) {
            empty.push(format!("{title}: {expr}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );

    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy_file("prometheus/alerts.yml"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
