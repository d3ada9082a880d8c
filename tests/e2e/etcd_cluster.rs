//! `config_provider: etcd` (issue 15) against a real etcd started by the test: gateways
//! sharing one etcd converge on admin writes to any of them, objects written directly
//! in APISIX's layout are served (a bad one is left out, the rest applies), an etcd
//! outage keeps traffic flowing and a restarted gateway serves its local copy, and
//! concurrent PATCHes through two gateways lose nothing.

use std::time::{Duration, Instant};

use crate::support::gateway::run_portico;
use crate::support::*;

fn gateway_on(etcd: &EtcdServer, extra: &str) -> Gateway {
    Gateway::start(GatewayOpts {
        extra_yaml: format!("{}{extra}", etcd.gateway_yaml()),
        ..GatewayOpts::default()
    })
}

fn status(gw: &Gateway, path: &str) -> u16 {
    gw.try_proxy(Request::get(path)).map_or(0, |r| r.status)
}

fn metric(gw: &Gateway, line: &str) -> bool {
    gw.metrics_text().lines().any(|l| l == line)
}

#[test]
fn etcd_gateways_converge_on_admin_writes_to_either() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gws = [gateway_on(&etcd, ""), gateway_on(&etcd, "")];
    // The upstream through one gateway, a route using it through the other: the second
    // write is validated against what the first wrote.
    gws[0].put("/upstreams/u", json!({"nodes": {b.node(): 1}}));
    gws[1].put("/routes/r0", json!({"uri": "/r0", "upstream_id": "u"}));
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let (writer, other) = (&gws[i % 2], &gws[(i + 1) % 2]);
        let uri = format!("/c{i}");
        let t = Instant::now();
        writer.put(
            &format!("/routes/c{i}"),
            json!({"uri": uri, "upstream_id": "u"}),
        );
        // The writer answers once it has applied the change itself.
        assert_eq!(status(writer, &uri), 200, "{uri} right after the write");
        assert!(
            wait_until(WAIT, || status(other, &uri) == 200),
            "{uri} never served by the other gateway"
        );
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a change took {slowest:?} to reach the other gateway"
    );
    // What etcd holds is the admin API's value; the indexes are etcd's revisions.
    let (value, create, modified) = etcd.get("/apisix/routes/c3").expect("in etcd");
    let value: Value = serde_json::from_str(&value).unwrap();
    assert_eq!(value["uri"], "/c3");
    assert_eq!(value["id"], "c3");
    for gw in &gws {
        let got = gw.get("/routes/c3");
        assert_eq!(got["createdIndex"], create);
        assert_eq!(got["modifiedIndex"], modified);
    }
    // POST ids come from etcd's revision: distinct across gateways.
    let a = gws[0].write_ok("POST", "/routes", json!({"uri": "/p", "upstream_id": "u"}));
    let c = gws[1].write_ok("POST", "/routes", json!({"uri": "/q", "upstream_id": "u"}));
    assert_ne!(a["key"], c["key"]);
    // A delete through one is gone from both; a referenced upstream is still refused.
    let (st, _, body) = gws[1].admin("DELETE", "/upstreams/u", None);
    assert_eq!(st, 400, "{body}");
    let (st, _, _) = gws[1].admin("DELETE", "/routes/c0", None);
    assert_eq!(st, 200);
    assert!(wait_until(WAIT, || status(&gws[0], "/c0") == 404));
    // Both end identical.
    assert!(wait_until(WAIT, || gws[0].get("/routes") == gws[1].get("/routes")));
    assert_eq!(gws[0].get("/routes")["total"], 12);
}

