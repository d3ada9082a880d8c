//! Registry and prober tests against real loopback sockets. Intervals are APISIX's
//! minimum (1 s), so a test takes a few seconds; every wait polls for its condition.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::*;

// ---------------------------------------------------------------- helpers

#[derive(Default)]
struct Recorder(Mutex<Vec<(TargetKey, bool, Cause, Counters)>>);

impl HealthObserver for Recorder {
    fn transition(&self, key: &TargetKey, healthy: bool, cause: Cause, counters: Counters) {
        self.0.lock().push((key.clone(), healthy, cause, counters));
    }
}

impl Recorder {
    fn events(&self) -> Vec<(TargetKey, bool, Cause, Counters)> {
        self.0.lock().clone()
    }
}

fn spec(v: serde_json::Value) -> Arc<ChecksSpec> {
    let s: ChecksSpec = serde_json::from_value(v).unwrap();
    assert_eq!(s.validate(), vec![], "test specs must be valid");
    Arc::new(s)
}

fn targets(upstream: &str, spec: &Arc<ChecksSpec>, addrs: &[SocketAddr]) -> UpstreamTargets {
    UpstreamTargets {
        upstream: upstream.to_string(),
        spec: Arc::clone(spec),
        nodes: addrs
            .iter()
            .map(|a| TargetNode {
                addr: *a,
                host: "backend.test".to_string(),
            })
            .collect(),
    }
}

struct Prober {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start(reg: &Arc<HealthRegistry>) -> Prober {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(Arc::clone(reg).run_active(async {
        let _ = rx.await;
    }));
    Prober {
        stop: Some(tx),
        task,
    }
}

impl Prober {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("run_active returns on shutdown")
            .unwrap();
    }
}

async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a test backend does with each connection.
#[derive(Clone)]
enum Behaviour {
    /// Reads the request and answers with the current status.
    Http(Arc<AtomicU16>),
    /// Same over TLS with the self-signed test certificate.
    Https(Arc<AtomicU16>),
    /// Accepts and never answers (holds the connection until the client closes it).
    Hang,
}

