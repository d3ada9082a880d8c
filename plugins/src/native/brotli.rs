//! APISIX's `brotli` (priority 996): compresses a response with brotli when the client
//! accepts it (`Accept-Encoding` with `br` or `*`, not `q=0`), it has a `Content-Type`
//! and that is one of `types` (`["text/html"]`; `"*"` for any), its known length is at
//! least `min_length` (20), it is not already encoded, and the request's HTTP version is
//! at least `http_version` (1.1). The encoder takes `comp_level` (quality 0..=11, 6),
//! `mode` (0 generic, 1 UTF-8 text, 2 WOFF fonts), `lgwin` (window bits, 19; 0: the
//! library's default) and `lgblock` (0: chosen from the quality). `vary` adds `Vary:
//! Accept-Encoding`; a strong ETag becomes weak. Each chunk is flushed as it passes
//! (APISIX does the same), so a streamed response stays streamed.
//!
//! With `gzip` on the same route, a client accepting both gets brotli: this plugin runs
//! first (996 > 995) and `gzip` leaves an encoded response alone, as in APISIX.
//! Unlike APISIX, `HEAD` requests and bodiless statuses (1xx, 204, 304) are left alone:
//! the encoder's end-of-stream bytes would be a body they must not have.

use std::io::Write;
use std::sync::Arc;

use brotli::enc::backward_references::BrotliEncoderMode;
use brotli::enc::BrotliEncoderParams;
use brotli::CompressorWriter;
use bytes::Bytes;
use parking_lot::Mutex;
use pingora_http::ResponseHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::encoding;
use super::{NativeBuildInput, NativeCtx, NativePlugin, Plugin};
use crate::phase::Phase;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "brotli",
    priority: 996,
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
            "mode": {"type": "integer", "minimum": 0, "maximum": 2, "default": 0},
            "comp_level": {"type": "integer", "minimum": 0, "maximum": 11, "default": 6},
            "lgwin": {"type": "integer", "default": 19,
                      "enum": [0, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]},
            "lgblock": {"type": "integer", "default": 0,
                        "enum": [0, 16, 17, 18, 19, 20, 21, 22, 23, 24]},
            "http_version": {"enum": [1.1, 1.0], "default": 1.1},
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
    #[serde(default)]
    mode: u8,
    #[serde(default = "default_level")]
    comp_level: u8,
    #[serde(default = "default_lgwin")]
    lgwin: u8,
    #[serde(default)]
    lgblock: u8,
    #[serde(default = "default_http_version")]
    http_version: f64,
    #[serde(default)]
    vary: bool,
}

fn default_types() -> Value {
    json!(["text/html"])
}
fn default_min_length() -> u64 {
    20
}
fn default_level() -> u8 {
    6
}
fn default_lgwin() -> u8 {
    19
}
fn default_http_version() -> f64 {
    1.1
}

struct Brotli {
    /// `None`: any type.
    types: Option<Vec<String>>,
    min_length: u64,
    params: BrotliEncoderParams,
    /// Only HTTP/1.1 and later (`http_version: 1.1`), or 1.0 too.
    http_1_0: bool,
    vary: bool,
}

/// The encoder of one response, made in header_filter.
#[derive(Clone)]
struct Encoder(Arc<Mutex<Option<CompressorWriter<Vec<u8>>>>>);

