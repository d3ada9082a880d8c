//! TLS for the listener tests: certificates generated per test with `rcgen` (ECDSA
//! P-256, or RSA 2048 with a key made once per run by the `openssl` tool, since `ring`
//! cannot generate RSA keys), and a real rustls client that reports which certificate
//! the gateway served.
//!
//! The client accepts any certificate on purpose: the tests compare the served
//! certificate with the one they expect, which says more than a chain check would (two
//! certificates can both be valid for a name). The signature schemes it offers can be
//! limited to RSA or ECDSA to test the gateway's choice.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

use super::http::{read_one, Request, Response};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Ecdsa,
    Rsa,
}

/// A generated certificate: PEMs for the admin API, DER to recognise it.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

fn rsa_key_pem() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("run openssl genpkey (the RSA tests need the openssl tool)");
        assert!(out.status.success(), "openssl genpkey failed");
        String::from_utf8(out.stdout).expect("PEM is text")
    })
}

/// A self-signed certificate for `names`. `expired`: valid in 2020 only.
pub fn issue(names: &[&str], algo: Algo, expired: bool) -> Issued {
    let key = match algo {
        Algo::Ecdsa => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ECDSA key"),
        Algo::Rsa => KeyPair::from_pkcs8_pem_and_sign_algo(rsa_key_pem(), &rcgen::PKCS_RSA_SHA256)
            .expect("RSA key"),
    };
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("certificate params");
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

/// A certificate authority for client certificates (mTLS tests).
pub struct Ca {
    pub cert_pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            cert_pem: cert.pem(),
            cert,
            key,
        }
    }

    /// A client certificate signed by this CA.
    pub fn client_cert(&self, name: &str) -> ClientCert {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("client key");
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("client params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("client certificate");
        ClientCert {
            chain: vec![cert.der().to_vec()],
            key_der: key.serialize_der(),
        }
    }
}

/// A certificate the client presents.
#[derive(Clone, Debug)]
pub struct ClientCert {
    pub chain: Vec<Vec<u8>>,
    key_der: Vec<u8>,
}

/// What a client offers and asks for.
#[derive(Clone, Debug)]
pub struct ClientOpts {
    /// `None`: no SNI extension.
    pub sni: Option<String>,
    /// Offer only this kind of signature scheme (`None`: all).
    pub only: Option<Algo>,
    pub alpn: Vec<Vec<u8>>,
    /// Present this certificate when asked.
    pub client_cert: Option<ClientCert>,
}

impl ClientOpts {
    pub fn sni(name: &str) -> ClientOpts {
        ClientOpts {
            sni: Some(name.to_string()),
            only: None,
            alpn: Vec::new(),
            client_cert: None,
        }
    }
}

#[derive(Debug)]
struct AnyCert {
    schemes: Vec<SignatureScheme>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        self.schemes.clone()
    }
}

pub fn client_config(opts: &ClientOpts) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let all = provider
        .signature_verification_algorithms
        .supported_schemes();
    let schemes = all
        .into_iter()
        .filter(|s| {
            let name = format!("{s:?}");
            match opts.only {
                None => true,
                Some(Algo::Ecdsa) => name.starts_with("ECDSA"),
                Some(Algo::Rsa) => name.starts_with("RSA"),
            }
        })
        .collect();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert { schemes, provider }));
    let mut config = match &opts.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                c.chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_der.clone().into()),
            )
            .expect("client certificate"),
    };
    config.enable_sni = opts.sni.is_some();
    config.alpn_protocols = opts.alpn.clone();
    Arc::new(config)
}

/// An open TLS connection to the gateway.
pub struct TlsConn {
    addr: SocketAddr,
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    /// The leaf certificate the gateway presented.
    pub peer_der: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

impl TlsConn {
    /// Connects and completes the handshake; `Err` with the reason when it fails.
    pub fn connect(addr: SocketAddr, opts: &ClientOpts) -> Result<TlsConn, String> {
        let name = match &opts.sni {
            Some(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
            // Without SNI rustls still needs a name to check against; an IP sends none.
            None => ServerName::IpAddress(addr.ip().into()),
        };
        let mut conn =
            rustls::ClientConnection::new(client_config(opts), name).map_err(|e| e.to_string())?;
        let mut tcp =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
        }
        let peer_der = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or("no peer certificate")?;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        Ok(TlsConn {
            addr,
            stream: BufReader::new(rustls::StreamOwned::new(conn, tcp)),
            peer_der,
            alpn,
        })
    }

    /// One HTTP/1.1 exchange on this connection.
    pub fn send(&mut self, req: &Request) -> std::io::Result<Response> {
        let bytes = req.encode(self.addr);
        self.stream.get_mut().write_all(&bytes)?;
        self.stream.get_mut().flush()?;
        read_one(&mut self.stream)
    }
}

/// A handshake and one GET on a new connection: the served certificate and the answer.
pub fn tls_get(
    addr: SocketAddr,
    opts: &ClientOpts,
    path: &str,
) -> Result<(Vec<u8>, Response), String> {
    let mut conn = TlsConn::connect(addr, opts)?;
    let mut req = Request::get(path);
    if let Some(sni) = &opts.sni {
        req = req.header("Host", sni);
    }
    let resp = conn.send(&req).map_err(|e| e.to_string())?;
    Ok((conn.peer_der.clone(), resp))
}
