//! An upstream's client certificate, resolved at apply time into the `CertKey` Pingora's
//! connector presents: inline `tls.client_cert`/`client_key`, or the SSL named by
//! `tls.client_cert_id` (which must exist and be `type: client`).

use std::sync::Arc;

use pingora::utils::tls::CertKey;

use crate::config::{FieldError, ResourceSet, SslType, UpstreamSpec};

/// The client certificate `spec` presents, if any. Paths are relative to the upstream.
pub fn client_cert(
    spec: &UpstreamSpec,
    set: &ResourceSet,
) -> Result<Option<Arc<CertKey>>, FieldError> {
    let Some(tls) = &spec.tls else {
        return Ok(None);
    };
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        return cert_key(cert, key, "tls.client_cert", "tls.client_key").map(Some);
    }
    let Some(id) = &tls.client_cert_id else {
        return Ok(None);
    };
    let path = "tls.client_cert_id";
    let ssl = set
        .ssls
        .get(&id.0)
        .ok_or_else(|| FieldError::new(path, format!("ssl `{id}` does not exist")))?;
    if ssl.spec.kind != SslType::Client {
        return Err(FieldError::new(
            path,
            format!("ssl `{id}` is not of type client"),
        ));
    }
    match (&ssl.spec.cert, &ssl.spec.key) {
        (Some(c), Some(k)) => cert_key(c, k, path, path).map(Some),
        _ => Err(FieldError::new(
            path,
            format!("ssl `{id}` has no cert and key"),
        )),
    }
}

fn cert_key(
    cert_pem: &str,
    key_pem: &str,
    cert_path: &str,
    key_path: &str,
) -> Result<Arc<CertKey>, FieldError> {
    // The same checks as a served certificate: PEM, key type, key matches.
    super::tls::parse_pair(cert_pem, key_pem, cert_path, key_path)?;
    let chain: Vec<Vec<u8>> = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    let key = match rustls_pemfile::private_key(&mut key_pem.as_bytes()) {
        Ok(Some(k)) => k.secret_der().to_vec(),
        _ => return Err(FieldError::new(key_path, "is not a PEM private key")),
    };
    Ok(Arc::new(CertKey::new(chain, key)))
}
