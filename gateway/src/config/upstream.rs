//! The APISIX `upstream` object (`schema_def.lua` field names and defaults).

use std::collections::BTreeMap;
use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use crate::hash_key::HashKey;
pub use crate::hash_key::HashOn;

use super::{CheckSpec, FieldError, Id};

/// An upstream, standalone (`/upstreams/{id}`) or inline in a route or service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default, rename = "type")]
    pub kind: UpstreamType,
    pub nodes: Nodes,
    #[serde(default)]
    pub hash_on: HashOn,
    #[serde(default)]
    pub key: Option<String>,
    /// Attempts after the first; APISIX's default is "number of nodes - 1".
    #[serde(default)]
    pub retries: Option<u32>,
    /// Seconds within which retries may still start (0 = no limit).
    #[serde(default)]
    pub retry_timeout: Option<f64>,
    #[serde(default)]
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default)]
    pub pass_host: PassHost,
    #[serde(default)]
    pub upstream_host: Option<String>,
    #[serde(default)]
    pub keepalive_pool: Option<KeepalivePool>,
    /// Node certificate verification and client certificate (`scheme: https`, `grpcs`).
    #[serde(default)]
    pub tls: Option<super::UpstreamTls>,
    /// Active and passive health checks (APISIX's `checks` object).
    #[serde(default)]
    pub checks: Option<portico_healthcheck::ChecksSpec>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamType {
    #[default]
    Roundrobin,
    Chash,
}

/// How the gateway talks to the nodes (APISIX's upstream `scheme`; its `tcp`, `tls`,
/// `udp`, `kafka`, `ws` and `wss` are not implemented, so refused).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
    /// gRPC: HTTP/2 without TLS, by prior knowledge (h2c).
    Grpc,
    /// gRPC over TLS: HTTP/2 negotiated by ALPN.
    Grpcs,
}

impl Scheme {
    /// TLS to the nodes.
    pub fn tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Grpcs)
    }

    /// HTTP/2 (only) to the nodes.
    pub fn http2(self) -> bool {
        matches!(self, Scheme::Grpc | Scheme::Grpcs)
    }

    /// The port of a node given without one (APISIX: 443 with TLS, else 80).
    pub fn default_port(self) -> u16 {
        if self.tls() {
            443
        } else {
            80
        }
    }

    /// The name, as APISIX's `$upstream_scheme` gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Grpc => "grpc",
            Scheme::Grpcs => "grpcs",
        }
    }
}

/// Which `Host` header the upstream request carries.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PassHost {
    /// The client's Host, unchanged.
    #[default]
    Pass,
    /// The chosen node's host (and port when it is not the scheme's default).
    Node,
    /// `upstream_host`.
    Rewrite,
}

/// `{"connect": s, "send": s, "read": s}`, seconds (fractions allowed).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    pub connect: f64,
    pub send: f64,
    pub read: f64,
}

