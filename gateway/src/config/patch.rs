//! What an admin write does to an object before it is parsed: PATCH's RFC 7386 merge
//! patch and sub-path replacement, and the checks of a written body (`id` agreement,
//! store-set fields dropped). The store runs these inside its writer, so two PATCHes of
//! one object never lose each other's fields.

use serde_json::Value;

use super::limits::MAX_SUB_PATH_SEGMENTS;
use super::ResourceKind;

/// Checks a written body is an object whose `id` (if any) agrees with the URL's, and
/// drops the fields the store sets. The error is the 400 message.
pub fn checked_body(kind: ResourceKind, id: Option<&str>, body: Value) -> Result<Value, String> {
    let Value::Object(mut obj) = body else {
        return Err("invalid configuration: expected a JSON object".to_string());
    };
    match (obj.get("id"), id) {
        (Some(body_id), Some(url_id)) => {
            let same = match body_id {
                Value::String(s) => s == url_id,
                Value::Number(n) => n.to_string() == url_id,
                _ => false,
            };
            if !same {
                return Err(format!("wrong {} id", kind.noun()));
            }
        }
        (Some(_), None) => return Err(format!("wrong {} id, do not need it", kind.noun())),
        _ => {}
    }
    obj.remove("create_time");
    obj.remove("update_time");
    Ok(Value::Object(obj))
}

/// Applies a PATCH body to `current`: a merge patch when `path` is empty (the body must
/// be an object), else a replacement of the sub-tree at `path`. The error is the 400
/// message.
pub fn patched(current: &Value, path: &[String], body: Value) -> Result<Value, String> {
    let mut value = current.clone();
    if path.is_empty() {
        if !body.is_object() {
            return Err("invalid configuration: expected a JSON object".to_string());
        }
        merge_patch(&mut value, &body);
    } else {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        replace_at(&mut value, &segments, body)
            .map_err(|m| format!("invalid sub path {}: {m}", path.join("/")))?;
    }
    Ok(value)
}

/// Applies a JSON merge patch: objects merge recursively, `null` deletes a key, anything
/// else (arrays included) replaces the target whole.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Replaces the sub-tree at `path` (`nodes`, `upstream/nodes`, `uris/0`) with `new`.
/// Missing intermediate objects are created; an array index must exist. At most
/// [`MAX_SUB_PATH_SEGMENTS`] segments: a longer path once built an object thousands of
/// levels deep whose recursive clone and drop overflowed the stack.
pub fn replace_at(target: &mut Value, path: &[&str], new: Value) -> Result<(), String> {
    if path.len() > MAX_SUB_PATH_SEGMENTS {
        return Err(format!(
            "{} segments, at most {MAX_SUB_PATH_SEGMENTS} allowed",
            path.len()
        ));
    }
    let Some((last, parents)) = path.split_last() else {
        *target = new;
        return Ok(());
    };
    let mut cur = target;
    for seg in parents {
        cur = step(cur, seg, true)?;
    }
    match cur {
        Value::Object(map) => {
            map.insert((*last).to_string(), new);
            Ok(())
        }
        Value::Array(items) => {
            let i = index(last, items.len())?;
            items[i] = new;
            Ok(())
        }
        _ => Err(format!("`{last}`: parent is not an object or array")),
    }
}

fn step<'a>(cur: &'a mut Value, seg: &str, create: bool) -> Result<&'a mut Value, String> {
    match cur {
        Value::Object(map) => {
            if !map.contains_key(seg) && create {
                map.insert(seg.to_string(), Value::Object(Default::default()));
            }
            map.get_mut(seg)
                .ok_or_else(|| format!("`{seg}` does not exist"))
        }
        Value::Array(items) => {
            let i = index(seg, items.len())?;
            Ok(&mut items[i])
        }
        _ => Err(format!("`{seg}`: parent is not an object or array")),
    }
}

fn index(seg: &str, len: usize) -> Result<usize, String> {
    match seg.parse::<usize>() {
        Ok(i) if i < len => Ok(i),
        _ => Err(format!("`{seg}` is not an index of an array of {len}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "arr": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": null, "b": {"c": 9}, "arr": [3], "n": "x"}),
        );
        assert_eq!(t, json!({"b": {"c": 9, "d": 3}, "arr": [3], "n": "x"}));
    }

    #[test]
    fn replace_sub_paths() {
        let mut t = json!({"nodes": {"a:1": 1}, "uris": ["/a", "/b"]});
        replace_at(&mut t, &["nodes"], json!({"b:2": 3})).unwrap();
        assert_eq!(t["nodes"], json!({"b:2": 3}));
        replace_at(&mut t, &["uris", "1"], json!("/c")).unwrap();
        assert_eq!(t["uris"], json!(["/a", "/c"]));
        replace_at(&mut t, &["timeout", "read"], json!(3)).unwrap();
        assert_eq!(t["timeout"], json!({"read": 3}));
        assert!(replace_at(&mut t, &["uris", "5"], json!(1)).is_err());
    }

    #[test]
    fn long_sub_paths_are_refused() {
        let path: Vec<String> = (0..8000).map(|_| "a".to_string()).collect();
        let err = patched(&json!({}), &path, json!(1)).unwrap_err();
        assert!(err.contains("at most 32"), "{err}");
        let ok: Vec<String> = (0..MAX_SUB_PATH_SEGMENTS)
            .map(|_| "a".to_string())
            .collect();
        assert!(patched(&json!({}), &ok, json!(1)).is_ok());
    }
}
