//! The proxy's TLS listeners: a rustls certificate resolver that reads the running
//! snapshot's SNI index on every handshake, so an SSL written through the admin API
//! serves the next handshake with no reload; a client-certificate verifier that asks for
//! a certificate while some SSL has mTLS; and a handshake callback that keeps the
//! client's SNI, the SSL it selected and the client certificate's check for the request
//! path.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::settings::ProxySettings;
use crate::snapshot::mtls::ClientCertCheck;
use crate::snapshot::tls::{normalise_sni, SslRuntime};
use crate::store::ConfigStore;

/// What the handshake leaves for the request path, in Pingora's `SslDigest` extension.
#[derive(Clone)]
pub struct TlsConnInfo {
    /// The SNI the client sent, as sent (`None` when it sent none).
    pub server_name: Option<String>,
    /// The SSL the handshake selected (by SNI, or `fallback_sni`).
    pub ssl: Option<Arc<SslRuntime>>,
    pub client_cert: ClientCertCheck,
}

/// The settings of one TLS listener: certificates by SNI from the store, HTTP/2 by ALPN
/// when `proxy.http2` is on.
pub fn tls_settings(store: &Arc<ConfigStore>, proxy: &ProxySettings) -> TlsSettings {
    let fallback_sni = proxy.ssl.fallback_sni.as_deref().map(normalise_sni);
    let mut settings = TlsSettings::with_callbacks(Box::new(HandshakeDone {
        store: Arc::clone(store),
        fallback_sni: fallback_sni.clone(),
    }))
    .expect("TlsSettings::with_callbacks does not fail");
    settings.set_cert_resolver(Arc::new(SniResolver {
        store: Arc::clone(store),
        fallback_sni,
    }));
    settings.set_client_cert_verifier(Arc::new(AskClientCert {
        store: Arc::clone(store),
        provider: Arc::new(rustls::crypto::ring::default_provider()),
    }));
    if proxy.http2 {
        settings.enable_h2();
    }
    settings
}

/// Chooses the certificate for a handshake from the current snapshot.
pub struct SniResolver {
    store: Arc<ConfigStore>,
    fallback_sni: Option<String>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver")
            .field("fallback_sni", &self.fallback_sni)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = match hello.server_name() {
            Some(sent) => normalise_sni(sent),
            None => match &self.fallback_sni {
                Some(f) => f.clone(),
                None => {
                    tracing::debug!("TLS handshake without SNI and no fallback_sni: refused");
                    return None;
                }
            },
        };
        let snapshot = self.store.snapshot();
        let Some(ssl) = snapshot.tls.lookup(&name) else {
            tracing::debug!(sni = %name, "TLS handshake: no certificate for this name");
            return None;
        };
        let chosen = ssl.choose(hello.signature_schemes());
        if chosen.is_none() {
            tracing::debug!(
                sni = %name,
                ssl = %ssl.id,
                "TLS handshake: the client offers no signature scheme the certificates allow"
            );
        }
        chosen
    }
}

/// Records, when a handshake completes, the client's SNI, the SSL it selected and the
/// check of the client certificate against that SSL's CA.
struct HandshakeDone {
    store: Arc<ConfigStore>,
    fallback_sni: Option<String>,
}

#[async_trait]
impl TlsAccept for HandshakeDone {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = tls
            .server_name()
            .map(normalise_sni)
            .or_else(|| self.fallback_sni.clone());
        let snapshot = self.store.snapshot();
        let ssl = name.and_then(|n| snapshot.tls.lookup(&n).cloned());
        let client_cert = match ssl.as_ref().and_then(|s| s.client.as_ref()) {
            Some(auth) => auth.check(tls.peer_cert_chain_der()),
            None => ClientCertCheck::NotRequired,
        };
        Some(Arc::new(TlsConnInfo {
            server_name: tls.server_name().map(str::to_string),
            ssl,
            client_cert,
        }))
    }
}

/// Asks clients for a certificate (without requiring one) while some SSL of the running
/// configuration has mTLS. The chain is checked against the selected SSL's CA when the
/// handshake completes ([`HandshakeDone`]), since rustls verifies it before the
/// verifier could know the SNI; here only the client's proof of its key is checked.
struct AskClientCert {
    store: Arc<ConfigStore>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for AskClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AskClientCert")
    }
}

impl ClientCertVerifier for AskClientCert {
    fn offer_client_auth(&self) -> bool {
        self.store.snapshot().tls.asks_client_certs
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
