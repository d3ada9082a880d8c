//! APISIX's `gzip` (priority 995): compresses a response with gzip when the client
//! accepts it (`Accept-Encoding` with `gzip`, not `q=0`), its `Content-Type` is one of
//! `types` (`["text/html"]`; `"*"` for any), its known length is at least
//! `min_length` (20), it is a 200, 403 or 404 (as nginx's gzip filter) and not
//! already encoded, and the request is not `HEAD`. `comp_level` is 1..=9; `vary` adds
//! `Vary: Accept-Encoding`; a strong ETag becomes weak (as nginx's gzip filter does).
//! The body is compressed as it streams (no buffering beyond the compressor's); with
//! `brotli` on the same route, a client accepting both gets brotli, which runs first
//! and leaves an encoded response here. Pingora's own downstream compression module stays off (its level
//! is 0 by default and Portico never raises it), so responses are compressed once.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use parking_lot::Mutex;
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::encoding;
use super::{NativeBuildInput, NativeCtx, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "gzip",
    priority: 995,
    phases: &[Phase::HeaderFilter, Phase::BodyFilter],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "types": {"anyOf": [
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                {"enum": ["*"]}
            ], "default": ["text/html"]},
            "min_length": {"type": "integer", "minimum": 1, "default": 20},
            "comp_level": {"type": "integer", "minimum": 1, "maximum": 9, "default": 1},
            "http_version": {"enum": [1.1, 1.0], "default": 1.1},
            "buffers": {"type": "object", "properties": {
                "number": {"type": "integer", "minimum": 1, "default": 32},
                "size": {"type": "integer", "minimum": 1, "default": 4096}
            }},
            "vary": {"type": "boolean"}
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default = "default_types")]
    types: Value,
    #[serde(default = "default_min_length")]
    min_length: u64,
    #[serde(default = "default_level")]
    comp_level: u32,
    /// nginx's `gzip_http_version`; HTTP/1.0 clients are rare and get the same here.
    #[allow(dead_code)]
    http_version: Option<f64>,
    /// nginx's `gzip_buffers`; the compressor here sizes its own output.
    #[allow(dead_code)]
    buffers: Option<Value>,
    #[serde(default)]
    vary: bool,
}

fn default_types() -> Value {
    json!(["text/html"])
}
fn default_min_length() -> u64 {
    20
}
fn default_level() -> u32 {
    1
}

struct Gzip {
    /// `None`: any type.
    types: Option<Vec<String>>,
    min_length: u64,
    level: Compression,
    vary: bool,
}

/// The compressor of one response, made in header_filter.
#[derive(Clone)]
struct Compressor(Arc<Mutex<Option<GzEncoder<Vec<u8>>>>>);

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let types = encoding::parse_types(&conf.types)?;
    if conf.min_length < 1 {
        return Err("min_length: must be at least 1".to_string());
    }
    if !(1..=9).contains(&conf.comp_level) {
        return Err(format!("comp_level: {} is not in 1..=9", conf.comp_level));
    }
    Ok(Arc::new(Gzip {
        types,
        min_length: conf.min_length,
        level: Compression::new(conf.comp_level),
        vary: conf.vary,
    }))
}

impl Gzip {
    fn applies(&self, resp: &ResponseHeader, cx: &NativeCtx<'_>) -> bool {
        let Some(req) = cx.request else {
            return false;
        };
        if req.method == http::Method::HEAD {
            return false;
        }
        if !encoding::request_accepts(req, "gzip")
            || !matches!(resp.status.as_u16(), 200 | 403 | 404)
            || encoding::already_encoded(resp)
        {
            return false;
        }
        if encoding::content_length(resp).is_some_and(|n| n < self.min_length) {
            return false;
        }
        match &self.types {
            None => true,
            Some(types) => types.contains(&encoding::mime_type(resp).unwrap_or_default()),
        }
    }
}

impl Plugin for Gzip {
    fn header_filter(&self, resp: &mut ResponseHeader, cx: &mut NativeCtx<'_>) {
        if !self.applies(resp, cx) {
            return;
        }
        encoding::mark_encoded(resp, "gzip", self.vary);
        let encoder = GzEncoder::new(Vec::new(), self.level);
        cx.state
            .insert(Compressor(Arc::new(Mutex::new(Some(encoder)))));
    }

