//! `portico -t` on declarative resources: every error of every object in one run.
//!
//! An apply stops at the first phase that fails (a change is all or nothing), so one
//! unknown field in one route hides the Lua errors of every other route. The check
//! instead parses every object on its own, leaves out each one that fails (and what
//! refers to it), and builds the rest, leaving out each object the build names and
//! building again, so each object's errors are reported.

use std::collections::HashMap;

use serde_json::Value;

use super::restore;
use super::StoreDeps;
use crate::config::{FieldError, ResourceKind, ResourceSet};
use crate::snapshot::{self, BuildContext, DnsFailure};

/// Every error of `items`, each with its path (`routes[2].uri`, `routes[id=r1].plugins...`).
pub fn every_error(items: Vec<(ResourceKind, String, Value)>, deps: &StoreDeps) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut set = ResourceSet::default();
    let mut index_in_kind: HashMap<ResourceKind, usize> = HashMap::new();
    for (kind, id, value) in items {
        let i = index_in_kind.entry(kind).or_insert(0);
        let prefix = format!("{}[{}]", kind.segment(), *i);
        *i += 1;
        if let Err(m) = crate::config::check_id(&id) {
            errors.push(FieldError::new(format!("{prefix}.id"), m));
            continue;
        }
        if set.get(kind, &id).is_some() {
            errors.push(FieldError::new(
                format!("{prefix}.id"),
                format!("duplicate {} id `{id}`", kind.noun()),
            ));
            continue;
        }
        let value = super::change::stamp(kind, value, &id, 0, 0);
        if let Err(errs) = set.insert(kind, &id, value, 1, 1, &deps.plugins) {
            errors.extend(errs.into_iter().map(|e| e.under(&prefix)));
        }
    }
    // A reference to a missing object is an error; one to an object left out above is
    // a consequence of that object's error, not reported again.
    let dangling = set.check_all_references();
    errors.extend(dangling.iter().cloned());
    remove_dangling(&mut set, dangling);

    let cx = BuildContext {
        metrics: &deps.metrics,
        plugins: &deps.plugins,
        health: &deps.health,
        dns: DnsFailure::SkipNode,
    };
    let empty = match snapshot::build(&ResourceSet::default(), None, 0, &cx) {
        Ok(s) => s,
        Err(e) => {
            errors.extend(e.0);
            return errors;
        }
    };
    // Each round leaves out at least one object, so this ends.
    loop {
        match snapshot::build(&set, Some(&empty), 1, &cx) {
            Ok(_) => return errors,
            Err(e) => {
                let named = e.0.iter().all(|err| restore::culprit(&err.path).is_some());
                let culprits = restore::remove_culprits(&mut set, &e.0);
                errors.extend(e.0);
                if !named || culprits.is_empty() {
                    return errors;
                }
                let dangling = set.check_all_references();
                remove_dangling(&mut set, dangling);
            }
        }
    }
}

/// Leaves out every object with a dangling reference, until none has one.
fn remove_dangling(set: &mut ResourceSet, mut dangling: Vec<FieldError>) {
    while !dangling.is_empty() {
        if restore::remove_culprits(set, &dangling).is_empty() {
            return;
        }
        dangling = set.check_all_references();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::metrics::Metrics;
    use portico_healthcheck::{HealthRegistry, NoopObserver};
    use portico_plugins::PluginRegistry;

    fn deps() -> StoreDeps {
        StoreDeps {
            plugins: Arc::new(
                PluginRegistry::new(Default::default(), &Default::default()).expect("registry"),
            ),
            metrics: Metrics::new().expect("metrics"),
            health: HealthRegistry::new(Arc::new(NoopObserver)),
        }
    }

    #[test]
    fn one_bad_object_does_not_hide_another_ones_lua_error() {
        let lua = |code: &str| json!({"serverless-pre-function": {"functions": [code]}});
        let items = vec![
            (ResourceKind::Routes, "a".into(), json!({"urii": "/a"})),
            (
                ResourceKind::Routes,
                "b".into(),
                json!({"uri": "/b", "plugins": lua("return function( end")}),
            ),
            (
                ResourceKind::Routes,
                "c".into(),
                json!({"uri": "/c", "upstream_id": "nope"}),
            ),
        ];
        let errors = every_error(items, &deps());
        let all = crate::config::describe(&errors);
        assert!(all.contains("urii"), "{all}");
        assert!(all.contains("routes[id=b]"), "{all}");
        assert!(all.contains("nope"), "{all}");
    }
}
