//! Filling `default`s the way APISIX does while it checks a configuration.

use serde_json::Value;

use super::*;

impl Node {
    pub(super) fn fill_defaults(&self, value: &mut Value) {
        if self.reject_all {
            return;
        }
        // Give an empty Lua table the shape this schema expects (see the module docs).
        match value {
            Value::Array(a) if a.is_empty() && self.wants_object() => {
                *value = Value::Object(Map::new())
            }
            Value::Object(m) if m.is_empty() && self.wants_array() => {
                *value = Value::Array(Vec::new())
            }
            _ => {}
        }
        match value {
            Value::Object(map) => {
                for (name, sub) in &self.properties {
                    match map.get_mut(name) {
                        Some(child) => sub.fill_defaults(child),
                        // Inserted verbatim, as APISIX does (it does not descend into it).
                        None => {
                            if let Some(d) = &sub.default {
                                map.insert(name.clone(), d.clone());
                            }
                        }
                    }
                }
                for (key, child) in map.iter_mut() {
                    if self.properties.iter().any(|(name, _)| name == key) {
                        continue;
                    }
                    let mut matched = false;
                    for (_, re, sub) in &self.pattern_properties {
                        if re.is_match(key) {
                            matched = true;
                            sub.fill_defaults(child);
                        }
                    }
                    if let (false, Some(Additional::Schema(sub))) = (matched, &self.additional) {
                        sub.fill_defaults(child);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(sub) = &self.items {
                    for item in items {
                        sub.fill_defaults(item);
                    }
                }
            }
            _ => {}
        }
        for branch in &self.all_of {
            branch.fill_defaults(value);
        }
        let filled_if_valid = |branch: &Node, value: &Value| {
            let mut candidate = value.clone();
            branch.fill_defaults(&mut candidate);
            branch.is_valid(&candidate).then_some(candidate)
        };
        if let Some(filled) = self.any_of.iter().find_map(|b| filled_if_valid(b, value)) {
            *value = filled;
        }
        let mut matches = self.one_of.iter().filter_map(|b| filled_if_valid(b, value));
        if let (Some(filled), None) = (matches.next(), matches.next()) {
            *value = filled;
        }
    }
}
