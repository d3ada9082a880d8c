//! Durable store: a restart restores every resource; `kill -9` during a
//! stream of writes loses no acknowledged write and leaves a loadable store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::*;

#[test]
fn sigterm_and_restart_restore_everything() {
    let mut gw = Gateway::start_default();
    let a = Backend::start("a");
    let b = Backend::start("b");
    gw.put("/upstreams/u1", json!({"nodes": {a.node(): 1}}));
    gw.put("/services/s1", json!({"upstream_id": "u1", "name": "svc"}));
    gw.put(
        "/routes/r1",
        json!({"uri": "/via-service", "service_id": "s1"}),
    );
    gw.put(
        "/routes/r2",
        json!({"uri": "/inline", "upstream": {"nodes": {b.node(): 1}}, "labels": {"k": "v"}}),
    );
    gw.put("/global_rules/g1", json!({"plugins": {}}));
    gw.write_ok("PATCH", "/routes/r2", json!({"desc": "patched"}));
    gw.put("/routes/gone", json!({"uri": "/gone", "upstream_id": "u1"}));
    let (status, _, _) = gw.admin("DELETE", "/routes/gone", None);
    assert_eq!(status, 200);

    let paths = [
        "/upstreams/u1",
        "/services/s1",
        "/routes/r1",
        "/routes/r2",
        "/global_rules/g1",
    ];
    let before: Vec<Value> = paths.iter().map(|p| gw.get(p)["value"].clone()).collect();

    let status = gw.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    gw.restart();

    for (p, v) in paths.iter().zip(&before) {
        assert_eq!(&gw.get(p)["value"], v, "{p} restored as it was");
    }
    let (status, _, _) = gw.admin("GET", "/routes/gone", None);
    assert_eq!(status, 404, "a delete is durable too");
    assert_eq!(gw.proxy_get("/via-service").backend().as_deref(), Some("a"));
    assert_eq!(gw.proxy_get("/inline").backend().as_deref(), Some("b"));

    // and the restored store keeps taking writes
    gw.put("/routes/r3", json!({"uri": "/after", "upstream_id": "u1"}));
    gw.sync();
    assert_eq!(gw.proxy_get("/after").status, 200);
}

#[test]
fn kill9_during_writes_loses_no_acknowledged_write() {
    let mut gw = Gateway::start_default();
    let a = Backend::start("a");
    gw.put(
        "/upstreams/u1",
        json!({"nodes": {a.node(): 1}, "desc": "0"}),
    );

    // A writer thread: new routes, and overwrites of one upstream. It records
    // what was acknowledged (2xx) and stops at the first failure.
    let acked_routes = Arc::new(Mutex::new(Vec::<u64>::new()));
    let acked_upstream = Arc::new(Mutex::new(0u64));
    let stop = Arc::new(AtomicBool::new(false));
    let addr = gw.admin_addr();
    let key = gw.admin_key.clone();
    let writer = {
        let (acked_routes, acked_upstream, stop) =
            (acked_routes.clone(), acked_upstream.clone(), stop.clone());
        let node = a.node();
        std::thread::spawn(move || {
            let mut i: u64 = 1;
            while !stop.load(Ordering::SeqCst) {
                let (path, body) = if i % 2 == 0 {
                    (
                        "/apisix/admin/upstreams/u1".to_owned(),
                        json!({"nodes": {&node: 1}, "desc": i.to_string()}),
                    )
                } else {
                    (
                        format!("/apisix/admin/routes/w{i}"),
                        json!({"uri": format!("/w/{i}"), "upstream_id": "u1", "desc": i.to_string()}),
                    )
                };
                let req = Request::new("PUT", &path)
                    .header("X-API-KEY", &key)
                    .json(&body);
                match http::send(addr, &req) {
                    Ok(r) if (200..300).contains(&r.status) => {
                        if i % 2 == 0 {
                            *acked_upstream.lock().unwrap() = i;
                        } else {
                            acked_routes.lock().unwrap().push(i);
                        }
                    }
                    _ => break,
                }
                i += 1;
            }
        })
    };

    assert!(
        wait_until(WAIT, || acked_routes.lock().unwrap().len() >= 25),
        "writer made progress"
    );
    gw.kill9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let routes = acked_routes.lock().unwrap().clone();
    let upstream_version = *acked_upstream.lock().unwrap();
    eprintln!(
        "acknowledged before kill -9: {} route creates, upstream version {upstream_version}",
        routes.len()
    );

    gw.restart(); // the store must load

    let (status, _, list) = gw.admin("GET", "/routes", None);
    assert_eq!(status, 200, "{list}");
    let stored: BTreeMap<String, Value> = list["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["value"]["id"].as_str().unwrap().to_owned(),
                e["value"].clone(),
            )
        })
        .collect();
    for i in &routes {
        let v = stored
            .get(&format!("w{i}"))
            .unwrap_or_else(|| panic!("acknowledged route w{i} lost by kill -9"));
        assert_eq!(v["uri"], format!("/w/{i}"), "w{i} content");
        assert_eq!(v["desc"], i.to_string(), "w{i} content");
    }
    let up = gw.get("/upstreams/u1");
    let desc: u64 = up["value"]["desc"].as_str().unwrap().parse().unwrap();
    assert!(
        desc >= upstream_version,
        "upstream holds the last acknowledged version {upstream_version} or a later in-flight one, got {desc}"
    );
    let last = routes.last().copied().unwrap();
    gw.sync();
    assert_eq!(gw.proxy_get(&format!("/w/{last}")).status, 200);
}

#[test]
fn data_dir_is_created_0700_and_the_store_is_0600() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A data_dir Portico creates (two levels, neither exists yet).
    let parent = TempDir::new("portico-e2e-perm");
    let data_dir = parent.path().join("fresh/data");
    let gw = Gateway::start(GatewayOpts {
        data_dir: Some(data_dir.clone()),
        admin_keys: false,
        ..Default::default()
    });
    assert_eq!(mode(&data_dir), 0o700, "new data_dir");
    assert_eq!(mode(&parent.path().join("fresh")), 0o700, "its new parent");
    assert_eq!(mode(&data_dir.join("store.redb")), 0o600, "store file");
    assert!(
        wait_until(WAIT, || data_dir.join("admin.key").exists()),
        "admin.key written"
    );
    assert_eq!(mode(&data_dir.join("admin.key")), 0o600, "admin.key");
    drop(gw);

    // An existing directory is the operator's: left as it is.
    let existing = parent.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o750)).unwrap();
    let _gw = Gateway::start(GatewayOpts {
        data_dir: Some(existing.clone()),
        ..Default::default()
    });
    assert_eq!(mode(&existing), 0o750, "existing data_dir untouched");
    assert_eq!(mode(&existing.join("store.redb")), 0o600, "store file");
}
