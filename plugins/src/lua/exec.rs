//! Running a compiled function for a request.

use std::future::Future;
use std::sync::Arc;

use mlua::{MultiValue, Table, Value};
use parking_lot::Mutex;

use super::compile::CompiledFunction;
use super::convert::{lua_to_json, lua_to_json_bounded};
use super::request::SharedRequest;
use super::shared_dict_registry::SharedDicts;
use super::signal::{self, Exit};
use super::vm::{LoadedCode, LuaLimits, LuaVm};
use super::LuaFailure;

/// What a function asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// Done (or `ngx.exit(ngx.OK)`): go on with the next function and phase.
    Continue,
    /// `ngx.exit(status)`, `ngx.redirect`, or APISIX's `return status, body`: answer now.
    /// `body` is the returned body; without one, the output buffered by `ngx.say`/`print`.
    Respond { status: u16, body: Option<Vec<u8>> },
}

impl LuaVm {
    /// The request's `ngx.ctx` table (created on first use), passed as `ctx`.
    fn ctx_table(&self, req: &SharedRequest) -> Result<Arc<Table>, LuaFailure> {
        let mut r = req.lock();
        if let Some(t) = &r.ctx {
            return Ok(Arc::clone(t));
        }
        let t = Arc::new(
            self.lua
                .create_table()
                .map_err(|e| LuaFailure::from_error(&e))?,
        );
        r.ctx = Some(Arc::clone(&t));
        Ok(t)
    }

    /// The function with its conf, and the request's `ngx.ctx` if the function can
    /// reach its second argument (`LoadedCode::takes_ctx`); otherwise it is passed
    /// nil there, which it cannot tell from the table it never reads.
    fn prepare(
        &self,
        f: &CompiledFunction,
        req: &SharedRequest,
    ) -> Result<(Arc<LoadedCode>, Option<Arc<Table>>), LuaFailure> {
        // `require` resolves to the library modules of the request's configuration.
        self.libs.set_current(&req.lock().libraries);
        let code = self.function(f).inspect_err(|e| {
            self.relieve_memory::<()>(&Err(e.clone()));
        })?;
        let ctx = if code.takes_ctx {
            Some(self.ctx_table(req)?)
        } else {
            None
        };
        Ok((code, ctx))
    }

    /// Runs `f(conf, ngx.ctx)` for a phase that may yield (rewrite, access, content,
    /// log). Code that names a yielding API runs as a coroutine and every resume is one
    /// slice: the VM knows which request it serves and the CPU budget runs only while
    /// Lua does. Other code runs as a plain call in one slice, without a coroutine's
    /// setup (`CompiledFunction::may_yield`).
    pub async fn call(
        &self,
        f: &CompiledFunction,
        req: &SharedRequest,
    ) -> Result<CallOutcome, LuaFailure> {
        let (code, ctx) = self.prepare(f, req)?;
        if !f.may_yield {
            return self.call_plain(&code, ctx.as_deref(), req, true);
        }
        let mut fut = Box::pin(
            code.func
                .call_async::<MultiValue>((&code.conf, ctx.as_deref())),
        );
        let result = std::future::poll_fn(|cx| {
            self.enter(Some(req));
            let r = fut.as_mut().poll(cx);
            self.leave();
            r
        })
        .await;
        // The coroutine goes back to mlua's pool (its stack cleared) before the
        // collection, so nothing of this call stays reachable.
        drop(fut);
        // OpenResty's handler ends when its light threads do; an error or `ngx.exit`
        // in the entry function kills them.
        let owned = req.lock().owned_if_any();
        if let Some(owned) = owned {
            let kill = result.is_err() || req.lock().exit_code.is_some();
            owned.finish_threads(kill).await;
        }
        self.enter(Some(req));
        let result = self.finish(result, req);
        self.leave();
        self.relieve_memory(&result);
        result
    }

    /// Runs `f(conf, ngx.ctx)` to completion without yielding (header and body filters).
    pub fn call_sync(
        &self,
        f: &CompiledFunction,
        req: &SharedRequest,
    ) -> Result<CallOutcome, LuaFailure> {
        let (code, ctx) = self.prepare(f, req)?;
        self.call_plain(&code, ctx.as_deref(), req, false)
    }

