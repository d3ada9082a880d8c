//! `resty.http` against a real HTTP/1.1 server on 127.0.0.1, through `require` in a
//! sandboxed VM, the way plugin code runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde_json::{json, Value as J};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use super::parse_uri;
use crate::lua::{
    compile, CallOutcome, ConnVars, LuaFailure, LuaLimits, LuaRequest, LuaVm, SharedDicts,
    SharedRequest,
};

/// The CPU budget is wall-clock time: generous here, so a loaded machine cannot trip it
/// (these tests are about HTTP, not the budget).
fn vm() -> LuaVm {
    let limits = LuaLimits {
        max_slice: Duration::from_secs(2),
        max_memory: 128 * 1024 * 1024,
        max_pending_timers: 1024,
    };
    LuaVm::new(limits, (0, 1), &SharedDicts::default()).unwrap()
}

fn req() -> SharedRequest {
    LuaRequest::new(
        "GET".into(),
        "/".into(),
        None,
        HeaderMap::new(),
        ConnVars::default(),
    )
    .shared()
}

/// Runs `body` (Lua statements; `http` is the module, `base` the server's URL) as a
/// plugin function; it must `return 200, {...}`. Returns the table as JSON.
async fn run(vm: &LuaVm, base: &str, body: &str) -> J {
    let src = format!(
        "return function(conf, ctx)\n local http = require 'resty.http'\n local base = '{base}'\n{body}\nend"
    );
    let f = compile("resty_http_test", &src, None).unwrap();
    match vm.call(&f, &req()).await {
        Ok(CallOutcome::Respond {
            status: 200,
            body: Some(b),
        }) => serde_json::from_slice(&b).unwrap(),
        other => panic!("unexpected outcome {other:?}"),
    }
}

