//! Portico's outbound HTTP/1 client: the one skeleton the active health prober, the
//! dynacode poller and Lua's `resty.http` share.
//!
//! It is a thin layer over Pingora's own connector (`TransportConnector`), not a
//! separate HTTP client: that connector is already compiled in for the data path, it
//! pools connections per peer (TLS, SNI and verification settings included in the pool
//! key), and `resty.http`'s pooling on it measured well. What this crate adds is what the
//! three callers used to repeat:
//!
//! - [`resolve`] / [`resolve_cached`]: a host name, resolved without blocking;
//! - [`PeerSpec`]: the `HttpPeer` (TLS, SNI, verification, connect timeouts);
//! - [`Client`]: a connection from the connector, pooled ([`Client::request`]) or not
//!   ([`Client::connect`], the prober's raw stream);
//! - [`Client::request`]: write the request header and body, read the final response
//!   header and the body up to a limit, retry once on a stale pooled connection, give
//!   the connection back to the pool;
//! - [`write_raw`] / [`read_status_only`]: the prober's request text and status line (a
//!   probe must not wait for a body);
//! - [`Error`]: one classification and one message format for all of it.
//!
//! Callers keep what is theirs: the prober its request text and observations, the
//! poller its conditional headers and document handling, `resty.http` its Lua
//! parameters and response table.

mod error;
mod exchange;
mod raw;
mod resolve;

use std::net::SocketAddr;
use std::time::Duration;

use pingora_core::connectors::{ConnectorOptions, TransportConnector};
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;

pub use error::{is_stale, pingora_reason, Error, ErrorKind, Stage};
pub use exchange::{Request, Response};
pub use raw::{parse_status, read_status_only, write_raw};
pub use resolve::{resolve, resolve_cached};

/// How to reach one server, minus its address (resolved separately).
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub tls: bool,
    /// Server name for SNI and certificate checks (used only with `tls`; IPv6 without
    /// brackets).
    pub sni: String,
    /// Verify the certificate and that it names `sni`.
    pub verify: bool,
    /// TCP connect timeout.
    pub connect_timeout: Option<Duration>,
    /// TCP connect plus TLS handshake.
    pub total_connect_timeout: Option<Duration>,
}

impl PeerSpec {
    /// The Pingora peer for `addr`. Without TLS the SNI is left empty, so plain
    /// connections to one address share one pool key whatever name reached it.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let sni = if self.tls {
            self.sni.trim_matches(['[', ']']).to_string()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, self.tls, sni);
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.connection_timeout = self.connect_timeout;
        peer.options.total_connection_timeout = self.total_connect_timeout;
        peer
    }
}

/// Pingora's connector with its connection pool (`pool_size` idle connections over all
/// peers). One per caller: the prober's (never pooled), the poller's, and the
/// process-wide one of `resty.http`.
pub struct Client {
    transport: TransportConnector,
}

impl Client {
    /// Fails instead of panicking when the system CA store cannot be loaded (Pingora
    /// panics there): the caller reports it per request and keeps running.
    pub fn new(pool_size: usize) -> Result<Client, Error> {
        std::panic::catch_unwind(|| TransportConnector::new(Some(ConnectorOptions::new(pool_size))))
            .map(|transport| Client { transport })
            .map_err(|_| {
                Error::new(
                    ErrorKind::Unavailable,
                    Stage::Setup,
                    "HTTP client unavailable: loading the system CA certificates failed",
                )
            })
    }

    /// A new connection (TCP, and TLS when the peer says so), never from the pool.
    pub async fn connect(&self, peer: &HttpPeer) -> Result<Stream, Error> {
        self.transport
            .new_stream(peer)
            .await
            .map_err(|e| Error::from_pingora(&e, Stage::Connect))
    }
}

#[cfg(test)]
mod tests;
