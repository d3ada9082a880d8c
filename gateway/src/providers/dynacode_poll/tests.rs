use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use rand::SeedableRng;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::store::{DiskStore, StoreDeps};

/// What the mock server answers.
#[derive(Clone)]
enum Mode {
    /// The document, with an optional ETag (304 when `If-None-Match` matches).
    Doc { body: String, etag: Option<String> },
    /// A bare status with a text body.
    Status(u16),
    /// Closes every connection without answering.
    Down,
    /// Accepts and never answers.
    Hang,
}

struct Mock {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Request heads received (lowercased header names).
    requests: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Mock {
    async fn start(mode: Mode) -> Mock {
        Mock::start_inner(mode, None).await
    }

    /// Over TLS with the `localhost` / `127.0.0.1` test certificate.
    async fn start_tls(mode: Mode) -> Mock {
        Mock::start_inner(mode, Some(())).await
    }

    async fn start_inner(mode: Mode, tls: Option<()>) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (Arc::clone(&mode), Arc::clone(&requests));
        let tls = tls.map(tls_acceptor);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (m, r) = (Arc::clone(&m), Arc::clone(&r));
                match &tls {
                    None => {
                        tokio::spawn(serve(conn, m, r));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        tokio::spawn(async move {
                            if let Ok(conn) = acceptor.accept(conn).await {
                                serve(conn, m, r).await;
                            }
                        });
                    }
                }
            }
        });
        Mock {
            addr,
            mode,
            requests,
            accept,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock() = mode;
    }

    fn last_request(&self) -> BTreeMap<String, String> {
        self.requests.lock().last().cloned().unwrap()
    }

    /// Stops listening (connection refused from now on) and closes kept-alive
    /// connections.
    fn shut(&self) {
        self.set(Mode::Down);
        self.accept.abort();
    }
}

/// One connection: keep-alive HTTP/1.1, GET only.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut conn: S,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let mut headers = BTreeMap::new();
        let mut lines = head.split("\r\n");
        headers.insert(
            ":request".to_string(),
            lines.next().unwrap_or("").to_string(),
        );
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let mode = mode.lock().clone();
        let response = match mode {
            Mode::Down => return,
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Mode::Status(code) => format!(
                "HTTP/1.1 {code} Oops\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\noops"
            ),
            Mode::Doc { body, etag } => match &etag {
                Some(tag) if headers.get("if-none-match") == Some(tag) => format!(
                    "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\n\r\n"
                ),
                _ => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{body}",
                    etag.map(|t| format!("ETag: {t}\r\n")).unwrap_or_default(),
                    body.len()
                ),
            },
        };
        requests.lock().push(headers);
        if conn.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A test CA (not in any system store) and a `localhost` / `127.0.0.1` certificate
