//! Native (Rust) plugins: APISIX plugins written against Pingora's request and response
//! headers instead of Lua. A [`NativePlugin`] describes one (name, priority, schema) and
//! turns a configuration into an instance at apply time; the instance implements
//! [`Plugin`], whose methods are the phases, each doing nothing unless overridden. The
//! chain orders native and Lua steps together by priority.
//!
//! An instance lives in a snapshot and is replaced with it. State that must outlive a
//! swap (counters, connection counts) belongs in a registry outside the snapshot, keyed
//! by a stable identity (the route and plugin), the way `HealthRegistry` keeps health.

pub mod auth;
mod brotli;
mod consumer_restriction;
mod cors;
mod encoding;
mod gzip;
mod header_ops;
mod ip_restriction;
pub(crate) mod ip_set;
pub mod limit;
mod mocking;
pub mod proxy_cache;
mod proxy_rewrite;
mod real_ip;
mod redirect;
mod request_id;
mod response_rewrite;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::Value;

use crate::consumer::{Consumer, ConsumerIndex};
use crate::phase::Phase;
use crate::vars::{host_of, RequestView};

/// The connection a request came on: what variables such as `remote_addr` and `scheme`
/// read besides the request header.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInfo {
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    pub server_port: Option<u16>,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
}

/// A client address a plugin (`real-ip`) set for the rest of the request: later steps,
/// `$remote_addr`, Lua's `ngx.var.remote_addr`, the forwarding headers and the access log
/// see it instead of the connection's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl ConnInfo {
    /// This connection as a request with `client` (if any) sees it.
    pub fn with_client(mut self, client: Option<ClientAddr>) -> ConnInfo {
        if let Some(c) = client {
            self.client_ip = Some(c.ip);
            if c.port.is_some() {
                self.client_port = c.port;
            }
        }
        self
    }
}

/// What a request carries to native plugins besides its headers.
pub struct NativeCtx<'a> {
    /// Per-request plugin state, by type (a plugin keeps what a later phase of the same
    /// request needs, e.g. the id `request-id` chose in rewrite for header_filter).
    /// Values are dropped when the request ends, however it ends: a guard kept here is
    /// how a plugin learns that (e.g. `limit-conn` giving back its slot).
    pub state: &'a mut http::Extensions,
    pub conn: ConnInfo,
    /// Headers for the response, whichever answers (the upstream or the gateway): what
    /// `ngx.header` does in rewrite and access. Applied before `header_filter` runs.
    pub response_headers: &'a mut Vec<(HeaderName, HeaderValue)>,
    /// The client address set for this request (see [`NativeCtx::set_client_ip`]).
    pub client_override: &'a mut Option<ClientAddr>,
    /// The request as it went upstream, in `header_filter` and `body_filter` (which get
    /// only the response); `None` in the request phases, which get it as `req`.
    pub request: Option<&'a RequestHeader>,
    /// The snapshot's consumers and their credentials (what auth plugins look up).
    pub consumers: &'a ConsumerIndex,
    /// The consumer this request authenticated as, once an auth plugin set it.
    pub consumer: &'a mut Option<Arc<Consumer>>,
}

impl NativeCtx<'_> {
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.conn.client_ip
    }

    /// Replaces the client address for the rest of the request (after routing, which
    /// has already happened): what `real-ip` does.
    pub fn set_client_ip(&mut self, ip: IpAddr, port: Option<u16>) {
        let client = ClientAddr { ip, port };
        *self.client_override = Some(client);
        self.conn = self.conn.with_client(Some(client));
    }

    /// The request as variables (`$uri`, `$arg_x`, `$http_x`, `$remote_addr`...) see it.
    pub fn view<'r>(&'r self, req: &'r RequestHeader) -> RequestView<'r> {
        RequestView {
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query(),
            host: host_of(req),
            headers: &req.headers,
            remote_addr: self.conn.client_ip,
            remote_port: self.conn.client_port,
            server_port: self.conn.server_port,
            scheme: self.conn.scheme,
            consumer_name: self.consumer.as_ref().map(|c| &*c.username),
        }
    }
}