struct Backend {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// Connections open right now.
    open: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Backend {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn backend(behaviour: Behaviour) -> Backend {
    backend_with(
        behaviour,
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    )
    .await
}

async fn backend_with(
    behaviour: Behaviour,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(listener, behaviour, open, max_open)
}

fn serve(
    listener: TcpListener,
    behaviour: Behaviour,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
) -> Backend {
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let acceptor = matches!(behaviour, Behaviour::Https(_)).then(tls_acceptor);
    let (a, o, m, r) = (
        Arc::clone(&accepts),
        Arc::clone(&open),
        Arc::clone(&max_open),
        Arc::clone(&requests),
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let now_open = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now_open, Ordering::SeqCst);
            let (b, o, r, acceptor) = (
                behaviour.clone(),
                Arc::clone(&o),
                Arc::clone(&r),
                acceptor.clone(),
            );
            tokio::spawn(async move {
                match b {
                    Behaviour::Http(status) => answer(sock, &status, &r).await,
                    Behaviour::Https(status) => {
                        if let Some(acc) = acceptor {
                            if let Ok(tls) = acc.accept(sock).await {
                                answer(tls, &status, &r).await;
                            }
                        }
                    }
                    Behaviour::Hang => {
                        let mut sock = sock;
                        let mut buf = [0u8; 1024];
                        while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Backend {
        addr,
        accepts,
        open,
        requests,
        task,
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    status: &AtomicU16,
    requests: &Mutex<Vec<String>>,
) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf).await {
            Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    requests
        .lock()
        .push(String::from_utf8_lossy(&req).into_owned());
    let s = status.load(Ordering::SeqCst);
    let resp = format!("HTTP/1.1 {s} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

fn tls_acceptor() -> pingora_core::tls::TlsAcceptor {
    use pingora_core::tls::{load_certs_and_key_files, ServerConfig};
    pingora_core::tls::install_default_crypto_provider();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata");
    let (certs, key) =
        load_certs_and_key_files(&format!("{dir}/cert.pem"), &format!("{dir}/key.pem"))
            .unwrap()
            .unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    pingora_core::tls::TlsAcceptor::from(Arc::new(config))
}

/// A loopback address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- active: tcp

#[tokio::test]
async fn tcp_probe_up_down_up() {
    let rec = Arc::new(Recorder::default());
    let reg = HealthRegistry::new(rec.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = serve(listener, Behaviour::Hang, Arc::default(), Arc::default());
    let s = spec(json!({"active": {"type": "tcp",
        "healthy": {"successes": 1}, "unhealthy": {"tcp_failures": 2}}}));
    let node = reg.node("u1", addr);
    reg.reconcile(vec![targets("u1", &s, &[addr])]);
    let prober = start(&reg);

    // Probed at once (not on first request), then every interval: stays healthy.
    wait_for("two probes", 4, || up.accepts() >= 2).await;
    assert!(node.is_healthy());
    assert!(node.counters().success >= 1);
    assert!(rec.events().is_empty());

    // Listener gone: unhealthy after 2 refused connects.
    drop(up);
    wait_for("ejection", 5, || !node.is_healthy()).await;
    let ev = rec.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0, TargetKey::new("u1", addr));
    assert!(!ev[0].1);
    assert_eq!(ev[0].2, Cause::Active(Observation::TcpFailure));
    assert_eq!(ev[0].3.tcp_failure, 2);
    assert_eq!(node.counters(), Counters::default());

    // Back on the same port: readmitted after 1 success.
    let again = serve(
        TcpListener::bind(addr).await.unwrap(),
        Behaviour::Hang,
        Arc::default(),
        Arc::default(),
    );
    wait_for("readmission", 5, || node.is_healthy()).await;
    assert!(again.accepts() >= 1);
    assert_eq!(rec.events()[1].2, Cause::Active(Observation::Success));
    prober.stop().await;
}

// ---------------------------------------------------------------- active: http

#[tokio::test]
async fn http_probe_500_ejects_and_200_readmits() {
    let rec = Arc::new(Recorder::default());
    let reg = HealthRegistry::new(rec.clone());
    let status = Arc::new(AtomicU16::new(500));
    let b = backend(Behaviour::Http(Arc::clone(&status))).await;
    let s = spec(json!({"active": {
        "http_path": "/health", "req_headers": ["X-Probe: 1"],
        "healthy": {"successes": 2}, "unhealthy": {"http_failures": 2}}}));
    let node = reg.node("u1", b.addr);
    reg.reconcile(vec![targets("u1", &s, &[b.addr])]);
    let prober = start(&reg);

    wait_for("ejection by http failures", 5, || !node.is_healthy()).await;
    let ev = rec.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].2, Cause::Active(Observation::HttpFailure));
    assert_eq!(ev[0].3.http_failure, 2);

    status.store(200, Ordering::SeqCst);
    wait_for("readmission", 6, || node.is_healthy()).await;
    let ev = rec.events();
    assert_eq!(ev.len(), 2);
    assert!(ev[1].1);
    assert_eq!(ev[1].3.success, 2);
    prober.stop().await;

    let req = b.requests.lock()[0].clone();
    let port = b.addr.port();
    assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
    assert!(
        req.contains(&format!("Host: backend.test:{port}\r\n")),
        "{req}"
    );
    assert!(req.contains("X-Probe: 1\r\n"), "{req}");
    assert!(req.contains("User-Agent: portico-healthcheck\r\n"), "{req}");
    assert!(req.contains("Connection: close\r\n"), "{req}");
}

#[tokio::test]
async fn http_status_in_neither_list_is_ignored_and_host_port_override() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let status = Arc::new(AtomicU16::new(403));
    let b = backend(Behaviour::Http(Arc::clone(&status))).await;
    // The node's own address is closed; `port` sends probes to the backend.
    let node_addr = SocketAddr::new(b.addr.ip(), closed_port().await.port());
    let s = spec(
        json!({"active": {"host": "probe.example", "port": b.addr.port(),
        "unhealthy": {"http_failures": 1}}}),
    );
    let node = reg.node("u1", node_addr);
    reg.reconcile(vec![targets("u1", &s, &[node_addr])]);
    let prober = start(&reg);
    wait_for("two probes", 4, || b.requests.lock().len() >= 2).await;
    assert!(node.is_healthy());
    assert_eq!(node.counters(), Counters::default());
    let req = b.requests.lock()[0].clone();
    assert!(
        req.contains(&format!("Host: probe.example:{}\r\n", b.addr.port())),
        "{req}"
    );
    prober.stop().await;
}

#[tokio::test]
async fn http_probe_without_answer_times_out() {
    let rec = Arc::new(Recorder::default());
    let reg = HealthRegistry::new(rec.clone());
    let b = backend(Behaviour::Hang).await;
    let s = spec(json!({"active": {"timeout": 0.3, "unhealthy": {"timeouts": 1}}}));
    let node = reg.node("u1", b.addr);
    reg.reconcile(vec![targets("u1", &s, &[b.addr])]);
    let started = tokio::time::Instant::now();
    let prober = start(&reg);
    wait_for("timeout ejection", 3, || !node.is_healthy()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let ev = rec.events();
    assert_eq!(ev[0].2, Cause::Active(Observation::Timeout));
    assert_eq!(ev[0].3.timeout_failure, 1);
    // The probe closed its connection when it gave up.
    wait_for("probe connection closed", 2, || {
        b.open.load(Ordering::SeqCst) == 0
    })
    .await;
    prober.stop().await;
}

#[tokio::test]
async fn concurrency_limits_probes_in_flight_per_upstream() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends
            .push(backend_with(Behaviour::Hang, Arc::clone(&open), Arc::clone(&max_open)).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let s = spec(json!({"active": {"timeout": 0.3, "concurrency": 1}}));
    reg.reconcile(vec![targets("u1", &s, &addrs)]);
    let prober = start(&reg);
    wait_for("every node probed", 4, || {
        backends.iter().all(|b| b.accepts() >= 1)
    })
    .await;
    assert_eq!(max_open.load(Ordering::SeqCst), 1);
    prober.stop().await;
}

// ---------------------------------------------------------------- active: https

#[tokio::test]
async fn https_probe_self_signed_with_and_without_verification() {
    let rec = Arc::new(Recorder::default());
    let reg = HealthRegistry::new(rec.clone());
    let status = Arc::new(AtomicU16::new(200));
    let b = backend(Behaviour::Https(Arc::clone(&status))).await;
    let no_verify = spec(json!({"active": {"type": "https", "host": "localhost",
        "https_verify_certificate": false, "unhealthy": {"tcp_failures": 1}}}));
    let verify = spec(json!({"active": {"type": "https", "host": "localhost",
        "unhealthy": {"tcp_failures": 1}}}));
    let lax = reg.node("lax", b.addr);
    let strict = reg.node("strict", b.addr);
    reg.reconcile(vec![
        targets("lax", &no_verify, &[b.addr]),
        targets("strict", &verify, &[b.addr]),
    ]);
    let prober = start(&reg);
    wait_for("an https probe answered", 4, || lax.counters().success >= 1).await;
    wait_for("untrusted cert rejected", 4, || !strict.is_healthy()).await;
    assert!(lax.is_healthy());
    let ev = rec.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].0.upstream, "strict");
    assert_eq!(ev[0].2, Cause::Active(Observation::TcpFailure));
    let req = b.requests.lock()[0].clone();
    assert!(
        req.contains(&format!("Host: localhost:{}\r\n", b.addr.port())),
        "{req}"
    );
    prober.stop().await;
}

// ---------------------------------------------------------------- reconcile

#[tokio::test]
async fn reconcile_keeps_kept_nodes_and_stops_probing_removed_ones() {
    let rec = Arc::new(Recorder::default());
    let reg = HealthRegistry::new(rec.clone());
    let kept = backend(Behaviour::Hang).await;
    let removed = backend(Behaviour::Hang).await;
    let dead = closed_port().await;
    let s = spec(json!({"active": {"type": "tcp", "unhealthy": {"tcp_failures": 1}}}));
    let dead_node = reg.node("u1", dead);
    reg.reconcile(vec![targets("u1", &s, &[kept.addr, removed.addr, dead])]);
    let prober = start(&reg);
    wait_for("dead node ejected", 4, || !dead_node.is_healthy()).await;
    wait_for("removed node probed", 4, || removed.accepts() >= 1).await;

    // New config (spec equal, new Arc): `removed` goes, `dead` and `kept` stay.
    let s2 = spec(json!({"active": {"type": "tcp", "unhealthy": {"tcp_failures": 1}}}));
    let kept_before = kept.accepts();
    reg.reconcile(vec![targets("u1", &s2, &[kept.addr, dead])]);
    // The snapshot built for that config gets the same state back.
    let again = reg.node("u1", dead);
    assert!(Arc::ptr_eq(&again, &dead_node));
    assert!(!again.is_healthy(), "a kept node keeps its unhealthy state");

    // A probe already past its permit may still connect once; after that, none.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let removed_count = removed.accepts();
    wait_for("kept node probed twice more", 5, || {
        kept.accepts() >= kept_before + 2
    })
    .await;
    assert_eq!(
        removed.accepts(),
        removed_count,
        "removed node still probed"
    );

    let st = reg.upstream_status("u1").unwrap();
    let ports: Vec<u16> = st.nodes.iter().map(|n| n.port).collect();
    let mut want = vec![kept.addr.port(), dead.port()];
    want.sort();
    assert_eq!(ports, want);
    assert_eq!(rec.events().len(), 1, "no transition from the swap itself");

    // Dropping the upstream entirely stops everything.
    reg.reconcile(vec![]);
    assert!(reg.status().is_empty());
    assert!(reg.upstream_status("u1").is_none());
    prober.stop().await;
}

#[tokio::test]
async fn spec_change_restarts_schedule_but_keeps_state() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let b = backend(Behaviour::Hang).await;
    // Long interval: after the first probe, the next is 30 s away.
    let s1 = spec(json!({"active": {"type": "tcp", "healthy": {"interval": 30}}}));
    let node = reg.node("u1", b.addr);
    reg.reconcile(vec![targets("u1", &s1, &[b.addr])]);
    let prober = start(&reg);
    wait_for("first probe", 3, || node.counters().success == 1).await;

    // Same spec again (a new Arc of equal content): schedule untouched.
    let same = spec(json!({"active": {"type": "tcp", "healthy": {"interval": 30}}}));
    reg.reconcile(vec![targets("u1", &same, &[b.addr])]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.accepts(), 1);

    // Changed spec: due now, and counters carry on from the kept state.
    let s2 = spec(json!({"active": {"type": "tcp", "timeout": 2, "healthy": {"interval": 30}}}));
    reg.reconcile(vec![targets("u1", &s2, &[b.addr])]);
    wait_for("probe right after the spec change", 2, || b.accepts() == 2).await;
    wait_for("counters kept", 2, || node.counters().success == 2).await;
    assert!(Arc::ptr_eq(&node, &reg.node("u1", b.addr)));
    prober.stop().await;
}

#[tokio::test]
async fn new_targets_are_probed_without_traffic_and_late_reconcile_wakes_prober() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let prober = start(&reg);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = backend(Behaviour::Hang).await;
    let s = spec(json!({"active": {"type": "tcp", "healthy": {"interval": 30}}}));
    reg.reconcile(vec![targets("u1", &s, &[b.addr])]);
    wait_for("probe of a new target", 1, || b.accepts() == 1).await;
    prober.stop().await;
}

// ---------------------------------------------------------------- passive

#[tokio::test]
async fn passive_reports_classify_and_apply_passive_thresholds() {
    let rec = Arc::new(Recorder::default());
    let reg = HealthRegistry::new(rec.clone());
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let s = spec(json!({"active": {}, "passive": {
        "healthy": {"successes": 2},
        "unhealthy": {"http_failures": 3, "tcp_failures": 2, "timeouts": 1}}}));
    let node = reg.node("u1", addr);
    reg.reconcile(vec![targets("u1", &s, &[addr])]);

    reg.report(&node, &s, Outcome::Status(200));
    assert_eq!(node.counters().success, 1);
    reg.report(&node, &s, Outcome::Status(404)); // in neither passive list: ignored
    reg.report(&node, &s, Outcome::Status(418));
    assert_eq!(node.counters().success, 1);
    reg.report(&node, &s, Outcome::Status(500));
    reg.report(&node, &s, Outcome::Status(503));
    assert_eq!(node.counters().http_failure, 2);
    assert_eq!(node.counters().success, 0);
    assert!(node.is_healthy());
    reg.report(&node, &s, Outcome::Status(429));
    assert!(!node.is_healthy());
    assert_eq!(rec.events()[0].2, Cause::Passive(Observation::HttpFailure));
    assert_eq!(rec.events()[0].3.http_failure, 3);

    reg.report(&node, &s, Outcome::Status(204));
    reg.report(&node, &s, Outcome::Status(308));
    assert!(node.is_healthy());
    assert_eq!(rec.events()[1].2, Cause::Passive(Observation::Success));

    reg.report(&node, &s, Outcome::TcpFailure);
    assert_eq!(node.counters().tcp_failure, 1);
    reg.report(&node, &s, Outcome::Timeout);
    assert!(!node.is_healthy());
    assert_eq!(rec.events()[2].2, Cause::Passive(Observation::Timeout));
}

#[tokio::test]
async fn passive_zero_disables_and_no_passive_block_is_a_noop() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let active_only = spec(json!({"active": {}}));
    let node = reg.node("u1", addr);
    for _ in 0..10 {
        reg.report(&node, &active_only, Outcome::TcpFailure);
        reg.report(&node, &active_only, Outcome::Status(500));
    }
    assert!(node.is_healthy());
    assert_eq!(node.counters(), Counters::default());

    let no_tcp = spec(json!({"active": {}, "passive": {"unhealthy": {"tcp_failures": 0}}}));
    for _ in 0..10 {
        reg.report(&node, &no_tcp, Outcome::TcpFailure);
    }
    assert!(node.is_healthy());
    assert_eq!(node.counters(), Counters::default());
}

// ---------------------------------------------------------------- node(), status()

#[tokio::test]
async fn node_handles_are_shared_per_key() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let n1 = reg.node("u1", a);
    let n2 = reg.node("u1", a);
    let other = reg.node("u2", a);
    assert!(Arc::ptr_eq(&n1, &n2));
    assert!(!Arc::ptr_eq(&n1, &other));
    assert_eq!(n1.key(), &TargetKey::new("u1", a));
    assert!(n1.is_healthy());
    // Once nothing holds a handle and no upstream lists it, the state is gone.
    drop((n1, n2));
    reg.reconcile(vec![]);
    let fresh = reg.node("u1", a);
    assert_eq!(fresh.counters(), Counters::default());
}

