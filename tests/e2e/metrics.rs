//! Prometheus metrics on the metrics listener: scraped, parsed, checked.

use std::process::{Command, Stdio};

use crate::support::prom::{self, Sample};
use crate::support::*;

const N: usize = 7;

fn scrape(gw: &Gateway) -> (String, Vec<Sample>) {
    let text = gw.metrics_text();
    let samples =
        prom::parse(&text).unwrap_or_else(|e| panic!("metrics do not parse: {e}\n{text}"));
    (text, samples)
}

#[test]
fn request_metrics_are_exported_with_bounded_labels() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put("/upstreams/u1", json!({"nodes": {b.node(): 1}}));
    gw.put("/routes/r1", json!({"uri": "/m/*", "upstream_id": "u1"}));
    gw.sync();

    let marker = random_string(12);
    for i in 0..N {
        let r = gw.proxy_req(
            Request::new("POST", &format!("/m/{marker}/{i}?q={marker}")).body(vec![b'x'; 100]),
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = gw.proxy_get(&format!("/unrouted-{marker}"));
    assert_eq!(r.status, 404);

    // metrics may be recorded after the response went out: wait for them
    let route_200 = [("route", "r1"), ("code", "200")];
    assert!(
        wait_until(WAIT, || {
            let (_, s) = scrape(&gw);
            prom::sum(&s, "portico_http_requests_total", &route_200) >= N as f64
        }),
        "portico_http_requests_total{{route=\"r1\",code=\"200\"}} >= {N}\n{}",
        gw.metrics_text()
    );
    let (text, s) = scrape(&gw);

    let reqs = prom::select(&s, "portico_http_requests_total", &route_200);
    assert!(
        reqs.iter().all(|x| x.label("upstream") == Some("u1")),
        "upstream label is the upstream id: {reqs:?}"
    );

    // histogram {route, type}: request and upstream
    for ty in ["request", "upstream"] {
        let buckets = prom::select(
            &s,
            "portico_http_request_duration_seconds_bucket",
            &[("route", "r1"), ("type", ty)],
        );
        assert!(!buckets.is_empty(), "duration buckets for r1/{ty}\n{text}");
        let inf = buckets
            .iter()
            .find(|x| x.label("le") == Some("+Inf"))
            .unwrap_or_else(|| panic!("+Inf bucket for r1/{ty}"));
        assert!(
            inf.value >= N as f64,
            "+Inf bucket counts every request: {inf:?}"
        );
        let count = prom::sum(
            &s,
            "portico_http_request_duration_seconds_count",
            &[("route", "r1"), ("type", ty)],
        );
        assert!(count >= N as f64, "_count for r1/{ty}: {count}");
        assert!(
            !prom::select(
                &s,
                "portico_http_request_duration_seconds_sum",
                &[("route", "r1"), ("type", ty)]
            )
            .is_empty(),
            "_sum for r1/{ty}"
        );
    }

    // bandwidth: at least the bodies we sent / received
    let ingress = prom::sum(
        &s,
        "portico_bandwidth_bytes_total",
        &[("route", "r1"), ("type", "ingress")],
    );
    let egress = prom::sum(
        &s,
        "portico_bandwidth_bytes_total",
        &[("route", "r1"), ("type", "egress")],
    );
    assert!(
        ingress >= (N * 100) as f64,
        "ingress bytes {ingress}\n{text}"
    );
    assert!(egress > (N * 50) as f64, "egress bytes {egress}\n{text}");

    // config
    let version = prom::select(&s, "portico_config_version", &[]);
    assert!(!version.is_empty(), "portico_config_version\n{text}");
    assert!(version[0].value >= 1.0, "{version:?}");
    let applies = prom::select(&s, "portico_config_applies_total", &[]);
    assert!(!applies.is_empty(), "portico_config_applies_total\n{text}");
    assert!(
        applies
            .iter()
            .all(|x| x.labels.contains_key("source") && x.labels.contains_key("result")),
        "applies_total has source and result labels: {applies:?}"
    );
    assert!(
        applies.iter().map(|x| x.value).sum::<f64>() >= 3.0,
        "{applies:?}"
    );

    // process metrics
    assert!(
        s.iter().any(|x| x.name.starts_with("process_")),
        "process metrics exported\n{text}"
    );

    // bounded labels: no raw path, query or unmatched uri anywhere
    assert!(
        !text.contains(&marker),
        "a raw path leaked into the metrics:\n{text}"
    );
    for x in &s {
        for (k, v) in &x.labels {
            assert!(!v.starts_with("/m/"), "label {k}={v:?} is a raw path");
        }
    }

    // the config version moves with applies
    let v0 = version[0].value;
    gw.put("/routes/r2", json!({"uri": "/other", "upstream_id": "u1"}));
    assert!(
        wait_until(WAIT, || {
            let (_, s) = scrape(&gw);
            prom::select(&s, "portico_config_version", &[])
                .first()
                .is_some_and(|x| x.value > v0)
        }),
        "portico_config_version grows after an admin write"
    );
}

#[test]
fn promtool_accepts_the_exposition() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/routes/r1",
        json!({"uri": "/p", "upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.sync();
    for _ in 0..3 {
        assert_eq!(gw.proxy_get("/p").status, 200);
    }
    gw.proxy_get("/nope");
    assert!(wait_until(WAIT, || {
        let (_, s) = scrape(&gw);
        prom::sum(&s, "portico_http_requests_total", &[("route", "r1")]) >= 3.0
    }));
    let (text, _) = scrape(&gw);
    promtool_check(&text);
}

/// `promtool check metrics` on `text` (skipped with a note when promtool is missing;
/// `scripts/setup.sh` installs it).
fn promtool_check(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "NOTE: promtool not on PATH; skipping `promtool check metrics` (parsed only)"
            );
            return;
        }
        Err(e) => panic!("spawn promtool: {e}"),
    };
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apisix_naming_exposes_apisix_families_that_promtool_accepts() {
    let gw = Gateway::start(GatewayOpts {
        metrics_extra: "  naming: apisix\n".into(),
        ..GatewayOpts::default()
    });
    let b = Backend::start("b");
    gw.put(
        "/routes/r1",
        json!({"uri": "/p/*", "upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.sync();
    for _ in 0..3 {
        assert_eq!(gw.proxy_get("/p/x").status, 200);
    }
    // the log phase records after the response went out: wait for all three
    assert!(
        wait_until(WAIT, || {
            let (_, s) = scrape(&gw);
            prom::sum(&s, "apisix_http_status", &[("route", "r1")]) >= 3.0
                && prom::sum(
                    &s,
                    "apisix_http_latency_count",
                    &[("type", "request"), ("route", "r1")],
                ) >= 3.0
        }),
        "three requests recorded\n{}",
        gw.metrics_text()
    );
    let (text, s) = scrape(&gw);
    let ok = [
        ("code", "200"),
        ("route", "r1"),
        ("matched_uri", "/p/*"),
        ("node", "127.0.0.1"),
    ];
    assert!(prom::sum(&s, "apisix_http_status", &ok) >= 3.0, "{text}");
    assert!(
        prom::sum(
            &s,
            "apisix_http_latency_count",
            &[("type", "request"), ("route", "r1")]
        ) >= 3.0,
        "{text}"
    );
    assert!(
        prom::sum(
            &s,
            "apisix_bandwidth",
            &[("type", "egress"), ("route", "r1")]
        ) > 0.0
    );
    assert!(
        prom::sum(
            &s,
            "apisix_nginx_http_current_connections",
            &[("state", "accepted")]
        ) >= 3.0
    );
    assert_eq!(prom::select(&s, "apisix_node_info", &[]).len(), 1);
    assert!(
        prom::select(&s, "portico_http_requests_total", &[]).is_empty(),
        "replaced"
    );
    assert!(
        !prom::select(&s, "portico_config_version", &[]).is_empty(),
        "kept"
    );
    promtool_check(&text);
}
