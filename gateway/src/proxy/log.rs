//! The log phase: metrics and the access log line for every request, whatever its
//! outcome.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::logging::record::LogRecord;
use crate::logging::AccessLog;
use crate::metrics::{Metrics, RequestSample};
use crate::metrics_apisix::ApisixSample;

/// The request-id plugin's default header; a request without it gets a made-up id.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// The status of a finished request: the one written, else the error's (499 when the
/// client went away first).
pub fn final_status(session: &Session, e: Option<&Error>, ctx: &RequestCtx) -> u16 {
    session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .or_else(|| e.map(super::error::status_for))
        .unwrap_or(0)
}

/// Records the request's status, latency and bytes on its route's series, and writes
/// its access log line.
pub fn record(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    metrics: &Metrics,
    access_log: &AccessLog,
) {
    let status = final_status(session, e, ctx);
    let unmatched;
    let series = match ctx.route.as_ref() {
        Some(r) => &r.metrics,
        None => {
            unmatched = metrics.unmatched();
            &unmatched
        }
    };
    let req = session.req_header();
    let request_header_len: usize = req.method.as_str().len()
        + req.uri.path().len()
        + req.uri.query().map_or(0, |q| q.len() + 1)
        + 12
        + header_bytes(&req.headers);
    let response_header_len = session
        .response_written()
        .map(|r| 17 + header_bytes(&r.headers))
        .unwrap_or(0);
    let total_seconds = ctx.started.elapsed().as_secs_f64();
    let ingress_bytes = (request_header_len + session.body_bytes_read()) as u64;
    let egress_bytes = (response_header_len + session.body_bytes_sent()) as u64;
    series.record(&RequestSample {
        status,
        total_seconds,
        upstream_seconds: ctx.upstream_duration.map(|d| d.as_secs_f64()),
        ingress_bytes,
        egress_bytes,
    });
    if let Some(apisix) = metrics.apisix() {
        let route = ctx.route.as_deref();
        let node = ctx.upstream_addrs.last().map(|a| a.ip().to_string());
        apisix.record(&ApisixSample {
            route: route.map_or("", |r| r.id.as_str()),
            matched_uri: route.map_or("", |r| r.matched_uri.as_str()),
            matched_host: route.map_or("", |r| r.matched_host.as_str()),
            service: route.and_then(|r| r.service_id.as_deref()).unwrap_or(""),
            consumer: ctx.consumer.as_ref().map_or("", |c| &*c.username),
            node: node.as_deref().unwrap_or(""),
            status,
            total_seconds,
            upstream_seconds: ctx.upstream_duration.map(|d| d.as_secs_f64()),
            ingress_bytes,
            egress_bytes,
        });
    }
    if !access_log.enabled() {
        return;
    }
    let host = super::view::request_host(session);
    let made_id;
    let request_id = match req
        .headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(id) => Some(id),
        None if access_log.uses_request_id() => {
            made_id = format!("{:032x}", rand::random::<u128>());
            Some(made_id.as_str())
        }
        None => None,
    };
    let upstream = ctx.route.as_ref().and_then(|r| r.upstream.as_ref());
    let tried = !ctx.upstream_addrs.is_empty();
    access_log.log(&LogRecord {
        view: Some(super::view::request_view(session, &host)),
        client: super::native::client_addr(session, ctx),
        protocol: if req.version == http::Version::HTTP_10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
        status,
        body_bytes_sent: session.body_bytes_sent() as u64,
        bytes_sent: egress_bytes,
        request_length: ingress_bytes,
        request_time: total_seconds,
        time: std::time::SystemTime::now(),
        upstream_addrs: &ctx.upstream_addrs,
        upstream_status: ctx.upstream_status,
        upstream_response_time: ctx.upstream_duration.map(|d| d.as_secs_f64()),
        upstream_scheme: upstream.filter(|_| tried).map(|u| u.scheme.as_str()),
        upstream_host: ctx.upstream_target.as_ref().map(|(h, _)| h.as_str()),
        upstream_uri: ctx.upstream_target.as_ref().map(|(_, u)| u.as_str()),
        route_id: ctx.route.as_ref().map(|r| r.id.as_str()),
        service_id: ctx.route.as_ref().and_then(|r| r.service_id.as_deref()),
        consumer_name: ctx.consumer.as_ref().map(|c| &*c.username),
        request_id,
    });
}

/// Keeps the Host header and path sent upstream for `$upstream_host`/`$upstream_uri`.
pub fn note_upstream_target(ctx: &mut RequestCtx, upstream_request: &RequestHeader) {
    let host = upstream_request
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let uri = upstream_request
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str());
    ctx.upstream_target = Some((host.to_string(), uri.to_string()));
}

/// Bytes the headers take on the wire (`name: value\r\n` each, plus the blank line).
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 2
}
