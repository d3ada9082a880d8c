//! TLS listener (issue 12): certificates from `/apisix/admin/ssls`, chosen per handshake
//! by SNI from the running snapshot, with real TLS clients (rustls, and curl for h2).

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lua_common::pre;
use crate::support::tls::{issue, tls_get, Algo, Ca, ClientOpts, Issued, TlsConn};
use crate::support::*;

/// A gateway with one TLS listener; `fallback`: `proxy.ssl.fallback_sni`.
fn start_tls(fallback: Option<&str>) -> (Gateway, SocketAddr) {
    let port = free_port();
    let mut extra = format!("  ssl:\n    listen: [\"127.0.0.1:{port}\"]\n");
    if let Some(f) = fallback {
        extra += &format!("    fallback_sni: \"{f}\"\n");
    }
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: extra,
        ..Default::default()
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        wait_until(WAIT, || TcpStream::connect(addr).is_ok()),
        "TLS listener {addr} never accepted\n{}",
        gw.logs()
    );
    (gw, addr)
}

fn ssl_body(c: &Issued, snis: &[&str]) -> Value {
    json!({"cert": c.cert_pem, "key": c.key_pem, "snis": snis})
}

/// A route answering every path from `backend`.
fn route_all(gw: &Gateway, backend: &Backend) {
    gw.put(
        "/routes/all",
        json!({"uri": "/*", "upstream": {"type": "roundrobin", "nodes": {backend.node(): 1}}}),
    );
}

/// The certificate served for `opts`, or the handshake error.
fn served(addr: SocketAddr, opts: &ClientOpts) -> Result<Vec<u8>, String> {
    TlsConn::connect(addr, opts).map(|c| c.peer_der)
}

fn no_sni() -> ClientOpts {
    ClientOpts {
        sni: None,
        ..ClientOpts::sni("unused")
    }
}

