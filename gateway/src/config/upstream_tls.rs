//! An upstream's `tls` (APISIX): whether the node's certificate is verified, and the
//! client certificate presented to it (inline PEM, or the id of a `type: client` SSL).

use serde::Deserialize;

use super::{FieldError, Id};

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Verify the node's certificate (system CA store) and name. APISIX's default: off.
    #[serde(default)]
    pub verify: bool,
    #[serde(default)]
    pub client_cert: Option<String>,
    #[serde(default)]
    pub client_key: Option<String>,
    /// An SSL of `type: client` holding the certificate and key.
    #[serde(default)]
    pub client_cert_id: Option<Id>,
}

impl UpstreamTls {
    /// Structural checks; paths relative to the upstream (`tls.client_key`).
    pub fn check(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => errors.push(FieldError::new(
                "tls.client_key",
                "is required with tls.client_cert",
            )),
            (None, Some(_)) => errors.push(FieldError::new(
                "tls.client_cert",
                "is required with tls.client_key",
            )),
            _ => {}
        }
        if self.client_cert.is_some() && self.client_cert_id.is_some() {
            errors.push(FieldError::new(
                "tls.client_cert_id",
                "give either client_cert/client_key or client_cert_id, not both",
            ));
        }
        errors
    }
}
