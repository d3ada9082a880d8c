//! Consumers in the snapshot: the credential index the auth plugins look callers up in,
//! and, per route, the chain a consumer's requests switch to once authenticated (APISIX
//! merges the consumer's plugins into the route's). Both are built here, at apply time;
//! a request only looks its consumer up.

use std::collections::HashMap;
use std::sync::Arc;

use portico_plugins::consumer::{is_auth_plugin, ConsumerIndex, ConsumerInput};
use portico_plugins::{PluginChain, PluginInstance};

use crate::config::{FieldError, ResourceSet};

/// What an authenticated consumer's request runs on one route.
pub struct ConsumerChain {
    /// Global rules, then the route's (and service's) plugins merged with the consumer's
    /// own (the consumer's configuration wins for a plugin both name): what runs from the
    /// access phase on.
    pub chain: Arc<PluginChain>,
    /// The consumer's own plugins alone: their rewrite steps run right after the rewrite
    /// phase that authenticated the request (APISIX's `rewrite_in_consumer`).
    pub own: Arc<PluginChain>,
}

/// The consumers and their credentials. A credential two consumers share is an error.
pub fn index(set: &ResourceSet, errors: &mut Vec<FieldError>) -> Arc<ConsumerIndex> {
    let inputs = set.consumers.iter().map(|(name, e)| ConsumerInput {
        username: name,
        group_id: e.spec.group_id.as_ref().map(|g| g.0.as_str()),
        plugins: e.spec.plugins.as_ref(),
    });
    match ConsumerIndex::build(inputs) {
        Ok(index) => Arc::new(index),
        Err(errs) => {
            errors.extend(errs.into_iter().map(|(p, m)| FieldError::new(p, m)));
            Arc::new(ConsumerIndex::default())
        }
    }
}

/// The plugin configurations of a consumer that run for its requests: everything but
/// the auth plugins' credentials.
pub fn own_plugin_confs(
    plugins: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Map<String, serde_json::Value> {
    plugins
        .into_iter()
        .flatten()
        .filter(|(name, _)| !is_auth_plugin(name))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The per-consumer chains of one route: only when the route (or a global rule) runs
/// an auth plugin, and only for consumers with plugins of their own.
pub fn route_chains(
    global: &[Arc<PluginInstance>],
    local: &[Arc<PluginInstance>],
    consumers: &[(Arc<str>, Vec<Arc<PluginInstance>>)],
) -> HashMap<Arc<str>, ConsumerChain> {
    let authenticates = global.iter().chain(local).any(|i| is_auth_plugin(&i.name));
    if !authenticates {
        return HashMap::new();
    }
    consumers
        .iter()
        .map(|(name, own)| {
            let mut merged: Vec<Arc<PluginInstance>> = local
                .iter()
                .filter(|i| !own.iter().any(|o| o.name == i.name))
                .cloned()
                .collect();
            merged.extend(own.iter().cloned());
            let chains = ConsumerChain {
                chain: Arc::new(PluginChain::build(global, &merged)),
                own: Arc::new(PluginChain::build(&[], own)),
            };
            (Arc::clone(name), chains)
        })
        .collect()
}
