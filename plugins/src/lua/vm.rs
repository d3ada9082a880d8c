//! One Luau VM per proxy worker thread: sandboxed, CPU-budgeted, memory-capped.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, Table, Value, VmState};
use parking_lot::Mutex;

use super::budget::Budget;
use super::compile::{ChunkKind, CompiledFunction};
use super::convert::json_to_lua;
use super::current::CurrentRequest;
use super::env::{new_env, seal};
use super::libraries::{LibDeps, LibraryState};
use super::ngx_req;
use super::request::SharedRequest;
use super::shared_dict_registry::SharedDicts;
use super::LuaFailure;

/// Limits from the static config (`lua.max_slice_ms`, `lua.max_memory_mb`).
#[derive(Debug, Clone, Copy)]
pub struct LuaLimits {
    /// Longest uninterrupted run of Lua (a slice between yields).
    pub max_slice: Duration,
    /// Memory cap of one VM.
    pub max_memory: usize,
    /// Timers (`ngx.timer.at`/`every`) waiting to run on one VM (`lua.max_pending_timers`).
    pub max_pending_timers: usize,
}

impl Default for LuaLimits {
    fn default() -> Self {
        LuaLimits {
            max_slice: Duration::from_millis(100),
            max_memory: 128 * 1024 * 1024,
            max_pending_timers: 1024,
        }
    }
}

/// Functions loaded into this VM, by compiled-function id. Keeping the function keeps
/// its upvalues, so state a plugin keeps in locals of its outer chunk persists across
/// the requests this worker serves (APISIX serverless semantics).
struct Loaded {
    code: Arc<LoadedCode>,
    last_used: u64,
    /// Library versions its loading required: a new version of one reloads it.
    deps: LibDeps,
}

/// A loaded function and its conf, shared with the calls running it: an `Arc` clone
/// is one atomic add, a Lua handle clone costs a trip through mlua's reference stack.
pub(super) struct LoadedCode {
    pub(super) func: Function,
    pub(super) conf: Value,
    /// The function may use a second argument, so `ngx.ctx` is made to be passed: it
    /// is a Rust function, names `...`, or has two parameters or more, unless it is a
    /// function of this very chunk whose second parameter the source never names
    /// (`function(conf, ctx)` that ignores `ctx`). Creating the table was a tenth of
    /// S2's Lua cost, and most serverless functions declare `ctx` without using it.
    pub(super) takes_ctx: bool,
}

impl LoadedCode {
    fn new(func: Function, conf: Value, compiled: &CompiledFunction) -> LoadedCode {
        let info = func.info();
        // A returned function may come from a library or `loadstring`: the scan covered
        // only this chunk's source, which Luau records as the chunk's name.
        let scanned = compiled.kind == ChunkKind::ReturnsFunction
            && info.source.as_deref() == Some(compiled.label.as_str());
        let takes_ctx = info.what == "C"
            || (info.is_vararg && compiled.names_varargs)
            || (info.num_params >= 2 && !(scanned && compiled.second_params_unused));
        LoadedCode {
            func,
            conf,
            takes_ctx,
        }
    }
}

/// Maps keyed by compiled-code ids, which are hashes already: SipHash over them again
/// was a visible share of a plain Lua call.
type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Bound on cached functions per VM; least recently used ones go first.
const MAX_LOADED: usize = 4096;

/// Finished coroutines kept for reuse: about the number of calls that can be suspended
/// at once on a worker (in `ngx.sleep` or `read_body`) before new ones are allocated.
const THREAD_POOL: usize = 256;

pub struct LuaVm {
    pub(super) lua: Lua,
    pub(super) current: Arc<CurrentRequest>,
    /// Nanoseconds since `epoch` when the running slice must stop; 0 = no slice running.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
    pub(super) limits: LuaLimits,
    /// (id, count) for `ngx.worker`; a replacement VM keeps the id.
    pub(super) worker: (usize, usize),
    /// Set when the VM stayed near its memory cap after a full collection: the worker
    /// hands out a fresh VM to new requests (see `memory.rs`).
    pub(super) retired: AtomicBool,
    /// Memory in use after the last full collection this VM forced.
    pub(super) gc_floor: AtomicUsize,
    /// The read-only globals every plugin environment falls back to.
    globals: Table,
    loaded: Mutex<(u64, IdMap<Loaded>)>,
    /// Plugin module tables by module id: loaded once, shared by their phase functions
    /// (with the library versions their loading required).
    modules: Mutex<IdMap<(Table, LibDeps)>>,
    /// `ngx.now()`'s cached clock, marked stale at every slice.
    clock: Option<super::ngx_lib::TimeCache>,
    /// Uploaded library modules (`lua_modules`) and what this VM loaded of them.
    pub(super) libs: Arc<LibraryState>,
}

