//! Tests of the harness itself (no gateway needed): the mock backend, the
//! HTTP client and the Prometheus text parser.

use std::time::{Duration, Instant};

use super::http::{send, Conn, Request};
use super::prom;
use super::*;

#[test]
fn backend_echoes_request_over_keep_alive() {
    let b = Backend::start("a");
    let mut conn = Conn::new(b.addr());
    for i in 0..5 {
        let r = conn
            .send(
                &Request::get(&format!("/p/{i}?x=1&y=two"))
                    .header("X-Test", "v")
                    .header("Host", "example.test"),
            )
            .unwrap();
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["backend"], "a");
        assert_eq!(j["method"], "GET");
        assert_eq!(j["path"], format!("/p/{i}"));
        assert_eq!(j["query"], "x=1&y=two");
        assert_eq!(j["headers"]["x-test"], "v");
        assert_eq!(j["headers"]["host"], "example.test");
        assert_eq!(r.backend().as_deref(), Some("a"));
    }
    assert_eq!(conn.connects, 1, "keep-alive reused one connection");
    assert_eq!(b.hits(), 5);
    assert_eq!(b.connections(), 1);
}

#[test]
fn backend_reads_bodies_and_answers_status() {
    let b = Backend::start_with("s", 503, Duration::ZERO);
    let mut conn = Conn::new(b.addr());
    let r = conn
        .send(&Request::new("POST", "/x").json(&json!({"k": "v"})))
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["body_len"], 9);
    // chunked request body, same connection
    let r = conn
        .send(
            &Request::new("PUT", "/y")
                .header("Transfer-Encoding", "chunked")
                .body("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        )
        .unwrap();
    assert_eq!(r.json()["body_len"], 5);
    assert_eq!(conn.connects, 1);
    b.set_status(200);
    assert_eq!(conn.send(&Request::get("/")).unwrap().status, 200);
}

#[test]
fn backend_delay() {
    let b = Backend::start_with("slow", 200, Duration::from_millis(300));
    let t = Instant::now();
    let r = send(b.addr(), &Request::get("/")).unwrap();
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    b.set_delay(Duration::ZERO);
    let t = Instant::now();
    send(b.addr(), &Request::get("/")).unwrap();
    assert!(t.elapsed() < Duration::from_millis(300));
}

#[test]
fn backend_stop_closes_listener_and_connections() {
    let mut b = Backend::start("gone");
    let addr = b.addr();
    let mut conn = Conn::new(addr);
    assert_eq!(conn.send(&Request::get("/")).unwrap().status, 200);
    b.stop();
    assert!(
        conn.send(&Request::get("/")).is_err(),
        "kept-alive conn closed"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed"
    );
    let dead: std::net::SocketAddr = dead_addr().parse().unwrap();
    assert!(std::net::TcpStream::connect(dead).is_err());
}

#[test]
fn client_reads_chunked_and_close_delimited_responses() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        // 1st connection: a chunked response then a close-delimited one
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap();
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n{\"a\":1}")
            .unwrap();
    });
    let mut conn = Conn::new(addr);
    let r = conn.send(&Request::get("/")).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    let r = conn.send(&Request::get("/")).unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"a": 1}));
    assert!(r.wants_close());
    server.join().unwrap();
}

#[test]
fn prom_parser() {
    let text = r#"
# HELP portico_http_requests_total Requests.
# TYPE portico_http_requests_total counter
portico_http_requests_total{route="r1",upstream="u1",code="200"} 5
portico_http_requests_total{code="404",route="",upstream=""} 2
portico_http_request_duration_seconds_bucket{route="r1",type="request",le="+Inf"} 5
portico_config_version 3
weird{a="x\"y,z}",b="\\"} 1.5e3 1700000000000
"#;
    let s = prom::parse(text).unwrap();
    assert_eq!(s.len(), 5);
    assert_eq!(
        prom::sum(&s, "portico_http_requests_total", &[("route", "r1")]),
        5.0
    );
    assert_eq!(prom::sum(&s, "portico_http_requests_total", &[]), 7.0);
    assert_eq!(s[2].label("le"), Some("+Inf"));
    assert_eq!(s[3].value, 3.0);
    assert_eq!(s[4].label("a"), Some("x\"y,z}"));
    assert_eq!(s[4].label("b"), Some("\\"));
    assert_eq!(s[4].value, 1500.0);
    assert!(prom::parse("bad line").is_err());
    assert!(prom::parse("m{a=\"1} 2").is_err());
}

#[test]
fn helpers() {
    let a = random_string(32);
    let b = random_string(32);
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    // Ports are handed out once, and from below the kernel's ephemeral range
    // when it leaves room, so the kernel cannot hand them to anyone else.
    let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(distinct.len(), ports.len());
    if let Some((low, high)) = ports_below_ephemeral_range() {
        assert!(ports.iter().all(|p| (low..high).contains(p)), "{ports:?}");
    }
    let start = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || start.elapsed()
        > Duration::from_millis(50)));
    assert!(!wait_until(Duration::from_millis(60), || false));
    let dir = TempDir::new("selftest");
    let p = dir.path().to_path_buf();
    assert!(p.is_dir());
    drop(dir);
    assert!(!p.exists());
}

/// The gateway harness against a fake `portico`: config text shape only.
#[test]
fn config_text_shape() {
    let gw = Gateway::prepare(GatewayOpts {
        yaml_provider: Some("routes: []\n#END\n".into()),
        ..Default::default()
    });
    let t = gw.config_text();
    assert!(t.contains(&format!("listen: [\"127.0.0.1:{}\"]", gw.proxy_port)));
    assert!(t.contains(&format!("key: \"{}\", role: admin", gw.admin_key)));
    assert!(t.contains(&format!("key: \"{}\", role: viewer", gw.viewer_key)));
    assert!(t.contains("config_provider: yaml"));
    assert!(t.contains("threads: 2"));
    assert!(gw.yaml_config_path.exists());
    assert!(gw.config_path.exists());
}

#[test]
fn backend_restart_on_the_same_port_keeps_counters() {
    let mut b = Backend::start("r");
    let addr = b.addr();
    assert_eq!(send(addr, &Request::get("/x")).unwrap().status, 200);
    b.stop();
    assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
    b.restart();
    assert_eq!(b.addr(), addr);
    let r = send(addr, &Request::get("/x")).unwrap();
    assert_eq!(r.backend().as_deref(), Some("r"));
    assert_eq!(b.path_hits("/x"), 2);
    assert_eq!(b.connections(), 2);
}

#[test]
fn tls_backend_serves_https_with_the_test_certificate() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let b = Backend::start_tls("t");
    // the test certificate is self-signed (and a CA): accept any server certificate
    #[derive(Debug)]
    struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(b.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /hc HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"backend\":\"t\""), "{text}");
    assert_eq!(b.path_hits("/hc"), 1);
}
