//! The certificates of `/apisix/admin/ssls`, compiled: each PEM pair parsed into a rustls
//! `CertifiedKey` at apply time (the key checked against its certificate), and an SNI
//! index the TLS listener's resolver reads once per handshake.
//!
//! Selection (`TlsIndex::lookup`): the name lower-cased and its trailing dot removed;
//! an exact name, then a one-label wildcard (`*.a.com` serves `b.a.com`, not
//! `c.b.a.com`), then `*`. Two SSLs naming the same pattern: the lower id wins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls::{SignatureAlgorithm, SignatureScheme};
use serde_json::Value;

use crate::config::{FieldError, ResourceSet, SslSpec, SslType};

/// Every SSL of the configuration, compiled, and the SNI index of those served.
#[derive(Default)]
pub struct TlsIndex {
    exact: HashMap<String, Arc<SslRuntime>>,
    /// `*.a.com` under `a.com`.
    wildcard: HashMap<String, Arc<SslRuntime>>,
    any: Option<Arc<SslRuntime>>,
    /// Every SSL by id (disabled and `client` ones too), for reuse and metrics.
    pub ssls: BTreeMap<String, Arc<SslRuntime>>,
    /// Some served SSL has `client` (mTLS): handshakes ask for a client certificate.
    pub asks_client_certs: bool,
}

/// One compiled SSL.
pub struct SslRuntime {
    pub id: String,
    /// The stored object it was built from: an unchanged object is not parsed again.
    source: Arc<Value>,
    /// Its key pairs, ECDSA and EdDSA before RSA, so a client that offers ECDSA gets
    /// the ECDSA certificate.
    keys: Vec<Arc<CertifiedKey>>,
    /// The earliest `notAfter` of its certificates, in Unix seconds.
    pub not_after: i64,
    /// Served by SNI: `type: server` and `status: 1`.
    pub serving: bool,
    /// Mutual TLS, when the SSL has `client`.
    pub client: Option<super::mtls::ClientAuth>,
}

impl SslRuntime {
    /// The first key pair the client can verify, given the signature schemes it offered.
    pub fn choose(&self, offered: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.keys
            .iter()
            .find(|k| k.key.choose_scheme(offered).is_some())
            .cloned()
    }

