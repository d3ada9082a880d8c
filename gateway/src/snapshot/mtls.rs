//! Mutual TLS of an SSL (`client: {ca, depth, skip_mtls_uri_regex}`), compiled at apply
//! time: the CA bundle as a rustls WebPKI verifier, the depth, and the paths that may
//! pass without a client certificate.
//!
//! The listener asks for a client certificate (without requiring one) whenever an SSL of
//! the running configuration has `client`; the chain the client sent is checked against
//! the CA of the SSL its SNI selected when the handshake completes, and the request path
//! answers 400 when that check failed (APISIX's behaviour), unless the path matches
//! `skip_mtls_uri_regex`.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::config::{FieldError, SslClient};

/// An SSL's client-certificate policy.
pub struct ClientAuth {
    verifier: Arc<dyn ClientCertVerifier>,
    /// Longest accepted chain: the client certificate plus `depth - 1` intermediates.
    pub depth: u32,
    /// Paths (the normalised `uri`) that pass without a verified client certificate.
    pub skip: Vec<regex::Regex>,
}

/// What the handshake found about the client's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertCheck {
    /// The SSL does not ask for one.
    NotRequired,
    Verified,
    /// The client sent none.
    Missing,
    /// The client sent one that did not verify; why.
    Failed(String),
}

impl ClientAuth {
    /// Compiles `client`; errors are named `client.ca`, `client.skip_mtls_uri_regex[i]`.
    pub fn build(client: &SslClient) -> Result<ClientAuth, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut roots = RootCertStore::empty();
        match rustls_pemfile::certs(&mut client.ca.as_bytes()).collect::<Result<Vec<_>, _>>() {
            Ok(cas) if cas.is_empty() => errors.push(FieldError::new(
                "client.ca",
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            )),
            Ok(cas) => {
                for (i, ca) in cas.into_iter().enumerate() {
                    if let Err(e) = roots.add(ca) {
                        errors.push(FieldError::new(
                            "client.ca",
                            format!("certificate {i} is not a usable CA: {e}"),
                        ));
                    }
                }
            }
            Err(e) => errors.push(FieldError::new(
                "client.ca",
                format!("is not a PEM certificate: {e}"),
            )),
        }
        let mut skip = Vec::new();
        for (i, pattern) in client.skip_mtls_uri_regex.iter().flatten().enumerate() {
            match regex::Regex::new(pattern) {
                Ok(r) => skip.push(r),
                Err(e) => errors.push(FieldError::new(
                    format!("client.skip_mtls_uri_regex[{i}]"),
                    format!("invalid regex: {e}"),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| vec![FieldError::new("client.ca", e.to_string())])?;
        Ok(ClientAuth {
            verifier,
            depth: client.depth,
            skip,
        })
    }

    /// Checks the chain a client sent (leaf first) against the CA and the depth.
    pub fn check(&self, chain: Option<&[CertificateDer<'static>]>) -> ClientCertCheck {
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return ClientCertCheck::Missing;
        };
        if intermediates.len() as u64 >= u64::from(self.depth) {
            return ClientCertCheck::Failed(format!(
                "the chain has {} intermediates; depth {} allows {}",
                intermediates.len(),
                self.depth,
                self.depth - 1
            ));
        }
        match self
            .verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            Ok(_) => ClientCertCheck::Verified,
            Err(e) => ClientCertCheck::Failed(e.to_string()),
        }
    }

    /// Whether `path` may pass without a verified client certificate.
    pub fn skips(&self, path: &str) -> bool {
        self.skip.iter().any(|r| r.is_match(path))
    }
}
