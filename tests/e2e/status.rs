//! The status listener (issue 16): `/status` while the process runs, `/status/ready`
//! 503 while starting, 200 with the versions once serving, 503 while draining.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::support::gateway::portico_cmd;
use crate::support::http;
use crate::support::*;

fn status_opts(port: u16) -> GatewayOpts {
    GatewayOpts {
        extra_yaml: format!("status:\n  listen: \"127.0.0.1:{port}\"\n"),
        ..Default::default()
    }
}

fn get(port: u16, path: &str) -> Option<Response> {
    http::send(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &Request::get(path),
    )
    .ok()
}

#[test]
fn ready_reports_versions_and_follows_config_changes() {
    let port = free_port();
    let gw = Gateway::start(status_opts(port));
    let r = get(port, "/status").expect("status answers");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"status": "ok"}));

    let r = wait_for(WAIT, "ready", || {
        get(port, "/status/ready").filter(|r| r.status == 200)
    });
    let v = r.json();
    assert_eq!(v["status"], "ok", "{r:?}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{r:?}");
    let before = v["config_version"].as_u64().expect("config_version");

    let b = Backend::start("b");
    gw.put(
        "/routes/r",
        json!({"uri": "/r", "upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.sync();
    let after = get(port, "/status/ready").expect("ready").json()["config_version"]
        .as_u64()
        .expect("config_version");
    assert!(after > before, "{before} -> {after}");

    // No admin key needed, nothing else served.
    assert_eq!(
        get(port, "/apisix/admin/routes").expect("answers").status,
        404
    );
}

#[test]
fn ready_is_503_while_starting() {
    // `-u` without a running instance: the process waits for listening sockets that
    // never come (Pingora gives up after a few seconds), so it never finishes starting.
    let port = free_port();
    let gw = Gateway::prepare(status_opts(port));
    let mut child = portico_cmd()
        .arg("-c")
        .arg(&gw.config_path)
        .arg("-u")
        .current_dir(gw.dir_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn portico -u");
    let r = wait_for(WAIT, "the status listener", || get(port, "/status/ready"));
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["status"], "starting", "{r:?}");
    assert_eq!(get(port, "/status").map(|r| r.status), Some(200));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn ready_is_503_while_draining_and_status_stays_200() {
    let port = free_port();
    let mut gw = Gateway::start(status_opts(port));
    let slow = Backend::start_with("slow", 200, Duration::from_secs(3));
    gw.put(
        "/routes/slow",
        json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1}}}),
    );
    gw.sync();
    wait_for(WAIT, "ready", || {
        get(port, "/status/ready").filter(|r| r.status == 200)
    });

    let addr = gw.proxy_addr();
    let in_flight = std::thread::spawn(move || http::send(addr, &Request::get("/slow")));
    assert!(wait_until(WAIT, || slow.hits() == 1), "request in flight");
    let pid = gw.pid();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(st.success());
    let r = wait_for(WAIT, "ready 503 while draining", || {
        get(port, "/status/ready").filter(|r| r.status == 503)
    });
    assert_eq!(r.json()["status"], "draining", "{r:?}");
    assert_eq!(get(port, "/status").map(|r| r.status), Some(200));
    let done = in_flight
        .join()
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(done.status, 200);
    assert!(gw.wait_exit(WAIT).is_some(), "exits once drained");
}

#[test]
fn a_graceful_upgrade_hands_the_status_address_over() {
    // The yaml provider (the admin provider: upgrade.rs, under load).
    let port = free_port();
    let b = Backend::start("b");
    let mut old = Gateway::start(GatewayOpts {
        yaml_provider: Some(format!(
            "routes:\n  - id: r\n    uri: /r\n    upstream:\n      nodes:\n        \"{}\": 1\n#END\n",
            b.node()
        )),
        ..status_opts(port)
    });
    wait_for(WAIT, "old ready", || {
        get(port, "/status/ready").filter(|r| r.status == 200)
    });
    assert_eq!(old.proxy_get("/r").status, 200);

    // The new process waits for the listening sockets on data_dir/portico_upgrade.sock;
    // the status address is still the old one's, so it binds it later. The yaml
    // provider does not create data_dir: the new process of an upgrade does.
    assert!(!old.data_dir.exists(), "no data_dir before the upgrade");
    let log = std::fs::File::create(old.dir_path().join("new.log")).expect("log file");
    let mut new = portico_cmd()
        .arg("-c")
        .arg(&old.config_path)
        .arg("-u")
        .current_dir(old.dir_path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("spawn portico -u");
    let sock = old.data_dir.join("portico_upgrade.sock");
    assert!(
        wait_until(WAIT, || sock.exists()),
        "the new process waits for the sockets"
    );
    let st = std::process::Command::new("kill")
        .args(["-QUIT", &old.pid().to_string()])
        .status()
        .expect("kill -QUIT");
    assert!(st.success());
    let r = wait_for(WAIT, "old draining", || {
        get(port, "/status/ready").filter(|r| r.status == 503)
    });
    assert_eq!(r.json()["status"], "draining", "{r:?}");
    assert!(old.wait_exit(WAIT).is_some(), "the old process exits");
    let r = wait_for(WAIT, "new ready on the same address", || {
        get(port, "/status/ready").filter(|r| r.status == 200)
    });
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(old.proxy_get("/r").status, 200, "the new process proxies");
    let _ = new.kill();
    let _ = new.wait();
}