#[test]
fn etcd_objects_written_in_apisix_layout_are_served_and_a_bad_one_is_left_out() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    // What APISIX's init puts: directory placeholders.
    for dir in ["routes", "upstreams", "services", "ssls", "global_rules"] {
        etcd.put(&format!("/apisix/{dir}/"), "init_dir");
    }
    let gws = [gateway_on(&etcd, ""), gateway_on(&etcd, "")];
    // As APISIX's admin API (or `etcdctl put`) would write them.
    etcd.put(
        "/apisix/upstreams/1",
        &json!({"id": "1", "type": "roundrobin", "create_time": 1700000000, "update_time": 1700000000,
                "nodes": [{"host": "127.0.0.1", "port": b.port(), "weight": 1}]})
        .to_string(),
    );
    let rev = etcd.put(
        "/apisix/routes/1",
        &json!({"id": "1", "uri": "/apisix", "upstream_id": "1", "create_time": 1700000000, "update_time": 1700000000})
            .to_string(),
    );
    for gw in &gws {
        assert!(
            wait_until(WAIT, || status(gw, "/apisix") == 200),
            "route from etcd not served"
        );
        assert_eq!(gw.get("/routes/1")["modifiedIndex"], rev);
    }
    // A bad object is left out with a log line and a metric naming its key; the rest
    // (written after it) applies.
    etcd.put(
        "/apisix/routes/bad",
        r#"{"uri": "/bad", "upstream_id": "1", "no_such_field": 1}"#,
    );
    etcd.put("/apisix/routes/notjson", "{not json");
    etcd.put("/apisix/routes/2", r#"{"uri": "/two", "upstream_id": "1"}"#);
    let skipped = r#"portico_etcd_skipped_objects{key="/apisix/routes/bad"} 1"#;
    for gw in &gws {
        assert!(wait_until(WAIT, || status(gw, "/two") == 200));
        assert_eq!(status(gw, "/bad"), 404);
        assert!(wait_until(WAIT, || metric(gw, skipped)));
        assert!(metric(
            gw,
            r#"portico_etcd_skipped_objects{key="/apisix/routes/notjson"} 1"#
        ));
        let logs = gw.logs();
        assert!(
            logs.contains("etcd object not served as written")
                && logs.contains("/apisix/routes/bad"),
            "{logs}"
        );
    }
    // A route whose upstream is not there yet is left out until it arrives.
    etcd.put(
        "/apisix/routes/3",
        r#"{"uri": "/three", "upstream_id": "later"}"#,
    );
    etcd.put(
        "/apisix/routes/4",
        r#"{"uri": "/four", "upstream_id": "1"}"#,
    );
    assert!(wait_until(WAIT, || status(&gws[0], "/four") == 200));
    assert_eq!(status(&gws[0], "/three"), 404);
    etcd.put(
        "/apisix/upstreams/later",
        &json!({"nodes": {b.node(): 1}}).to_string(),
    );
    // Repaired objects come back and their series go.
    etcd.put(
        "/apisix/routes/bad",
        r#"{"uri": "/bad", "upstream_id": "1"}"#,
    );
    for gw in &gws {
        assert!(wait_until(WAIT, || status(gw, "/three") == 200));
        assert!(wait_until(WAIT, || status(gw, "/bad") == 200));
        assert!(wait_until(WAIT, || !gw
            .metrics_text()
            .contains("routes/bad\"")));
    }
    // A delete in etcd removes the route.
    etcd.delete("/apisix/routes/1");
    for gw in &gws {
        assert!(wait_until(WAIT, || status(gw, "/apisix") == 404));
    }
}

#[test]
fn etcd_outage_keeps_traffic_flowing_and_a_restarted_gateway_serves_its_local_copy() {
    let mut etcd = EtcdServer::start();
    let b = Backend::start("b");
    let status_port = free_port();
    let mut gws = [
        gateway_on(&etcd, ""),
        gateway_on(
            &etcd,
            &format!("status:\n  listen: \"127.0.0.1:{status_port}\"\n"),
        ),
    ];
    gws[0].put(
        "/routes/r",
        json!({"uri": "/r", "upstream": {"nodes": {b.node(): 1}}}),
    );
    assert!(wait_until(WAIT, || status(&gws[1], "/r") == 200));

    etcd.stop();
    for gw in &gws {
        let failed = (0..100).filter(|_| status(gw, "/r") != 200).count();
        assert_eq!(failed, 0, "requests failed while etcd was down");
    }
    let (st, _, body) = gws[0].admin(
        "PUT",
        "/routes/x",
        Some(json!({"uri": "/x", "upstream": {"nodes": {b.node(): 1}}})),
    );
    assert_eq!(st, 503, "{body}");
    let msg = body["error_msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("etcd is unreachable") && msg.contains("not made"),
        "{msg}"
    );

    // Restarted while etcd is down: the local copy is served, and said so.
    gws[1].restart();
    assert_eq!(status(&gws[1], "/r"), 200);
    assert!(metric(&gws[1], "portico_etcd_serving_local_copy 1"));
    assert!(metric(&gws[1], "portico_etcd_connected 0"));
    assert!(gws[1].logs().contains("serving the local copy"));
    let ready = |gw: &Gateway| {
        let _ = gw;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], status_port));
        http::send(addr, &Request::get("/status/ready")).map(|r| r.json())
    };
    let body = ready(&gws[1]).expect("status");
    assert_eq!(body["etcd"]["serving_local_copy"], true, "{body}");
    assert_eq!(body["etcd"]["connected"], false, "{body}");

    // etcd back: both converge without a restart, and admin writes work again.
    etcd.start_again();
    for gw in &gws {
        assert!(wait_until(WAIT, || metric(gw, "portico_etcd_connected 1")));
    }
    assert!(metric(&gws[1], "portico_etcd_serving_local_copy 0"));
    assert_eq!(ready(&gws[1]).expect("status")["etcd"]["connected"], true);
    gws[1].put(
        "/routes/x",
        json!({"uri": "/x", "upstream": {"nodes": {b.node(): 1}}}),
    );
    for gw in &gws {
        assert!(wait_until(WAIT, || status(gw, "/x") == 200));
        assert_eq!(status(gw, "/r"), 200);
    }
}