    /// One plain call and its outcome in a single slice. `instead_of_coroutine`: the
    /// phase allows yielding but the code names no yielding API, so a yielding API
    /// reached anyway gets an error saying so.
    fn call_plain(
        &self,
        code: &LoadedCode,
        ctx: Option<&Table>,
        req: &SharedRequest,
        instead_of_coroutine: bool,
    ) -> Result<CallOutcome, LuaFailure> {
        if instead_of_coroutine {
            req.lock().plain_call = true;
        }
        self.enter(Some(req));
        let result = code.func.call::<MultiValue>((&code.conf, ctx));
        let result = self.finish(result, req);
        self.leave();
        if instead_of_coroutine {
            req.lock().plain_call = false;
        }
        self.relieve_memory(&result);
        result
    }
}

impl LuaVm {
    /// The call's outcome, inside the call's slice: encoding a returned body table is
    /// Lua work done in Rust, so the slice budget and the memory cap bound it.
    fn finish(
        &self,
        result: mlua::Result<MultiValue>,
        req: &SharedRequest,
    ) -> Result<CallOutcome, LuaFailure> {
        outcome(result, req, self.limits.max_memory, &|| {
            self.slice_expired()
        })
    }
}

/// `max_body` and `expired` bound the JSON a returned body table becomes (`convert.rs`).
fn outcome(
    result: mlua::Result<MultiValue>,
    req: &SharedRequest,
    max_body: usize,
    expired: &dyn Fn() -> bool,
) -> Result<CallOutcome, LuaFailure> {
    // `ngx.exit` wins even when `pcall` caught its unwinding error.
    if let Some(code) = req.lock().exit_code.take() {
        return Ok(respond(code, None));
    }
    match result {
        Ok(values) => {
            let mut it = values.into_iter();
            let status = match it.next() {
                Some(Value::Integer(i)) => i,
                Some(Value::Number(n)) => n as i64,
                _ => return Ok(CallOutcome::Continue),
            };
            let body = match it.next() {
                None | Some(Value::Nil) => None,
                Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
                Some(v @ Value::Table(_)) => match lua_to_json_bounded(&v, max_body, expired) {
                    Some(json) => Some(json.to_string().into_bytes()),
                    None if expired() => {
                        return Err(LuaFailure::Timeout(
                            "encoding the returned body table as JSON ran longer than lua.max_slice_ms; stopped"
                                .to_string(),
                        ))
                    }
                    None => {
                        return Err(LuaFailure::Error(format!(
                            "the returned body table encodes to more than lua.max_memory_mb ({} MB) of JSON (a cycle or a table shared many times?)",
                            max_body / (1024 * 1024)
                        )))
                    }
                },
                Some(other) => Some(other.to_string().unwrap_or_default().into_bytes()),
            };
            Ok(respond(status, body))
        }
        Err(e) => match signal::find::<Exit>(&e) {
            Some(Exit(code)) => Ok(respond(code, None)),
            None => Err(LuaFailure::from_error(&e)),
        },
    }
}

/// OpenResty's meaning of an exit code: ≥ 200 answers with it; `ngx.ERROR` answers
/// 500; `ngx.OK` and other small codes just end this handler.
fn respond(code: i64, body: Option<Vec<u8>>) -> CallOutcome {
    match code {
        200..=999 => CallOutcome::Respond {
            status: code as u16,
            body,
        },
        -1 => CallOutcome::Respond { status: 500, body },
        _ => CallOutcome::Continue,
    }
}

/// What a plugin module declares, read at apply time.
#[derive(Debug, Clone)]
pub struct ModuleInfo {
    pub name: Option<String>,
    pub priority: i64,
    pub version: Option<String>,
    /// The module's `schema` table as JSON (validates each use's conf).
    pub schema: Option<serde_json::Value>,
    /// Phases the module has a function for.
    pub phases: Vec<crate::phase::Phase>,
    /// `shared_dicts = { name = "10m" }`: the `ngx.shared` dictionaries the module needs
    /// (name → bytes), created at apply time when missing.
    pub shared_dicts: std::collections::BTreeMap<String, usize>,
}

/// Bounds on what one module declares (apply-time input from the admin API).
const MAX_DECLARED_DICTS: usize = 64;
const MAX_DICT_NAME: usize = 128;