impl LuaVm {
    /// Creates a sandboxed VM. `worker` is (id, count) for `ngx.worker`; `dicts` are the
    /// process's `ngx.shared` dictionaries (the same ones in every VM).
    pub fn new(
        limits: LuaLimits,
        worker: (usize, usize),
        dicts: &SharedDicts,
    ) -> mlua::Result<LuaVm> {
        // Coroutines are recycled: every rewrite/access/log call runs in one, and a new
        // thread per call (mlua's default pool size is 0) costs an allocation, its
        // stack and GC work each time.
        let lua = Lua::new_with(
            mlua::StdLib::ALL_SAFE,
            mlua::LuaOptions::new().thread_pool_size(THREAD_POOL),
        )?;
        let current = Arc::new(CurrentRequest::default());
        let deadline = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();

        let globals = lua.globals();
        // No file, process or introspection access: Luau has no `io`, and only a harmless
        // `os`; `debug` keeps `traceback` for xpcall handlers; environment swapping would
        // let one plugin reach another's globals.
        let debug = lua.create_table()?;
        if let Ok(Value::Table(d)) = globals.raw_get::<Value>("debug") {
            debug.raw_set("traceback", d.raw_get::<Value>("traceback")?)?;
        }
        super::base_compat::install(&lua, &globals, &debug)?;
        globals.raw_set("debug", debug)?;
        for name in ["getfenv", "setfenv", "newproxy"] {
            globals.raw_set(name, Value::Nil)?;
        }
        super::env::install_loadstring(&lua, &globals)?;
        if let Value::Table(string) = globals.raw_get::<Value>("string")? {
            super::strlib::install(&lua, &string)?;
        }
        super::ngx_lib::install_globals(&lua, &globals)?;

        let ngx = lua.create_table()?;
        super::ngx_lib::install(&lua, &ngx)?;
        ngx_req::install(&lua, &ngx, Arc::clone(&current))?;
        super::ngx_out::install(&lua, &ngx, Arc::clone(&current), worker)?;
        ngx.raw_set("shared", dicts.table(&lua)?)?;
        super::cosocket::install(&lua, &ngx)?;
        super::timer::install(&lua, &ngx)?;
        super::light_thread::install(&lua, &ngx)?;
        ngx.raw_set("semaphore", super::semaphore::module(&lua)?)?;
        super::missing::install(&lua, &ngx)?;
        let (get, set) = ngx_req::dynamic_fields(&lua, Arc::clone(&current))?;
        let dynamic = lua.create_table()?;
        dynamic.raw_set("__index", get)?;
        dynamic.raw_set("__metatable", "ngx")?;
        ngx.set_metatable(Some(dynamic))?;
        // Users see an empty proxy: every assignment reaches `__newindex` (only
        // `ngx.status` and `ngx.ctx` may be assigned), every read falls through to `ngx`.
        let proxy = lua.create_table()?;
        let proxy_mt = lua.create_table()?;
        proxy_mt.raw_set("__index", ngx.clone())?;
        proxy_mt.raw_set("__newindex", set)?;
        proxy_mt.raw_set("__metatable", "ngx")?;
        proxy.set_metatable(Some(proxy_mt))?;
        globals.raw_set("ngx", proxy.clone())?;

        let balancer = super::ngx_balancer::balancer_module(&lua, Arc::clone(&current))?;
        let libs = Arc::new(LibraryState::new(&lua, &globals)?);
        let state = Arc::clone(&libs);
        let require = lua.create_function(move |lua, name: String| -> mlua::Result<Value> {
            // Uploaded libraries first (they may replace a built-in `resty.*` module),
            // except for the names only Portico's runtime can provide.
            if !super::libraries::reserved_name(&name) {
                if let Some(v) = state.require(lua, &name)? {
                    return Ok(v);
                }
            }
            match name.as_str() {
                "ngx" => Ok(Value::Table(proxy.clone())),
                "ngx.balancer" => Ok(Value::Table(balancer.clone())),
                "ngx.semaphore" => Ok(Value::Table(super::semaphore::module(lua)?)),
                "resty.http" => Ok(Value::Table(super::resty_http::module(lua)?)),
                _ if name.starts_with("resty.limit.") => {
                    match super::resty_limit::module(lua, &name)? {
                        Some(m) => Ok(Value::Table(m)),
                        None => Err(not_found(&name)),
                    }
                }
                _ => match super::ngx_lib::builtin_module(lua, &name)? {
                    Some(m) => Ok(m),
                    None => Err(not_found(&name)),
                },
            }
        })?;
        globals.raw_set("require", require)?;
        let cur = Arc::clone(&current);
        globals.raw_set(
            "print",
            lua.create_function(move |_, args: mlua::Variadic<Value>| {
                let text: Vec<String> = args
                    .iter()
                    .map(|v| v.to_string().unwrap_or_default())
                    .collect();
                let plugin = cur
                    .get()
                    .map(|r| r.lock().plugin.clone())
                    .unwrap_or_else(|_| std::sync::Arc::from(""));
                let plugin = &*plugin;
                tracing::info!(plugin, "{}", text.join("\t"));
                Ok(())
            })?,
        )?;

        lua.sandbox(true)?;
        let budget = Budget {
            deadline: Arc::clone(&deadline),
            epoch,
            budget_ms: limits.max_slice.as_millis() as u64,
            max_memory: limits.max_memory,
        };
        lua.set_app_data(budget.clone());
        lua.set_app_data(Arc::clone(&current));
        let clock = super::ngx_lib::TimeCache::of(&lua);
        lua.set_app_data(super::slice::Slicer {
            current: Arc::clone(&current),
            budget: budget.clone(),
            max_slice: limits.max_slice,
            clock: clock.clone(),
        });
        lua.set_app_data(super::cosocket::Pool::default());
        lua.set_app_data(super::timer::Timers::new(limits.max_pending_timers));
        lua.set_interrupt(move |_| {
            if budget.expired() {
                return Err(budget.timeout_error());
            }
            Ok(VmState::Continue)
        });
        lua.set_memory_limit(limits.max_memory)?;
        Ok(LuaVm {
            lua,
            current,
            deadline,
            epoch,
            limits,
            worker,
            retired: AtomicBool::new(false),
            gc_floor: AtomicUsize::new(0),
            globals,
            loaded: Mutex::new((0, IdMap::default())),
            modules: Mutex::new(IdMap::default()),
            clock,
            libs,
        })
    }

