//! The request-path half of mutual TLS: a request on a connection whose SSL has
//! `client` is refused with 400 (as APISIX does) when the client certificate did not
//! verify and the path is not in `skip_mtls_uri_regex`, or when its Host selects another
//! SSL than the handshake's SNI did.

use std::sync::Arc;

use pingora::proxy::Session;

use crate::snapshot::mtls::ClientCertCheck;
use crate::snapshot::Snapshot;
use crate::tls_accept::TlsConnInfo;

/// Why the request must be refused, if it must; `host` is the normalised request host.
pub fn refusal(session: &Session, snapshot: &Snapshot, host: &str) -> Option<String> {
    let info = session
        .digest()?
        .ssl_digest
        .as_ref()?
        .extension
        .get::<TlsConnInfo>()?;
    let ssl = info.ssl.as_ref()?;
    let client = ssl.client.as_ref()?;
    if !client.skips(session.req_header().uri.path()) {
        match &info.client_cert {
            ClientCertCheck::Verified | ClientCertCheck::NotRequired => {}
            ClientCertCheck::Missing => {
                return Some("client certificate was not present".to_string())
            }
            ClientCertCheck::Failed(why) => {
                return Some(format!("client certificate verification failed: {why}"))
            }
        }
    }
    let same = snapshot
        .tls
        .lookup(host)
        .is_some_and(|s| Arc::ptr_eq(s, ssl) || s.id == ssl.id);
    if !same {
        return Some(format!(
            "Host `{host}` does not select the SSL `{}` of the TLS handshake",
            ssl.id
        ));
    }
    None
}
