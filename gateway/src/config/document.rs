//! The `configs` document: every resource kind as a list of objects with ids, the shape
//! of `PUT /apisix/admin/configs` and of an APISIX standalone yaml file.

use serde_json::Value;

use super::{FieldError, ResourceKind};

/// Reads a configs document into declarative items; errors name `routes[2].id` etc.
pub fn items_of(doc: Value) -> Result<Vec<(ResourceKind, String, Value)>, Vec<FieldError>> {
    let Value::Object(map) = doc else {
        return Err(vec![FieldError::new("", "expected a JSON object")]);
    };
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (key, list) in map {
        let Some(kind) = ResourceKind::from_segment(&key) else {
            errors.push(FieldError::new(
                key.clone(),
                "unknown resource list (expected routes, upstreams, services, global_rules, plugin_configs, consumer_groups, consumers, plugin_metadata, lua_modules, lua_plugins, ssls)",
            ));
            continue;
        };
        let Value::Array(list) = list else {
            errors.push(FieldError::new(key, "expected an array"));
            continue;
        };
        for (i, item) in list.into_iter().enumerate() {
            // A consumer is known by its username (APISIX's standalone files name no id).
            let id_field = match item.get("id") {
                None if kind == ResourceKind::Consumers => item.get("username"),
                other => other,
            };
            let id = match id_field {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    errors.push(FieldError::new(format!("{key}[{i}].id"), "is required"));
                    continue;
                }
            };
            let mut item = item;
            if let Some(o) = item.as_object_mut() {
                o.remove("create_time");
                o.remove("update_time");
            }
            items.push((kind, id, item));
        }
    }
    // Kinds in dependency order so error indexes are stable.
    items.sort_by_key(|(k, _, _)| *k);
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}