#[test]
fn etcd_concurrent_patches_through_two_gateways_lose_nothing() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gws = [gateway_on(&etcd, ""), gateway_on(&etcd, "")];
    gws[0].put(
        "/routes/r",
        json!({"uri": "/r", "labels": {"start": "1"}, "upstream": {"nodes": {b.node(): 1}}}),
    );
    assert!(wait_until(WAIT, || status(&gws[1], "/r") == 200));
    const PER_GATEWAY: usize = 15;
    std::thread::scope(|s| {
        for (g, gw) in gws.iter().enumerate() {
            s.spawn(move || {
                for i in 0..PER_GATEWAY {
                    gw.write_ok(
                        "PATCH",
                        "/routes/r",
                        json!({"labels": {format!("g{g}-{i}"): "x"}}),
                    );
                }
            });
        }
    });
    for gw in &gws {
        assert!(wait_until(WAIT, || {
            gw.get("/routes/r")["value"]["labels"]
                .as_object()
                .map_or(0, |l| l.len())
                == 1 + 2 * PER_GATEWAY
        }));
    }
}

#[test]
fn etcd_restarted_empty_is_followed_by_a_full_resync() {
    let mut etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gws = [gateway_on(&etcd, ""), gateway_on(&etcd, "")];
    for i in 0..5 {
        gws[i % 2].put(
            &format!("/routes/r{i}"),
            json!({"uri": format!("/r{i}"), "upstream": {"nodes": {b.node(): 1}}}),
        );
    }
    assert!(wait_until(WAIT, || status(&gws[1], "/r4") == 200));
    // A new, empty etcd (older revisions): everything is read again and replaces all.
    etcd.restart_empty();
    for gw in &gws {
        assert!(
            wait_until(WAIT, || status(gw, "/r0") == 404),
            "kept a route etcd no longer has"
        );
        assert!(wait_until(WAIT, || metric(gw, "portico_etcd_connected 1")));
    }
    gws[0].put(
        "/routes/n",
        json!({"uri": "/n", "upstream": {"nodes": {b.node(): 1}}}),
    );
    assert!(wait_until(WAIT, || status(&gws[1], "/n") == 200));
    assert_eq!(gws[1].get("/routes")["total"], 1);
}

