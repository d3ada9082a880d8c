//! The `checks` object of an upstream: APISIX's field names and defaults
//! (`apisix/schema_def.lua`, itself lua-resty-healthcheck's options), and its validation.

use serde::Deserialize;

use crate::state::Thresholds;

/// `upstream.checks`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksSpec {
    #[serde(default)]
    pub active: Option<ActiveSpec>,
    #[serde(default)]
    pub passive: Option<PassiveSpec>,
}

/// How a probe (active) or a report (passive) talks to the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    #[default]
    Http,
    Https,
    Tcp,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Https => "https",
            ProbeKind::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `checks.active`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveSpec {
    #[serde(rename = "type", default)]
    pub kind: ProbeKind,
    /// Seconds one probe may take (connect, TLS, request and status line together).
    #[serde(default = "one_f64")]
    pub timeout: f64,
    /// At most this many probes of one upstream in flight at once.
    #[serde(default = "ten")]
    pub concurrency: u32,
    #[serde(default = "slash")]
    pub http_path: String,
    /// Host header (and TLS SNI) of probes; default: the node's configured host.
    #[serde(default)]
    pub host: Option<String>,
    /// Probe this port instead of the node's.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "yes")]
    pub https_verify_certificate: bool,
    /// Extra request headers, each `"Name: value"`.
    #[serde(default)]
    pub req_headers: Vec<String>,
    #[serde(default)]
    pub healthy: ActiveHealthy,
    #[serde(default)]
    pub unhealthy: ActiveUnhealthy,
}

/// `checks.active.healthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveHealthy {
    /// Seconds between probes of a healthy node (APISIX: integer >= 1).
    #[serde(default = "one_f64")]
    pub interval: f64,
    #[serde(default = "active_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "two")]
    pub successes: u32,
}

/// `checks.active.unhealthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveUnhealthy {
    /// Seconds between probes of an unhealthy node (APISIX: integer >= 1).
    #[serde(default = "one_f64")]
    pub interval: f64,
    #[serde(default = "active_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "five")]
    pub http_failures: u32,
    #[serde(default = "two")]
    pub tcp_failures: u32,
    #[serde(default = "three")]
    pub timeouts: u32,
}

/// `checks.passive`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveSpec {
    /// Accepted for APISIX compatibility; like APISIX, reports are classified the same
    /// way whatever the type.
    #[serde(rename = "type", default)]
    pub kind: ProbeKind,
    #[serde(default)]
    pub healthy: PassiveHealthy,
    #[serde(default)]
    pub unhealthy: PassiveUnhealthy,
}

/// `checks.passive.healthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthy {
    #[serde(default = "passive_healthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "five")]
    pub successes: u32,
}

/// `checks.passive.unhealthy`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveUnhealthy {
    #[serde(default = "passive_unhealthy_statuses")]
    pub http_statuses: Vec<u16>,
    #[serde(default = "two")]
    pub tcp_failures: u32,
    #[serde(default = "seven")]
    pub timeouts: u32,
    #[serde(default = "five")]
    pub http_failures: u32,
}

fn one_f64() -> f64 {
    1.0
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn seven() -> u32 {
    7
}
fn ten() -> u32 {
    10
}
fn yes() -> bool {
    true
}
fn slash() -> String {
    "/".to_string()
}
fn active_healthy_statuses() -> Vec<u16> {
    vec![200, 302]
}
fn active_unhealthy_statuses() -> Vec<u16> {
    vec![429, 404, 500, 501, 502, 503, 504, 505]
}
fn passive_healthy_statuses() -> Vec<u16> {
    vec![
        200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 306, 307,
        308,
    ]
}
fn passive_unhealthy_statuses() -> Vec<u16> {
    vec![429, 500, 503]
}

impl Default for ActiveSpec {
    fn default() -> Self {
        ActiveSpec {
            kind: ProbeKind::default(),
            timeout: one_f64(),
            concurrency: ten(),
            http_path: slash(),
            host: None,
            port: None,
            https_verify_certificate: yes(),
            req_headers: Vec::new(),
            healthy: ActiveHealthy::default(),
            unhealthy: ActiveUnhealthy::default(),
        }
    }
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy {
            interval: one_f64(),
            http_statuses: active_healthy_statuses(),
            successes: two(),
        }
    }
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval: one_f64(),
            http_statuses: active_unhealthy_statuses(),
            http_failures: five(),
            tcp_failures: two(),
            timeouts: three(),
        }
    }
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        PassiveHealthy {
            http_statuses: passive_healthy_statuses(),
            successes: five(),
        }
    }
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: passive_unhealthy_statuses(),
            tcp_failures: two(),
            timeouts: seven(),
            http_failures: five(),
        }
    }
}

