//! `etcd:` in the static config: where `config_provider: etcd` reads and writes the
//! shared configuration (docs/cluster.md). The key names are APISIX's `deployment.etcd`
//! ones that Portico implements.

use serde::Deserialize;

/// `etcd:`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSettings {
    /// `http://host:port` or `https://host:port`, tried in order when one fails.
    pub endpoints: Vec<String>,
    /// The key prefix of every object: `{prefix}/routes/{id}`.
    pub prefix: String,
    /// Seconds each request may take (a watch that stays silent this long is re-opened).
    pub timeout: u64,
    /// etcd's authentication (both or neither).
    pub user: Option<String>,
    pub password: Option<String>,
    pub tls: EtcdTls,
}

/// `etcd.tls:` for `https` endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdTls {
    /// Verify the server certificate and its name.
    pub verify: bool,
}

impl Default for EtcdTls {
    fn default() -> Self {
        EtcdTls { verify: true }
    }
}

impl Default for EtcdSettings {
    fn default() -> Self {
        EtcdSettings {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            prefix: "/apisix".to_string(),
            timeout: 30,
            user: None,
            password: None,
            tls: EtcdTls::default(),
        }
    }
}

/// One endpoint, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Host name or IP without IPv6 brackets (DNS and SNI).
    pub host: String,
    pub port: u16,
    /// `Host` header value.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("`{url}` is not an http:// or https:// URL")),
        };
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("`{url}` must be scheme://host:port without a path"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{url}`: credentials go in etcd.user and etcd.password"
            ));
        }
        let host = authority.host().trim_matches(['[', ']']).to_string();
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 2379 });
        Ok(Endpoint {
            tls,
            host,
            port,
            authority: authority.as_str().to_string(),
        })
    }
}

impl EtcdSettings {
    /// Every problem, each naming its key.
    pub fn check(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.endpoints.is_empty() {
            errors.push("etcd.endpoints: at least one endpoint is required".to_string());
        }
        for (i, url) in self.endpoints.iter().enumerate() {
            if let Err(e) = Endpoint::parse(url) {
                errors.push(format!("etcd.endpoints[{i}]: {e}"));
            }
        }
        if !self.prefix.starts_with('/') || self.prefix.len() < 2 || self.prefix.ends_with('/') {
            errors.push(format!(
                "etcd.prefix: `{}` must start with `/` and not end with `/` (e.g. `/apisix`)",
                self.prefix
            ));
        }
        if self.timeout == 0 {
            errors.push("etcd.timeout: must be at least 1 second".to_string());
        }
        match (&self.user, &self.password) {
            (Some(_), None) => errors.push("etcd.password: required with etcd.user".to_string()),
            (None, Some(_)) => errors.push("etcd.user: required with etcd.password".to_string()),
            (Some(u), Some(_)) if u.is_empty() => {
                errors.push("etcd.user: must not be empty".to_string())
            }
            _ => {}
        }
        errors
    }

    /// The parsed endpoints (after [`check`](EtcdSettings::check) passed; bad ones are left out).
    pub fn parsed_endpoints(&self) -> Vec<Endpoint> {
        self.endpoints
            .iter()
            .filter_map(|u| Endpoint::parse(u).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(EtcdSettings::default().check().is_empty());
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("https://etcd.example:2379").unwrap();
        assert!(e.tls);
        assert_eq!((e.host.as_str(), e.port), ("etcd.example", 2379));
        let e = Endpoint::parse("http://[::1]:12379").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 12379));
        assert_eq!(Endpoint::parse("http://h").unwrap().port, 2379);
        assert!(Endpoint::parse("tcp://h:1").is_err());
        assert!(Endpoint::parse("http://h:1/v3").is_err());
        assert!(Endpoint::parse("http://u:p@h:1").is_err());
    }

    #[test]
    fn every_error_names_its_key() {
        let s = EtcdSettings {
            endpoints: vec!["http://ok:1".into(), "nope".into()],
            prefix: "apisix/".into(),
            timeout: 0,
            user: Some("root".into()),
            password: None,
            tls: EtcdTls::default(),
        };
        let errors = s.check();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("etcd.endpoints[1]:"));
        assert!(errors[1].starts_with("etcd.prefix:"));
        assert!(errors[2].starts_with("etcd.timeout:"));
        assert!(errors[3].starts_with("etcd.password:"));
    }
}