    /// Whether a certificate of this SSL has expired at `now` (Unix seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        self.not_after < now
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The SNI form names are indexed and looked up by: lower case, no trailing dot.
pub fn normalise_sni(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TlsIndex {
    /// Compiles every SSL of `set`; an SSL whose object did not change since `prev` is
    /// reused as is. Errors are named `ssls[id=X].cert` and so on.
    pub fn build(
        set: &ResourceSet,
        prev: Option<&TlsIndex>,
        errors: &mut Vec<FieldError>,
    ) -> TlsIndex {
        let mut index = TlsIndex::default();
        for (id, entry) in &set.ssls {
            let reused = prev
                .and_then(|p| p.ssls.get(id))
                .filter(|old| Arc::ptr_eq(&old.source, &entry.value) || old.source == entry.value)
                .cloned();
            let runtime = match reused {
                Some(r) => r,
                None => match compile(id, &entry.spec, &entry.value) {
                    Ok(r) => Arc::new(r),
                    Err(errs) => {
                        let prefix = format!("ssls[id={id}]");
                        errors.extend(errs.into_iter().map(|e| e.under(&prefix)));
                        continue;
                    }
                },
            };
            if runtime.serving {
                index.asks_client_certs |= runtime.client.is_some();
                for sni in entry.spec.all_snis() {
                    index.insert(&sni, &runtime);
                }
            }
            index.ssls.insert(id.clone(), runtime);
        }
        index
    }

    fn insert(&mut self, sni: &str, runtime: &Arc<SslRuntime>) {
        let sni = normalise_sni(sni);
        let slot = if sni == "*" {
            if self.any.is_none() {
                self.any = Some(Arc::clone(runtime));
            }
            return;
        } else if let Some(suffix) = sni.strip_prefix("*.") {
            self.wildcard.entry(suffix.to_string())
        } else {
            self.exact.entry(sni)
        };
        slot.or_insert_with(|| Arc::clone(runtime));
    }

    /// The SSL serving `sni` (already normalised): exact, one-label wildcard, then `*`.
    pub fn lookup(&self, sni: &str) -> Option<&Arc<SslRuntime>> {
        if let Some(r) = self.exact.get(sni) {
            return Some(r);
        }
        if let Some((_, parent)) = sni.split_once('.') {
            if let Some(r) = self.wildcard.get(parent) {
                return Some(r);
            }
        }
        self.any.as_ref()
    }
}

/// Parses one SSL's pairs. Paths are relative to the object (`cert`, `keys[1]`).
fn compile(id: &str, spec: &SslSpec, source: &Arc<Value>) -> Result<SslRuntime, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut keys = Vec::new();
    let mut not_after = i64::MAX;
    for (cert, key, cert_path, key_path) in spec.pairs() {
        match parse_pair(cert, key, &cert_path, &key_path) {
            Ok((k, expiry)) => {
                not_after = not_after.min(expiry);
                keys.push(Arc::new(k));
            }
            Err(e) => errors.push(e),
        }
    }
    let client = match spec.client.as_ref().map(super::mtls::ClientAuth::build) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(errs)) => {
            errors.extend(errs);
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    keys.sort_by_key(|k| k.key.algorithm() == SignatureAlgorithm::RSA);
    let now = unix_now();
    if not_after < now {
        tracing::warn!(
            ssl = id,
            "certificate expired {} s ago; it is served anyway",
            now - not_after
        );
    }
    Ok(SslRuntime {
        id: id.to_string(),
        source: Arc::clone(source),
        keys,
        not_after,
        serving: spec.kind == SslType::Server && spec.status == 1,
        client,
    })
}

/// A certificate chain and its key, checked to belong together, and the leaf's
/// `notAfter`.
pub(super) fn parse_pair(
    cert_pem: &str,
    key_pem: &str,
    cert_path: &str,
    key_path: &str,
) -> Result<(CertifiedKey, i64), FieldError> {
    let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FieldError::new(cert_path, format!("is not a PEM certificate: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(FieldError::new(
            cert_path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        FieldError::new(cert_path, format!("is not a valid X.509 certificate: {e}"))
    })?;
    let not_after = parsed.validity().not_after.timestamp();
    let key = match rustls_pemfile::private_key(&mut key_pem.as_bytes()) {
        Ok(Some(k)) => k,
        Ok(None) => {
            return Err(FieldError::new(
                key_path,
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            ))
        }
        Err(e) => {
            return Err(FieldError::new(
                key_path,
                format!("is not a PEM private key: {e}"),
            ))
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| FieldError::new(key_path, format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok((certified, not_after))
        }
        Err(_) => Err(FieldError::new(
            key_path,
            format!("does not match the certificate in {cert_path}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn runtime(id: &str) -> Arc<SslRuntime> {
        let (cert, key) = pem_pair(&["x.test"]);
        let spec: SslSpec = serde_json::from_value(serde_json::json!({
            "cert": cert, "key": key, "sni": "x.test"
        }))
        .expect("spec");
        Arc::new(compile(id, &spec, &Arc::new(Value::Null)).expect("compiles"))
    }

    #[test]
    fn lookup_order_is_exact_wildcard_star() {
        let mut index = TlsIndex::default();
        let (exact, wild, star, first) = (runtime("e"), runtime("w"), runtime("s"), runtime("f"));
        index.insert("A.com", &exact);
        index.insert("*.a.com", &wild);
        index.insert("*", &star);
        index.insert("dup.com", &first);
        index.insert("dup.com", &exact);
        let id = |sni: &str| index.lookup(&normalise_sni(sni)).map(|r| r.id.clone());
        assert_eq!(id("a.com").as_deref(), Some("e"));
        assert_eq!(id("A.COM.").as_deref(), Some("e"), "case and trailing dot");
        assert_eq!(id("b.a.com").as_deref(), Some("w"));
        assert_eq!(id("c.b.a.com").as_deref(), Some("s"), "one label only");
        assert_eq!(id("other").as_deref(), Some("s"));
        assert_eq!(
            id("dup.com").as_deref(),
            Some("f"),
            "the first (lower id) wins"
        );
        index.any = None;
        assert!(index.lookup("other").is_none());
    }

    fn error_of(r: Result<(CertifiedKey, i64), FieldError>, why: &str) -> FieldError {
        match r {
            Err(e) => e,
            Ok(_) => panic!("expected an error: {why}"),
        }
    }

    #[test]
    fn pairs_are_parsed_and_matched() {
        let (cert, key) = pem_pair(&["x.test"]);
        let (_, other_key) = pem_pair(&["x.test"]);
        assert!(parse_pair(&cert, &key, "cert", "key").is_ok());
        let e = error_of(parse_pair(&cert, &other_key, "cert", "key"), "mismatch");
        assert_eq!(e.path, "key");
        let e = error_of(parse_pair("junk", &key, "cert", "key"), "no PEM");
        assert_eq!(e.path, "cert");
        let e = error_of(parse_pair(&cert, "junk", "certs[0]", "keys[0]"), "no key");
        assert_eq!(e.path, "keys[0]");
    }
}