impl ActiveSpec {
    /// The thresholds active probes apply.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            successes: self.healthy.successes,
            http_failures: self.unhealthy.http_failures,
            tcp_failures: self.unhealthy.tcp_failures,
            timeouts: self.unhealthy.timeouts,
        }
    }
}

impl PassiveSpec {
    /// The thresholds passive reports apply (0 disables a counter).
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            successes: self.healthy.successes,
            http_failures: self.unhealthy.http_failures,
            tcp_failures: self.unhealthy.tcp_failures,
            timeouts: self.unhealthy.timeouts,
        }
    }
}

/// APISIX's bound for every counter.
const COUNTER_MAX: u32 = 254;

impl ChecksSpec {
    /// Every problem with its JSON path relative to `checks` (e.g.
    /// `"active.healthy.successes"`): `active` required; active counters 1..=254; passive
    /// counters 0..=254 (0 disables that counter); statuses 200..=599, unique, lists not
    /// empty; intervals integer seconds >= 1; timeout > 0; concurrency >= 1; port >= 1;
    /// `req_headers` entries look like `"Name: value"`; `http_path` starts with '/'.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let mut err = |path: &str, msg: String| errors.push((path.to_string(), msg));
        match &self.active {
            None => err(
                "active",
                "is required: `checks` needs an `active` block".to_string(),
            ),
            Some(a) => validate_active(a, &mut err),
        }
        if let Some(p) = &self.passive {
            validate_passive(p, &mut err);
        }
        errors
    }
}

fn validate_active(a: &ActiveSpec, err: &mut impl FnMut(&str, String)) {
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        err("active.timeout", "must be a number of seconds > 0".into());
    }
    if a.concurrency < 1 {
        err("active.concurrency", "must be >= 1".into());
    }
    if !a.http_path.starts_with('/') || has_ctl_or_space(&a.http_path) {
        err(
            "active.http_path",
            "must start with '/' and contain no spaces or control characters".into(),
        );
    }
    if let Some(h) = &a.host {
        if h.is_empty() || has_ctl_or_space(h) {
            err(
                "active.host",
                "must be a non-empty host without spaces or control characters".into(),
            );
        }
    }
    if a.port == Some(0) {
        err("active.port", "must be in 1..=65535".into());
    }
    let mut seen = Vec::new();
    for (i, h) in a.req_headers.iter().enumerate() {
        match header_name(h) {
            Some(name) if !seen.contains(&name) => seen.push(name),
            Some(_) => err(
                &format!("active.req_headers[{i}]"),
                format!("duplicate header `{h}`"),
            ),
            None => err(
                &format!("active.req_headers[{i}]"),
                format!("`{h}` is not a header line like \"Name: value\""),
            ),
        }
    }
    interval("active.healthy.interval", a.healthy.interval, err);
    interval("active.unhealthy.interval", a.unhealthy.interval, err);
    statuses(
        "active.healthy.http_statuses",
        &a.healthy.http_statuses,
        err,
    );
    statuses(
        "active.unhealthy.http_statuses",
        &a.unhealthy.http_statuses,
        err,
    );
    for (path, v) in [
        ("active.healthy.successes", a.healthy.successes),
        ("active.unhealthy.http_failures", a.unhealthy.http_failures),
        ("active.unhealthy.tcp_failures", a.unhealthy.tcp_failures),
        ("active.unhealthy.timeouts", a.unhealthy.timeouts),
    ] {
        if !(1..=COUNTER_MAX).contains(&v) {
            err(path, format!("must be in 1..={COUNTER_MAX}, got {v}"));
        }
    }
}

fn validate_passive(p: &PassiveSpec, err: &mut impl FnMut(&str, String)) {
    statuses(
        "passive.healthy.http_statuses",
        &p.healthy.http_statuses,
        err,
    );
    statuses(
        "passive.unhealthy.http_statuses",
        &p.unhealthy.http_statuses,
        err,
    );
    for (path, v) in [
        ("passive.healthy.successes", p.healthy.successes),
        ("passive.unhealthy.http_failures", p.unhealthy.http_failures),
        ("passive.unhealthy.tcp_failures", p.unhealthy.tcp_failures),
        ("passive.unhealthy.timeouts", p.unhealthy.timeouts),
    ] {
        if v > COUNTER_MAX {
            err(
                path,
                format!("must be in 0..={COUNTER_MAX} (0 disables it), got {v}"),
            );
        }
    }
}