    fn body_filter(&self, body: &mut Option<Bytes>, end_of_stream: bool, cx: &mut NativeCtx<'_>) {
        let Some(Compressor(c)) = cx.state.get::<Compressor>() else {
            return;
        };
        let mut guard = c.lock();
        let Some(encoder) = guard.as_mut() else {
            return;
        };
        if let Some(chunk) = body.as_ref() {
            if let Err(e) = encoder.write_all(chunk) {
                tracing::error!("gzip: {e}");
            }
        }
        if end_of_stream {
            let out = guard.take().map(|e| e.finish());
            *body = match out {
                Some(Ok(bytes)) => Some(Bytes::from(bytes)),
                Some(Err(e)) => {
                    tracing::error!("gzip: {e}");
                    None
                }
                None => None,
            };
        } else {
            // Whatever the compressor has produced so far goes out now.
            *body = Some(Bytes::from(std::mem::take(encoder.get_mut())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::TestRequest;
    use flate2::read::GzDecoder;
    use pingora_http::RequestHeader;
    use std::io::Read;

    /// The response header and body after the plugin, for `chunks` of `content_type`.
    fn run(
        conf: Value,
        accept: Option<&str>,
        content_type: &str,
        chunks: &[&[u8]],
    ) -> (ResponseHeader, Vec<u8>) {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(a) = accept {
            req.insert_header("Accept-Encoding", a).unwrap();
        }
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", content_type).unwrap();
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        resp.insert_header("Content-Length", total.to_string())
            .unwrap();
        p.header_filter(&mut resp, &mut r.cx_for(&req));
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c));
            p.body_filter(&mut body, i + 1 == chunks.len(), &mut r.cx_for(&req));
            out.extend_from_slice(&body.unwrap_or_default());
        }
        (resp, out)
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(data).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn compresses_accepted_types_in_a_stream() {
        let page = b"<html>".repeat(100);
        let (resp, body) = run(
            json!({"vary": true, "comp_level": 6}),
            Some("br, gzip;q=0.8"),
            "text/html; charset=utf-8",
            &[&page[..300], &page[300..]],
        );
        assert_eq!(resp.headers.get("content-encoding").unwrap(), "gzip");
        assert_eq!(resp.headers.get("vary").unwrap(), "Accept-Encoding");
        assert!(resp.headers.get("content-length").is_none());
        assert!(body.len() < page.len());
        assert_eq!(gunzip(&body), page);
    }

    #[test]
    fn leaves_what_it_must_not_compress() {
        let text: &[u8] = b"a body long enough to be compressed";
        let cases = [
            (json!({}), None, "text/html"),
            (json!({}), Some("gzip;q=0"), "text/html"),
            (json!({}), Some("gzip"), "application/json"),
            (json!({"min_length": 100}), Some("gzip"), "text/html"),
        ];
        for (conf, accept, ct) in cases {
            let (resp, body) = run(conf.clone(), accept, ct, &[text]);
            assert!(
                resp.headers.get("content-encoding").is_none(),
                "{conf} {accept:?} {ct}"
            );
            assert_eq!(body, text);
        }
        let (resp, body) = run(
            json!({"types": "*"}),
            Some("gzip"),
            "application/json",
            &[text],
        );
        assert_eq!(resp.headers.get("content-encoding").unwrap(), "gzip");
        assert_eq!(gunzip(&body), text);
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        assert!(build(json!({"comp_level": 10}))
            .unwrap()
            .starts_with("comp_level"));
        assert!(build(json!({"types": []})).unwrap().starts_with("types"));
        assert!(build(json!({"types": "text/html"}))
            .unwrap()
            .starts_with("types"));
        assert!(build(json!({"min_length": 0}))
            .unwrap()
            .starts_with("min_length"));
        assert!(build(
            json!({"types": ["text/html", "application/json"], "http_version": 1.0,
                             "buffers": {"number": 4, "size": 8192}})
        )
        .is_none());
    }
}