/// it signed (100 years).
const TEST_CA: &str = r"-----BEGIN CERTIFICATE-----
MIIDJzCCAg+gAwIBAgIUfcvVmOqpx5rbrML4uspqk4ZF+1MwDQYJKoZIhvcNAQEL
BQAwGjEYMBYGA1UEAwwPUG9ydGljbyB0ZXN0IENBMCAXDTI2MTEyMjEzMzEzMVoY
DzIxMjYxMDI5MTMzMTMxWjAaMRgwFgYDVQQDDA9Qb3J0aWNvIHRlc3QgQ0EwggEi
MA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDDoZEZD0W7J9OuCA0rHBj3lQrI
iA5/GGQGXWVW4es53T80tfm31vcGPhuRHPjK0obxh5YdVQNViID5zevXGJKQbc92
s46EOPUJlOHEmD1vRpMKSYo2Ua7yAAPbimvqHYHYXgqwDRwT1M3wxgrqpL58tGH8
p/Vpbgc0lWg6ms6Ba4ko/vdpCEiAh3NiPxpOPcVWUwc6oBX+gsuctuumEbXSuPqn
M5xGQPONukEMJ3AqxH6++5EN2H1AusU5SCFhIGmKSaSihlAqmBVNjPsTeuhkvDay
jzpgSNq32JPUihzfbYJRKEZ1SFnMQDU/SdnLkmB14rpIoOCih042iq0fQK7XAgMB
AAGjYzBhMB0GA1UdDgQWBBQWIBt0abFcVNnsDm2qqu5GUh7MHTAfBgNVHSMEGDAW
gBQWIBt0abFcVNnsDm2qqu5GUh7MHTAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB
/wQEAwIBBjANBgkqhkiG9w0BAQsFAAOCAQEAJA4KJdX1ZgeiDz9s/SfaBjBQQmnF
pBZVk3VB0QcJSakfXtr6spBDIO685I+FiDvawBJYOD2SSJ9gFFr+//TJWzytTUOs
lM0DGjTfNA50Wa8IY9IKv2zO4bwQholZusY9M0Ko0Sbovmzv4/HC/vvwquniYTE3
XuFB8uDtabX6RUZ8h30yln8BFD0sgn9qbf19tFWbpL9OLJLSO0bQa8AN+fc1DP4l
2Jy+XtjAq0jKhz235qnuM9gQboqK4psozOf/bUy0VcVlNOyukqdIvJcyBImg6yOO
9mCHCh+KbV4zR7W9aFX4HBinhSOoJfSV5lH8cFChVjhMqPgzLAlyhH8m/Q==
-----END CERTIFICATE-----
";
const TEST_CERT: &str = r"-----BEGIN CERTIFICATE-----
MIIDTjCCAjagAwIBAgIUAbPECxJeOc8N/Zfkvg2HEuS2C/IwDQYJKoZIhvcNAQEL
BQAwGjEYMBYGA1UEAwwPUG9ydGljbyB0ZXN0IENBMCAXDTI2MTEyMjEzMzEzMloY
DzIxMjYxMDI5MTMzMTMyWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwggEiMA0GCSqG
SIb3DQEBAQUAA4IBDwAwggEKAoIBAQDNVtlnq8SnJZQx3rhWXtNgXpbaqSO10fUL
21ZhAkfdDw7ElM9PsdoRgS/O5ol/iQvqDzURLToi6TLGwD842j0NX2ILNybVI6TK
rN17Im4FCrOMJBEVW2Pi8SHqVK+t9y3ZQ/4GMCbFEuBzX5FIEe5QzWLpGdHBw2az
4w6Mkl+h6+BsXC1lXLZqHf+6/DTc+zk4IqyU2imHA+kej0sKTtIK418se2V3uvbq
JgD3T9ZmWrUSs5AwMyMMSjjd9NL4zfj9nM5iYXOYAs+Z7xpcRiTnZfJzvKdF4tAf
RRrfU6LJrps2+h/1MkUcva11wSRZhtOkj/J6tDF+Vld6mZghMnhtAgMBAAGjgY8w
gYwwCQYDVR0TBAIwADAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwEwYDVR0l
BAwwCgYIKwYBBQUHAwEwDgYDVR0PAQH/BAQDAgWgMB0GA1UdDgQWBBQa5qqzmPJ0
oOa8up6ub6704GJVjTAfBgNVHSMEGDAWgBQWIBt0abFcVNnsDm2qqu5GUh7MHTAN
BgkqhkiG9w0BAQsFAAOCAQEAUsqXVKRTpXrxJYZYCksxSEAEU23zuhmtfRVJWz9L
3wRFljKAFE+fAY5ZrmyfNygmeXs+qV3QDsolzxBJtZIA6wEBPhYsvcd2DomGFbUX
5BgiYdI3CIfSV60cF005KM2yhwUNQLbvO/1ARfTxI6LliTB8u/6QzRY/qJ4HIMB3
3zcyvfuBOEt5bxtvi7+YRGTxPZolSsyRRKkd9bYI+uTkRvPdHbVNAiH5TCb6e6+L
voo8ix744v3Tz5PqRkd7zNAo+68TZDb4xqoxTI6XaRdWtmKY50zyD8Sk94QndHin
15YilYoLhwAopeZviXcI0CTve3p+3GbiVOWuRqCyGecDaA==
-----END CERTIFICATE-----
";
const TEST_KEY: &str = r"-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDNVtlnq8SnJZQx
3rhWXtNgXpbaqSO10fUL21ZhAkfdDw7ElM9PsdoRgS/O5ol/iQvqDzURLToi6TLG
wD842j0NX2ILNybVI6TKrN17Im4FCrOMJBEVW2Pi8SHqVK+t9y3ZQ/4GMCbFEuBz
X5FIEe5QzWLpGdHBw2az4w6Mkl+h6+BsXC1lXLZqHf+6/DTc+zk4IqyU2imHA+ke
j0sKTtIK418se2V3uvbqJgD3T9ZmWrUSs5AwMyMMSjjd9NL4zfj9nM5iYXOYAs+Z
7xpcRiTnZfJzvKdF4tAfRRrfU6LJrps2+h/1MkUcva11wSRZhtOkj/J6tDF+Vld6
mZghMnhtAgMBAAECggEAFaIPQIFTtApc/Q4KXKsb2NzORtYn+XlXuDqQ9KJxYMQ7
2ZEV8D78CvkRyNn35XRSSYP1oswhglkQLOlHH926LeT9JtJWKIFbVLD2mojrj2Nr
vBl2pUneEaQ23wGyCoFulqO3qP48r2mINQ999lpRQbkJsSYzt5a3BL+ooj2vjpbj
K+JupnhAjRG81e5lU0aVEHtqklr6Ec89154FonKq/FC3oD+z6kmqsIYl646+AS04
t/rVktzcl0ZQeUBU01ZjPmfDdl21F3U0dZpfN5/2460Qf+luBUdegHALOg9XpI7Q
ciSHif6M0JG1+VTFVw85ap651W5u641s0sq73GzFQQKBgQD6bUqpxLvdy2rl9o02
yDkdhdICuUhwp2x1sOL77haVpKbZu8MT7UapBOXpvA/1PysTGK9lnm3gB+qDcrr9
aPzwaNBVZdvZMCSCJjlicsVc16hxLaHlWWVxttJpNP2fd7uS8wUnILQqTzjkyKOZ
HBDWY1uK4KPj3efBRjnpzCS24QKBgQDR6LA9nFS5y/qSE6i7GDp3iNhKR+z9mqKI
B7J0Wv+yEI/WB21JXZs3vBnBQpp0+6+gmOiwpuzvqY59sHTXAGTNTWf6xUU9E3zw
0lGZEF8wX4hBaLzAJ6aNHS3yV8MpMsAbROc/JW3Q+kBf7m+85JDViD1OEXrLbi3y
dpw0Nl4PDQKBgQCDa8GoEFerEOqbnmUDX9YheS36QfQTMrnHlbm5DnyJsaviThgV
KAtR/gEORaR2Rt07G1RI1vjAfkcDDr206Vj8bXUPq/HRK+Os7ZRl5udOTtrV8mWo
79496/zGO4nyGyqz9pc4rn/+SC8KWYUJf+ISMHhFDJjVp4nNMyaHXJvT4QKBgQCf
HTErIquewx5HSJuoZu862QKLHAZrHqKBVsRRKwGT6rX9WVfgOxKDpxQmyOPoNTim
FgKclYwZB4A5il6m82d1sG1XS932NCWLLwIncp+VPXU9j7U0O1omsa24fAo12oCA
qzRXS3n45RmTHlyY5PFcy48c9GcOeZBesMYrVeLqqQKBgEsdbecbg1RNqQA51bFJ
pk5xXa6OM6hE70Kmae5GBjtYMN+078lSIxsYxVAquvxbNcG4Z8Lnf3slcqk6r/n1
FnA/pCHnNNlZUW8OMhZF2xAGbFSeWlbGhYEzva4qvJrFvfQfhFLU3f8luzH0dghd
TWm0HVRrONLeyLegKuDCWYxO
-----END PRIVATE KEY-----
";