#[test]
fn ssl_resource_is_validated_and_keys_are_never_returned() {
    let (gw, _) = start_tls(None);
    let good = issue(&["v.test"], Algo::Ecdsa, false);
    let other = issue(&["v.test"], Algo::Ecdsa, false);

    let created = gw.put("/ssls/1", ssl_body(&good, &["v.test"]));
    assert!(created["value"].get("key").is_none(), "{created}");
    assert_eq!(created["value"]["cert"], json!(good.cert_pem));
    let got = gw.get("/ssls/1");
    assert!(got["value"].get("key").is_none(), "{got}");
    let listed = gw.get("/ssls");
    assert!(listed["list"][0]["value"].get("key").is_none(), "{listed}");
    let configs = gw.get("/configs");
    assert!(configs["ssls"][0].get("key").is_none(), "{configs}");

    let cases = [
        (
            json!({"cert": "not a pem", "key": good.key_pem, "sni": "v.test"}),
            "cert",
        ),
        (
            json!({"cert": good.cert_pem, "key": "junk", "sni": "v.test"}),
            "key",
        ),
        (
            json!({"cert": good.cert_pem, "key": other.key_pem, "sni": "v.test"}),
            "key: does not match",
        ),
        (
            json!({"cert": good.cert_pem, "key": good.key_pem, "sni": "v.test",
                   "certs": [other.cert_pem], "keys": []}),
            "keys",
        ),
        (
            json!({"cert": good.cert_pem, "key": good.key_pem, "sni": "v.test",
                   "certs": [other.cert_pem], "keys": [good.key_pem]}),
            "keys[0]: does not match",
        ),
        (json!({"cert": good.cert_pem, "key": good.key_pem}), "sni"),
        (
            json!({"cert": good.cert_pem, "key": good.key_pem, "sni": "v.test", "bogus": 1}),
            "bogus",
        ),
    ];
    for (body, field) in cases {
        let (status, _, resp) = gw.admin("PUT", "/ssls/2", Some(body.clone()));
        assert_eq!(status, 400, "{body} -> {resp}");
        let msg = resp["error_msg"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{field} not named in {msg}");
    }
    assert_eq!(gw.admin("GET", "/ssls/2", None).0, 404);

    // An expired certificate is accepted, with a warning in the reply and the log.
    let expired = issue(&["old.test"], Algo::Ecdsa, true);
    let (status, _, resp) = gw.admin("PUT", "/ssls/old", Some(ssl_body(&expired, &["old.test"])));
    assert_eq!(status, 201, "{resp:?}");
    assert!(
        resp["warning"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{resp:?}"
    );
    assert!(
        wait_until(WAIT, || gw.logs().contains("certificate expired")),
        "no log line about the expired certificate"
    );

    // Seconds until expiry, per SSL.
    let text = gw.metrics_text();
    let value = |id: &str| -> f64 {
        let prefix = format!("portico_ssl_expiry_seconds{{ssl=\"{id}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no expiry series for {id}:\n{text}"))
            .trim()
            .parse()
            .expect("a number")
    };
    assert!(value("1") > 86_400.0, "{text}");
    assert!(value("old") < 0.0, "{text}");
    gw.admin("DELETE", "/ssls/old", None);
    assert!(!gw.metrics_text().contains("ssl=\"old\""));
}

#[test]
fn sni_selects_exact_then_wildcard_then_star_with_fallback() {
    let (gw, addr) = start_tls(Some("exact.test"));
    let backend = Backend::start("b");
    route_all(&gw, &backend);
    let exact = issue(&["exact.test"], Algo::Ecdsa, false);
    let wild = issue(&["*.w.test"], Algo::Ecdsa, false);
    let star = issue(&["star"], Algo::Ecdsa, false);
    gw.put("/ssls/exact", ssl_body(&exact, &["exact.test"]));
    gw.put("/ssls/wild", ssl_body(&wild, &["*.W.test"]));
    gw.put(
        "/ssls/star",
        json!({"cert": star.cert_pem, "key": star.key_pem, "sni": "*"}),
    );

    let by = |name: &str| served(addr, &ClientOpts::sni(name));
    assert_eq!(by("exact.test").unwrap(), exact.der);
    assert_eq!(
        by("EXACT.Test").unwrap(),
        exact.der,
        "SNI is case-insensitive"
    );
    assert_eq!(by("b.w.test").unwrap(), wild.der);
    assert_eq!(
        by("c.b.w.test").unwrap(),
        star.der,
        "a wildcard covers one label"
    );
    assert_eq!(by("w.test").unwrap(), star.der);
    assert_eq!(by("elsewhere.test").unwrap(), star.der);
    assert_eq!(served(addr, &no_sni()).unwrap(), exact.der, "fallback_sni");

    let (der, resp) = tls_get(addr, &ClientOpts::sni("b.w.test"), "/hello").unwrap();
    assert_eq!(der, wild.der);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["path"], "/hello");

    // Without `*`, a name nothing covers fails the handshake.
    gw.admin("DELETE", "/ssls/star", None);
    assert!(by("elsewhere.test").is_err());
    assert_eq!(by("b.w.test").unwrap(), wild.der);
}

#[test]
fn rsa_or_ecdsa_by_what_the_client_offers() {
    let (gw, addr) = start_tls(None);
    let rsa = issue(&["dual.test"], Algo::Rsa, false);
    let ec = issue(&["dual.test"], Algo::Ecdsa, false);
    gw.put(
        "/ssls/dual",
        json!({"cert": rsa.cert_pem, "key": rsa.key_pem, "sni": "dual.test",
               "certs": [ec.cert_pem], "keys": [ec.key_pem]}),
    );
    let offer = |only| ClientOpts {
        only,
        ..ClientOpts::sni("dual.test")
    };
    assert_eq!(served(addr, &offer(Some(Algo::Rsa))).unwrap(), rsa.der);
    assert_eq!(served(addr, &offer(Some(Algo::Ecdsa))).unwrap(), ec.der);
    assert_eq!(
        served(addr, &offer(None)).unwrap(),
        ec.der,
        "ECDSA preferred"
    );

    // An RSA-only SSL cannot serve a client that offers only ECDSA.
    gw.put("/ssls/rsa", ssl_body(&rsa, &["rsa.test"]));
    let rsa_only = |only| ClientOpts {
        only,
        ..ClientOpts::sni("rsa.test")
    };
    assert_eq!(served(addr, &rsa_only(Some(Algo::Rsa))).unwrap(), rsa.der);
    assert!(served(addr, &rsa_only(Some(Algo::Ecdsa))).is_err());
}

