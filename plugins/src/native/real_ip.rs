//! APISIX's `real-ip` (priority 23000, rewrite phase): the client address comes from
//! `source` (a variable: `http_x_forwarded_for`, `http_x_real_ip`, `arg_realip`...)
//! when the peer is one of `trusted_addresses` (any peer when none are listed). For
//! `X-Forwarded-For` the last address counts; with `recursive`, the last one that is not
//! trusted. A value that is not an address (with an optional port) changes nothing.
//!
//! The address replaces the client's for the rest of the request: `ip-restriction`,
//! the limits, `$remote_addr`, Lua's `ngx.var.remote_addr`, the forwarding headers and
//! the access log. Routing has already happened (as in APISIX, where the plugin runs
//! after the route is matched), so a route's `remote_addrs` sees the peer.

use std::net::IpAddr;
use std::sync::Arc;

use pingora_http::RequestHeader;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ip_set::{parse_addr, IpSet};
use super::{NativeBuildInput, NativeCtx, NativeOutcome, NativePlugin, Plugin};
use crate::phase::Phase;
use crate::vars::Var;

pub const PLUGIN: NativePlugin = NativePlugin {
    name: "real-ip",
    priority: 23000,
    phases: &[Phase::Rewrite],
    schema,
    build,
    group: None,
    metadata_schema: None,
};

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "source": {"type": "string", "minLength": 1},
            "trusted_addresses": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "recursive": {"type": "boolean", "default": false}
        },
        "required": ["source"]
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    source: String,
    #[serde(default)]
    trusted_addresses: Option<Vec<String>>,
    #[serde(default)]
    recursive: bool,
}

/// Where the address is read.
enum Source {
    /// `X-Forwarded-For`: a list, the last (or last untrusted) entry counts.
    ForwardedFor,
    Var(Var),
}

struct RealIp {
    source: Source,
    trusted: IpSet,
    recursive: bool,
}

fn build(input: &NativeBuildInput<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Conf = serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let name = conf.source.trim_start_matches('$');
    let source = match Var::parse(name).map_err(|e| format!("source: {e}"))? {
        Var::Http(h) if h == "x-forwarded-for" => Source::ForwardedFor,
        var => Source::Var(var),
    };
    let trusted = match &conf.trusted_addresses {
        Some(list) if list.is_empty() => {
            return Err("trusted_addresses: must list at least one address".to_string())
        }
        Some(list) => IpSet::parse("trusted_addresses", list)?,
        None => IpSet::default(),
    };
    Ok(Arc::new(RealIp {
        source,
        trusted,
        recursive: conf.recursive,
    }))
}

impl RealIp {
    /// The address `source` names, with its port if it carried one.
    fn address(&self, req: &RequestHeader, cx: &NativeCtx<'_>) -> Option<(IpAddr, Option<u16>)> {
        let text: String = match &self.source {
            Source::ForwardedFor => {
                let all: Vec<&str> = req
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                let chosen = if self.recursive && !self.trusted.is_empty() {
                    // From the right, the first hop that is not a trusted proxy; if all
                    // are, the leftmost.
                    all.iter()
                        .rev()
                        .find(|a| parse_addr(a).is_none_or(|ip| !self.trusted.contains(ip)))
                        .or(all.first())
                } else {
                    all.last()
                };
                chosen?.to_string()
            }
            Source::Var(var) => var.resolve(&cx.view(req))?.into_owned(),
        };
        let ip = parse_addr(&text)?;
        let port = text
            .trim()
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.port());
        Some((ip, port))
    }
}

#[async_trait::async_trait]
impl Plugin for RealIp {
    async fn rewrite(&self, req: &mut RequestHeader, cx: &mut NativeCtx<'_>) -> NativeOutcome {
        if !self.trusted.is_empty() {
            match cx.client_ip() {
                Some(peer) if self.trusted.contains(peer) => {}
                _ => return NativeOutcome::Continue,
            }
        }
        if let Some((ip, port)) = self.address(req, cx) {
            cx.set_client_ip(ip, port);
        }
        NativeOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::test_support::{block_on, TestRequest};

    /// The client address after the plugin ran for a request from `peer` with `headers`.
    fn client(conf: Value, peer: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let p = crate::native::test_support::build(&PLUGIN, conf).unwrap();
        let mut r = TestRequest::from_ip(peer);
        let mut req = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        let mut cx = r.cx();
        block_on(p.rewrite(&mut req, &mut cx));
        cx.client_ip().unwrap().to_string()
    }

    #[test]
    fn reads_a_header_or_an_argument() {
        let c = json!({"source": "http_x_real_ip"});
        assert_eq!(
            client(c.clone(), "127.0.0.1", "/", &[("X-Real-IP", "1.2.3.4")]),
            "1.2.3.4"
        );
        assert_eq!(
            client(c.clone(), "127.0.0.1", "/", &[("X-Real-IP", "[::2]:80")]),
            "::2"
        );
        assert_eq!(
            client(c.clone(), "127.0.0.1", "/", &[("X-Real-IP", "junk")]),
            "127.0.0.1"
        );
        assert_eq!(client(c, "127.0.0.1", "/", &[]), "127.0.0.1");
        let c = json!({"source": "arg_realip"});
        assert_eq!(client(c, "127.0.0.1", "/?realip=5.6.7.8:9", &[]), "5.6.7.8");
    }

    #[test]
    fn forwarded_for_last_or_last_untrusted() {
        let xff = [
            ("X-Forwarded-For", "1.1.1.1, 2.2.2.2"),
            ("X-Forwarded-For", "10.0.0.2"),
        ];
        let c = json!({"source": "http_x_forwarded_for"});
        assert_eq!(client(c, "10.0.0.1", "/", &xff), "10.0.0.2");
        let c = json!({"source": "http_x_forwarded_for", "recursive": true,
                       "trusted_addresses": ["10.0.0.0/8"]});
        assert_eq!(client(c.clone(), "10.0.0.1", "/", &xff), "2.2.2.2");
        // An untrusted peer is believed, not its header.
        assert_eq!(client(c.clone(), "9.9.9.9", "/", &xff), "9.9.9.9");
        // All hops trusted: the leftmost.
        let all = [("X-Forwarded-For", "10.1.1.1, 10.2.2.2")];
        assert_eq!(client(c, "10.0.0.1", "/", &all), "10.1.1.1");
    }

    #[test]
    fn configuration_is_checked() {
        let build = |c: Value| crate::native::test_support::build(&PLUGIN, c).err();
        assert!(build(json!({})).unwrap().contains("source"));
        assert!(build(json!({"source": "nope"})).unwrap().contains("source"));
        assert!(
            build(json!({"source": "remote_addr", "trusted_addresses": ["x"]}))
                .unwrap()
                .contains("trusted_addresses[0]")
        );
    }
}