/// How a rewrite or access step ended.
#[derive(Debug, PartialEq, Eq)]
pub enum NativeOutcome {
    Continue,
    /// Answer now with this status and body (APISIX's `return code, body`); headers the
    /// answer needs go to [`NativeCtx::response_headers`] first.
    Respond {
        status: u16,
        body: Bytes,
    },
}

/// A configured native plugin. Each method is a phase; the defaults do nothing.
/// `rewrite` and `access` may wait (a Redis round trip, a `limit-req` delay) without
/// blocking the worker; the other phases run synchronously and must not block.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// `rewrite`: `req` is the request as it will go upstream.
    async fn rewrite(&self, _req: &mut RequestHeader, _cx: &mut NativeCtx<'_>) -> NativeOutcome {
        NativeOutcome::Continue
    }

    /// `access`, after every rewrite step.
    async fn access(&self, _req: &mut RequestHeader, _cx: &mut NativeCtx<'_>) -> NativeOutcome {
        NativeOutcome::Continue
    }

    /// `header_filter`: the response header, proxied or written by the gateway.
    fn header_filter(&self, _resp: &mut ResponseHeader, _cx: &mut NativeCtx<'_>) {}

    /// `body_filter`: one chunk of the response body (`None` or empty at the end);
    /// a plugin listing this phase makes the response chunked, since it may change size.
    fn body_filter(
        &self,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        _cx: &mut NativeCtx<'_>,
    ) {
    }

    /// `log`, once the response is done.
    fn log(&self, _cx: &mut NativeCtx<'_>) {}
}

/// What a native plugin's build gets at apply time.
pub struct NativeBuildInput<'a> {
    pub conf: &'a Value,
    /// Where the configuration lives (`routes[id=1].plugins.limit-count`): a stable
    /// identity for state that outlives snapshots (counters), and the prefix of errors.
    pub owner: &'a str,
    /// The plugin's metadata (`/apisix/admin/plugin_metadata/{name}`, without `id`),
    /// validated against [`NativePlugin::metadata_schema`]: resolved into the instance
    /// here, at apply time, so no request looks it up. A metadata change rebuilds every
    /// instance of the plugin.
    pub metadata: Option<&'a Value>,
}

