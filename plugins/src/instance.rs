//! A configured plugin, ready to run: what each kind of plugin (Lua or native) builds at
//! apply time and the chain is made of.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::lua::{CompiledFunction, Validator};
use crate::native::Plugin;
use crate::phase::Phase;

/// What runs at one phase: Lua code, or a native plugin's method for that phase.
#[derive(Clone)]
pub enum Step {
    Lua(Arc<CompiledFunction>),
    Native(Arc<dyn Plugin>),
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Lua(func) => write!(f, "Lua({})", func.label),
            Step::Native(_) => f.write_str("Native"),
        }
    }
}

/// A configured plugin: its name, its priority and the steps it runs, each in its phase.
#[derive(Debug)]
pub struct PluginInstance {
    pub name: Arc<str>,
    /// Higher runs first within a phase (APISIX).
    pub priority: i32,
    /// What it runs, each in its phase, in order.
    pub steps: Vec<(Phase, Step)>,
}

/// What a Lua plugin factory gets at apply time.
pub struct BuildInput<'a> {
    pub conf: &'a Value,
    /// Where the configuration lives (`routes[id=1].plugins.NAME`): names the code in
    /// errors, and gives each place its own Lua closures, as APISIX does per config.
    pub owner: &'a str,
    pub validator: &'a Validator,
}