impl Timeout {
    pub fn check(&self, path: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (name, v) in [
            ("connect", self.connect),
            ("send", self.send),
            ("read", self.read),
        ] {
            errors.extend(super::limits::check_seconds(
                &format!("{path}.{name}"),
                v,
                false,
            ));
        }
        errors
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeepalivePool {
    #[serde(default = "default_pool_size")]
    pub size: u32,
    #[serde(default = "default_pool_idle")]
    pub idle_timeout: f64,
    #[serde(default = "default_pool_requests")]
    pub requests: u32,
}

fn default_pool_size() -> u32 {
    320
}
fn default_pool_idle() -> f64 {
    60.0
}
fn default_pool_requests() -> u32 {
    1000
}

/// `nodes` in either of APISIX's two shapes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Nodes {
    /// `{"127.0.0.1:8080": 1}`
    Map(BTreeMap<String, u32>),
    /// `[{"host": "127.0.0.1", "port": 8080, "weight": 1}]`
    List(Vec<NodeSpec>),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    pub weight: u32,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// A node after normalisation: both shapes become this, in a stable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub priority: i32,
}

impl Nodes {
    /// Normalised nodes with the JSON path of each, for error messages. A node without a
    /// port gets the scheme's default port, as APISIX does.
    pub fn normalise(&self, scheme: Scheme) -> Result<Vec<NodeAddr>, Vec<FieldError>> {
        let default_port = scheme.default_port();
        let mut out = Vec::new();
        let mut errors = Vec::new();
        match self {
            Nodes::Map(map) => {
                for (addr, weight) in map {
                    match split_host_port(addr) {
                        Ok((host, port)) => out.push(NodeAddr {
                            host,
                            port: port.unwrap_or(default_port),
                            weight: *weight,
                            priority: 0,
                        }),
                        Err(msg) => errors.push(FieldError::new(format!("nodes.{addr}"), msg)),
                    }
                }
            }
            Nodes::List(list) => {
                for (i, n) in list.iter().enumerate() {
                    if let Err(msg) = check_host(&n.host) {
                        errors.push(FieldError::new(format!("nodes[{i}].host"), msg));
                        continue;
                    }
                    if n.port == Some(0) {
                        errors.push(FieldError::new(
                            format!("nodes[{i}].port"),
                            "must be between 1 and 65535",
                        ));
                        continue;
                    }
                    out.push(NodeAddr {
                        host: n.host.clone(),
                        port: n.port.unwrap_or(default_port),
                        weight: n.weight,
                        priority: n.priority,
                    });
                }
            }
        }
        let mut seen = HashSet::new();
        for n in &out {
            if !seen.insert((n.host.as_str(), n.port)) {
                errors.push(FieldError::new(
                    "nodes",
                    format!("duplicate node {}:{}", n.host, n.port),
                ));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Nodes::Map(m) => m.len(),
            Nodes::List(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Splits `host:port`, `[v6]:port`, or a bare host.
fn split_host_port(addr: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{addr}` is not a valid host:port"))?;
        (h.to_string(), tail.strip_prefix(':'))
    } else {
        match addr.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (addr.to_string(), None),
        }
    };
    check_host(&host).map_err(|m| format!("`{addr}`: {m}"))?;
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(format!("`{addr}`: port must be between 1 and 65535")),
        },
        None => None,
    };
    Ok((host, port))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!("`{host}` is not an IP address or a host name"))
    }
}

impl CheckSpec for UpstreamSpec {
    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(tls) = &self.tls {
            errors.extend(tls.check());
        }
        if let Some(checks) = &self.checks {
            errors.extend(checks.validate().into_iter().map(|(path, message)| {
                FieldError::new(super::join_path("checks", &path), message)
            }));
        }
        errors.extend(super::limits::check_count(
            "nodes",
            self.nodes.len(),
            super::limits::MAX_NODES,
        ));
        if let Err(e) = self.nodes.normalise(self.scheme) {
            errors.extend(e);
        }
        if self.kind == UpstreamType::Chash {
            match self.key.as_deref() {
                None | Some("") => {
                    errors.push(FieldError::new("key", "is required when type is `chash`"))
                }
                Some(key) => {
                    if let Err(msg) = HashKey::parse(self.hash_on, key) {
                        errors.push(FieldError::new("key", msg));
                    }
                }
            }
        }
        if let Some(t) = &self.timeout {
            errors.extend(t.check("timeout"));
        }
        if let Some(rt) = self.retry_timeout {
            errors.extend(super::limits::check_seconds("retry_timeout", rt, true));
        }
        if self.pass_host == PassHost::Rewrite
            && self.upstream_host.as_deref().unwrap_or("").is_empty()
        {
            errors.push(FieldError::new(
                "upstream_host",
                "is required when pass_host is `rewrite`",
            ));
        }
        if let Some(pool) = &self.keepalive_pool {
            errors.extend(super::limits::check_seconds(
                "keepalive_pool.idle_timeout",
                pool.idle_timeout,
                true,
            ));
            if pool.size == 0 {
                errors.push(FieldError::new("keepalive_pool.size", "must be at least 1"));
            }
            if pool.requests == 0 {
                errors.push(FieldError::new(
                    "keepalive_pool.requests",
                    "must be at least 1",
                ));
            }
        }
        if let Some(id) = &self.id {
            if let Err(m) = super::check_id(&id.0) {
                errors.push(FieldError::new("id", m));
            }
        }
        errors
    }
}