    /// Starts a slice for `req` (or for loading code when `None`): Lua calls on this VM
    /// now belong to it, and the CPU budget runs.
    pub(super) fn enter(&self, req: Option<&SharedRequest>) {
        self.current.set(req.cloned());
        if let Some(c) = &self.clock {
            c.mark_stale();
        }
        let limit = self.epoch.elapsed() + self.limits.max_slice;
        self.deadline
            .store(limit.as_nanos().max(1) as u64, Ordering::Relaxed);
    }

    /// The running slice is past its deadline.
    pub(super) fn slice_expired(&self) -> bool {
        let d = self.deadline.load(Ordering::Relaxed);
        d != 0 && self.epoch.elapsed().as_nanos() as u64 > d
    }

    /// Ends the slice.
    pub(super) fn leave(&self) {
        self.deadline.store(0, Ordering::Relaxed);
        self.current.set(None);
    }

    /// The function for `compiled`, loading it (running its outer chunk once) on first
    /// use in this VM.
    pub(super) fn function(
        &self,
        compiled: &CompiledFunction,
    ) -> Result<Arc<LoadedCode>, LuaFailure> {
        {
            let mut guard = self.loaded.lock();
            let (clock, map) = &mut *guard;
            *clock += 1;
            if let Some(l) = map
                .get_mut(&compiled.id)
                .filter(|l| self.libs.deps_current(&l.deps))
            {
                l.last_used = *clock;
                return Ok(Arc::clone(&l.code));
            }
        }
        self.enter(None);
        let (loaded, deps) = self.libs.collect(|| self.load(compiled));
        self.leave();
        let (func, conf) = loaded.map_err(|e| LuaFailure::from_error(&e))?;
        let code = Arc::new(LoadedCode::new(func, conf, compiled));
        let mut guard = self.loaded.lock();
        let (clock, map) = &mut *guard;
        if map.len() >= MAX_LOADED {
            if let Some(oldest) = map.iter().min_by_key(|(_, l)| l.last_used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            compiled.id,
            Loaded {
                code: Arc::clone(&code),
                last_used: *clock,
                deps,
            },
        );
        Ok(code)
    }

    /// Runs the outer chunk in its own environment and returns the function it returns.
    fn load(&self, compiled: &CompiledFunction) -> mlua::Result<(Function, Value)> {
        let (env, env_mt) = new_env(&self.lua, &self.globals)?;
        let chunk = self
            .lua
            .load(&compiled.bytecode[..])
            .set_mode(ChunkMode::Binary)
            .set_name(compiled.label.as_str())
            .set_environment(env);
        let func = match compiled.kind {
            ChunkKind::Statements => chunk.into_function()?,
            ChunkKind::Module => {
                return Err(mlua::Error::runtime(format!(
                    "{}: a plugin module is not called directly",
                    compiled.label
                )))
            }
            ChunkKind::ModuleField(phase) => {
                let module = self.module_table(compiled, chunk)?;
                match module.raw_get::<Value>(phase.name())? {
                    Value::Function(f) => f,
                    _ => {
                        return Err(mlua::Error::runtime(format!(
                            "{}: the module has no {} function",
                            compiled.label,
                            phase.name()
                        )))
                    }
                }
            }
            ChunkKind::ReturnsFunction => match chunk.call::<Value>(())? {
                Value::Function(f) => f,
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "{}: the code must return a function, it returned a {}",
                        compiled.label,
                        super::convert::lua_type_name(&other)
                    )))
                }
            },
        };
        // After loading, a new global is an error: it would be shared by every request
        // this worker serves. Locals and ngx.ctx are the ways to keep state.
        seal(&self.lua, &env_mt, &compiled.label)?;
        let conf = match &compiled.conf {
            Some(json) => json_to_lua(&self.lua, json)?,
            None => Value::Nil,
        };
        Ok((func, conf))
    }

    /// The module table of `compiled`'s module, running its chunk on first use in this VM.
    fn module_table(
        &self,
        compiled: &CompiledFunction,
        chunk: mlua::chunk::Chunk<'_>,
    ) -> mlua::Result<Table> {
        if let Some((t, deps)) = self.modules.lock().get(&compiled.module_id) {
            if self.libs.deps_current(deps) {
                self.libs.note(deps);
                return Ok(t.clone());
            }
        }
        let (result, deps) = self.libs.collect(|| chunk.call::<Value>(()));
        let table = match result? {
            Value::Table(t) => t,
            other => {
                return Err(mlua::Error::runtime(format!(
                    "{}: a plugin module must return a table, it returned a {}",
                    compiled.label,
                    super::convert::lua_type_name(&other)
                )))
            }
        };
        self.modules
            .lock()
            .insert(compiled.module_id, (table.clone(), deps));
        Ok(table)
    }

    /// Runs a module chunk for inspection (no request): its table.
    pub(super) fn inspect_module(&self, compiled: &CompiledFunction) -> mlua::Result<Table> {
        let (env, _) = new_env(&self.lua, &self.globals)?;
        self.enter(None);
        let result = self
            .lua
            .load(&compiled.bytecode[..])
            .set_mode(ChunkMode::Binary)
            .set_name(compiled.label.as_str())
            .set_environment(env)
            .call::<Value>(());
        self.leave();
        match result? {
            Value::Table(t) => Ok(t),
            other => Err(mlua::Error::runtime(format!(
                "{}: a plugin module must return a table, it returned a {}",
                compiled.label,
                super::convert::lua_type_name(&other)
            ))),
        }
    }

    /// Drops a loaded function (the validator loads each check afresh).
    pub(super) fn forget(&self, id: u64) {
        self.loaded.lock().1.remove(&id);
    }
}

/// `require` of a module the sandbox does not have.
fn not_found(name: &str) -> mlua::Error {
    mlua::Error::runtime(format!(
        "module '{name}' not found: it is no uploaded library module (lua_modules) and Portico's Lua sandbox provides cjson, cjson.safe, bit, ngx, ngx.balancer, ngx.re, ngx.semaphore, table.new, table.clear, table.nkeys, resty.http, resty.limit.req, resty.limit.count, resty.limit.conn, resty.limit.traffic, resty.md5, resty.sha1, resty.sha256, resty.sha384, resty.sha512, resty.string and resty.random"
    ))
}
