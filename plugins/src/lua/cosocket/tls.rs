//! `sslhandshake`, on rustls, with its client configuration: the system's roots when the
//! certificate is verified, none when `ssl_verify` is false.

use std::sync::{Arc, OnceLock};

use mlua::{Lua, MultiValue, Value};

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::conn::Conn;
use super::slot::Slot;
use super::Failure;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The two configurations, built on first use (loading the system roots reads files).
pub(crate) fn config(verify: bool) -> Result<Arc<ClientConfig>, String> {
    static VERIFIED: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let cell = if verify { &VERIFIED } else { &UNVERIFIED };
    cell.get_or_init(|| build(verify)).clone()
}

fn build(verify: bool) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `ssl_verify` false (OpenResty's default): any certificate; signatures still checked.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslhandshake(reused_session, server_name, ssl_verify)`: `true` (sessions are not
/// reused, so the "session" returned is `true`), or `nil, err`. A connection that is
/// already TLS (reused from the pool) keeps its session.
pub(super) async fn sslhandshake(
    lua: Lua,
    slot: Arc<Slot>,
    name: Option<String>,
    verify: bool,
) -> mlua::Result<MultiValue> {
    let (conn, buf, t) = match slot.begin() {
        Ok(x) => x,
        Err(e) => return Failure::new(e).into_lua(&lua),
    };
    let tcp = match conn {
        Conn::Plain(tcp) => tcp,
        tls @ Conn::Tls(_) => {
            slot.end(Some(tls), buf);
            return Ok(MultiValue::from_vec(vec![Value::Boolean(true)]));
        }
    };
    let config = match config(verify) {
        Ok(c) => c,
        Err(e) => {
            slot.end(None, buf);
            return Failure::new(format!("handshake failed: {e}")).into_lua(&lua);
        }
    };
    let host = match &name {
        Some(n) => n.clone(),
        None => tcp
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
    };
    let Ok(server_name) = tokio_rustls::rustls::pki_types::ServerName::try_from(host) else {
        slot.end(None, buf);
        return Failure::new("handshake failed: bad server name").into_lua(&lua);
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(t.read.max(t.connect), connector.connect(server_name, tcp)).await {
        Ok(Ok(tls)) => {
            slot.end(Some(Conn::Tls(Box::new(tls))), buf);
            Ok(MultiValue::from_vec(vec![Value::Boolean(true)]))
        }
        Ok(Err(e)) => {
            slot.end(None, buf);
            let words = if verify && e.to_string().contains("certificate") {
                format!("certificate verify failed ({e})")
            } else {
                format!("handshake failed: {e}")
            };
            Failure::new(words).into_lua(&lua)
        }
        Err(_) => {
            slot.end(None, buf);
            Failure::new("timeout").into_lua(&lua)
        }
    }
}
