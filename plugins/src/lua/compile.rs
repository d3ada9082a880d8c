//! Compiling Lua at apply time: syntax errors become 400s naming the line, and workers
//! load only bytecode Portico produced (never user-supplied bytecode).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// What the code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// The chunk returns a function, called per request (APISIX serverless plugins); the
    /// outer chunk runs once per VM, so its locals persist as upvalues.
    ReturnsFunction,
    /// The chunk is a statement list run whole on every call (lua-resty-dynacode).
    Statements,
    /// The chunk returns an APISIX-style plugin module table (`_M`).
    Module,
    /// One phase function of a module (`_M.access`, ...). The module table is loaded
    /// once per VM (`module_id`), so all its phase functions share its locals.
    ModuleField(crate::phase::Phase),
}

/// One compiled Lua function (the outer chunk returns it), shareable across VMs.
#[derive(Debug)]
pub struct CompiledFunction {
    pub kind: ChunkKind,
    /// For `ModuleField`: the id of the module's own compiled chunk.
    pub module_id: u64,
    /// Content hash of (label, source, conf): unchanged code keeps its id across config
    /// swaps, so workers keep the loaded function and its upvalues.
    pub id: u64,
    /// Where the code came from, e.g. `routes[1].plugins.serverless-pre-function.functions[0]`;
    /// also the chunk name in Lua error messages.
    pub label: String,
    pub bytecode: Arc<[u8]>,
    /// The plugin configuration passed as the function's first argument.
    pub conf: Option<Arc<serde_json::Value>>,
    /// The code names an API that may yield (`lua_scan.rs`): calls in rewrite, access,
    /// content and log run it as a coroutine. Otherwise they run it as a plain call, and
    /// a yielding API reached anyway (through a value another plugin stored) fails with
    /// OpenResty's "API disabled" error naming why.
    pub may_yield: bool,
    /// The source names `...` (`lua_scan.rs`): a vararg function may read `ngx.ctx`
    /// from its arguments, so it is passed.
    pub names_varargs: bool,
    /// No function of the source names its second parameter (`lua_scan.rs`): a
    /// `function(conf, ctx)` that never uses `ctx` is not handed `ngx.ctx`.
    pub second_params_unused: bool,
}

/// Compiles `source`, a chunk that returns a function; the error is Luau's message with
/// the line number.
pub fn compile(
    label: &str,
    source: &str,
    conf: Option<Arc<serde_json::Value>>,
) -> Result<CompiledFunction, String> {
    compile_kind(ChunkKind::ReturnsFunction, label, source, conf)
}

/// Compiles a plugin module (a chunk returning `_M`).
pub fn compile_module(label: &str, source: &str) -> Result<CompiledFunction, String> {
    compile_kind(ChunkKind::Module, label, source, None)
}

impl CompiledFunction {
    /// The `phase` function of this module, called with `conf` for the plugin configured
    /// at `owner`. Shares the module's bytecode; a changed module gets a new id, so every
    /// use of it switches to the new code at the next request.
    pub fn module_phase(
        &self,
        phase: crate::phase::Phase,
        owner: &str,
        conf: Arc<serde_json::Value>,
    ) -> CompiledFunction {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.id.hash(&mut h);
        phase.name().hash(&mut h);
        owner.hash(&mut h);
        conf.to_string().hash(&mut h);
        CompiledFunction {
            kind: ChunkKind::ModuleField(phase),
            module_id: self.id,
            id: h.finish(),
            label: format!("{owner}.{}", phase.name()),
            bytecode: Arc::clone(&self.bytecode),
            conf: Some(conf),
            may_yield: self.may_yield,
            names_varargs: self.names_varargs,
            second_params_unused: self.second_params_unused,
        }
    }
}

/// Compiles a statement list (a dynacode snippet).
pub fn compile_statements(label: &str, source: &str) -> Result<CompiledFunction, String> {
    compile_kind(ChunkKind::Statements, label, source, None)
}

fn compile_kind(
    kind: ChunkKind,
    label: &str,
    source: &str,
    conf: Option<Arc<serde_json::Value>>,
) -> Result<CompiledFunction, String> {
    // LuaJIT-only constructs (`goto`, the FFI) are named with their line first: Luau
    // would report `goto` as a confusing syntax error, and the FFI only at run time.
    let scan = super::lua_scan::check_luau_compatible(label, source)?;
    let bytecode = mlua::chunk::Compiler::new()
        .set_optimization_level(1)
        .set_debug_level(1)
        .compile(source)
        .map_err(|e| syntax_message(label, &e))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    label.hash(&mut h);
    source.hash(&mut h);
    format!("{kind:?}").hash(&mut h);
    if let Some(c) = &conf {
        c.to_string().hash(&mut h);
    }
    Ok(CompiledFunction {
        kind,
        module_id: 0,
        id: h.finish(),
        label: label.to_string(),
        bytecode: Arc::from(bytecode),
        conf,
        may_yield: scan.may_yield,
        names_varargs: scan.names_varargs,
        second_params_unused: scan.second_params_unused,
    })
}

/// Luau reports `:3: Expected ...`; name the code and keep the line.
fn syntax_message(label: &str, e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        other => other.to_string(),
    };
    // Luau's compiler says `2: Expected ...`; a loaded chunk says `[string "x"]:2: ...`.
    let text = match text.strip_prefix("[string") {
        Some(rest) => rest.split_once("]:").map(|(_, r)| r).unwrap_or(rest),
        None => text.as_str(),
    };
    match text.split_once(':') {
        Some((line, rest)) if line.chars().all(|c| c.is_ascii_digit()) && !line.is_empty() => {
            format!("{label}: syntax error at line {line}:{rest}")
        }
        _ => format!("{label}: syntax error: {text}"),
    }
}