fn tls_acceptor(_: ()) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let certs = rustls_pemfile::certs(&mut TEST_CERT.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut TEST_KEY.as_bytes())
        .unwrap()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn doc(text: &str) -> Value {
    json!({
        "general": {"status": "enabled", "skip_domains": []},
        "domains": [{"name": "*", "plugins": [
            {"name": "cors", "code": format!("ngx.header['X-Doc'] = '{text}'"), "phase": "header_filter"}
        ]}]
    })
}

struct Fixture {
    poller: DynacodePoller,
    metrics: Arc<Metrics>,
    _dir: TempDir,
}

/// The store's data_dir, removed when the test ends.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(url: String, headers: BTreeMap<String, String>, timeout: u64) -> Fixture {
    let dir = std::env::temp_dir().join(format!(
        "portico-dynacode-poll-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let metrics = Metrics::new().unwrap();
    let deps = StoreDeps {
        plugins: Arc::new(portico_plugins::PluginRegistry::builtin()),
        metrics: Arc::clone(&metrics),
        health: portico_healthcheck::HealthRegistry::new(Arc::new(
            portico_healthcheck::NoopObserver,
        )),
    };
    let store = ConfigStore::open(DiskStore::open(&dir).unwrap(), deps).unwrap();
    Fixture {
        poller: DynacodePoller {
            settings: DynacodePollSettings {
                url,
                interval: 15,
                jitter: 5,
                timeout,
                headers,
                poll_at_start: true,
            },
            store: Arc::new(store),
            metrics: Arc::clone(&metrics),
        },
        metrics,
        _dir: TempDir(dir),
    }
}

impl Fixture {
    fn running(&self) -> Option<(Value, u64)> {
        self.poller
            .store
            .resources()
            .dynacode
            .as_ref()
            .map(|e| ((*e.value).clone(), e.modified_index))
    }

    fn polls(&self, result: &str) -> u64 {
        let text = String::from_utf8(self.metrics.render()).unwrap();
        text.lines()
            .find(|l| {
                l.starts_with("portico_dynacode_polls_total")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn etag_round_trip_updates_once_then_not_modified() {
    let d1 = doc("one");
    let mock = Mock::start(Mode::Doc {
        body: d1.to_string(),
        etag: Some("\"v1\"".into()),
    })
    .await;
    let f = fixture(
        format!("http://{}/plugins.json", mock.addr),
        BTreeMap::new(),
        5,
    );
    let mut state = PollState::default();

    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    let (running, index) = f.running().unwrap();
    assert_eq!(running, d1);
    let first = mock.last_request();
    assert_eq!(first[":request"], "GET /plugins.json HTTP/1.1");
    assert!(!first.contains_key("if-none-match"), "{first:?}");
    assert_eq!(first["host"], mock.addr.to_string());

    assert_eq!(
        f.poller.poll_once(&mut state).await,
        PollResult::NotModified
    );
    assert_eq!(mock.last_request()["if-none-match"], "\"v1\"");
    assert_eq!(f.running().unwrap().1, index, "nothing re-applied on 304");

    // A new document behind a new ETag.
    let d2 = doc("two");
    mock.set(Mode::Doc {
        body: d2.to_string(),
        etag: Some("\"v2\"".into()),
    });
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    let (running, index2) = f.running().unwrap();
    assert_eq!(running, d2);
    assert!(index2 > index);
    assert_eq!(f.polls("updated"), 2);
    assert_eq!(f.polls("not_modified"), 1);
    assert_eq!(mock.requests.lock().len(), 3);
    assert!(String::from_utf8(f.metrics.render())
        .unwrap()
        .lines()
        .any(
            |l| l.starts_with("portico_dynacode_last_success_timestamp_seconds ")
                && !l.ends_with(" 0")
        ));
}

#[tokio::test]
async fn same_document_without_etag_is_not_modified() {
    let d1 = doc("same");
    let mock = Mock::start(Mode::Doc {
        body: d1.to_string(),
        etag: None,
    })
    .await;
    let f = fixture(format!("http://{}/", mock.addr), BTreeMap::new(), 5);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    let (_, index) = f.running().unwrap();
    // Same content, different formatting and key order.
    mock.set(Mode::Doc {
        body: serde_json::to_string_pretty(&d1).unwrap(),
        etag: None,
    });
    assert_eq!(
        f.poller.poll_once(&mut state).await,
        PollResult::NotModified
    );
    assert_eq!(
        f.poller.poll_once(&mut state).await,
        PollResult::NotModified
    );
    assert!(!mock.last_request().contains_key("if-none-match"));
    assert_eq!(f.running().unwrap(), (d1, index), "nothing re-applied");
    assert_eq!(f.polls("not_modified"), 2);
}

#[tokio::test]
async fn failures_keep_the_last_good_document() {
    let good = doc("good");
    let mock = Mock::start(Mode::Doc {
        body: good.to_string(),
        etag: Some("\"g\"".into()),
    })
    .await;
    let f = fixture(format!("http://{}/doc", mock.addr), BTreeMap::new(), 1);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    let kept = f.running().unwrap();

    mock.set(Mode::Status(500));
    assert_eq!(
        f.poller.poll_once(&mut state).await,
        PollResult::StatusError
    );
    assert_eq!(f.running().unwrap(), kept);

    mock.set(Mode::Doc {
        body: "{not json".into(),
        etag: Some("\"bad\"".into()),
    });
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Invalid);
    assert_eq!(f.running().unwrap(), kept);

    mock.set(Mode::Doc {
        body: json!({"domains": "x"}).to_string(),
        etag: Some("\"shape\"".into()),
    });
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Invalid);
    assert_eq!(f.running().unwrap(), kept);
    // The rejected document's ETag is not remembered: the next poll is a full GET,
    // still invalid (not "not modified").
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Invalid);
    assert!(!mock.last_request().contains_key("if-none-match"));

    mock.set(Mode::Hang);
    let started = std::time::Instant::now();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeout applies"
    );
    assert_eq!(f.running().unwrap(), kept);

    mock.shut();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
    assert_eq!(f.running().unwrap(), kept);

    assert_eq!(f.polls("status_error"), 1);
    assert_eq!(f.polls("invalid"), 3);
    assert_eq!(f.polls("fetch_error"), 2);
    assert_eq!(f.polls("updated"), 1);
}

#[tokio::test]
async fn unreachable_server_is_a_fetch_error() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let f = fixture(format!("http://127.0.0.1:{port}/"), BTreeMap::new(), 2);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
    assert!(f.running().is_none());
}

