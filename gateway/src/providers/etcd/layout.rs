//! APISIX's key layout in etcd: `{prefix}/{routes|upstreams|...}/{id}`, the object as
//! the admin API's `value` JSON.
//!
//! A key Portico has no resource for (`stream_routes`, `protos`, `data_plane`, APISIX's
//! `gen_id`, ...) is not ours and is passed over silently, as an older APISIX would; a
//! directory placeholder (`{prefix}/routes/` or `{prefix}/routes`, holding `init_dir`)
//! is not an object.

use crate::config::ResourceKind;

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Object(ResourceKind, &'a str),
    /// A directory placeholder, a kind Portico does not have, or another tool's key.
    NotOurs,
}

/// The key of `kind/id` under `prefix`.
pub fn key(prefix: &str, kind: ResourceKind, id: &str) -> String {
    format!("{prefix}/{}/{id}", kind.segment())
}

/// APISIX's id counter key (`POST` puts it and uses the revision as the new id).
pub fn gen_id_key(prefix: &str) -> String {
    format!("{prefix}/gen_id")
}

/// The prefix as watched and read: with its trailing `/`, so `/apisix` does not take
/// `/apisix2/...`.
pub fn dir(prefix: &str) -> String {
    format!("{prefix}/")
}

pub fn classify<'a>(prefix: &str, key: &'a [u8]) -> KeyKind<'a> {
    let Ok(key) = std::str::from_utf8(key) else {
        return KeyKind::NotOurs;
    };
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return KeyKind::NotOurs;
    };
    let Some((segment, id)) = rest.split_once('/') else {
        return KeyKind::NotOurs;
    };
    match ResourceKind::from_segment(segment) {
        Some(kind) if !id.is_empty() => KeyKind::Object(kind, id),
        _ => KeyKind::NotOurs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_apisix_layout() {
        let p = "/apisix";
        assert_eq!(
            classify(p, b"/apisix/routes/1"),
            KeyKind::Object(ResourceKind::Routes, "1")
        );
        assert_eq!(
            classify(p, b"/apisix/global_rules/g-1"),
            KeyKind::Object(ResourceKind::GlobalRules, "g-1")
        );
        // Directory placeholders (`init_dir`), other kinds, other prefixes.
        assert_eq!(classify(p, b"/apisix/routes/"), KeyKind::NotOurs);
        assert_eq!(classify(p, b"/apisix/routes"), KeyKind::NotOurs);
        assert_eq!(classify(p, b"/apisix/stream_routes/1"), KeyKind::NotOurs);
        assert_eq!(classify(p, b"/apisix/gen_id"), KeyKind::NotOurs);
        assert_eq!(classify(p, b"/apisix2/routes/1"), KeyKind::NotOurs);
        assert_eq!(classify(p, b"\xff"), KeyKind::NotOurs);
        assert_eq!(key(p, ResourceKind::Upstreams, "u"), "/apisix/upstreams/u");
        assert_eq!(
            classify("/a/b", key("/a/b", ResourceKind::Ssls, "s").as_bytes()),
            KeyKind::Object(ResourceKind::Ssls, "s")
        );
    }
}
