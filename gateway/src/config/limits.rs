//! Bounds on what one configuration object may hold or expand into.
//!
//! Every limit here is checked when an object is parsed ([`super::parse_spec`]), which
//! is the same code for an admin write, a bulk replace, a yaml file and a startup load:
//! whatever the admin API accepts loads again after a restart. `docs/security.md` lists
//! them.

use serde_json::Value;

use super::FieldError;

/// Deepest nesting of a resource object (the object itself is level 1). serde_json
/// refuses documents nested deeper than 128 when it parses a request body or a stored
/// record; a record wraps the object once more, and `PUT /configs` wraps it twice, so
/// 64 leaves room and keeps every recursive walk (merge patch, `vars` compilation, Lua
/// conversion, drop) far from the stack's end.
pub const MAX_JSON_DEPTH: usize = 64;

/// Most segments of a `PATCH /{res}/{id}/{sub/path}`: deeper paths would build objects
/// over [`MAX_JSON_DEPTH`] anyway.
pub const MAX_SUB_PATH_SEGMENTS: usize = 32;

/// Longest timeout, retry window or keep-alive idle time, in seconds (7 days). A bigger
/// value would overflow `Instant + Duration` in the timers that use it.
pub const MAX_SECONDS: f64 = 7.0 * 86_400.0;

/// Most `uris`, `hosts`, `remote_addrs` and `methods`-independent router entries of one
/// route: the router holds one entry per (uri, host) pair.
pub const MAX_ROUTE_URIS: usize = 1024;
pub const MAX_ROUTE_HOSTS: usize = 1024;
pub const MAX_ROUTE_ENTRIES: usize = 16_384;
pub const MAX_REMOTE_ADDRS: usize = 4096;

/// Most consistent-hash ring points over all chash upstreams of one configuration
/// (12 bytes each: about 400 MB). Each ring is capped at 256 weight units (163,840
/// points, see `balancer::chash`), so this is reached only by thousands of chash
/// upstreams with uneven weights; the change is refused rather than built.
pub const MAX_TOTAL_RING_POINTS: u64 = 32 * 1024 * 1024;

/// Most nodes of one upstream.
pub const MAX_NODES: usize = 4096;

/// Checks that `value` nests at most [`MAX_JSON_DEPTH`] levels; the error names the
/// top-level field under which it goes deeper. Iterative: the value may come from a
/// document nested far deeper than the stack could recurse.
pub fn check_depth(value: &Value) -> Result<(), FieldError> {
    let Value::Object(fields) = value else {
        return Ok(());
    };
    for (name, child) in fields {
        // The object is level 1, its fields' values level 2.
        let mut stack: Vec<(&Value, usize)> = vec![(child, 2)];
        while let Some((v, depth)) = stack.pop() {
            let children: Box<dyn Iterator<Item = &Value>> = match v {
                Value::Object(m) => Box::new(m.values()),
                Value::Array(a) => Box::new(a.iter()),
                _ => continue,
            };
            if depth > MAX_JSON_DEPTH {
                return Err(FieldError::new(
                    name.as_str(),
                    format!("nests deeper than {MAX_JSON_DEPTH} levels"),
                ));
            }
            stack.extend(children.map(|c| (c, depth + 1)));
        }
    }
    Ok(())
}

/// Checks a number of seconds: finite, within `min..=MAX_SECONDS`, and greater than 0
/// unless `zero_ok`.
pub fn check_seconds(path: &str, v: f64, zero_ok: bool) -> Option<FieldError> {
    let low_ok = if zero_ok { v >= 0.0 } else { v > 0.0 };
    if low_ok && v <= MAX_SECONDS {
        return None;
    }
    let low = if zero_ok { "0 or more" } else { "more than 0" };
    Some(FieldError::new(
        path,
        format!("must be {low} seconds and at most {MAX_SECONDS} (7 days), got {v}"),
    ))
}

/// An error when `len` items of `field` exceed `max`.
pub fn check_count(field: &str, len: usize, max: usize) -> Option<FieldError> {
    (len > max).then(|| FieldError::new(field, format!("has {len} items; at most {max} allowed")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_limit_counts_the_object_as_level_one() {
        // {"vars": [[...[1]...]]}: the object, then `levels` arrays.
        assert!(check_depth(&json!({ "vars": nested(MAX_JSON_DEPTH - 1) })).is_ok());
        let err = check_depth(&json!({ "vars": nested(MAX_JSON_DEPTH) })).unwrap_err();
        assert_eq!(err.path, "vars");
    }

    #[test]
    fn depth_check_survives_very_deep_values() {
        // Built by hand: `json!` would serialize the interpolated value recursively.
        let wrap =
            |key: &str, v: Value| Value::Object([(key.to_string(), v)].into_iter().collect());
        let mut v = json!(1);
        for _ in 0..100_000 {
            v = wrap("a", v);
        }
        let obj = wrap("plugins", v);
        assert!(check_depth(&obj).is_err());
        // Dropping a 100k-deep value recurses in serde_json; keep it out of the test's
        // stack by leaking (the test process ends right after).
        std::mem::forget(obj);
    }

    #[test]
    fn seconds_ranges() {
        assert!(check_seconds("t", 1.5, false).is_none());
        assert!(check_seconds("t", 0.0, false).is_some());
        assert!(check_seconds("t", 0.0, true).is_none());
        assert!(check_seconds("t", 1e308, true).is_some());
        assert!(check_seconds("t", 1.9e19, false).is_some());
        assert!(check_seconds("t", f64::NAN, false).is_some());
        assert!(check_seconds("t", f64::INFINITY, true).is_some());
        assert!(check_seconds("t", MAX_SECONDS, true).is_none());
    }
}
