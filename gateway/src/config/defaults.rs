//! APISIX's schema defaults as its admin API shows them: `GET` (and the envelope of a
//! write) returns a stored object with the defaults its schema gives filled in, so a
//! client that reads `value.priority` or `value.upstream.pass_host` finds them. Portico
//! fills them when it answers, not when it stores: the stored value stays what was
//! written (a bulk replace or yaml reload of the same objects is not an edit), and
//! objects stored by older versions show the defaults too.

use serde_json::{Map, Value};

use super::ResourceKind;

/// Route fields and their defaults (`schema_def.lua` `route`).
const ROUTE: &[(&str, i64)] = &[("priority", 0), ("status", 1)];

/// Upstream fields and their defaults (`schema_def.lua` `upstream`).
const UPSTREAM: &[(&str, &str)] = &[
    ("type", "roundrobin"),
    ("scheme", "http"),
    ("pass_host", "pass"),
    ("hash_on", "vars"),
];

/// `value` with the schema defaults of `kind` added where the field is absent; inline
/// upstreams of routes and services get the upstream defaults.
pub fn with_defaults(kind: ResourceKind, value: &Value) -> Value {
    let mut out = value.clone();
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    match kind {
        ResourceKind::Upstreams => fill_upstream(obj),
        ResourceKind::Routes => {
            for (field, default) in ROUTE {
                obj.entry(*field).or_insert_with(|| (*default).into());
            }
            fill_inline_upstream(obj);
        }
        ResourceKind::Services => fill_inline_upstream(obj),
        ResourceKind::LuaModules
        | ResourceKind::LuaPlugins
        | ResourceKind::PluginMetadata
        | ResourceKind::GlobalRules
        | ResourceKind::Ssls
        | ResourceKind::PluginConfigs
        | ResourceKind::ConsumerGroups
        | ResourceKind::Consumers => {}
    }
    out
}

fn fill_inline_upstream(obj: &mut Map<String, Value>) {
    if let Some(Value::Object(up)) = obj.get_mut("upstream") {
        fill_upstream(up);
    }
}

fn fill_upstream(obj: &mut Map<String, Value>) {
    for (field, default) in UPSTREAM {
        obj.entry(*field).or_insert_with(|| (*default).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_and_inline_upstream_defaults_fill_only_absent_fields() {
        let v = json!({"uri": "/a", "priority": 3, "upstream": {"type": "chash", "key": "uri", "nodes": {}}});
        let out = with_defaults(ResourceKind::Routes, &v);
        assert_eq!(out["priority"], 3);
        assert_eq!(out["status"], 1);
        assert_eq!(out["upstream"]["type"], "chash");
        assert_eq!(out["upstream"]["pass_host"], "pass");
        assert_eq!(out["upstream"]["scheme"], "http");
        assert_eq!(out["upstream"]["hash_on"], "vars");
    }

    #[test]
    fn kinds_without_defaults_are_unchanged() {
        let v = json!({"plugins": {}});
        assert_eq!(with_defaults(ResourceKind::GlobalRules, &v), v);
        let s = with_defaults(ResourceKind::Services, &json!({"upstream_id": "1"}));
        assert_eq!(s, json!({"upstream_id": "1"}));
    }
}