#[tokio::test]
async fn configured_headers_reach_the_server() {
    let mock = Mock::start(Mode::Doc {
        body: doc("h").to_string(),
        etag: None,
    })
    .await;
    let headers = BTreeMap::from([
        ("Authorization".to_string(), "Bearer s3cret".to_string()),
        ("X-Instance".to_string(), "gw-1".to_string()),
    ]);
    let f = fixture(format!("http://{}/p?x=1", mock.addr), headers, 5);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    let req = mock.last_request();
    assert_eq!(req[":request"], "GET /p?x=1 HTTP/1.1");
    assert_eq!(req["authorization"], "Bearer s3cret");
    assert_eq!(req["x-instance"], "gw-1");
}

#[tokio::test]
async fn a_304_after_a_local_change_restores_the_polled_document() {
    let d1 = doc("polled");
    let mock = Mock::start(Mode::Doc {
        body: d1.to_string(),
        etag: Some("\"p\"".into()),
    })
    .await;
    let f = fixture(format!("http://{}/", mock.addr), BTreeMap::new(), 5);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    f.poller
        .store
        .apply(Change::PutDynacode(doc("pushed")), ApplySource::Admin)
        .unwrap();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    assert_eq!(mock.last_request()["if-none-match"], "\"p\"");
    assert_eq!(f.running().unwrap().0, d1);
}

