//! PATCH semantics: RFC 7386 JSON merge patch, and sub-path replacement.

use serde_json::Value;

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
/// Missing intermediate objects are created; an array index must exist.
pub fn replace_at(target: &mut Value, path: &[&str], new: Value) -> Result<(), String> {
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
}
