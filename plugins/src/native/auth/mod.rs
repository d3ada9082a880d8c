//! Authentication plugins: `key-auth`, `basic-auth` and `jwt-auth`. Each finds the caller among the
//! snapshot's consumers ([`crate::consumer::ConsumerIndex`], built at apply time) and
//! records the consumer on the request ([`NativeCtx::consumer`]), where `$consumer_name`,
//! the access log, the consumer's own plugins and `consumer-restriction` find it.

pub mod basic_auth;
pub mod jwt_auth;
pub mod key_auth;

use std::sync::Arc;

use bytes::Bytes;
use pingora_http::RequestHeader;

use super::{NativeCtx, NativeOutcome};
use crate::consumer::Consumer;

/// A 401 with APISIX's `{"message": ...}` body.
fn unauthorized(message: &str) -> NativeOutcome {
    NativeOutcome::Respond {
        status: 401,
        body: Bytes::from(serde_json::json!({ "message": message }).to_string()),
    }
}

/// Records the authenticated consumer and tells the upstream who it is (APISIX's
/// `X-Consumer-Username`).
fn attach(req: &mut RequestHeader, cx: &mut NativeCtx<'_>, consumer: &Arc<Consumer>) {
    if let Ok(v) = http::HeaderValue::from_str(&consumer.username) {
        let _ = req.insert_header("x-consumer-username", v);
    }
    *cx.consumer = Some(Arc::clone(consumer));
}

/// The query string without the arguments named `name` (`None` when nothing is left).
fn query_without(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| {
            let key = kv.split_once('=').map_or(*kv, |(k, _)| k);
            key != name && !kv.is_empty()
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Removes query argument `name` from the request's URI.
fn remove_query_arg(req: &mut RequestHeader, name: &str) {
    let Some(query) = req.uri.query() else {
        return;
    };
    let path = req.uri.path();
    let target = match query_without(query, name) {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Ok(uri) = target.parse::<http::Uri>() {
        req.set_uri(uri);
    }
}

#[cfg(test)]
mod tests {
    use super::query_without;

    #[test]
    fn query_args_are_removed_by_name() {
        assert_eq!(
            query_without("apikey=1&a=2", "apikey").as_deref(),
            Some("a=2")
        );
        assert_eq!(query_without("apikey=1", "apikey"), None);
        assert_eq!(
            query_without("a=1&apikey&b", "apikey").as_deref(),
            Some("a=1&b")
        );
    }
}