#[test]
fn etcd_settings_are_checked_by_t() {
    let dir = TempDir::new("portico-etcd-t");
    let conf = dir.path().join("portico.yaml");
    std::fs::write(
        &conf,
        "config_provider: etcd\netcd:\n  endpoints: [\"tcp://x:1\"]\n  prefix: apisix/\n  timeout: 0\n  user: root\n",
    )
    .unwrap();
    let out = run_portico(&["-t", "-c", conf.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    for key in [
        "etcd.endpoints[0]",
        "etcd.prefix",
        "etcd.timeout",
        "etcd.password",
    ] {
        assert!(text.contains(key), "{key} not named: {text}");
    }
    std::fs::write(
        &conf,
        "config_provider: etcd\netcd:\n  tls: {verify: nope}\n",
    )
    .unwrap();
    let out = run_portico(&["-t", "-c", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcd.tls.verify"));
}

/// The issue's fleet test: three gateways, 1,002 changes made through all three admin
/// APIs at once; none is lost, all three end identical, and the time until another
/// gateway has a change after its writer answered is measured (p50/p99 printed).
#[test]
fn etcd_three_gateways_converge_on_a_thousand_changes() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gws = [
        gateway_on(&etcd, ""),
        gateway_on(&etcd, ""),
        gateway_on(&etcd, ""),
    ];
    gws[0].put("/upstreams/u", json!({"nodes": {b.node(): 1}}));
    // Every writer validates its routes against its own copy: wait until each has `u`
    // (a write racing the watch would be a correct 400, not what this test measures).
    for gw in &gws {
        assert!(wait_until(WAIT, || gw.admin("GET", "/upstreams/u", None).0 == 200));
    }
    const ROUTES_PER_GATEWAY: usize = 167;
    let mut lags: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|g| {
                let (writer, other) = (&gws[g], &gws[(g + 1) % 3]);
                s.spawn(move || {
                    let mut lags = Vec::new();
                    for i in 0..ROUTES_PER_GATEWAY {
                        let id = format!("g{g}-{i}");
                        writer.put(
                            &format!("/routes/{id}"),
                            json!({"uri": format!("/{id}"), "upstream_id": "u"}),
                        );
                        let patch = json!({"desc": format!("patched by {g}")});
                        writer.write_ok("PATCH", &format!("/routes/{id}"), patch);
                        // The writer has applied it; until the next gateway has it too.
                        let t = Instant::now();
                        let seen = wait_until(WAIT, || {
                            let (st, _, body) = other.admin("GET", &format!("/routes/{id}"), None);
                            st == 200 && body["value"]["desc"].is_string()
                        });
                        assert!(seen, "{id} never reached gateway {}", (g + 1) % 3);
                        lags.push(t.elapsed());
                    }
                    lags
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer thread"))
            .collect()
    });
    lags.sort();
    let p = |q: f64| lags[((lags.len() as f64 * q) as usize).min(lags.len() - 1)];
    eprintln!(
        "etcd fleet: {} changes through 3 gateways; from the writer's reply to another gateway having it: p50 {:?}, p99 {:?}, max {:?}",
        2 * lags.len(),
        p(0.5),
        p(0.99),
        lags[lags.len() - 1]
    );
    let expected = 3 * ROUTES_PER_GATEWAY;
    for gw in &gws {
        assert!(wait_until(WAIT, || gw.get("/routes")["total"] == expected));
    }
    let first = gws[0].get("/routes");
    for gw in &gws[1..] {
        assert_eq!(gw.get("/routes"), first, "gateways differ");
    }
    for item in first["list"].as_array().unwrap() {
        assert!(
            item["value"]["desc"].is_string(),
            "a patch was lost: {item}"
        );
    }
    assert!(p(0.99) < Duration::from_secs(1), "p99 {:?}", p(0.99));
}

/// `data_encryption.keyring` with etcd: private keys are sealed in etcd as APISIX seals
/// them (so APISIX reads them, and Portico reads APISIX's), and opened by every gateway.
#[test]
fn etcd_ssl_private_keys_are_sealed_in_etcd_and_served_by_every_gateway() {
    use crate::support::tls::{issue, Algo, ClientOpts, TlsConn};
    let etcd = EtcdServer::start();
    let keyring = "data_encryption:\n  keyring: [\"0123456789abcdef\"]\n";
    let port = free_port();
    let writer = gateway_on(&etcd, keyring);
    let server = Gateway::start(GatewayOpts {
        extra_yaml: format!("{}{keyring}", etcd.gateway_yaml()),
        proxy_extra: format!("  ssl:\n    listen: [\"127.0.0.1:{port}\"]\n"),
        ..GatewayOpts::default()
    });
    let c = issue(&["sealed.test"], Algo::Ecdsa, false);
    writer.put(
        "/ssls/s",
        json!({"cert": c.cert_pem, "key": c.key_pem, "snis": ["sealed.test"]}),
    );
    let (value, _, _) = etcd.get("/apisix/ssls/s").expect("in etcd");
    let value: Value = serde_json::from_str(&value).unwrap();
    let key = value["key"].as_str().unwrap();
    assert!(!key.contains("PRIVATE KEY"), "key in clear in etcd: {key}");
    assert!(value["cert"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let served = wait_for(WAIT, "the certificate from etcd", || {
        TlsConn::connect(addr, &ClientOpts::sni("sealed.test"))
            .ok()
            .map(|conn| conn.peer_der)
    });
    assert_eq!(served, c.der);
    // The local copy keeps it sealed too.
    let copy = std::fs::read(server.data_dir.join("etcd/store.redb")).unwrap();
    assert!(!String::from_utf8_lossy(&copy).contains("PRIVATE KEY"));
}

/// `PUT /configs` through one gateway writes the difference to etcd; every gateway
/// ends with exactly that configuration.
#[test]
fn etcd_bulk_replace_through_one_gateway_reaches_all() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gws = [gateway_on(&etcd, ""), gateway_on(&etcd, "")];
    gws[0].put(
        "/routes/old",
        json!({"uri": "/old", "upstream": {"nodes": {b.node(): 1}}}),
    );
    // More objects than one etcd transaction takes.
    let routes: Vec<Value> = (0..150)
        .map(|i| json!({"id": format!("r{i}"), "uri": format!("/r{i}"), "upstream_id": "u"}))
        .collect();
    let body = json!({"upstreams": [{"id": "u", "nodes": {b.node(): 1}}], "routes": routes});
    let (st, _, resp) = gws[1].admin("PUT", "/configs", Some(body));
    assert_eq!(st, 200, "{resp}");
    assert_eq!(
        status(&gws[1], "/r149"),
        200,
        "applied by the writer before it answered"
    );
    for gw in &gws {
        assert!(wait_until(WAIT, || gw.get("/routes")["total"] == 150));
        assert_eq!(status(gw, "/old"), 404);
        assert_eq!(status(gw, "/r0"), 200);
    }
    assert!(etcd.get("/apisix/routes/old").is_none());
    // Invalid as a whole: nothing reaches etcd.
    let revision = etcd.revision();
    let bad = json!({"routes": [{"id": "x", "uri": "/x", "upstream_id": "missing"}]});
    let (st, _, resp) = gws[0].admin("PUT", "/configs", Some(bad));
    assert_eq!(st, 400, "{resp}");
    assert_eq!(etcd.revision(), revision);
}

/// A plugin this gateway does not have (APISIX's, another version's) is never skipped:
/// what uses it answers 503, the rest is served, and fixing it in etcd brings it back.
#[test]
fn etcd_objects_with_a_missing_plugin_fail_closed_with_503() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gw = gateway_on(&etcd, "");
    let up = json!({"nodes": {b.node(): 1}}).to_string();
    etcd.put("/apisix/upstreams/u", &up);
    etcd.put(
        "/apisix/routes/open",
        r#"{"uri": "/open", "upstream_id": "u"}"#,
    );
    etcd.put(
        "/apisix/routes/guarded",
        r#"{"uri": "/guarded", "upstream_id": "u", "plugins": {"openid-connect": {"client_id": "x"}}}"#,
    );
    assert!(wait_until(WAIT, || status(&gw, "/guarded") == 503));
    let r = gw.proxy_get("/guarded");
    assert!(r.text().contains("openid-connect"), "{}", r.text());
    assert_eq!(b.hits(), 0, "never proxied without the plugin");
    assert_eq!(status(&gw, "/open"), 200);
    // Admin reads show the object as etcd holds it.
    let got = gw.get("/routes/guarded");
    assert!(
        got["value"]["plugins"]["openid-connect"].is_object(),
        "{got}"
    );
    // The log line and the gauge follow the swap (after the local copy is written), so
    // the route can answer 503 before either is there.
    assert!(wait_until(WAIT, || gw
        .logs()
        .contains("answers 503: plugin `openid-connect`")));
    assert!(wait_until(WAIT, || metric(
        &gw,
        r#"portico_etcd_skipped_objects{key="/apisix/routes/guarded"} 1"#
    )));
    // A global rule with a missing plugin closes every route rather than opening them.
    etcd.put(
        "/apisix/global_rules/1",
        r#"{"id": "1", "plugins": {"authz-keycloak": {}}}"#,
    );
    assert!(wait_until(WAIT, || status(&gw, "/open") == 503));
    etcd.delete("/apisix/global_rules/1");
    assert!(wait_until(WAIT, || status(&gw, "/open") == 200));
    // Fixed in etcd: served as written, the series is gone.
    etcd.put(
        "/apisix/routes/guarded",
        r#"{"uri": "/guarded", "upstream_id": "u"}"#,
    );
    assert!(wait_until(WAIT, || status(&gw, "/guarded") == 200));
    assert!(wait_until(WAIT, || !gw
        .metrics_text()
        .contains("routes/guarded")));
}

/// A watch that stays silent for `etcd.timeout` is re-opened from the same revision:
/// no change is lost, and it is not a full re-read.
#[test]
fn etcd_silent_watch_is_reopened_from_the_same_revision() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gw = Gateway::start(GatewayOpts {
        extra_yaml: etcd.gateway_yaml_with_timeout(1),
        env: vec![(
            "PORTICO_LOG".into(),
            "info,portico::providers::etcd=debug".into(),
        )],
        ..GatewayOpts::default()
    });
    let up = json!({"nodes": {b.node(): 1}}).to_string();
    etcd.put("/apisix/upstreams/u", &up);
    for i in 0..3 {
        // Longer than etcd.timeout with nothing to watch: the idleness is the scenario.
        std::thread::sleep(Duration::from_millis(1500));
        let path = format!("/quiet{i}");
        etcd.put(
            &format!("/apisix/routes/q{i}"),
            &json!({"uri": path, "upstream_id": "u"}).to_string(),
        );
        assert!(
            wait_until(WAIT, || status(&gw, &path) == 200),
            "{path} lost"
        );
    }
    assert!(
        metric(&gw, "portico_etcd_full_reads_total 1"),
        "a timeout led to a full read:\n{}",
        gw.metrics_text()
    );
    assert!(metric(&gw, "portico_etcd_connected 1"));
    assert!(wait_until(WAIT, || gw
        .logs()
        .contains("re-opened from the same revision")));
}

/// After a compaction past the revision the gateway watches from (writes outside the
/// prefix move etcd's revision on), the re-opened watch is cancelled and the gateway
/// reads everything again instead of missing changes.
#[test]
fn etcd_compaction_past_the_watched_revision_leads_to_a_full_read() {
    let etcd = EtcdServer::start();
    let b = Backend::start("b");
    let gw = Gateway::start(GatewayOpts {
        extra_yaml: etcd.gateway_yaml_with_timeout(1),
        ..GatewayOpts::default()
    });
    let up = json!({"nodes": {b.node(): 1}}).to_string();
    etcd.put("/apisix/upstreams/u", &up);
    etcd.put("/apisix/routes/1", r#"{"uri": "/one", "upstream_id": "u"}"#);
    assert!(wait_until(WAIT, || status(&gw, "/one") == 200));
    for i in 0..5 {
        etcd.put(&format!("/elsewhere/{i}"), "x");
    }
    etcd.compact(etcd.revision());
    // The next re-open of the silent watch starts below the compacted revision.
    assert!(
        wait_until(WAIT, || gw.logs().contains("compacted at revision")),
        "no compaction seen"
    );
    assert!(wait_until(WAIT, || metric(
        &gw,
        "portico_etcd_full_reads_total 2"
    )));
    etcd.put("/apisix/routes/2", r#"{"uri": "/two", "upstream_id": "u"}"#);
    assert!(wait_until(WAIT, || status(&gw, "/two") == 200));
    assert_eq!(status(&gw, "/one"), 200);
}

/// etcd with authentication: `etcd.user`/`etcd.password` get a token that every request
/// and the watch carry.
#[test]
fn etcd_with_authentication() {
    let etcd = EtcdServer::start();
    etcd.enable_auth("s3cret-pass");
    assert!(etcd.refuses_anonymous());
    let b = Backend::start("b");
    let auth = "  user: root\n  password: s3cret-pass\n";
    let gws = [gateway_on(&etcd, auth), gateway_on(&etcd, auth)];
    for gw in &gws {
        assert!(metric(gw, "portico_etcd_connected 1"), "{}", gw.logs());
    }
    gws[0].put(
        "/routes/a",
        json!({"uri": "/a", "upstream": {"nodes": {b.node(): 1}}}),
    );
    assert!(wait_until(WAIT, || status(&gws[1], "/a") == 200));
    // Without the credentials, etcd says no and the admin write says so.
    let anonymous = gateway_on(&etcd, "");
    assert!(metric(&anonymous, "portico_etcd_connected 0"));
    let (st, _, body) = anonymous.admin(
        "PUT",
        "/routes/b",
        Some(json!({"uri": "/b", "upstream": {"nodes": {b.node(): 1}}})),
    );
    assert_eq!(st, 503, "{body}");
    let msg = body["error_msg"].as_str().unwrap_or_default();
    assert!(msg.contains("etcd refused the request"), "{msg}");
    assert!(anonymous.get("/routes")["total"] == 0, "it never read etcd");
}