fn interval(path: &str, v: f64, err: &mut impl FnMut(&str, String)) {
    if !(v.is_finite() && v >= 1.0 && v.fract() == 0.0) {
        err(
            path,
            format!("must be an integer number of seconds >= 1, got {v}"),
        );
    }
}

fn statuses(path: &str, list: &[u16], err: &mut impl FnMut(&str, String)) {
    if list.is_empty() {
        err(path, "must list at least one status".into());
    }
    for (i, s) in list.iter().enumerate() {
        if !(200..=599).contains(s) {
            err(
                &format!("{path}[{i}]"),
                format!("must be in 200..=599, got {s}"),
            );
        } else if list[..i].contains(s) {
            err(&format!("{path}[{i}]"), format!("duplicate status {s}"));
        }
    }
}

fn has_ctl_or_space(s: &str) -> bool {
    s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The lower-cased name of a `"Name: value"` header line, if it is one.
pub(crate) fn header_name(line: &str) -> Option<String> {
    let (name, value) = line.split_once(':')?;
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return None;
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> ChecksSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_match_apisix() {
        let c = parse(json!({"active": {}, "passive": {}}));
        let a = c.active.unwrap();
        assert_eq!(a.kind, ProbeKind::Http);
        assert_eq!(a.timeout, 1.0);
        assert_eq!(a.concurrency, 10);
        assert_eq!(a.http_path, "/");
        assert_eq!(a.host, None);
        assert_eq!(a.port, None);
        assert!(a.https_verify_certificate);
        assert!(a.req_headers.is_empty());
        assert_eq!(a.healthy.interval, 1.0);
        assert_eq!(a.healthy.http_statuses, vec![200, 302]);
        assert_eq!(a.healthy.successes, 2);
        assert_eq!(a.unhealthy.interval, 1.0);
        assert_eq!(
            a.unhealthy.http_statuses,
            vec![429, 404, 500, 501, 502, 503, 504, 505]
        );
        assert_eq!(a.unhealthy.http_failures, 5);
        assert_eq!(a.unhealthy.tcp_failures, 2);
        assert_eq!(a.unhealthy.timeouts, 3);
        let p = c.passive.unwrap();
        assert_eq!(p.kind, ProbeKind::Http);
        assert_eq!(
            p.healthy.http_statuses,
            vec![
                200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305,
                306, 307, 308
            ]
        );
        assert_eq!(p.healthy.successes, 5);
        assert_eq!(p.unhealthy.http_statuses, vec![429, 500, 503]);
        assert_eq!(p.unhealthy.tcp_failures, 2);
        assert_eq!(p.unhealthy.timeouts, 7);
        assert_eq!(p.unhealthy.http_failures, 5);
        // serde defaults and the Default impls agree
        assert_eq!(a, ActiveSpec::default());
        assert_eq!(p, PassiveSpec::default());
    }

    #[test]
    fn nested_defaults_fill_missing_fields() {
        let c = parse(json!({"active": {"type": "tcp", "healthy": {"successes": 1}}}));
        let a = c.active.unwrap();
        assert_eq!(a.kind, ProbeKind::Tcp);
        assert_eq!(a.healthy.successes, 1);
        assert_eq!(a.healthy.http_statuses, vec![200, 302]);
        assert_eq!(a.healthy.interval, 1.0);
        assert!(c.passive.is_none());
    }

    #[test]
    fn full_issue_example_parses_and_validates() {
        let c = parse(json!({
            "active": {
                "type": "https", "timeout": 1.5, "concurrency": 3,
                "http_path": "/status", "host": "example.com", "port": 8443,
                "https_verify_certificate": false,
                "req_headers": ["User-Agent: portico", "X-Probe: 1"],
                "healthy": {"interval": 2, "http_statuses": [200], "successes": 1},
                "unhealthy": {"interval": 1, "http_statuses": [500],
                              "http_failures": 2, "tcp_failures": 1, "timeouts": 1}
            },
            "passive": {
                "type": "http",
                "healthy": {"http_statuses": [200], "successes": 0},
                "unhealthy": {"http_statuses": [500, 503], "tcp_failures": 0,
                              "timeouts": 0, "http_failures": 0}
            }
        }));
        assert_eq!(c.validate(), vec![]);
        let a = c.active.unwrap();
        assert_eq!(a.kind, ProbeKind::Https);
        assert_eq!(a.port, Some(8443));
        assert_eq!(
            a.thresholds(),
            Thresholds {
                successes: 1,
                http_failures: 2,
                tcp_failures: 1,
                timeouts: 1
            }
        );
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        for bad in [
            json!({"active": {"bogus": 1}}),
            json!({"active": {"healthy": {"bogus": 1}}}),
            json!({"active": {"unhealthy": {"bogus": 1}}}),
            json!({"passive": {"healthy": {"bogus": 1}}}),
            json!({"passive": {"unhealthy": {"bogus": 1}}}),
            json!({"passive": {"bogus": 1}}),
            json!({"bogus": {}}),
            json!({"active": {"type": "udp"}}),
            json!({"active": {"port": 70000}}),
            json!({"active": {"healthy": {"successes": -1}}}),
        ] {
            assert!(
                serde_json::from_value::<ChecksSpec>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn active_is_required() {
        assert_eq!(paths(json!({"passive": {}})), vec!["active"]);
        assert_eq!(paths(json!({})), vec!["active"]);
        assert!(paths(json!({"active": {}})).is_empty());
    }

    fn paths(v: serde_json::Value) -> Vec<String> {
        parse(v).validate().into_iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let got = paths(json!({
            "active": {
                "timeout": 0, "concurrency": 0, "http_path": "status", "host": "a b", "port": 0,
                "req_headers": ["nocolon", "X-A: 1", "x-a: 2", "Bad Name: v", "X-B: a\r\nX-C: b"],
                "healthy": {"interval": 0.5, "http_statuses": [200, 199, 200], "successes": 0},
                "unhealthy": {"interval": 0, "http_statuses": [],
                              "http_failures": 255, "tcp_failures": 0, "timeouts": 300}
            },
            "passive": {
                "healthy": {"http_statuses": [600], "successes": 255},
                "unhealthy": {"http_statuses": [100], "tcp_failures": 254,
                              "timeouts": 1000, "http_failures": 0}
            }
        }));
        assert_eq!(
            got,
            vec![
                "active.timeout",
                "active.concurrency",
                "active.http_path",
                "active.host",
                "active.port",
                "active.req_headers[0]",
                "active.req_headers[2]",
                "active.req_headers[3]",
                "active.req_headers[4]",
                "active.healthy.interval",
                "active.unhealthy.interval",
                "active.healthy.http_statuses[1]",
                "active.healthy.http_statuses[2]",
                "active.unhealthy.http_statuses",
                "active.healthy.successes",
                "active.unhealthy.http_failures",
                "active.unhealthy.tcp_failures",
                "active.unhealthy.timeouts",
                "passive.healthy.http_statuses[0]",
                "passive.unhealthy.http_statuses[0]",
                "passive.healthy.successes",
                "passive.unhealthy.timeouts",
            ]
        );
    }

    #[test]
    fn counter_bounds() {
        for (v, ok) in [(0, false), (1, true), (254, true), (255, false)] {
            let p = paths(json!({"active": {"healthy": {"successes": v}}}));
            assert_eq!(p.is_empty(), ok, "active successes {v}");
        }
        for (v, ok) in [(0, true), (1, true), (254, true), (255, false)] {
            let p = paths(json!({"active": {}, "passive": {"unhealthy": {"timeouts": v}}}));
            assert_eq!(p.is_empty(), ok, "passive timeouts {v}");
        }
        for (v, ok) in [(199, false), (200, true), (599, true), (600, false)] {
            let p = paths(json!({"active": {"unhealthy": {"http_statuses": [v]}}}));
            assert_eq!(p.is_empty(), ok, "status {v}");
        }
        for (v, ok) in [
            (json!(1), true),
            (json!(2.0), true),
            (json!(1.5), false),
            (json!(0), false),
        ] {
            let p = paths(json!({"active": {"healthy": {"interval": v}}}));
            assert_eq!(p.is_empty(), ok, "interval {v}");
        }
        for (v, ok) in [(json!(0.1), true), (json!(0), false), (json!(-1), false)] {
            let p = paths(json!({"active": {"timeout": v}}));
            assert_eq!(p.is_empty(), ok, "timeout {v}");
        }
    }

    #[test]
    fn header_names() {
        assert_eq!(header_name("User-Agent: x"), Some("user-agent".into()));
        assert_eq!(header_name("X-Empty:"), Some("x-empty".into()));
        assert_eq!(header_name(": v"), None);
        assert_eq!(header_name("novalue"), None);
        assert_eq!(header_name("A: b\nC: d"), None);
    }
}