#[test]
fn put_and_delete_take_effect_for_the_next_handshake() {
    let (mut gw, addr) = start_tls(None);
    let backend = Backend::start("b");
    route_all(&gw, &backend);
    let pid = gw.pid();
    let opts = ClientOpts::sni("live.test");
    assert!(
        served(addr, &no_sni()).is_err(),
        "no SNI and no fallback_sni"
    );
    assert!(served(addr, &opts).is_err(), "no certificate yet");

    let one = issue(&["live.test"], Algo::Ecdsa, false);
    let two = issue(&["live.test"], Algo::Ecdsa, false);
    gw.put("/ssls/live", ssl_body(&one, &["live.test"]));
    let mut open = TlsConn::connect(addr, &opts).expect("handshake with the first certificate");
    assert_eq!(open.peer_der, one.der);

    gw.put("/ssls/live", ssl_body(&two, &["live.test"]));
    assert_eq!(served(addr, &opts).unwrap(), two.der);
    gw.admin("DELETE", "/ssls/live", None);
    assert!(served(addr, &opts).is_err(), "deleted: the handshake fails");

    // The connection opened before keeps its session.
    let req = Request::get("/still").header("Host", "live.test");
    let resp = open.send(&req).expect("request on the open connection");
    assert_eq!(resp.status, 200, "{resp:?}");

    // A disabled SSL is not served; enabling it again is.
    gw.put(
        "/ssls/live",
        json!({"cert": one.cert_pem, "key": one.key_pem, "sni": "live.test", "status": 0}),
    );
    assert!(served(addr, &opts).is_err());
    gw.write_ok("PATCH", "/ssls/live", json!({"status": 1}));
    assert_eq!(served(addr, &opts).unwrap(), one.der);
    assert_eq!(gw.pid(), pid);
    assert!(gw.is_running());
}