#[tokio::test]
async fn service_polls_at_start_and_stops_on_shutdown() {
    let mock = Mock::start(Mode::Doc {
        body: doc("svc").to_string(),
        etag: None,
    })
    .await;
    let f = fixture(format!("http://{}/", mock.addr), BTreeMap::new(), 5);
    let poller = Arc::new(f.poller);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let p = Arc::clone(&poller);
    let task = tokio::spawn(async move { p.start(rx).await });
    for _ in 0..100 {
        if poller.store.resources().dynacode.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        poller.store.resources().dynacode.is_some(),
        "polled at start"
    );
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn https_verifies_the_certificate() {
    // The test CA is not in the system CA store: refused.
    let mock = Mock::start_tls(Mode::Doc {
        body: doc("tls").to_string(),
        etag: None,
    })
    .await;
    let url = format!("https://localhost:{}/doc", mock.addr.port());
    let f = fixture(url, BTreeMap::new(), 5);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::FetchError);
    assert!(f.running().is_none());
    assert!(mock.requests.lock().is_empty());
}

/// The system CA store honours `SSL_CERT_FILE`: a child test process trusting the
/// test CA polls over https (an env var is process-wide, hence the child).
#[test]
fn https_with_a_trusted_certificate() {
    let ca = std::env::temp_dir().join(format!(
        "portico-dynacode-ca-{}-{}.pem",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&ca, TEST_CA).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "providers::dynacode_poll::tests::https_child",
            "--nocapture",
        ])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&ca);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run by https_with_a_trusted_certificate with SSL_CERT_FILE set"]