/// The stream encoder's staging buffer; its output collects in the `Vec` and leaves
/// with each chunk.
const BUFFER: usize = 4096;

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let types = encoding::parse_types(&conf.types)?;
    if conf.min_length < 1 {
        return Err("min_length: must be at least 1".to_string());
    }
    if conf.comp_level > 11 {
        return Err(format!("comp_level: {} is not in 0..=11", conf.comp_level));
    }
    let mode = match conf.mode {
        0 => BrotliEncoderMode::BROTLI_MODE_GENERIC,
        1 => BrotliEncoderMode::BROTLI_MODE_TEXT,
        2 => BrotliEncoderMode::BROTLI_MODE_FONT,
        m => return Err(format!("mode: {m} is not 0, 1 or 2")),
    };
    if conf.lgwin != 0 && !(10..=24).contains(&conf.lgwin) {
        return Err(format!("lgwin: {} is not 0 or in 10..=24", conf.lgwin));
    }
    if conf.lgblock != 0 && !(16..=24).contains(&conf.lgblock) {
        return Err(format!("lgblock: {} is not 0 or in 16..=24", conf.lgblock));
    }
    let http_1_0 = if conf.http_version == 1.0 {
        true
    } else if conf.http_version == 1.1 {
        false
    } else {
        return Err(format!(
            "http_version: {} is not 1.1 or 1.0",
            conf.http_version
        ));
    };
    let defaults = BrotliEncoderParams::default();
    let params = BrotliEncoderParams {
        quality: i32::from(conf.comp_level),
        lgwin: match conf.lgwin {
            0 => defaults.lgwin,
            w => i32::from(w),
        },
        lgblock: i32::from(conf.lgblock),
        mode,
        ..defaults
    };
    Ok(Arc::new(Brotli {
        types,
        min_length: conf.min_length,
        params,
        http_1_0,
        vary: conf.vary,
    }))
}

impl Brotli {
    fn applies(&self, resp: &ResponseHeader, cx: &NativeCtx<'_>) -> bool {
        let Some(req) = cx.request else {
            return false;
        };
        if req.method == http::Method::HEAD
            || !encoding::request_accepts(req, "br")
            || matches!(resp.status.as_u16(), 100..=199 | 204 | 304)
            || encoding::already_encoded(resp)
        {
            return false;
        }
        if req.version < http::Version::HTTP_11
            && !(self.http_1_0 && req.version == http::Version::HTTP_10)
        {
            return false;
        }
        // Like nginx, no `Content-Type`: not compressed, whatever `types` says.
        let Some(mime) = encoding::mime_type(resp) else {
            return false;
        };
        if self.types.as_ref().is_some_and(|t| !t.contains(&mime)) {
            return false;
        }
        // Like nginx, an unknown length (chunked) is not held to `min_length`.
        encoding::content_length(resp).is_none_or(|n| n >= self.min_length)
    }
}

impl Plugin for Brotli {
    fn header_filter(&self, resp: &mut ResponseHeader, cx: &mut NativeCtx<'_>) {
        if !self.applies(resp, cx) {
            return;
        }
        encoding::mark_encoded(resp, "br", self.vary);
        let writer = CompressorWriter::with_params(Vec::new(), BUFFER, &self.params);
        cx.state.insert(Encoder(Arc::new(Mutex::new(Some(writer)))));
    }