#[test]
fn scheme_sni_and_port_variables_on_the_tls_listener() {
    let (gw, addr) = start_tls(None);
    let backend = Backend::start("b");
    let c = issue(&["vars.test"], Algo::Ecdsa, false);
    gw.put("/ssls/v", ssl_body(&c, &["vars.test"]));
    gw.put(
        "/routes/v",
        json!({
            "uri": "/vars",
            "plugins": pre("rewrite", r#"
                ngx.req.set_header("X-Scheme", ngx.var.scheme)
                ngx.req.set_header("X-Sni", ngx.var.ssl_server_name or "none")
                ngx.req.set_header("X-Port", ngx.var.server_port)
            "#),
            "upstream": {"type": "roundrobin", "nodes": {backend.node(): 1}}
        }),
    );
    let (_, resp) = tls_get(addr, &ClientOpts::sni("vars.test"), "/vars").unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    let h = &resp.json()["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert_eq!(h["x-scheme"], "https", "{h}");
    assert_eq!(h["x-sni"], "vars.test", "{h}");
    assert_eq!(h["x-port"], addr.port().to_string(), "{h}");
    assert_eq!(h["x-forwarded-port"], addr.port().to_string(), "{h}");

    let plain = gw.proxy_get("/vars");
    let h = &plain.json()["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-scheme"], "http", "{h}");
    assert_eq!(h["x-sni"], "none", "{h}");
    assert_eq!(h["x-port"], gw.proxy_port.to_string(), "{h}");
}

#[test]
fn certificate_swap_under_load_fails_no_request() {
    let (gw, addr) = start_tls(None);
    let backend = Backend::start("b");
    route_all(&gw, &backend);
    let a = issue(&["load.test"], Algo::Ecdsa, false);
    let b = issue(&["load.test"], Algo::Ecdsa, false);
    gw.put("/ssls/load", ssl_body(&a, &["load.test"]));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::new(Mutex::new(std::collections::HashSet::<Vec<u8>>::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failures, seen) =
                (stop.clone(), ok.clone(), failures.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match tls_get(addr, &ClientOpts::sni("load.test"), "/load") {
                        Ok((der, resp)) if resp.status == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            seen.lock().unwrap().insert(der);
                        }
                        Ok((_, resp)) => failures.lock().unwrap().push(format!("{resp:?}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut swaps = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let next = if swaps % 2 == 0 { &b } else { &a };
        gw.put("/ssls/load", ssl_body(next, &["load.test"]));
        swaps += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::SeqCst) > 20,
        "too few requests: {}",
        ok.load(Ordering::SeqCst)
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.contains(&a.der) && seen.contains(&b.der),
        "both certificates served ({swaps} swaps)"
    );
}

#[test]
fn http2_by_alpn() {
    let (gw, addr) = start_tls(None);
    let backend = Backend::start("b");
    route_all(&gw, &backend);
    let c = issue(&["h2.test"], Algo::Ecdsa, false);
    gw.put("/ssls/h2", ssl_body(&c, &["h2.test"]));

    let opts = ClientOpts {
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        ..ClientOpts::sni("h2.test")
    };
    let conn = TlsConn::connect(addr, &opts).unwrap();
    assert_eq!(conn.alpn.as_deref(), Some(&b"h2"[..]));
    let h1 = ClientOpts {
        alpn: vec![b"http/1.1".to_vec()],
        ..ClientOpts::sni("h2.test")
    };
    assert_eq!(
        TlsConn::connect(addr, &h1).unwrap().alpn.as_deref(),
        Some(&b"http/1.1"[..])
    );

    // A real HTTP/2 client end to end.
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--http2",
            "--resolve",
            &format!("h2.test:{}:127.0.0.1", addr.port()),
            "-w",
            "\n%{http_version} %{http_code}",
            &format!("https://h2.test:{}/over-h2", addr.port()),
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("curl output");
    assert_eq!(
        status,
        "2 200",
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: Value = serde_json::from_str(body).expect("echo JSON");
    assert_eq!(echo["path"], "/over-h2");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}

#[test]
fn mutual_tls_with_client_ca() {
    let (gw, addr) = start_tls(None);
    let backend = Backend::start("b");
    route_all(&gw, &backend);
    let ca = Ca::new("test client CA");
    let stranger = Ca::new("another CA");
    let m = issue(&["m.test"], Algo::Ecdsa, false);
    let p = issue(&["plain.test"], Algo::Ecdsa, false);

    let (status, _, resp) = gw.admin(
        "PUT",
        "/ssls/m",
        Some(
            json!({"cert": m.cert_pem, "key": m.key_pem, "sni": "m.test",
                    "client": {"ca": "junk"}}),
        ),
    );
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error_msg"].as_str().unwrap().contains("client.ca"),
        "{resp}"
    );
    gw.put(
        "/ssls/m",
        json!({"cert": m.cert_pem, "key": m.key_pem, "sni": "m.test",
               "client": {"ca": ca.cert_pem, "skip_mtls_uri_regex": ["^/public/"]}}),
    );
    gw.put("/ssls/p", ssl_body(&p, &["plain.test"]));

    let get = |opts: &ClientOpts, path: &str, host: &str| -> u16 {
        let mut conn = TlsConn::connect(addr, opts).expect("handshake");
        let req = Request::get(path).header("Host", host);
        conn.send(&req).expect("response").status
    };
    let with = |cert| ClientOpts {
        client_cert: Some(cert),
        ..ClientOpts::sni("m.test")
    };
    let good = with(ca.client_cert("client.test"));
    let bad = with(stranger.client_cert("client.test"));
    let none = ClientOpts::sni("m.test");

    assert_eq!(get(&good, "/x", "m.test"), 200);
    assert_eq!(get(&none, "/x", "m.test"), 400, "no client certificate");
    assert_eq!(
        get(&bad, "/x", "m.test"),
        400,
        "a certificate of another CA"
    );
    assert_eq!(
        get(&none, "/public/a", "m.test"),
        200,
        "skip_mtls_uri_regex"
    );
    assert_eq!(
        get(&good, "/x", "plain.test"),
        400,
        "Host selects another SSL than the SNI"
    );
    assert_eq!(
        get(&ClientOpts::sni("plain.test"), "/x", "plain.test"),
        200,
        "no mTLS on this SSL"
    );

    // Removing `client` turns mTLS off for the next handshake.
    gw.put("/ssls/m", ssl_body(&m, &["m.test"]));
    assert_eq!(get(&none, "/x", "m.test"), 200);
}

#[test]
fn private_keys_are_sealed_at_rest_with_the_keyring() {
    use std::os::unix::fs::PermissionsExt;
    let port = free_port();
    let mut gw = Gateway::start(GatewayOpts {
        proxy_extra: format!("  ssl:\n    listen: [\"127.0.0.1:{port}\"]\n"),
        extra_yaml: "data_encryption:\n  keyring: [\"0123456789abcdef\", \"fedcba9876543210\"]\n"
            .to_string(),
        ..Default::default()
    });
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let c = issue(&["sealed.test"], Algo::Ecdsa, false);
    gw.put("/ssls/s", ssl_body(&c, &["sealed.test"]));
    assert!(wait_until(WAIT, || TcpStream::connect(addr).is_ok()));
    assert_eq!(
        served(addr, &ClientOpts::sni("sealed.test")).unwrap(),
        c.der
    );

    let store = gw.data_dir.join("store.redb");
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "store file mode {mode:o}");
    let key_body: String = c.key_pem.lines().nth(1).unwrap().to_string();
    let raw = std::fs::read(&store).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        !raw.contains("PRIVATE KEY") && !raw.contains(&key_body),
        "key stored in clear"
    );
    assert!(
        raw.contains("BEGIN CERTIFICATE"),
        "the certificate is not secret"
    );

    gw.restart();
    assert!(wait_until(WAIT, || TcpStream::connect(addr).is_ok()));
    assert_eq!(
        served(addr, &ClientOpts::sni("sealed.test")).unwrap(),
        c.der,
        "opened after a restart"
    );
}

#[test]
fn h2c_with_prior_knowledge_when_enabled() {
    let gw = Gateway::start(GatewayOpts {
        proxy_extra: "  h2c: true\n".to_string(),
        ..Default::default()
    });
    let backend = Backend::start("b");
    route_all(&gw, &backend);
    let url = format!("http://127.0.0.1:{}/over-h2c", gw.proxy_port);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version} %{http_code}",
            &url,
        ])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').expect("curl output");
    assert_eq!(status, "2 200", "{text}");
    let echo: Value = serde_json::from_str(body).expect("echo JSON");
    assert_eq!(echo["path"], "/over-h2c");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    // HTTP/1.1 still works on the same listener.
    assert_eq!(gw.proxy_get("/h1").status, 200);
}

