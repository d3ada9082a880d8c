//! The access log (issue 16): the default combined-style line and the JSON format
//! parsed field by field, `SIGUSR1` reopening after a rename, and 499 for a client that
//! goes away before a slow backend answers.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::prom;
use crate::support::*;

fn access_log_path(gw: &Gateway) -> PathBuf {
    gw.dir_path().join("logs").join("access.log")
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits for a line containing `marker` in the file and returns it.
fn wait_line(path: &Path, marker: &str) -> String {
    wait_for(
        WAIT,
        &format!("a line with {marker} in {}", path.display()),
        || read_lines(path).into_iter().find(|l| l.contains(marker)),
    )
}

/// Splits a combined-style line into its fields: `"..."` and `[...]` are one field each.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        rest = rest.trim_start_matches(' ');
        let (field, tail) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').expect("closing quote");
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').expect("closing bracket");
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        out.push(field.to_owned());
        rest = tail;
    }
    out
}

fn kill(signal: &str, pid: u32) {
    let st = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill {signal} {pid}");
}

#[test]
fn default_format_is_the_combined_line_field_by_field() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/services/s1",
        json!({"upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.put(
        "/routes/r1",
        json!({"uri": "/logged/*", "service_id": "s1"}),
    );
    gw.sync();

    let marker = random_string(10);
    let r = gw.proxy_req(
        Request::get(&format!("/logged/{marker}?q=1"))
            .header("User-Agent", "agent \"quoted\"")
            .header("Referer", "http://ref.example/"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let line = wait_line(&access_log_path(&gw), &marker);
    let f = fields(&line);
    assert_eq!(f.len(), 15, "{line}\n{f:?}");
    assert_eq!(f[0], "127.0.0.1", "remote_addr: {line}");
    assert_eq!(f[1], "-", "{line}");
    assert_eq!(f[2], "-", "remote_user: {line}");
    assert!(
        f[3].ends_with(" +0000") && f[3].len() == 26,
        "time_local: {line}"
    );
    assert_eq!(
        f[4],
        format!("127.0.0.1:{}", gw.proxy_port),
        "http_host: {line}"
    );
    assert_eq!(
        f[5],
        format!("GET /logged/{marker}?q=1 HTTP/1.1"),
        "request: {line}"
    );
    assert_eq!(f[6], "200", "status: {line}");
    assert_eq!(f[7], r.body.len().to_string(), "body_bytes_sent: {line}");
    let t: f64 = f[8].parse().expect("request_time is seconds");
    assert!((0.0..30.0).contains(&t) && f[8].contains('.'), "{line}");
    assert_eq!(f[9], "http://ref.example/", "http_referer: {line}");
    assert_eq!(
        f[10], "agent \\x22quoted\\x22",
        "escaped user agent: {line}"
    );
    assert_eq!(f[11], b.node(), "upstream_addr: {line}");
    assert_eq!(f[12], "200", "upstream_status: {line}");
    let ut: f64 = f[13].parse().expect("upstream_response_time is seconds");
    assert!(ut <= t + 0.001, "{line}");
    assert_eq!(
        f[14],
        format!("http://127.0.0.1:{}/logged/{marker}?q=1", gw.proxy_port),
        "upstream url: {line}"
    );

    // No route: no upstream fields.
    let r = gw.proxy_get(&format!("/none-{marker}"));
    assert_eq!(r.status, 404);
    let line = wait_line(&access_log_path(&gw), &format!("/none-{marker}"));
    let f = fields(&line);
    assert_eq!(
        (f[6].as_str(), f[11].as_str(), f[12].as_str()),
        ("404", "-", "-"),
        "{line}"
    );
}

#[test]
fn json_format_writes_one_object_per_line_with_the_same_fields() {
    let gw = Gateway::start(GatewayOpts {
        extra_yaml: concat!(
            "log:\n  access:\n    path: stdout\n    json: true\n",
            "    format: \"$remote_addr [$time_iso8601] $request_method $uri $arg_q $http_x_tag $status $body_bytes_sent $request_time $upstream_addr $upstream_status $route_id $service_id $consumer_name $request_id\"\n"
        )
        .to_owned(),
        ..Default::default()
    });
    let b = Backend::start("b");
    gw.put(
        "/services/s1",
        json!({"upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.put(
        "/routes/r1",
        json!({"uri": "/j/*", "service_id": "s1", "plugins": {"request-id": {}}}),
    );
    gw.sync();
    let marker = random_string(10);
    let r = gw.proxy_req(Request::get(&format!("/j/{marker}?q=v1")).header("X-Tag", "t1"));
    assert_eq!(r.status, 200, "{r:?}");
    let request_id = r
        .header("x-request-id")
        .expect("request-id plugin")
        .to_owned();

    let line = wait_for(WAIT, "the JSON access line on stdout", || {
        gw.logs()
            .lines()
            .find(|l| l.starts_with('{') && l.contains(&marker))
            .map(str::to_owned)
    });
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let obj = v.as_object().expect("object");
    assert_eq!(obj.len(), 15, "one member per variable: {line}");
    assert_eq!(v["remote_addr"], "127.0.0.1");
    assert!(
        v["time_iso8601"].as_str().unwrap().ends_with("+00:00"),
        "{line}"
    );
    assert_eq!(v["request_method"], "GET");
    assert_eq!(v["uri"], format!("/j/{marker}"));
    assert_eq!(v["arg_q"], "v1");
    assert_eq!(v["http_x_tag"], "t1");
    assert_eq!(v["status"], 200);
    assert_eq!(v["body_bytes_sent"], r.body.len());
    assert!(v["request_time"].as_f64().is_some(), "{line}");
    assert_eq!(v["upstream_addr"], b.node());
    assert_eq!(v["upstream_status"], 200);
    assert_eq!(v["route_id"], "r1");
    assert_eq!(v["service_id"], "s1");
    assert_eq!(v["consumer_name"], Value::Null, "no consumers yet");
    assert_eq!(v["request_id"], request_id.as_str());
    assert!(
        !access_log_path(&gw).exists(),
        "path: stdout writes no file"
    );
}

#[test]
fn usr1_reopens_the_access_log_after_a_rename() {
    let gw = Gateway::start_default();
    let b = Backend::start("b");
    gw.put(
        "/routes/r1",
        json!({"uri": "/*", "upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.sync();
    let path = access_log_path(&gw);
    let rotated = path.with_extension("log.1");

    assert_eq!(gw.proxy_get("/before-rename").status, 200);
    wait_line(&path, "/before-rename");
    std::fs::rename(&path, &rotated).expect("rename the log");
    // Until the signal the writer keeps its open file: the renamed one.
    assert_eq!(gw.proxy_get("/after-rename").status, 200);
    wait_line(&rotated, "/after-rename");

    kill("-USR1", gw.pid());
    assert!(
        wait_until(WAIT, || path.exists()),
        "SIGUSR1 creates a new access.log\n{}",
        gw.logs()
    );
    assert_eq!(gw.proxy_get("/after-reopen").status, 200);
    wait_line(&path, "/after-reopen");
    let old = read_lines(&rotated);
    assert!(!old.iter().any(|l| l.contains("/after-reopen")), "{old:?}");
    assert!(!read_lines(&path).iter().any(|l| l.contains("rename")));
    assert!(gw.logs().contains("reopen"), "the reopen is logged");
}

#[test]
fn client_gone_before_a_slow_backend_answers_is_499_not_an_error() {
    let gw = Gateway::start_default();
    let b = Backend::start_with("slow", 200, std::time::Duration::from_secs(3));
    gw.put(
        "/routes/slow",
        json!({"uri": "/slow", "upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.sync();

    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(gw.proxy_addr()).expect("connect");
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        assert!(
            wait_until(WAIT, || b.hits() == 1),
            "the request reached the backend"
        );
    } // closed here, before the backend answers

    let line = wait_line(&access_log_path(&gw), "GET /slow");
    assert_eq!(fields(&line)[6], "499", "{line}");
    assert!(
        wait_until(WAIT, || {
            let s = prom::parse(&gw.metrics_text()).expect("metrics parse");
            prom::sum(
                &s,
                "portico_http_requests_total",
                &[("route", "slow"), ("code", "499")],
            ) == 1.0
        }),
        "code=\"499\" in the metrics\n{}",
        gw.metrics_text()
    );
    let logs = gw.logs();
    assert!(
        // (gw.sync's probe route points at a closed port: its line is not about this.)
        !logs
            .lines()
            .any(|l| l.contains("ERROR") && !l.contains("upstream unreachable")),
        "a client going away is not an ERROR:\n{logs}"
    );
    assert!(!gw.metrics_text().contains("code=\"0\""));
}

#[test]
fn error_log_can_be_json_lines() {
    let gw = Gateway::start(GatewayOpts {
        extra_yaml: "log:\n  json: true\n".to_owned(),
        ..Default::default()
    });
    let logs = gw.logs();
    let entries: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = entries
        .iter()
        .find(|v| v["message"].as_str().is_some_and(|m| m.contains("started")))
        .unwrap_or_else(|| panic!("a JSON `started` entry:\n{logs}"));
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["target"], "portico::server");
    assert!(started["version"].is_u64(), "fields are members: {started}");
    assert!(started["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(
        !logs.lines().any(|l| l.contains(" INFO ")),
        "no text lines:\n{logs}"
    );
}

/// A writer that cannot write (a pipe nobody reads, standing for a stalled disk) never
/// slows requests down: lines beyond `buffer_lines` are dropped and counted.
#[test]
fn a_stalled_log_never_blocks_requests_and_drops_are_counted() {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = TempDir::new("portico-fifo");
    let fifo = dir.path().join("access.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(st.success());
    // A reader that never reads: the pipe fills up (64 KiB) and the writer blocks.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK: opening does not wait for a writer
        .open(&fifo)
        .expect("open fifo for reading");
    let gw = Gateway::start(GatewayOpts {
        extra_yaml: format!(
            "log:\n  access:\n    path: \"{}\"\n    buffer_lines: 4\n",
            fifo.display()
        ),
        ..Default::default()
    });
    let b = Backend::start("b");
    gw.put(
        "/routes/r",
        json!({"uri": "/r/*", "upstream": {"nodes": {b.node(): 1}}}),
    );
    gw.sync();

    let long = "x".repeat(2000);
    let started = std::time::Instant::now();
    let mut conn = gw.proxy_conn();
    for i in 0..200 {
        let r = conn
            .send(&Request::get(&format!("/r/{i}/{long}")))
            .expect("request");
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(
        started.elapsed() < WAIT,
        "200 requests with a stalled log took {:?}",
        started.elapsed()
    );
    let s = prom::parse(&gw.metrics_text()).expect("metrics parse");
    let dropped = prom::sum(&s, "portico_access_log_dropped_total", &[]);
    // 64 KiB of pipe and the writer's buffer hold at most ~70 lines of 2 KB, 4 wait.
    assert!(dropped >= 100.0, "dropped {dropped}\n{}", gw.metrics_text());
}
