//! The client's hop-by-hop header fields, taken out of the request Portico's own driver
//! ([`super::driver`]) sends upstream.
//!
//! `pingora-proxy` does this for the requests it proxies, under the peer's
//! [`HttpUpstreamRequestPolicy`] (the balancer sets it per route: see
//! `upstream::request_policy`). The driver serves no upgrade request (the edge frames
//! any request with `Upgrade` as a tunnel, which stays on `pingora-proxy`), so the part
//! of the policy that decides which upgrades go through never applies here: with no
//! `Upgrade` field, every policy but `preserve` removes `Connection`, `Upgrade` and
//! `HTTP2-Settings`.

use http::header::{self, HeaderName};
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::upstreams::peer::HttpUpstreamRequestPolicy;

/// Most field names one request's `Connection` fields may nominate. Nominating is a
/// way to make the proxy delete fields, so the work it asks for is bounded.
const MAX_NOMINATED: usize = 9;

/// Fields the gateway vouches for upstream; a client may not have them deleted.
const PROTECTED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// The hop-by-hop fields of RFC 9110 section 7.6.1, and their common relatives. Names,
/// not strings: each removal by a `&str` would parse the name again, per request.
const HOP_BY_HOP: [HeaderName; 10] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// What a request without `Upgrade` never forwards, whatever the upgrade policy: no
/// handshake travels without it.
const HANDSHAKE: [HeaderName; 3] = [
    header::CONNECTION,
    header::UPGRADE,
    HeaderName::from_static("http2-settings"),
];

/// Removes from `req` (a request without `Upgrade`) what `policy` says does not travel
/// past this hop. `Err`: the client's `Connection` field is not acceptable (400).
pub fn strip(req: &mut RequestHeader, policy: HttpUpstreamRequestPolicy) -> Result<()> {
    if policy == HttpUpstreamRequestPolicy::preserve() {
        return Ok(());
    }
    if policy.strip_connection_nominated && req.headers.contains_key(header::CONNECTION) {
        for name in nominated(req, policy.reject_malformed_connection_nominations)? {
            req.remove_header(&name);
        }
    }
    // Most requests carry none of these: one pass over the request's few names, and a
    // removal (with its hashing) only for a name that is there.
    let strip_all = policy.strip_hop_by_hop;
    let present: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| HANDSHAKE.contains(k) || (strip_all && HOP_BY_HOP.contains(k)))
        .cloned()
        .collect();
    for name in present {
        req.remove_header(&name);
    }
    Ok(())
}

/// The field names the client's `Connection` fields nominate.
fn nominated(req: &RequestHeader, reject_malformed: bool) -> Result<Vec<HeaderName>> {
    let mut names = Vec::new();
    let tokens = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    for (count, token) in tokens.enumerate() {
        if count >= MAX_NOMINATED {
            return Error::e_explain(InvalidHTTPHeader, "too many Connection nominations");
        }
        if token.starts_with(b":") {
            return Error::e_explain(InvalidHTTPHeader, "Connection nominates a pseudo-header");
        }
        // An RFC 9110 token only: `HeaderName` takes bytes a token may not hold, and a
        // quoted `"x-forwarded-for"` must not slip past the protected names.
        let token_ok = token.iter().all(|b| is_tchar(*b));
        if reject_malformed && !token_ok {
            return Error::e_explain(InvalidHTTPHeader, "Connection nominates a non-token");
        }
        let name = match HeaderName::from_bytes(token) {
            Ok(name) => name,
            Err(_) if reject_malformed => {
                return Error::e_explain(InvalidHTTPHeader, "Connection nominates a non-token")
            }
            Err(_) => continue,
        };
        if PROTECTED.contains(&name.as_str()) {
            return Error::e_explain(
                InvalidHTTPHeader,
                "Connection nominates a field the gateway sets",
            );
        }
        names.push(name);
    }
    Ok(names)
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).expect("request");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).expect("field");
        }
        req
    }

    fn names(req: &RequestHeader) -> Vec<&str> {
        req.headers.keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn hop_by_hop_and_nominated_fields_are_removed() {
        let mut req = request(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ]);
        strip(&mut req, HttpUpstreamRequestPolicy::deny_upgrades()).expect("acceptable");
        assert_eq!(names(&req), ["accept"]);
        let mut req = request(&[("connection", "close"), ("accept", "*/*")]);
        strip(&mut req, HttpUpstreamRequestPolicy::standard()).expect("acceptable");
        assert_eq!(names(&req), ["accept"]);
    }

    #[test]
    fn preserve_keeps_everything() {
        let mut req = request(&[("connection", "x-a"), ("x-a", "1"), ("te", "trailers")]);
        strip(&mut req, HttpUpstreamRequestPolicy::preserve()).expect("acceptable");
        assert_eq!(names(&req).len(), 3);
    }

    #[test]
    fn unacceptable_nominations_are_refused() {
        let too_many = (0..MAX_NOMINATED + 1)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let just_enough = (0..MAX_NOMINATED)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(",");
        for (value, acceptable) in [
            ("x-forwarded-for", false),
            ("Host", false),
            ("X-Forwarded-Proto", false),
            (":authority", false),
            ("\"x-a\"", false),
            (too_many.as_str(), false),
            (just_enough.as_str(), true),
            (" , x-a ,, ", true),
        ] {
            let mut req = request(&[("connection", value)]);
            let result = strip(&mut req, HttpUpstreamRequestPolicy::standard());
            assert_eq!(result.is_ok(), acceptable, "Connection: {value}");
            if let Err(e) = result {
                assert_eq!(e.etype(), &InvalidHTTPHeader);
            }
        }
        // Lenient about malformed tokens only when the policy says so.
        let mut policy = HttpUpstreamRequestPolicy::standard();
        policy.reject_malformed_connection_nominations = false;
        let mut req = request(&[("connection", "\"x-a\", x-b"), ("x-b", "1")]);
        strip(&mut req, policy).expect("lenient");
        assert!(names(&req).is_empty());
    }
}