#[test]
fn upstream_https_with_verify_on_and_off() {
    let gw = Gateway::start_default();
    let backend = Backend::start_tls("tls-backend");
    let upstream = |verify: bool| {
        json!({"scheme": "https", "tls": {"verify": verify},
               "nodes": {backend.node(): 1}, "retries": 0})
    };
    gw.put(
        "/routes/off",
        json!({"uri": "/off", "upstream": upstream(false)}),
    );
    gw.put(
        "/routes/on",
        json!({"uri": "/on", "upstream": upstream(true)}),
    );
    // The backend's certificate is self-signed: accepted only without verification.
    let off = gw.proxy_get("/off");
    assert_eq!(off.status, 200, "{off:?}");
    assert_eq!(off.json()["backend"], "tls-backend");
    assert_eq!(gw.proxy_get("/on").status, 502);
    // Pooled connections are not shared across verify settings.
    assert_eq!(gw.proxy_get("/on").status, 502);
    assert_eq!(gw.proxy_get("/off").status, 200);

    let (status, _, resp) = gw.admin(
        "PUT",
        "/upstreams/u",
        Some(json!({"scheme": "https", "tls": {"client_cert_id": "nope"},
                    "nodes": {backend.node(): 1}})),
    );
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error_msg"]
            .as_str()
            .unwrap()
            .contains("tls.client_cert_id"),
        "{resp}"
    );
    let c = issue(&["client.test"], Algo::Ecdsa, false);
    gw.put(
        "/ssls/client",
        json!({"type": "client", "cert": c.cert_pem, "key": c.key_pem}),
    );
    gw.put(
        "/upstreams/u",
        json!({"scheme": "https", "tls": {"client_cert_id": "client"}, "nodes": {backend.node(): 1}}),
    );
    gw.put("/routes/cc", json!({"uri": "/cc", "upstream_id": "u"}));
    assert_eq!(gw.proxy_get("/cc").status, 200);
    let (status, _, resp) = gw.admin("DELETE", "/ssls/client", None);
    assert_eq!(status, 400, "an SSL in use by an upstream stays: {resp}");
}
