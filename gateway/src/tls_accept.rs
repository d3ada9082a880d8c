//! The proxy's TLS listeners: a rustls certificate resolver that reads the running
//! snapshot's SNI index on every handshake, so an SSL written through the admin API
//! serves the next handshake with no reload, and a handshake callback that keeps the
//! client's SNI for `$ssl_server_name`.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::settings::ProxySettings;
use crate::snapshot::tls::normalise_sni;
use crate::store::ConfigStore;

/// What the handshake leaves for the request path, in Pingora's `SslDigest` extension.
#[derive(Debug, Clone, Default)]
pub struct TlsConnInfo {
    /// The SNI the client sent, as sent (`None` when it sent none).
    pub server_name: Option<String>,
}

/// The settings of one TLS listener: certificates by SNI from the store, HTTP/2 by ALPN
/// when `proxy.http2` is on.
pub fn tls_settings(store: &Arc<ConfigStore>, proxy: &ProxySettings) -> TlsSettings {
    let mut settings = TlsSettings::with_callbacks(Box::new(KeepSni))
        .expect("TlsSettings::with_callbacks does not fail");
    settings.set_cert_resolver(Arc::new(SniResolver {
        store: Arc::clone(store),
        fallback_sni: proxy.ssl.fallback_sni.as_deref().map(normalise_sni),
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

/// Keeps the client's SNI in the connection's `SslDigest` extension.
struct KeepSni;

#[async_trait]
impl TlsAccept for KeepSni {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(TlsConnInfo {
            server_name: tls.server_name().map(str::to_string),
        }))
    }
}