#[tokio::test]
async fn status_format() {
    let reg = HealthRegistry::new(Arc::new(NoopObserver));
    let a: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let b: SocketAddr = "127.0.0.2:80".parse().unwrap();
    let http = spec(json!({"active": {}, "passive": {"unhealthy": {"http_failures": 1}}}));
    let tcp = spec(json!({"active": {"type": "tcp"}}));
    reg.reconcile(vec![targets("2", &tcp, &[b]), targets("1", &http, &[b, a])]);
    let node = reg.node("1", b);
    reg.report(&node, &http, Outcome::Status(500));
    let got = serde_json::to_value(reg.status()).unwrap();
    assert_eq!(
        got,
        json!([
            {"upstream": "1", "type": "http", "nodes": [
                {"ip": "127.0.0.1", "port": 8080, "status": "healthy",
                 "counter": {"success": 0, "http_failure": 0, "tcp_failure": 0, "timeout_failure": 0}},
                {"ip": "127.0.0.2", "port": 80, "status": "unhealthy",
                 "counter": {"success": 0, "http_failure": 0, "tcp_failure": 0, "timeout_failure": 0}}
            ]},
            {"upstream": "2", "type": "tcp", "nodes": [
                {"ip": "127.0.0.2", "port": 80, "status": "healthy",
                 "counter": {"success": 0, "http_failure": 0, "tcp_failure": 0, "timeout_failure": 0}}
            ]}
        ])
    );
    assert_eq!(
        serde_json::to_value(reg.upstream_status("2").unwrap()).unwrap()["type"],
        "tcp"
    );
}

#[test]
fn cause_display() {
    assert_eq!(
        Cause::Active(Observation::TcpFailure).to_string(),
        "active tcp_failure"
    );
    assert_eq!(
        Cause::Passive(Observation::Success).to_string(),
        "passive success"
    );
    assert_eq!(
        Cause::Passive(Observation::Timeout).to_string(),
        "passive timeout"
    );
}

#[test]
fn registry_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<HealthRegistry>();
    check::<NodeHealth>();
}