struct Server {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl Server {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A small HTTP/1.1 server with keep-alive: `/echo` answers the request as JSON,
/// `/chunked`, `/close` (close-delimited), `/multi` (repeated headers), `/slow?ms=N`,
/// `/hang`, `/big` (declares 17 MiB), `/bigchunked` (streams 17 MiB).
async fn server() -> Server {
    start_server(None).await
}

/// A self-signed certificate for localhost and 127.0.0.1 (valid until 2126).
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBmjCCAUGgAwIBAgIUdtTdgY9Bb/Ki+sHiKC389/LzR18wCgYIKoZIzj0EAwIw\nFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjEzMDA0NFoYDzIxMjYxMDI5\nMTMwMDQ0WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO\nPQMBBwNCAATgAmr0j9zRAR4NAeciYOSJJfvtp4T51KMe9Bs7sC+AddpchYmVfllc\nKgQDFPh3aYbdU119yTpzPRXJzsrvmUV0o28wbTAdBgNVHQ4EFgQUvV5XtS1QAWsX\noUwGQ9iOHuncQ/kwHwYDVR0jBBgwFoAUvV5XtS1QAWsXoUwGQ9iOHuncQ/kwDwYD\nVR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI\nzj0EAwIDRwAwRAIgZeP4wCkNs0U/EXJufvcgJ4m8C54n+C8pnuPWCnGq00YCIE/9\n7oDPGM7fhi5I19e1maFjIRZiOZjWXvS5dCm/1iuL\n-----END CERTIFICATE-----";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgkkF45Z/8jY9K0mO7\noRD7PlRlLbkTtDKILcUHxhYrZhihRANCAATgAmr0j9zRAR4NAeciYOSJJfvtp4T5\n1KMe9Bs7sC+AddpchYmVfllcKgQDFPh3aYbdU119yTpzPRXJzsrvmUV0\n-----END PRIVATE KEY-----";

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// The same server behind TLS.
async fn tls_server() -> Server {
    use pingora_core::tls::{CertificateDer, PrivateKeyDer, ServerConfig, TlsAcceptor};
    pingora_core::tls::install_default_crypto_provider();
    let cert = CertificateDer::from(pem_der(CERT_PEM));
    let key = PrivateKeyDer::try_from(pem_der(KEY_PEM)).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    start_server(Some(TlsAcceptor::from(Arc::new(config)))).await
}

async fn start_server(tls: Option<pingora_core::tls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            match &tls {
                None => {
                    tokio::spawn(serve(s));
                }
                Some(acceptor) => {
                    let accept = acceptor.accept(s);
                    tokio::spawn(async move {
                        if let Ok(s) = accept.await {
                            serve(s).await;
                        }
                    });
                }
            }
        }
    });
    Server { addr, conns }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let head_end = loop {
            if buf.first() == Some(&0x16) {
                // A TLS ClientHello on the plain port.
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
                return;
            }
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let mut tmp = [0u8; 8192];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let mut headers = serde_json::Map::new();
        for line in lines {
            let (k, v) = line.split_once(':').unwrap();
            let (k, v) = (k.trim().to_ascii_lowercase(), J::from(v.trim()));
            match headers.get_mut(&k) {
                Some(J::Array(a)) => a.push(v),
                Some(prev) => *prev = J::Array(vec![prev.clone(), v]),
                None => {
                    headers.insert(k, v);
                }
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.as_str())
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + len {
            let mut tmp = [0u8; 8192];
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
        buf.drain(..head_end + 4 + len);
        let close = headers.get("connection").and_then(|v| v.as_str()) == Some("close");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let plain = |body: &str, extra: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                body.len()
            )
        };
        let ok = match path.as_str() {
            "/echo" => {
                let echo = json!({"method": method, "path": path, "query": query,
                    "headers": headers, "body": body})
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{echo}",
                    echo.len()
                );
                s.write_all(resp.as_bytes()).await.is_ok()
            }
            "/chunked" => {
                let mut ok = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n7\r\nhello, \r\n")
                    .await
                    .is_ok();
                tokio::time::sleep(Duration::from_millis(10)).await;
                ok &= s.write_all(b"D\r\nchunked world\r\n").await.is_ok();
                tokio::time::sleep(Duration::from_millis(10)).await;
                ok &= s.write_all(b"0\r\n\r\n").await.is_ok();
                ok
            }
            "/close" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                    .await;
                return;
            }
            "/multi" => s
                .write_all(
                    plain(
                        "m",
                        "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Mixed-Case: yes\r\n",
                    )
                    .as_bytes(),
                )
                .await
                .is_ok(),
            "/slow" => {
                let ms: u64 = query.trim_start_matches("ms=").parse().unwrap_or(200);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                s.write_all(plain("slow", "").as_bytes()).await.is_ok()
            }
            "/hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            "/big" => {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 17825792\r\n\r\nxx")
                    .await;
                return;
            }
            "/bigchunked" => {
                if s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let chunk = vec![b'x'; 1 << 20];
                for _ in 0..17 {
                    if s.write_all(b"100000\r\n").await.is_err()
                        || s.write_all(&chunk).await.is_err()
                        || s.write_all(b"\r\n").await.is_err()
                    {
                        return;
                    }
                }
                let _ = s.write_all(b"0\r\n\r\n").await;
                true
            }
            _ => s
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await
                .is_ok(),
        };
        if !ok || close {
            return;
        }
    }
}

#[tokio::test]
async fn get_with_query_and_headers() {
    let srv = server().await;
    let vm = vm();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local httpc = http.new()
        local res, err = httpc:request_uri(base .. "/echo?x=1", {
            query = {a = 1, b = "two words"},
            headers = {["X-Test"] = "yes", ["X-Multi"] = {"a", "b"}},
        })
        if not res then return 200, {err = err} end
        return 200, {status = res.status, reason = res.reason, body = res.body,
            ct = res.headers["Content-Type"], ct2 = res.headers.content_type_missing,
            ct3 = res.headers["content-type"]}
        "#,
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    assert_eq!(out["reason"], "OK");
    assert_eq!(out["ct"], "application/json");
    assert_eq!(out["ct3"], "application/json");
    let echo: J = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/echo");
    assert_eq!(echo["query"], "x=1&a=1&b=two%20words");
    let h = &echo["headers"];
    assert_eq!(h["host"], srv.addr.to_string());
    assert_eq!(h["user-agent"], "portico-resty-http");
    assert_eq!(h["x-test"], "yes");
    assert_eq!(h["x-multi"], json!(["a", "b"]));
    assert!(h.get("content-length").is_none(), "{h}");
}