    fn body_filter(&self, body: &mut Option<Bytes>, end_of_stream: bool, cx: &mut NativeCtx<'_>) {
        let Some(Encoder(e)) = cx.state.get::<Encoder>() else {
            return;
        };
        let mut guard = e.lock();
        let Some(writer) = guard.as_mut() else {
            return;
        };
        if let Some(chunk) = body.as_ref().filter(|c| !c.is_empty()) {
            if let Err(e) = writer.write_all(chunk).and_then(|()| writer.flush()) {
                tracing::error!("brotli: {e}");
            }
        }
        if end_of_stream {
            // `into_inner` finishes the stream (its last meta-block).
            *body = guard.take().map(|w| Bytes::from(w.into_inner()));
        } else {
            *body = Some(Bytes::from(std::mem::take(writer.get_mut())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::TestRequest;
    use pingora_http::RequestHeader;
    use std::io::Read;

    /// The response header and body after the plugin, for `chunks` of `content_type`.
    fn run(
        conf: Value,
        accept: Option<&str>,
        content_type: Option<&str>,
        chunks: &[&[u8]],
    ) -> (ResponseHeader, Vec<u8>) {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        if let Some(a) = accept {
            req.insert_header("Accept-Encoding", a).unwrap();
        }
        let mut resp = ResponseHeader::build(200, None).unwrap();
        if let Some(ct) = content_type {
            resp.insert_header("Content-Type", ct).unwrap();
        }
        resp.insert_header("ETag", "\"v1\"").unwrap();
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

    fn unbrotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn compresses_accepted_types_in_a_stream() {
        let page = "<p>Portico</p>".repeat(200).into_bytes();
        let conf = json!({"vary": true, "comp_level": 11, "mode": 1, "lgwin": 22, "lgblock": 20});
        let (resp, body) = run(
            conf,
            Some("gzip, br;q=0.9"),
            Some("text/html; charset=utf-8"),
            &[&page[..1000], &page[1000..]],
        );
        assert_eq!(resp.headers.get("content-encoding").unwrap(), "br");
        assert_eq!(resp.headers.get("vary").unwrap(), "Accept-Encoding");
        assert_eq!(resp.headers.get("etag").unwrap(), "W/\"v1\"");
        assert!(resp.headers.get("content-length").is_none());
        assert!(body.len() < page.len() / 10, "{}", body.len());
        assert_eq!(unbrotli(&body), page);
        // Defaults, and lgwin 0.
        let (_, body) = run(json!({"lgwin": 0}), Some("br"), Some("text/html"), &[&page]);
        assert_eq!(unbrotli(&body), page);
    }

    #[test]
    fn each_chunk_is_flushed_whole() {
        let p = crate::native::test_support::build(&PLUGIN, json!({"types": "*"})).unwrap();
        let mut r = TestRequest::default();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("Accept-Encoding", "br").unwrap();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("Content-Type", "text/event-stream")
            .unwrap();
        p.header_filter(&mut resp, &mut r.cx_for(&req));
        let mut body = Some(Bytes::from_static(b"data: first event\n\n"));
        p.body_filter(&mut body, false, &mut r.cx_for(&req));
        let first = body.unwrap();
        // What went out so far decodes to the whole first chunk.
        let mut partial = Vec::new();
        let mut d = brotli::Decompressor::new(&first[..], 4096);
        let mut buf = [0u8; 64];
        while let Ok(n) = d.read(&mut buf) {
            if n == 0 {
                break;
            }
            partial.extend_from_slice(&buf[..n]);
            if partial.len() >= 19 {
                break;
            }
        }
        assert_eq!(partial, b"data: first event\n\n");
    }

    #[test]
    fn leaves_what_it_must_not_compress() {
        let text: &[u8] = b"a body long enough to be compressed";
        let cases = [
            (json!({}), None, Some("text/html")),
            (json!({}), Some("br;q=0"), Some("text/html")),
            (json!({}), Some("gzip"), Some("text/html")),
            (json!({}), Some("br"), Some("application/json")),
            (json!({"types": "*"}), Some("br"), None),
            (json!({"min_length": 100}), Some("br"), Some("text/html")),
        ];
        for (conf, accept, ct) in cases {
            let (resp, body) = run(conf.clone(), accept, ct, &[text]);
            assert!(
                resp.headers.get("content-encoding").is_none(),
                "{conf} {accept:?} {ct:?}"
            );
            assert_eq!(resp.headers.get("etag").unwrap(), "\"v1\"");
            assert_eq!(body, text);
        }
        let (resp, body) = run(
            json!({"types": "*"}),
            Some("*"),
            Some("application/json"),
            &[text],
        );
        assert_eq!(resp.headers.get("content-encoding").unwrap(), "br");
        assert_eq!(unbrotli(&body), text);
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        for (conf, field) in [
            (json!({"comp_level": 12}), "comp_level"),
            (json!({"mode": 3}), "mode"),
            (json!({"lgwin": 9}), "lgwin"),
            (json!({"lgblock": 15}), "lgblock"),
            (json!({"http_version": 2}), "http_version"),
            (json!({"types": []}), "types"),
            (json!({"min_length": 0}), "min_length"),
            (json!({"nope": 1}), "nope"),
        ] {
            let e = build(conf.clone()).unwrap_or_default();
            assert!(e.contains(field), "{conf}: {e}");
        }
        assert!(build(
            json!({"types": ["text/html", "application/json"], "http_version": 1.0,
                             "comp_level": 0, "lgwin": 24, "lgblock": 24, "mode": 2})
        )
        .is_none());
    }
}
