//! Binary upgrade with zero dropped requests (issue 12): `portico --upgrade` takes the
//! listening sockets over from the running process on `SIGQUIT`, in the default admin
//! provider (redb store in data_dir), twice in a row (A -> B -> C), under load.
//!
//! The load: keep-alive clients that never retry (they reconnect only when a response
//! says `Connection: close`), a client opening one connection per request, slow
//! requests (2.5 s) in flight across each handover, POST bodies, a TLS keep-alive
//! client, an upgraded connection (101 from an echoing backend) kept open across both
//! upgrades, and admin writes. Every proxied request must succeed (no connect error, no
//! reset, no non-2xx); an admin write may answer 503 during a handover, and every one
//! acknowledged must be in the last process's store.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::http;
use crate::support::tls::{issue, Algo, ClientOpts, TlsConn};
use crate::support::*;

/// How long the load runs in all (the issue asks for at least 20 s).
const LOAD: Duration = Duration::from_secs(24);
/// The slow backend's answer time: requests in flight across each handover.
const SLOW: Duration = Duration::from_millis(2500);
const POST_BODY: usize = 32 * 1024;
const SNI: &str = "upgrade.test";

/// What the clients saw.
struct Tally {
    start: Instant,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    ok: [AtomicUsize; Client::COUNT],
    /// Admin writes the old process refused after handing the store over.
    refused_writes: AtomicUsize,
}

#[derive(Clone, Copy, Debug)]
enum Client {
    KeepAlive,
    NewConnection,
    Slow,
    Post,
    Tls,
    Tunnel,
    AdminWrite,
}

impl Client {
    const COUNT: usize = 7;
    const ALL: [Client; Client::COUNT] = [
        Client::KeepAlive,
        Client::NewConnection,
        Client::Slow,
        Client::Post,
        Client::Tls,
        Client::Tunnel,
        Client::AdminWrite,
    ];
}