/// Builds an instance from a configuration; the error names the field.
pub type NativeBuild = fn(&NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String>;

/// A native plugin this build knows.
#[derive(Clone)]
pub struct NativePlugin {
    pub name: &'static str,
    /// APISIX's priority for the plugin: higher runs first within a phase.
    pub priority: i32,
    /// The phases its instances implement (the chain lists them only there).
    pub phases: &'static [Phase],
    /// Its configuration's JSON Schema, as `GET /apisix/admin/plugins/{name}` serves it.
    pub schema: fn() -> Value,
    /// The apply-time check and build of one configuration.
    pub build: NativeBuild,
    /// The group a configuration shares its state with (`limit-count`'s `group`):
    /// every configuration naming the same group must be identical, which the snapshot
    /// build checks across routes.
    pub group: Option<fn(&Value) -> Option<String>>,
    /// The JSON Schema of its plugin-wide metadata (APISIX's `metadata_schema`); `None`:
    /// the plugin takes no metadata, and a `plugin_metadata` object for it is refused.
    pub metadata_schema: Option<fn() -> Value>,
}

/// Every native plugin of this build.
pub fn builtin() -> Vec<NativePlugin> {
    vec![
        request_id::PLUGIN,
        real_ip::PLUGIN,
        mocking::PLUGIN,
        cors::PLUGIN,
        ip_restriction::PLUGIN,
        proxy_rewrite::PLUGIN,
        proxy_cache::PLUGIN,
        gzip::PLUGIN,
        brotli::PLUGIN,
        redirect::PLUGIN,
        response_rewrite::PLUGIN,
        auth::key_auth::PLUGIN,
        auth::basic_auth::PLUGIN,
        auth::jwt_auth::PLUGIN,
        consumer_restriction::PLUGIN,
        limit::LIMIT_COUNT,
        limit::LIMIT_REQ,
        limit::LIMIT_CONN,
    ]
}

/// What native plugins' unit tests share: a context to run phases in, and a way to run
/// the async ones.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Owns what a [`NativeCtx`] borrows, for one test request.
    #[derive(Default)]
    pub struct TestRequest {
        pub state: http::Extensions,
        pub conn: ConnInfo,
        pub response_headers: Vec<(HeaderName, HeaderValue)>,
        pub client_override: Option<ClientAddr>,
        pub consumers: ConsumerIndex,
        pub consumer: Option<Arc<Consumer>>,
    }

    impl TestRequest {
        pub fn from_ip(ip: &str) -> TestRequest {
            TestRequest {
                conn: ConnInfo {
                    client_ip: ip.parse().ok(),
                    scheme: "http",
                    ..ConnInfo::default()
                },
                ..TestRequest::default()
            }
        }

        pub fn cx(&mut self) -> NativeCtx<'_> {
            NativeCtx {
                state: &mut self.state,
                conn: self.conn,
                response_headers: &mut self.response_headers,
                client_override: &mut self.client_override,
                request: None,
                consumers: &self.consumers,
                consumer: &mut self.consumer,
            }
        }

        /// A context whose filters see `req` as the request.
        pub fn cx_for<'r>(&'r mut self, req: &'r RequestHeader) -> NativeCtx<'r> {
            let mut cx = self.cx();
            cx.request = Some(req);
            cx
        }
    }

    pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime")
            .block_on(f)
    }

    pub fn build(plugin: &NativePlugin, conf: Value) -> Result<Arc<dyn Plugin>, String> {
        build_at(plugin, conf, "routes[id=1].plugins.test")
    }

    /// Builds at `owner`: instances at one place share state that outlives snapshots.
    pub fn build_at(
        plugin: &NativePlugin,
        conf: Value,
        owner: &str,
    ) -> Result<Arc<dyn Plugin>, String> {
        (plugin.build)(&NativeBuildInput {
            conf: &conf,
            owner,
            metadata: None,
        })
    }

    /// Builds with the plugin's metadata `metadata`.
    pub fn build_with_metadata(
        plugin: &NativePlugin,
        conf: Value,
        metadata: &Value,
    ) -> Result<Arc<dyn Plugin>, String> {
        (plugin.build)(&NativeBuildInput {
            conf: &conf,
            owner: "routes[id=1].plugins.test",
            metadata: Some(metadata),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::TestRequest;
    use crate::vars::Var;

    #[test]
    fn the_view_reads_the_request_and_the_connection() {
        let mut r = TestRequest::from_ip("10.0.0.7");
        let mut req = pingora_http::RequestHeader::build("GET", b"/a/b?x=1", None).unwrap();
        req.insert_header("Host", "Api.Example.com:9080").unwrap();
        req.insert_header("X-Key", "k1").unwrap();
        let cx = r.cx();
        let view = cx.view(&req);
        let get = |name: &str| {
            Var::parse(name)
                .unwrap()
                .resolve(&view)
                .map(|v| v.into_owned())
        };
        assert_eq!(get("uri").as_deref(), Some("/a/b"));
        assert_eq!(get("arg_x").as_deref(), Some("1"));
        assert_eq!(get("http_x_key").as_deref(), Some("k1"));
        assert_eq!(get("remote_addr").as_deref(), Some("10.0.0.7"));
        assert_eq!(view.host, "Api.Example.com");
        assert_eq!(view.scheme, "http");
    }
}
