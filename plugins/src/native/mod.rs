//! Native (Rust) plugins: APISIX plugins written against Pingora's request and response
//! headers instead of Lua. A [`NativePlugin`] describes one (name, priority, schema) and
//! turns a configuration into an instance at apply time; the instance implements
//! [`Plugin`], whose methods are the phases, each doing nothing unless overridden. The
//! chain orders native and Lua steps together by priority.
//!
//! An instance lives in a snapshot and is replaced with it. State that must outlive a
//! swap (counters, connection counts) belongs in a registry outside the snapshot, keyed
//! by a stable identity (the route and plugin), the way `HealthRegistry` keeps health.

mod request_id;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use pingora_http::{RequestHeader, ResponseHeader};
use serde_json::Value;

use crate::phase::Phase;

/// What a request carries to native plugins besides its headers.
pub struct NativeCtx<'a> {
    /// Per-request plugin state, by type (a plugin keeps what a later phase of the same
    /// request needs, e.g. the id `request-id` chose in rewrite for header_filter).
    pub state: &'a mut http::Extensions,
    pub client_ip: Option<IpAddr>,
}

/// How a rewrite or access step ended.
#[derive(Debug, PartialEq, Eq)]
pub enum NativeOutcome {
    Continue,
    /// Answer now with this status and body (APISIX's `return code, body`).
    Respond {
        status: u16,
        body: Bytes,
    },
}

/// A configured native plugin. Each method is a phase; the defaults do nothing. Phase
/// methods must not block: they run on the request's worker thread.
pub trait Plugin: Send + Sync {
    /// `rewrite`: `req` is the request as it will go upstream.
    fn rewrite(&self, _req: &mut RequestHeader, _cx: &mut NativeCtx<'_>) -> NativeOutcome {
        NativeOutcome::Continue
    }

    /// `access`, after every rewrite step.
    fn access(&self, _req: &mut RequestHeader, _cx: &mut NativeCtx<'_>) -> NativeOutcome {
        NativeOutcome::Continue
    }

    /// `header_filter`: the response header, proxied or written by the gateway.
    fn header_filter(&self, _resp: &mut ResponseHeader, _cx: &mut NativeCtx<'_>) {}

    /// `log`, once the response is done.
    fn log(&self, _cx: &mut NativeCtx<'_>) {}
}

/// Builds an instance from a configuration; the error names the field.
pub type NativeBuild = fn(&Value) -> Result<Arc<dyn Plugin>, String>;

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
}

/// Every native plugin of this build.
pub fn builtin() -> Vec<NativePlugin> {
    vec![request_id::PLUGIN]
}