impl Tally {
    fn new() -> Tally {
        Tally {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            ok: Default::default(),
            refused_writes: AtomicUsize::new(0),
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    fn ok(&self, c: Client) {
        self.ok[c as usize].fetch_add(1, Ordering::SeqCst);
    }

    fn count(&self, c: Client) -> usize {
        self.ok[c as usize].load(Ordering::SeqCst)
    }

    fn fail(&self, c: Client, what: String) {
        let at = self.start.elapsed().as_secs_f64();
        self.failures
            .lock()
            .expect("failures")
            .push(format!("[{at:6.2}s {c:?}] {what}"));
    }

    /// Records one proxied exchange: a 2xx with `check` true, or a failure.
    fn record(
        &self,
        c: Client,
        result: std::io::Result<Response>,
        check: impl Fn(&Response) -> bool,
    ) {
        match result {
            Ok(r) if (200..300).contains(&r.status) && check(&r) => self.ok(c),
            Ok(r) => self.fail(c, format!("{} {}", r.status, r.text())),
            Err(e) => self.fail(c, format!("transport error: {e} ({:?})", e.kind())),
        }
    }
}

/// A backend that answers any request head with 101 and then echoes every byte: the
/// far end of an upgraded (websocket-like) connection.
fn start_echo_after_101() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo backend");
    let addr = listener.local_addr().expect("echo addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                // The request head, up to its blank line.
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let mut w = reader.get_ref().try_clone().expect("clone echo stream");
                let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0u8; 4096];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// Keep-alive requests from `conn` until stopped (reconnecting only on
/// `Connection: close`, which `Conn` does).
fn keep_alive_loop(
    t: &Tally,
    c: Client,
    addr: SocketAddr,
    req: Request,
    check: fn(&Response) -> bool,
) {
    let mut conn = Conn::new(addr);
    while t.running() {
        let r = conn.send(&req);
        t.record(c, r, check);
    }
}

fn new_connection_loop(t: &Tally, addr: SocketAddr) {
    let req = Request::get("/fast/new").header("Connection", "close");
    while t.running() {
        t.record(Client::NewConnection, http::send(addr, &req), |_| true);
    }
}

fn tls_loop(t: &Tally, addr: SocketAddr) {
    let req = Request::get("/fast/tls").header("Host", SNI);
    let mut conn: Option<TlsConn> = None;
    while t.running() {
        if conn.is_none() {
            match TlsConn::connect(addr, &ClientOpts::sni(SNI)) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    t.fail(Client::Tls, format!("handshake: {e}"));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let r = c.send(&req);
        if !matches!(&r, Ok(resp) if !resp.wants_close()) {
            conn = None;
        }
        t.record(Client::Tls, r, |_| true);
    }
}

/// One upgraded connection through the gateway, open from before the first upgrade to
/// the end: a line every 100 ms, echoed back.
fn tunnel_loop(t: &Tally, addr: SocketAddr, opened: &AtomicBool) {
    let fail = |what: String| t.fail(Client::Tunnel, what);
    let mut s = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return fail(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let head = "GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if let Err(e) = s.write_all(head.as_bytes()) {
        return fail(format!("write: {e}"));
    }
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut status = String::new();
    if let Err(e) = reader.read_line(&mut status) {
        return fail(format!("read the 101: {e}"));
    }
    if !status.starts_with("HTTP/1.1 101") {
        return fail(format!("not switched: {status:?}"));
    }
    if let Err(e) = http::read_headers(&mut reader) {
        return fail(format!("101 headers: {e}"));
    }
    opened.store(true, Ordering::SeqCst);
    let mut n = 0u64;
    while t.running() {
        n += 1;
        let line = format!("ping {n}\n");
        let mut back = String::new();
        let exchanged = s
            .write_all(line.as_bytes())
            .and_then(|_| reader.read_line(&mut back));
        match exchanged {
            Ok(_) if back == line => t.ok(Client::Tunnel),
            Ok(_) => return fail(format!("echo {back:?} for {line:?}")),
            Err(e) => return fail(format!("exchange {n}: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A clean close, so the old process holding it can finish draining.
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// Admin writes until stopped: the ids acknowledged (2xx). A 503 (the old process has
/// handed the store over) is allowed and not acknowledged.
fn admin_loop(t: &Tally, gw: &Gateway, node: &str, acked: &Mutex<Vec<String>>) {
    let mut n = 0;
    while t.running() {
        n += 1;
        let id = format!("w{n}");
        let body = json!({"uri": format!("/written/{n}"), "upstream": {"nodes": {node: 1}}});
        match gw.admin_raw(
            "PUT",
            &format!("/routes/{id}"),
            Some(body.to_string().into_bytes()),
            Some(&gw.admin_key),
        ) {
            Ok(r) if (200..300).contains(&r.status) => {
                acked.lock().expect("acked").push(id);
                t.ok(Client::AdminWrite);
            }
            Ok(r)
                if r.status == 503
                    && r.text().contains("handed over")
                    && r.header("retry-after") == Some("1") =>
            {
                t.refused_writes.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => t.fail(
                Client::AdminWrite,
                format!("{id}: {} {}", r.status, r.text()),
            ),
            Err(e) => t.fail(Client::AdminWrite, format!("{id}: transport error: {e}")),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Upgrades the process `old_pid` running `gw`'s configuration with
/// `deploy/portico-upgrade` (the systemd unit's `ExecReload`): `portico -t`, `portico
/// --upgrade` waiting for the sockets, SIGQUIT to the old one. Waits until the new
/// process has started (store open, configuration built) and returns its pid; its
/// output goes to `<name>.log` with the script's.
pub(crate) fn upgrade(gw: &Gateway, old_pid: u32, name: &str, started: &mut Started) -> u32 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/portico-upgrade");
    let log_path = gw.dir_path().join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut run = std::process::Command::new("bash")
        .arg(&script)
        .arg(old_pid.to_string())
        .args(["-c", &gw.config_path.display().to_string()])
        .args(["-b", crate::support::gateway::portico_bin()])
        .args(["-d", &gw.data_dir.display().to_string()])
        // No status listener here: the test waits for the start itself.
        .args(["-s", "", "-w", "30"])
        .env_remove("PORTICO_ADMIN_KEY")
        // Not this test's business to tell a service manager about new main processes.
        .env_remove("NOTIFY_SOCKET")
        .current_dir(gw.dir_path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("run deploy/portico-upgrade");
    let done = wait_until(Duration::from_secs(60), || {
        run.try_wait().ok().flatten().is_some()
    });
    let status = run.try_wait().ok().flatten();
    let new_pid = read(&log_path).lines().find_map(|l| {
        l.split("hands over to pid ")
            .nth(1)?
            .trim()
            .parse::<u32>()
            .ok()
    });
    if let Some(pid) = new_pid {
        started.0.push(pid);
    }
    assert!(
        done && status.is_some_and(|s| s.success()),
        "portico-upgrade for {name}: {status:?}\n{}",
        read(&log_path)
    );
    let pid = new_pid.expect("the script names the new pid");
    let up = wait_until(Duration::from_secs(60), || {
        read(&log_path).contains(" started version=") || !alive(pid)
    });
    assert!(
        up && alive(pid),
        "{name} did not start\n{}",
        read(&log_path)
    );
    pid
}

/// Whether `pid` runs (not gone, not a zombie: the upgraded processes are not this
/// test's children, whoever reaps them).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.trim_start().chars().next());
        !matches!(state, Some('Z' | 'X') | None)
    })
}

/// The processes the upgrades started, killed when the test ends however it ends.
#[derive(Default)]
pub(crate) struct Started(pub(crate) Vec<u32>);

impl Drop for Started {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if alive(pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// The logs of A (the harness's process), B and C.
fn all_logs(gw: &Gateway) -> String {
    format!(
        "{}\n----- b.log -----\n{}\n----- c.log -----\n{}",
        gw.logs(),
        read(&gw.dir_path().join("b.log")),
        read(&gw.dir_path().join("c.log"))
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub(crate) fn kill(signal: &str, pid: u32) {
    let st = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {signal} {pid}");
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub(crate) fn exits_within(pid: u32, timeout: Duration) -> bool {
    wait_until(timeout, || !alive(pid))
}

#[test]
fn upgrades_a_b_c_under_load_drop_nothing() {
    let fast = Backend::start("fast");
    let slow = Backend::start_with("slow", 200, SLOW);
    let echo = start_echo_after_101();
    let tls_port = free_port();
    let mut gw = Gateway::start(GatewayOpts {
        proxy_extra: format!("  ssl:\n    listen: [\"127.0.0.1:{tls_port}\"]\n"),
        // The upgraded connection stays on the first process until the end.
        extra_yaml: "shutdown_grace_seconds: 90\n".into(),
        ..Default::default()
    });
    let tls_addr = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let node = |b: &Backend| json!({ b.node(): 1 });
    gw.put(
        "/routes/fast",
        json!({"uri": "/fast/*", "upstream": {"nodes": node(&fast)}}),
    );
    gw.put(
        "/routes/slow",
        json!({"uri": "/slow", "upstream": {"nodes": node(&slow)}}),
    );
    gw.put(
        "/routes/ws",
        json!({"uri": "/ws", "enable_websocket": true, "upstream": {"nodes": {echo.to_string(): 1}}}),
    );
    let cert = issue(&[SNI], Algo::Ecdsa, false);
    gw.put(
        "/ssls/1",
        json!({"cert": cert.cert_pem, "key": cert.key_pem, "snis": [SNI]}),
    );
    assert!(
        wait_until(WAIT, || TcpStream::connect(tls_addr).is_ok()),
        "TLS listener"
    );

    let a_pid = gw.pid();
    let addr = gw.proxy_addr();
    let t = Tally::new();
    let acked = Mutex::new(Vec::new());
    let tunnel_open = AtomicBool::new(false);
    let fast_node = fast.node();
    let mut started = Started::default();
    let (b_pid, c_pid) = std::thread::scope(|s| {
        // Stops the clients however this closure ends (a failed assertion too), or the
        // scope would wait for them forever.
        let _stop = StopOnDrop(&t.stop);
        for _ in 0..2 {
            s.spawn(|| {
                keep_alive_loop(
                    &t,
                    Client::KeepAlive,
                    addr,
                    Request::get("/fast/ka"),
                    |_| true,
                )
            });
        }
        s.spawn(|| new_connection_loop(&t, addr));
        for _ in 0..2 {
            s.spawn(|| keep_alive_loop(&t, Client::Slow, addr, Request::get("/slow"), |_| true));
        }
        s.spawn(|| {
            let req = Request::new("POST", "/fast/post").body(vec![b'x'; POST_BODY]);
            keep_alive_loop(&t, Client::Post, addr, req, |r| {
                r.json()["body_len"] == json!(POST_BODY)
            })
        });
        s.spawn(|| tls_loop(&t, tls_addr));
        s.spawn(|| tunnel_loop(&t, addr, &tunnel_open));
        s.spawn(|| admin_loop(&t, &gw, &fast_node, &acked));

        // Every kind of client works before the first upgrade.
        let all_going = wait_until(WAIT, || {
            Client::ALL.iter().all(|&k| t.count(k) > 0) || !t.failures.lock().unwrap().is_empty()
        });
        let before = |k| t.count(k);
        if !all_going || !t.failures.lock().unwrap().is_empty() {
            t.stop.store(true, Ordering::SeqCst);
            return (0, 0);
        }
        assert!(tunnel_open.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_secs(3));

        // A -> B.
        let b_pid = upgrade(&gw, a_pid, "b", &mut started);
        let tunnel_at_b = before(Client::Tunnel);
        std::thread::sleep(Duration::from_secs(4));

        // B -> C: B has no long connection, so it exits once drained.
        let c_pid = upgrade(&gw, b_pid, "c", &mut started);
        assert!(
            exits_within(b_pid, Duration::from_secs(60)),
            "B drains and exits\n{}",
            read(&gw.dir_path().join("b.log"))
        );
        // The load goes on against C alone (A holds only the upgraded connection).
        let until = (t.start + LOAD).max(Instant::now() + Duration::from_secs(3));
        let admin_before = t.count(Client::AdminWrite);
        let slow_before = t.count(Client::Slow);
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            t.count(Client::AdminWrite) > admin_before,
            "C takes admin writes"
        );
        assert!(t.count(Client::Slow) > slow_before, "C proxies");
        assert!(
            t.count(Client::Tunnel) > tunnel_at_b,
            "the upgraded connection carries data after the upgrades"
        );
        t.stop.store(true, Ordering::SeqCst);
        (b_pid, c_pid)
    });

    let failures = t.failures.lock().unwrap().clone();
    let counts: Vec<String> = Client::ALL
        .iter()
        .map(|&k| format!("{k:?}={}", t.count(k)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures ({}):\n{}\n{}",
        failures.len(),
        counts.join(" "),
        failures.join("\n"),
        all_logs(&gw)
    );
    assert!(
        b_pid != 0 && c_pid != 0,
        "clients did not start: {}\n{}",
        counts.join(" "),
        all_logs(&gw)
    );
    eprintln!(
        "upgrade under load: {}; admin writes answered 503 during a handover: {}",
        counts.join(" "),
        t.refused_writes.load(Ordering::SeqCst)
    );
    assert!(
        t.start.elapsed() >= Duration::from_secs(20),
        "load ran 20 s"
    );
    // An old process accepts for 5 s after its SIGQUIT with the store handed over: some
    // of the ~50 writes of that window reach it and get its 503.
    assert!(
        t.refused_writes.load(Ordering::SeqCst) > 0,
        "the old processes answered writes with 503 after the handover"
    );
    assert!(
        a_pid != b_pid && b_pid != c_pid && a_pid != c_pid,
        "new pids"
    );

    // A drains once its last connection (the upgraded one) closed.
    assert!(
        gw.wait_exit(WAIT).is_some(),
        "A exits once its upgraded connection closed\n{}",
        all_logs(&gw)
    );
    assert!(alive(c_pid), "C serves");
    assert_eq!(gw.proxy_get("/fast/after").status, 200);

    // Every acknowledged admin write is in C's store (and running).
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() > 10, "admin writes: {}", acked.len());
    for id in &acked {
        let (status, _, body) = gw.admin("GET", &format!("/routes/{id}"), None);
        assert_eq!(status, 200, "acknowledged {id} is stored: {body}");
    }
    let last = acked.last().expect("one write").trim_start_matches('w');
    assert_eq!(gw.proxy_get(&format!("/written/{last}")).status, 200);

    kill("-TERM", c_pid);
    assert!(exits_within(c_pid, WAIT), "C stops on SIGTERM");
}

/// The drain on its own (SIGTERM takes the same path as the old process of an upgrade):
/// a request in flight finishes; a kept-alive connection that sends its next request
/// after the signal gets it answered, with `Connection: close`; an idle one is closed
/// cleanly (end of stream, no reset); then the process exits.
#[test]
fn draining_answers_kept_alive_requests_and_closes_idle_connections() {
    let fast = Backend::start("fast");
    let slow = Backend::start_with("slow", 200, Duration::from_millis(1500));
    let mut gw = Gateway::start_default();
    gw.put(
        "/routes/fast",
        json!({"uri": "/fast", "upstream": {"nodes": {fast.node(): 1}}}),
    );
    gw.put(
        "/routes/slow",
        json!({"uri": "/slow", "upstream": {"nodes": {slow.node(): 1}}}),
    );
    let addr = gw.proxy_addr();

    let mut busy = Conn::new(addr);
    let first = busy.send(&Request::get("/fast")).expect("first request");
    assert_eq!(first.status, 200);
    assert!(!first.wants_close(), "kept alive before the drain");
    let mut idle = BufReader::new(TcpStream::connect(addr).expect("connect"));
    idle.get_mut()
        .write_all(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let r = http::read_one(&mut idle).expect("idle connection's request");
    assert_eq!(r.status, 200);
    let in_flight = std::thread::spawn(move || http::send(addr, &Request::get("/slow")));
    assert!(
        wait_until(WAIT, || slow.hits() == 1),
        "slow request in flight"
    );

    kill("-TERM", gw.pid());
    assert!(
        wait_until(WAIT, || gw
            .logs()
            .contains("shutting down: no new connections")),
        "the drain begins"
    );
    let after = busy
        .send(&Request::get("/fast"))
        .expect("answered after the signal");
    assert_eq!(after.status, 200);
    assert!(after.wants_close(), "{:?}", after.headers);

    idle.get_mut()
        .set_read_timeout(Some(WAIT))
        .expect("read timeout");
    let mut rest = Vec::new();
    let end = idle.read_to_end(&mut rest);
    assert!(
        matches!(end, Ok(0)),
        "the idle connection ends cleanly: {end:?} {rest:?}"
    );
    let slow_answer = in_flight.join().expect("join").expect("slow request");
    assert_eq!(slow_answer.status, 200, "the request in flight finishes");
    assert!(gw.wait_exit(WAIT).is_some(), "exits once drained");
}

/// `config_provider: yaml` (no store to hand over; the new process creates data_dir for
/// the upgrade socket): an upgrade under keep-alive and one-connection-per-request load
/// drops nothing, and the new process follows the file.
#[test]
fn a_yaml_provider_upgrade_drops_nothing() {
    let fast = Backend::start("fast");
    let other = Backend::start("other");
    let yaml = |b: &Backend| {
        format!(
            "routes:\n  - id: r\n    uri: /fast/*\n    upstream:\n      nodes:\n        \"{}\": 1\n#END\n",
            b.node()
        )
    };
    let mut gw = Gateway::start(GatewayOpts {
        yaml_provider: Some(yaml(&fast)),
        ..Default::default()
    });
    assert!(!gw.data_dir.exists(), "the yaml provider makes no data_dir");
    let addr = gw.proxy_addr();
    let a_pid = gw.pid();
    let t = Tally::new();
    let mut started = Started::default();
    let b_pid = std::thread::scope(|s| {
        let _stop = StopOnDrop(&t.stop);
        for _ in 0..2 {
            s.spawn(|| {
                keep_alive_loop(
                    &t,
                    Client::KeepAlive,
                    addr,
                    Request::get("/fast/ka"),
                    |_| true,
                )
            });
        }
        s.spawn(|| new_connection_loop(&t, addr));
        assert!(wait_until(WAIT, || t.count(Client::KeepAlive) > 0
            && t.count(Client::NewConnection) > 0));
        let b_pid = upgrade(&gw, a_pid, "b", &mut started);
        assert!(
            gw.wait_exit(Duration::from_secs(60)).is_some(),
            "A drains and exits\n{}",
            all_logs(&gw)
        );
        let after = t.count(Client::KeepAlive);
        assert!(
            wait_until(WAIT, || t.count(Client::KeepAlive) > after + 100),
            "B serves"
        );
        b_pid
    });
    let failures = t.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        all_logs(&gw)
    );
    assert_ne!(a_pid, b_pid);
    gw.write_yaml_config(&yaml(&other));
    let switched = wait_until(WAIT, || {
        gw.proxy_get("/fast/x").backend().as_deref() == Some("other")
    });
    assert!(switched, "B follows the yaml file\n{}", all_logs(&gw));
    kill("-TERM", b_pid);
    assert!(exits_within(b_pid, WAIT), "B stops on SIGTERM");
}
