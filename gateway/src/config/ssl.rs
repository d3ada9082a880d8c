//! The APISIX `ssl` object (`/apisix/admin/ssls`): a certificate and its key, the SNI
//! names it serves, extra pairs (`certs`/`keys`, e.g. ECDSA beside RSA), and mTLS.
//!
//! Only structure is checked here; the PEM is parsed (and the key matched to its
//! certificate) once, when the snapshot is built (`snapshot/tls.rs`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{CheckSpec, FieldError, Id};

/// Longest PEM accepted for one certificate or key (APISIX: 64 KiB).
const MAX_PEM_LEN: usize = 64 * 1024;
/// Most extra pairs in `certs`/`keys`.
const MAX_EXTRA_PAIRS: usize = 16;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SslSpec {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub cert: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub certs: Option<Vec<String>>,
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    #[serde(default)]
    pub sni: Option<String>,
    #[serde(default)]
    pub snis: Option<Vec<String>>,
    #[serde(default, rename = "type")]
    pub kind: SslType,
    /// 1 = in use, 0 = kept but not served.
    #[serde(default = "default_status")]
    pub status: u8,
    #[serde(default)]
    pub client: Option<SslClient>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub desc: Option<String>,
    #[serde(default)]
    pub create_time: Option<u64>,
    #[serde(default)]
    pub update_time: Option<u64>,
}

fn default_status() -> u8 {
    1
}

/// `server` certificates are served to clients by SNI; `client` ones are presented to
/// upstreams.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SslType {
    #[default]
    Server,
    Client,
}

/// `client`: mutual TLS towards clients.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SslClient {
    /// PEM of the CA(s) client certificates must chain to.
    pub ca: String,
    #[serde(default = "default_depth")]
    pub depth: u32,
    #[serde(default)]
    pub skip_mtls_uri_regex: Option<Vec<String>>,
}

fn default_depth() -> u32 {
    1
}

impl SslSpec {
    /// Every SNI pattern, lower-cased: `sni` or `snis`.
    pub fn all_snis(&self) -> Vec<String> {
        self.sni
            .iter()
            .chain(self.snis.iter().flatten())
            .map(|s| s.to_ascii_lowercase())
            .collect()
    }

    /// The (cert, key) pairs with the field paths to report them under: `cert`/`key`,
    /// then `certs[i]`/`keys[i]`.
    pub fn pairs(&self) -> Vec<(&str, &str, String, String)> {
        let mut out = Vec::new();
        if let (Some(c), Some(k)) = (&self.cert, &self.key) {
            out.push((
                c.as_str(),
                k.as_str(),
                "cert".to_string(),
                "key".to_string(),
            ));
        }
        if let (Some(cs), Some(ks)) = (&self.certs, &self.keys) {
            for (i, (c, k)) in cs.iter().zip(ks).enumerate() {
                out.push((
                    c.as_str(),
                    k.as_str(),
                    format!("certs[{i}]"),
                    format!("keys[{i}]"),
                ));
            }
        }
        out
    }
}

/// An SNI pattern as APISIX accepts it: a host name, `*.suffix` (one label), or `*`.
fn check_sni(sni: &str) -> Result<(), String> {
    if sni == "*" {
        return Ok(());
    }
    let name = sni.strip_prefix("*.").unwrap_or(sni);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{sni}` is not a host name, a `*.` wildcard of one label, or `*`"
        ))
    }
}

fn check_pem(path: &str, pem: &str, errors: &mut Vec<FieldError>) {
    if pem.len() > MAX_PEM_LEN {
        errors.push(FieldError::new(
            path,
            format!("longer than {MAX_PEM_LEN} bytes"),
        ));
    } else if pem.trim().is_empty() {
        errors.push(FieldError::new(path, "must not be empty"));
    }
}

impl CheckSpec for SslSpec {
    fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(id) = &self.id {
            if let Err(m) = super::check_id(&id.0) {
                errors.push(FieldError::new("id", m));
            }
        }
        for (field, value) in [("cert", &self.cert), ("key", &self.key)] {
            match value {
                Some(pem) => check_pem(field, pem, &mut errors),
                None => errors.push(FieldError::new(field, "is required")),
            }
        }
        match (&self.certs, &self.keys) {
            (Some(c), Some(k)) if c.len() != k.len() => errors.push(FieldError::new(
                "keys",
                format!(
                    "{} keys for {} certs: each entry of certs needs the key at the same index",
                    k.len(),
                    c.len()
                ),
            )),
            (Some(_), None) => errors.push(FieldError::new("keys", "is required with certs")),
            (None, Some(_)) => errors.push(FieldError::new("certs", "is required with keys")),
            _ => {}
        }
        for (field, list) in [("certs", &self.certs), ("keys", &self.keys)] {
            let Some(list) = list else { continue };
            if list.len() > MAX_EXTRA_PAIRS {
                errors.push(FieldError::new(
                    field,
                    format!("at most {MAX_EXTRA_PAIRS} entries"),
                ));
            }
            for (i, pem) in list.iter().enumerate() {
                check_pem(&format!("{field}[{i}]"), pem, &mut errors);
            }
        }
        match (&self.sni, &self.snis) {
            (Some(_), Some(_)) => {
                errors.push(FieldError::new("snis", "give either sni or snis, not both"))
            }
            (None, None) if self.kind == SslType::Server => {
                errors.push(FieldError::new("sni", "a server SSL needs sni or snis"))
            }
            (_, Some(list)) if list.is_empty() => {
                errors.push(FieldError::new("snis", "must not be empty"))
            }
            _ => {}
        }
        if let Some(sni) = &self.sni {
            if let Err(m) = check_sni(sni) {
                errors.push(FieldError::new("sni", m));
            }
        }
        for (i, sni) in self.snis.iter().flatten().enumerate() {
            if let Err(m) = check_sni(sni) {
                errors.push(FieldError::new(format!("snis[{i}]"), m));
            }
        }
        if self.status > 1 {
            errors.push(FieldError::new("status", "must be 1 or 0"));
        }
        if let Some(client) = &self.client {
            check_pem("client.ca", &client.ca, &mut errors);
            if client.depth == 0 {
                errors.push(FieldError::new("client.depth", "must be at least 1"));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: serde_json::Value) -> Vec<String> {
        match super::super::parse_spec::<SslSpec>(&v) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn structure_is_checked_with_paths() {
        assert!(errors(json!({"cert": "c", "key": "k", "sni": "a.com"})).is_empty());
        assert!(errors(json!({"cert": "c", "key": "k", "snis": ["*.a.com", "*"]})).is_empty());
        let e = errors(json!({"cert": "c", "key": "k"}));
        assert!(e[0].starts_with("sni:"), "{e:?}");
        let e = errors(json!({"cert": "c", "key": "k", "sni": "a", "certs": ["x"], "keys": []}));
        assert!(e[0].starts_with("keys:"), "{e:?}");
        let e = errors(json!({"cert": "c", "key": "k", "snis": ["a..b"]}));
        assert!(e[0].starts_with("snis[0]:"), "{e:?}");
        let e = errors(json!({"cert": "c", "key": "k", "sni": "*.*.a"}));
        assert!(e[0].starts_with("sni:"), "{e:?}");
        let e = errors(json!({"cert": "c", "key": "k", "sni": "a", "bogus": 1}));
        assert!(e[0].contains("bogus"), "{e:?}");
        let e = errors(json!({"cert": "c", "key": "k", "sni": "a", "type": "peer"}));
        assert!(e[0].starts_with("type:"), "{e:?}");
        assert!(errors(json!({"cert": "c", "key": "k", "type": "client"})).is_empty());
    }
}
