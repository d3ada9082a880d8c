//! The answers the client edge writes before a request reaches the proxy (a malformed
//! head: 400; `CONNECT`: 405; a slow head: 408; a large one: 431): counted as unmatched
//! requests (`route=""`) and written to the access log with what is known of them.

use std::sync::Arc;

use super::record::LogRecord;
use super::AccessLog;
use crate::edge::ReplyObserver;
use crate::metrics::{Metrics, RequestSample};

/// The observer the edge calls for each answer.
pub fn observer(metrics: Arc<Metrics>, access_log: Arc<AccessLog>) -> ReplyObserver {
    let unmatched = metrics.unmatched();
    Arc::new(move |reply, client| {
        let status = reply.status();
        unmatched.record(&RequestSample {
            status,
            total_seconds: 0.0,
            upstream_seconds: None,
            ingress_bytes: 0,
            egress_bytes: 0,
        });
        access_log.log(&LogRecord::bare(client, status));
    })
}