#[tokio::test]
async fn post_with_body_and_query_string() {
    let srv = server().await;
    let vm = vm();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local httpc = http.new()
        local res, err = httpc:request_uri(base .. "/echo", {
            method = "POST", body = "hello=world", query = "?q=1",
            headers = {["Content-Type"] = "application/x-www-form-urlencoded",
                       Host = "example.test"},
        })
        local res2 = httpc:request_uri(base .. "/echo", {method = "PUT", body = {"a", "b", 3}})
        local res3 = httpc:request_uri(base .. "/echo", {method = "POST"})
        return 200, {err = err, body = res.body, body2 = res2.body, body3 = res3.body}
        "#,
    )
    .await;
    let echo: J = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(echo["body"], "hello=world");
    assert_eq!(echo["headers"]["content-length"], "11");
    assert_eq!(echo["headers"]["host"], "example.test");
    assert_eq!(
        echo["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    let echo2: J = serde_json::from_str(out["body2"].as_str().unwrap()).unwrap();
    assert_eq!(echo2["method"], "PUT");
    assert_eq!(echo2["body"], "ab3");
    let echo3: J = serde_json::from_str(out["body3"].as_str().unwrap()).unwrap();
    assert_eq!(echo3["headers"]["content-length"], "0");
}

#[tokio::test]
async fn chunked_close_delimited_and_repeated_headers() {
    let srv = server().await;
    let vm = vm();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local httpc = http.new()
        local c = assert(httpc:request_uri(base .. "/chunked"))
        local d = assert(httpc:request_uri(base .. "/close"))
        local m = assert(httpc:request_uri(base .. "/multi"))
        local n = assert(httpc:request_uri(base .. "/nothing"))
        m.headers["X-New"] = "v"
        return 200, {chunked = c.body, te = c.headers["Transfer-Encoding"],
            close = d.body, cookies = m.headers["Set-Cookie"], mixed = m.headers["X-MIXED-CASE"],
            new = rawget(m.headers, "x-new"), status404 = n.status, reason404 = n.reason,
            body404 = n.body}
        "#,
    )
    .await;
    assert_eq!(out["chunked"], "hello, chunked world", "{out}");
    assert_eq!(out["te"], "chunked");
    assert_eq!(out["close"], "until the end");
    assert_eq!(out["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(out["mixed"], "yes");
    assert_eq!(out["new"], "v");
    assert_eq!(out["status404"], 404);
    assert_eq!(out["reason404"], "Not Found");
    assert_eq!(out["body404"], "");
}

#[tokio::test]
async fn connection_refused_is_nil_err() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let vm = vm();
    let out = run(
        &vm,
        &format!("http://127.0.0.1:{port}"),
        r#"
        local res, err = http.new():request_uri(base .. "/")
        return 200, {res = res == nil, err = err}
        "#,
    )
    .await;
    assert_eq!(out, json!({"res": true, "err": "connection refused"}));
}

#[tokio::test]
async fn read_timeout_is_nil_timeout() {
    let srv = server().await;
    let vm = vm();
    let start = Instant::now();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local httpc = http.new()
        httpc:set_timeout(150)
        local res, err = httpc:request_uri(base .. "/hang")
        local httpc2 = http.new()
        httpc2:set_timeouts(1000, 1000, 100)
        local res2, err2 = httpc2:request_uri(base .. "/slow?ms=400")
        return 200, {res = res == nil, err = err, res2 = res2 == nil, err2 = err2}
        "#,
    )
    .await;
    assert_eq!(
        out,
        json!({"res": true, "err": "timeout", "res2": true, "err2": "timeout"})
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn keepalive_reuses_one_connection() {
    let srv = server().await;
    let vm = vm();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local codes = {}
        for i = 1, 3 do
            local res, err = http.new():request_uri(base .. "/echo", {method = i == 2 and "POST" or "GET", body = i == 2 and "x" or nil})
            codes[i] = res and res.status or err
        end
        local c = assert(http.new():request_uri(base .. "/chunked"))
        codes[4] = c.status
        return 200, codes
        "#,
    )
    .await;
    assert_eq!(out, json!([200, 200, 200, 200]));
    assert_eq!(srv.conns.load(Ordering::SeqCst), 1);

    // `keepalive = false` closes it (Connection: close), so the next call reconnects.
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local a = assert(http.new():request_uri(base .. "/echo", {keepalive = false}))
        local b = assert(http.new():request_uri(base .. "/echo"))
        return 200, {a.status, b.status, a.body}
        "#,
    )
    .await;
    let echo: J = serde_json::from_str(out[2].as_str().unwrap()).unwrap();
    assert_eq!(echo["headers"]["connection"], "close");
    assert_eq!(srv.conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn requests_do_not_block_the_worker_thread() {
    // #[tokio::test] is a current-thread runtime: the server, both Lua calls and the
    // client I/O share one thread.
    let srv = server().await;
    let vm = vm();
    let src = format!(
        "return function()\n local http = require 'resty.http'\n local res, err = http.new():request_uri('{}/slow?ms=500')\n return 200, {{status = res and res.status, err = err}}\nend",
        srv.base()
    );
    let f = compile("concurrent", &src, None).unwrap();
    // Warm up: the first request in the process builds the connector (loads CA certs).
    vm.call(&f, &req()).await.unwrap();
    let (r1, r2) = (req(), req());
    let start = Instant::now();
    let (a, b) = tokio::join!(vm.call(&f, &r1), vm.call(&f, &r2));
    let elapsed = start.elapsed();
    for out in [a, b] {
        match out {
            Ok(CallOutcome::Respond {
                status: 200,
                body: Some(b),
            }) => {
                let v: J = serde_json::from_slice(&b).unwrap();
                assert_eq!(v["status"], 200, "{v}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Serialised they would take at least 1 s; the margin absorbs a loaded machine.
    assert!(
        elapsed >= Duration::from_millis(495) && elapsed < Duration::from_millis(900),
        "two 500 ms requests took {elapsed:?}"
    );
}

#[tokio::test]
async fn sync_phases_get_a_clear_error() {
    let srv = server().await;
    let vm = vm();
    let src = format!(
        "return function()\n local http = require 'resty.http'\n local res, err = http.new():request_uri('{}/echo')\nend",
        srv.base()
    );
    let f = compile("header_filter", &src, None).unwrap();
    match vm.call_sync(&f, &req()) {
        Err(LuaFailure::Error(m)) => assert!(m.contains("cannot yield"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Nothing was sent.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(srv.conns.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn works_under_pcall_and_reports_unsupported_api() {
    let srv = server().await;
    let vm = vm();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local httpc = http.new()
        local ok, res = pcall(httpc.request_uri, httpc, base .. "/echo")
        local ok2, err2 = pcall(function() return httpc:connect("127.0.0.1", 80) end)
        local ok3, err3 = pcall(function() return httpc:set_timeout("soon") end)
        return 200, {ok = ok, status = res.status, ok2 = ok2, err2 = err2, ok3 = ok3,
            err3 = err3, ka = httpc:set_keepalive(), close = httpc:close(),
            same = require("resty.http") == http}
        "#,
    )
    .await;
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["status"], 200);
    assert_eq!(out["ok2"], false);
    assert!(
        out["err2"]
            .as_str()
            .unwrap()
            .contains("httpc:connect() is not supported"),
        "{out}"
    );
    assert_eq!(out["ok3"], false);
    assert!(
        out["err3"].as_str().unwrap().contains("bad timeout"),
        "{out}"
    );
    assert_eq!(out["ka"], 1);
    assert_eq!(out["close"], 1);
    assert_eq!(out["same"], true);
}

#[tokio::test]
async fn oversized_bodies_and_bad_targets_fail_softly() {
    let srv = server().await;
    let vm = vm();
    let out = run(
        &vm,
        &srv.base(),
        r#"
        local httpc = http.new()
        httpc:set_timeout(3000)
        local _, e1 = httpc:request_uri(base .. "/big")
        local _, e2 = httpc:request_uri(base .. "/bigchunked")
        local _, e3 = httpc:request_uri("ftp://example.com/")
        local _, e4 = httpc:request_uri("http://no-such-host.invalid/")
        local _, e5 = httpc:request_uri("https://" .. base:sub(8) .. "/echo")
        local ok = httpc:request_uri(base .. "/echo")
        return 200, {e1 = e1, e2 = e2, e3 = e3, e4 = e4, e5 = e5, after = ok.status}
        "#,
    )
    .await;
    assert_eq!(out["e1"], "response body too large", "{out}");
    assert_eq!(out["e2"], "response body too large");
    assert_eq!(out["e3"], "bad uri: ftp://example.com/");
    assert!(
        out["e4"]
            .as_str()
            .unwrap()
            .starts_with("no-such-host.invalid could not be resolved"),
        "{out}"
    );
    // TLS to a plain-HTTP server.
    assert!(
        out["e5"].as_str().unwrap().starts_with("handshake failed"),
        "{out}"
    );
    assert_eq!(out["after"], 200);
}

#[test]
fn parses_uris_like_lua_resty_http() {
    let u = parse_uri("https://Example.com:8443/a/b?x=1#frag").unwrap();
    assert!(u.tls);
    assert_eq!(
        (u.host.as_str(), u.port, u.path.as_str(), u.query.as_deref()),
        ("Example.com", 8443, "/a/b", Some("x=1"))
    );
    let u = parse_uri("http://h").unwrap();
    assert_eq!((u.port, u.path.as_str(), u.query), (80, "/", None));
    let u = parse_uri("HTTPS://[::1]/p").unwrap();
    assert_eq!((u.host.as_str(), u.port), ("::1", 443));
    let u = parse_uri("http://[::1]:81?q").unwrap();
    assert_eq!(
        (u.port, u.path.as_str(), u.query.as_deref()),
        (81, "/", Some("q"))
    );
    let u = parse_uri("http://user:p%40ss@h:1/").unwrap();
    assert_eq!(u.userinfo.as_deref(), Some("user:p%40ss"));
    assert_eq!(u.host, "h");
    for bad in [
        "example.com",
        "ftp://x/",
        "http://",
        "http://:80/",
        "http://h:0/",
        "http://h:99999/",
        "http://h:x/",
        "http://[zz]/",
        "http://[::1]x/",
        "http://h/a b",
    ] {
        assert_eq!(parse_uri(bad), Err(format!("bad uri: {bad}")), "{bad}");
    }
}

#[tokio::test]
async fn https_with_and_without_verification() {
    let srv = tls_server().await;
    let base = format!("https://{}", srv.addr);
    let vm = vm();
    let out = run(
        &vm,
        &base,
        r#"
        local httpc = http.new()
        local res, err = httpc:request_uri(base .. "/echo?a=1", {ssl_verify = false})
        local res2, err2 = httpc:request_uri(base .. "/chunked", {ssl_verify = false})
        local res3, err3 = httpc:request_uri(base .. "/echo")
        return 200, {status = res and res.status, err = err, body = res and res.body,
            chunked = res2 and res2.body, err2 = err2, res3 = res3 == nil, err3 = err3}
        "#,
    )
    .await;
    assert_eq!(out["status"], 200, "{out}");
    let echo: J = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["query"], "a=1");
    assert_eq!(echo["headers"]["host"], srv.addr.to_string());
    assert_eq!(out["chunked"], "hello, chunked world");
    // The self-signed certificate is not trusted when verification is on.
    assert_eq!(out["res3"], true);
    assert!(
        out["err3"]
            .as_str()
            .unwrap()
            .starts_with("handshake failed (invalid peer certificate"),
        "{out}"
    );
    // Two unverified requests shared one TLS connection; the verified one made its own.
    assert_eq!(srv.conns.load(Ordering::SeqCst), 2);
}