/// A module's `shared_dicts` field: a table of name → size (`"10m"`, `"512k"` or a
/// number of bytes, at least 8k). Errors name the field.
fn declared_dicts(
    label: &str,
    field: mlua::Result<Value>,
) -> Result<std::collections::BTreeMap<String, usize>, String> {
    let mut out = std::collections::BTreeMap::new();
    let t = match field {
        Ok(Value::Nil) => return Ok(out),
        Ok(Value::Table(t)) => t,
        _ => {
            return Err(format!(
                "{label}: `shared_dicts` must be a table of name = size (such as \"10m\")"
            ))
        }
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{label}: shared_dicts: {e}"))?;
        if out.len() == MAX_DECLARED_DICTS {
            return Err(format!(
                "{label}: shared_dicts: at most {MAX_DECLARED_DICTS} dictionaries per module"
            ));
        }
        let name = match k {
            Value::String(s) if (1..=MAX_DICT_NAME).contains(&s.as_bytes().len()) => {
                s.to_string_lossy()
            }
            _ => {
                return Err(format!(
                    "{label}: shared_dicts: names must be strings of 1 to {MAX_DICT_NAME} bytes"
                ))
            }
        };
        let size = match v {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(n) => n.to_string(),
            Value::Number(n) if n.fract() == 0.0 && n >= 0.0 => format!("{n:.0}"),
            _ => String::new(),
        };
        let bytes = super::shared_dict_registry::checked_size(&size)
            .map_err(|e| format!("{label}: shared_dicts.{name}: {e}"))?;
        out.insert(name, bytes);
    }
    Ok(out)
}

/// Checks code at apply time in a VM of its own: the outer chunk must run (within the
/// budget) and return a function. Nothing from this VM reaches a request.
pub struct Validator {
    vm: Mutex<LuaVm>,
}

impl Validator {
    pub fn new(limits: LuaLimits, dicts: &SharedDicts) -> mlua::Result<Validator> {
        Ok(Validator {
            vm: Mutex::new(LuaVm::new(limits, (0, 1), dicts)?),
        })
    }

    /// The library modules (`lua_modules`) code checked from now on may `require`.
    pub fn set_libraries(&self, libs: &std::sync::Arc<super::LuaLibraries>) {
        self.vm.lock().libs.set_current(libs);
    }

    /// Runs a plugin module's chunk and reads what it declares.
    pub fn inspect_module(&self, f: &CompiledFunction) -> Result<ModuleInfo, String> {
        let vm = self.vm.lock();
        let t = vm
            .inspect_module(f)
            .map_err(|e| LuaFailure::from_error(&e).message().to_string())?;
        let name = match t.raw_get::<Value>("name") {
            Ok(Value::String(s)) => Some(s.to_string_lossy()),
            _ => None,
        };
        let version = match t.raw_get::<Value>("version") {
            Ok(Value::String(s)) => Some(s.to_string_lossy()),
            Ok(Value::Number(n)) => Some(n.to_string()),
            Ok(Value::Integer(n)) => Some(n.to_string()),
            _ => None,
        };
        let priority = match t.raw_get::<Value>("priority") {
            Ok(Value::Integer(n)) => n,
            Ok(Value::Number(n)) => n as i64,
            Ok(Value::Nil) => 0,
            _ => return Err(format!("{}: `priority` must be a number", f.label)),
        };
        let schema = match t.raw_get::<Value>("schema") {
            Ok(v @ Value::Table(_)) => match lua_to_json(&v) {
                Some(json) => Some(json),
                None => return Err(format!("{}: `schema` is too large", f.label)),
            },
            Ok(Value::Nil) => None,
            _ => return Err(format!("{}: `schema` must be a table", f.label)),
        };
        let shared_dicts = declared_dicts(&f.label, t.raw_get::<Value>("shared_dicts"))?;
        let phases = crate::phase::Phase::ALL
            .into_iter()
            .filter(|p| matches!(t.raw_get::<Value>(p.name()), Ok(Value::Function(_))))
            .collect::<Vec<_>>();
        if phases.is_empty() {
            return Err(format!(
                "{}: the module has no phase function (rewrite, access, content, balancer, before_proxy, header_filter, body_filter or log)",
                f.label
            ));
        }
        Ok(ModuleInfo {
            name,
            priority,
            version,
            schema,
            phases,
            shared_dicts,
        })
    }

    /// `Err` is a message naming the code and the problem.
    pub fn check(&self, f: &CompiledFunction) -> Result<(), String> {
        let vm = self.vm.lock();
        vm.forget(f.id);
        let r = vm
            .function(f)
            .map(|_| ())
            .map_err(|e| e.message().to_string());
        vm.forget(f.id);
        r
    }
}
