//! Property tests of the request path normaliser and the router on arbitrary paths and
//! hosts, and of the edge's head check and chunked-body end finder on arbitrary bytes. The case count is proptest's `PROPTEST_CASES` (default 256 here, a few
//! seconds); a long run: `PROPTEST_CASES=100000 cargo test -p portico --lib edge_fuzz_tests`.

use std::borrow::Cow;

use proptest::prelude::*;

use crate::router::{RouteMatchSpec, Router};
use crate::uri_path::{normalize, PathError};
use crate::vars::RequestView;

/// Paths built from the pieces that matter: separators, dots, escapes (valid, invalid,
/// of `/`, `.`, `%` and NUL), raw bytes that must be escaped, and plain text.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just("//".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%2F".to_string()),
        Just("%25".to_string()),
        Just("%00".to_string()),
        Just("%zz".to_string()),
        Just("%".to_string()),
        Just("%c3%a9".to_string()),
        Just(" ".to_string()),
        Just("\\".to_string()),
        Just("?".to_string()),
        "[a-zA-Z0-9;:@=_~-]{1,4}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
}

fn view<'a>(path: &'a str, host: &'a str, headers: &'a http::HeaderMap) -> RequestView<'a> {
    RequestView {
        method: "GET",
        path,
        query: None,
        host,
        headers,
        remote_addr: None,
        remote_port: None,
        server_port: None,
        scheme: "http",
        consumer_name: None,
    }
}

fn router() -> Router {
    let spec = |uri: &str, host: Option<&str>| RouteMatchSpec {
        uris: vec![uri.to_string()],
        hosts: host.map(|h| vec![h.to_string()]).unwrap_or_default(),
        ..Default::default()
    };
    Router::build(&[
        spec("/public/*", None),
        spec("/admin/*", None),
        spec("/admin/secret", Some("*.example.com")),
        spec("/", None),
        spec("/a/b", Some("a.example.com")),
    ])
    .expect("test routes compile")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn normalize_is_idempotent_and_stays_below_root(path in path_strategy()) {
        match normalize(&path) {
            Ok(once) => {
                prop_assert!(once.starts_with('/'), "{once}");
                prop_assert!(!once.contains("//"), "{once}");
                prop_assert!(!once.contains("/../") && !once.ends_with("/.."), "{once}");
                prop_assert!(!once.contains("/./") && !once.ends_with("/."), "{once}");
                prop_assert!(once.bytes().all(|b| b.is_ascii_graphic()), "{once}");
                let twice = normalize(&once);
                prop_assert!(matches!(twice, Ok(Cow::Borrowed(_))), "{once} -> {twice:?}");
                prop_assert_eq!(twice.ok().map(Cow::into_owned), Some(once.into_owned()));
            }
            Err(PathError::AboveRoot | PathError::BadEscape | PathError::Nul) => {}
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(path in ".*") {
        if let Ok(once) = normalize(&path) {
            let again = normalize(&once).map(Cow::into_owned);
            prop_assert_eq!(again, Ok(once.into_owned()));
        }
    }

    #[test]
    fn router_never_panics_and_admin_is_not_reached_through_public(
        path in path_strategy(),
        host in "[a-zA-Z0-9.*:\\[\\]-]{0,20}",
    ) {
        let router = router();
        let headers = http::HeaderMap::new();
        let _ = router.find(&view(&path, &host, &headers));
        if let Ok(normal) = normalize(&path) {
            let found = router.find(&view(&normal, &host, &headers));
            // After normalisation, a path that routes to `/public/*` really is under
            // `/public/`: no dot segment can walk it out into `/admin/`.
            if found == Some(0) {
                prop_assert!(normal.starts_with("/public/"), "{normal}");
            }
            if normal.starts_with("/admin/") {
                prop_assert!(found == Some(1) || found == Some(2), "{normal} -> {found:?}");
            }
        }
    }

    #[test]
    fn head_check_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = crate::edge::head::check(&bytes, 256);
    }

    #[test]
    fn blank_line_search_agrees_with_a_plain_scan_across_reads(
        bytes in proptest::collection::vec(prop_oneof![
            Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()
        ], 0..200),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // What the edge's search must find: `\n\n` or `\n\r\n` anywhere in the bytes
        // so far, however they arrived.
        let plain = |b: &[u8]| {
            b.windows(2).any(|w| w == b"\n\n") || b.windows(3).any(|w| w == b"\n\r\n")
        };
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        ends.sort_unstable();
        ends.push(bytes.len());
        let mut scanned = 0;
        for end in ends {
            let seen = crate::edge::head::blank_line_seen(&bytes[..end], &mut scanned);
            // Once found, the reader stops; only a first finding is checked.
            prop_assert_eq!(seen, plain(&bytes[..end]));
            if seen {
                break;
            }
        }
    }

    #[test]
    fn chunked_end_is_found_wherever_the_body_is_split(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..5),
        split in any::<prop::sample::Index>(),
    ) {
        use crate::edge::chunked::{ChunkedEnd, Feed};
        let mut body = Vec::new();
        for c in &chunks {
            body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            body.extend_from_slice(c);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        let end = body.len();
        body.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let at = split.index(body.len() + 1);
        let mut t = ChunkedEnd::default();
        let found = match t.feed(&body[..at]) {
            Feed::Ends(k) => Some(k),
            Feed::More => match t.feed(&body[at..]) {
                Feed::Ends(k) => Some(at + k),
                _ => None,
            },
            Feed::Invalid => None,
        };
        prop_assert_eq!(found, Some(end));
    }
}
