//! One active probe of one node, classified as lua-resty-healthcheck does:
//! - tcp: connected → success; refused/reset → tcp_failure;
//! - http/https: connect (and TLS handshake) failure → tcp_failure; a status in
//!   `healthy.http_statuses` → success, in `unhealthy.http_statuses` or unparsable →
//!   http_failure, any other status → ignored (`None`); the connection closed before a
//!   status line → tcp_failure;
//! - the whole probe exceeding `timeout` → timeout.

use std::net::SocketAddr;
use std::time::Duration;

use portico_outbound::{parse_status, read_status_only, write_raw, Client, ErrorKind, PeerSpec};

use crate::registry::seconds;
use crate::spec::{header_name, ActiveSpec, ProbeKind};
use crate::state::Observation;

/// The longest status line read before giving up on it as unparsable.
const MAX_STATUS_LINE: usize = 1024;

pub(crate) const USER_AGENT: &str = "portico-healthcheck";

/// Probes `addr` (its port replaced by `active.port` when set); `node_host` is the
/// configured node host, the Host header and SNI unless `active.host` is set. `client`
/// is `None` when the HTTP client could not be built (no CA store): HTTP(S) probes then
/// fail like a connection that cannot be made.
pub(crate) async fn probe(
    client: Option<&Client>,
    addr: SocketAddr,
    node_host: &str,
    active: &ActiveSpec,
) -> Option<Observation> {
    let timeout = seconds(active.timeout, Duration::from_secs(1));
    let target = SocketAddr::new(addr.ip(), active.port.unwrap_or(addr.port()));
    let run = async {
        match (active.kind, client) {
            (ProbeKind::Tcp, _) => tcp(target).await,
            (ProbeKind::Http | ProbeKind::Https, Some(client)) => {
                http(client, target, node_host, active, timeout).await
            }
            (ProbeKind::Http | ProbeKind::Https, None) => Some(Observation::TcpFailure),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .unwrap_or(Some(Observation::Timeout))
}

async fn tcp(target: SocketAddr) -> Option<Observation> {
    Some(match tokio::net::TcpStream::connect(target).await {
        Ok(_) => Observation::Success,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Observation::Timeout,
        Err(_) => Observation::TcpFailure,
    })
}

/// A new connection each time (never pooled: a probe checks that a connection can be
/// made), the request written as text, and only the status line read.
async fn http(
    client: &Client,
    target: SocketAddr,
    node_host: &str,
    active: &ActiveSpec,
    timeout: Duration,
) -> Option<Observation> {
    let tls = active.kind == ProbeKind::Https;
    let host = active.host.as_deref().unwrap_or(node_host);
    let peer = PeerSpec {
        tls,
        sni: host.to_string(),
        verify: active.https_verify_certificate,
        connect_timeout: Some(timeout),
        total_connect_timeout: Some(timeout),
    }
    .peer(target);
    let failure = |e: portico_outbound::Error| {
        Some(match e.kind() {
            ErrorKind::Timeout => Observation::Timeout,
            _ => Observation::TcpFailure,
        })
    };
    let mut stream = match client.connect(&peer).await {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    let request = request(active, host, target.port(), tls);
    if let Err(e) = write_raw(&mut stream, request.as_bytes()).await {
        return failure(e);
    }
    let line = match read_status_only(&mut stream, MAX_STATUS_LINE).await {
        Ok(Some(line)) => line,
        Ok(None) => return Some(Observation::TcpFailure),
        Err(e) => return failure(e),
    };
    classify(parse_status(&line), active)
}

/// The probe request: `GET {http_path}` with Host (plus `:port` when not the scheme's
/// default), `req_headers` (which may override Host and User-Agent), and
/// `Connection: close`.
pub(crate) fn request(active: &ActiveSpec, host: &str, port: u16, tls: bool) -> String {
    let user: Vec<(String, &str)> = active
        .req_headers
        .iter()
        .filter_map(|h| header_name(h).map(|n| (n, h.as_str())))
        .filter(|(n, _)| n != "connection")
        .collect();
    let has = |name: &str| user.iter().any(|(n, _)| n == name);
    let mut req = format!("GET {} HTTP/1.1\r\n", active.http_path);
    if !has("host") {
        let bracketed = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let default_port = if tls { 443 } else { 80 };
        if port == default_port {
            req.push_str(&format!("Host: {bracketed}\r\n"));
        } else {
            req.push_str(&format!("Host: {bracketed}:{port}\r\n"));
        }
    }
    for (_, line) in &user {
        req.push_str(line);
        req.push_str("\r\n");
    }
    if !has("user-agent") {
        req.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// A status in the healthy list → success; in the unhealthy list, or no valid status
/// (lua-resty-healthcheck's status 0) → http_failure; otherwise ignored.
pub(crate) fn classify(status: Option<u16>, active: &ActiveSpec) -> Option<Observation> {
    match status {
        Some(s) if active.healthy.http_statuses.contains(&s) => Some(Observation::Success),
        Some(s) if !active.unhealthy.http_statuses.contains(&s) => None,
        _ => Some(Observation::HttpFailure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.1 404 Not Found"), Some(404));
        assert_eq!(parse_status(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status(b"HTTP/x.1 200 OK"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(&[0xff, 0xfe]), None);
    }

    #[test]
    fn classification_by_lists() {
        let a = ActiveSpec::default();
        assert_eq!(classify(Some(200), &a), Some(Observation::Success));
        assert_eq!(classify(Some(302), &a), Some(Observation::Success));
        assert_eq!(classify(Some(500), &a), Some(Observation::HttpFailure));
        assert_eq!(classify(Some(404), &a), Some(Observation::HttpFailure));
        assert_eq!(classify(Some(201), &a), None);
        assert_eq!(classify(Some(403), &a), None);
        assert_eq!(classify(None, &a), Some(Observation::HttpFailure));
    }

    #[test]
    fn request_format() {
        let mut a = ActiveSpec {
            http_path: "/status".into(),
            ..ActiveSpec::default()
        };
        assert_eq!(
            request(&a, "example.com", 80, false),
            "GET /status HTTP/1.1\r\nHost: example.com\r\n\
             User-Agent: portico-healthcheck\r\nConnection: close\r\n\r\n"
        );
        assert!(request(&a, "example.com", 8080, false).contains("Host: example.com:8080\r\n"));
        assert!(request(&a, "example.com", 443, true).contains("Host: example.com\r\n"));
        assert!(request(&a, "example.com", 80, true).contains("Host: example.com:80\r\n"));
        assert!(request(&a, "::1", 8080, false).contains("Host: [::1]:8080\r\n"));
        a.req_headers = vec![
            "User-Agent: portico".into(),
            "X-Probe: 1".into(),
            "Connection: keep-alive".into(),
        ];
        assert_eq!(
            request(&a, "h", 80, false),
            "GET /status HTTP/1.1\r\nHost: h\r\nUser-Agent: portico\r\nX-Probe: 1\r\n\
             Connection: close\r\n\r\n"
        );
        a.req_headers = vec!["host: other".into()];
        assert_eq!(
            request(&a, "h", 80, false),
            "GET /status HTTP/1.1\r\nhost: other\r\n\
             User-Agent: portico-healthcheck\r\nConnection: close\r\n\r\n"
        );
    }
}
