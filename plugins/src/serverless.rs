//! APISIX's `serverless-pre-function` (priority 10000) and `serverless-post-function`
//! (priority -2000): `{"phase": "...", "functions": ["return function(conf, ctx) ... end"]}`.

use std::sync::Arc;

use serde::Deserialize;

use crate::instance::{BuildInput, PluginInstance, Step};
use crate::lua::compile;
use crate::phase::Phase;

/// The phases APISIX's serverless plugins accept, plus two Portico adds: `content`
/// (answer without an upstream) and `balancer` (choose the node, `ngx.balancer`).
const PHASES: [Phase; 8] = [
    Phase::Rewrite,
    Phase::Access,
    Phase::Content,
    Phase::Balancer,
    Phase::HeaderFilter,
    Phase::BodyFilter,
    Phase::Log,
    Phase::BeforeProxy,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerlessConf {
    #[serde(default = "default_phase")]
    phase: String,
    functions: Vec<String>,
}

fn default_phase() -> String {
    "access".to_string()
}

pub fn build_pre(input: &BuildInput<'_>) -> Result<PluginInstance, String> {
    build("serverless-pre-function", 10000, input)
}

pub fn build_post(input: &BuildInput<'_>) -> Result<PluginInstance, String> {
    build("serverless-post-function", -2000, input)
}

fn build(
    name: &'static str,
    priority: i32,
    input: &BuildInput<'_>,
) -> Result<PluginInstance, String> {
    let conf: ServerlessConf =
        serde_json::from_value(input.conf.clone()).map_err(|e| e.to_string())?;
    let phase = Phase::parse(&conf.phase)
        .filter(|p| PHASES.contains(p))
        .ok_or_else(|| {
            format!(
                "phase: `{}` is not one of rewrite, access, content, balancer, header_filter, body_filter, log, before_proxy",
                conf.phase
            )
        })?;
    if conf.functions.is_empty() {
        return Err("functions: at least one function is required".to_string());
    }
    let shared_conf = Arc::new(input.conf.clone());
    let mut functions = Vec::with_capacity(conf.functions.len());
    for (i, source) in conf.functions.iter().enumerate() {
        let label = format!("{}.functions[{i}]", input.owner);
        let f = compile(&label, source, Some(Arc::clone(&shared_conf)))?;
        input.validator.check(&f)?;
        functions.push((phase, Step::Lua(Arc::new(f))));
    }
    Ok(PluginInstance {
        name: Arc::from(name),
        priority,
        steps: functions,
    })
}
