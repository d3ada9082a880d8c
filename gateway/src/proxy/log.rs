//! The log phase: metrics for every request, whatever its outcome.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::metrics::{Metrics, RequestSample};

/// Records the request's status, latency and bytes on its route's series.
pub fn record(session: &Session, e: Option<&Error>, ctx: &RequestCtx, metrics: &Metrics) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .or_else(|| e.map(super::error::status_for))
        .unwrap_or(0);
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
    series.record(&RequestSample {
        status,
        total_seconds: ctx.started.elapsed().as_secs_f64(),
        upstream_seconds: ctx.upstream_duration.map(|d| d.as_secs_f64()),
        ingress_bytes: (request_header_len + session.body_bytes_read()) as u64,
        egress_bytes: (response_header_len + session.body_bytes_sent()) as u64,
    });
}

/// Bytes the headers take on the wire (`name: value\r\n` each, plus the blank line).
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + 2
}