async fn https_child() {
    let d = doc("tls");
    let mock = Mock::start_tls(Mode::Doc {
        body: d.to_string(),
        etag: Some("\"t\"".into()),
    })
    .await;
    let url = format!("https://localhost:{}/doc", mock.addr.port());
    let f = fixture(url, BTreeMap::new(), 5);
    let mut state = PollState::default();
    assert_eq!(f.poller.poll_once(&mut state).await, PollResult::Updated);
    assert_eq!(f.running().unwrap().0, d);
    assert_eq!(
        f.poller.poll_once(&mut state).await,
        PollResult::NotModified
    );
    assert_eq!(mock.last_request()["if-none-match"], "\"t\"");
    assert_eq!(
        mock.last_request()["host"],
        format!("localhost:{}", mock.addr.port())
    );
}

#[test]
fn jitter_spreads_polls() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let delays: Vec<Duration> = (0..200).map(|_| next_delay(15, 5, &mut rng)).collect();
    assert!(delays
        .iter()
        .all(|d| *d >= Duration::from_secs(15) && *d <= Duration::from_secs(20)));
    assert!(
        delays.windows(2).all(|w| w[0] != w[1]),
        "consecutive delays differ"
    );
    let spread =
        delays.iter().max().unwrap().as_millis() - delays.iter().min().unwrap().as_millis();
    assert!(spread > 4000, "covers the jitter range: {spread}ms");
    // Unseeded, as the service uses it.
    let a = next_delay(15, 5, &mut rand::rng());
    let b = next_delay(15, 5, &mut rand::rng());
    let c = next_delay(15, 5, &mut rand::rng());
    assert!(a != b || b != c);
    assert_eq!(next_delay(15, 0, &mut rng), Duration::from_secs(15));
}

#[test]
fn urls() {
    let t = parse_url("https://cms.internal/plugins.json").unwrap();
    assert_eq!(
        t,
        Target {
            tls: true,
            host: "cms.internal".into(),
            port: 443,
            authority: "cms.internal".into(),
            path_and_query: "/plugins.json".into(),
        }
    );
    let t = parse_url("http://u:p@[::1]:8080").unwrap();
    assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
    assert_eq!(t.authority, "[::1]:8080");
    assert_eq!(t.path_and_query, "/");
    assert!(parse_url("ftp://x/").is_err());
    assert!(parse_url("not a url").is_err());
}
