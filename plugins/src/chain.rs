//! The functions one request runs, per phase, in order: global rules first, then the
//! route's (and its service's) plugins, each group by descending priority (APISIX).

use std::sync::Arc;

use crate::instance::{PluginInstance, Step};
use crate::phase::Phase;

/// One step of a chain (Lua or native), with the plugin it belongs to (for logs and
/// metrics).
#[derive(Debug, Clone)]
pub struct ChainEntry {
    pub plugin: Arc<str>,
    pub step: Step,
    /// A runtime error is logged and the request goes on (lua-resty-dynacode runs each
    /// snippet under `pcall`); timeouts and memory errors still follow the phase's rule.
    pub contain_errors: bool,
}

/// Built at apply time; read by every request of a route.
#[derive(Debug, Default)]
pub struct PluginChain {
    phases: [Vec<ChainEntry>; Phase::ALL.len()],
}

impl PluginChain {
    /// `global` runs before `local` in every phase; within each, higher priority first,
    /// native and Lua plugins alike (APISIX orders all plugins by priority).
    pub fn build(global: &[Arc<PluginInstance>], local: &[Arc<PluginInstance>]) -> PluginChain {
        let mut chain = PluginChain::default();
        for group in [global, local] {
            let mut sorted: Vec<&Arc<PluginInstance>> = group.iter().collect();
            sorted.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
            for inst in sorted {
                for (phase, step) in &inst.steps {
                    chain.phases[*phase as usize].push(ChainEntry {
                        plugin: Arc::clone(&inst.name),
                        step: step.clone(),
                        contain_errors: false,
                    });
                }
            }
        }
        chain
    }

    /// The functions of `phase`, in run order.
    pub fn phase(&self, phase: Phase) -> &[ChainEntry] {
        &self.phases[phase as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.phases.iter().all(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::compile;

    fn inst(name: &'static str, priority: i32, phase: Phase) -> Arc<PluginInstance> {
        let f = compile(name, "return function() end", None).unwrap();
        Arc::new(PluginInstance {
            name: Arc::from(name),
            priority,
            steps: vec![(phase, Step::Lua(Arc::new(f)))],
        })
    }

    #[test]
    fn global_first_then_priority() {
        let global = [inst("g", -5, Phase::Access)];
        let local = [
            inst("post", -2000, Phase::Access),
            inst("pre", 10000, Phase::Access),
            inst("log", 1, Phase::Log),
        ];
        let c = PluginChain::build(&global, &local);
        let order: Vec<&str> = c.phase(Phase::Access).iter().map(|e| &*e.plugin).collect();
        assert_eq!(order, vec!["g", "pre", "post"]);
        assert_eq!(c.phase(Phase::Log).len(), 1);
        assert!(c.phase(Phase::Rewrite).is_empty());
        assert!(!c.is_empty());
        assert!(PluginChain::build(&[], &[]).is_empty());
    }
}
