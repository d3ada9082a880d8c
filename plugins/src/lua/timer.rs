//! `ngx.timer`: `at`, `every`, `running_count`, `pending_count`.
//!
//! A timer is a task on the worker's runtime (the thread of the VM that created it) that
//! sleeps, then runs its function in a coroutine of the same VM, each resume one slice
//! under the CPU budget and the VM's memory cap, as requests are. A timer owns the
//! sockets and light threads it starts: when its function returns they are closed and
//! stopped. On shutdown ([`shutdown`]) pending timers run at once with `premature` =
//! true and `every` timers stop after that run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Table, Value, Variadic};
use tokio::sync::Notify;

use super::current::Running;
use super::slice::Slicer;

static EXITING: AtomicBool = AtomicBool::new(false);
static SHUTDOWN: Notify = Notify::const_new();

/// The process is shutting down (nginx's worker exit): pending timers fire now.
pub fn shutdown() {
    EXITING.store(true, Ordering::Release);
    SHUTDOWN.notify_waiters();
}

/// `ngx.worker.exiting()`.
pub fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// A VM's timer counts (in its app data).
#[derive(Clone)]
pub(crate) struct Timers {
    pending: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    max_pending: usize,
}

impl Timers {
    pub(crate) fn new(max_pending: usize) -> Timers {
        Timers {
            pending: Arc::default(),
            running: Arc::default(),
            max_pending,
        }
    }

    fn of(lua: &Lua) -> mlua::Result<Timers> {
        lua.app_data_ref::<Timers>()
            .map(|t| t.clone())
            .ok_or_else(|| mlua::Error::runtime("not a Portico Lua VM"))
    }
}

/// Installs `ngx.timer`.
pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.raw_set(
        "at",
        lua.create_function(|lua, (delay, f, args): (Value, Value, Variadic<Value>)| {
            start(lua, "at", delay, f, args, false)
        })?,
    )?;
    t.raw_set(
        "every",
        lua.create_function(|lua, (delay, f, args): (Value, Value, Variadic<Value>)| {
            start(lua, "every", delay, f, args, true)
        })?,
    )?;
    t.raw_set(
        "running_count",
        lua.create_function(|lua, ()| Ok(Timers::of(lua)?.running.load(Ordering::Relaxed)))?,
    )?;
    t.raw_set(
        "pending_count",
        lua.create_function(|lua, ()| Ok(Timers::of(lua)?.pending.load(Ordering::Relaxed)))?,
    )?;
    ngx.raw_set("timer", t)?;
    Ok(())
}

/// `ngx.timer.at`/`every`: `true`, or `nil, err` (OpenResty's strings).
fn start(
    lua: &Lua,
    name: &str,
    delay: Value,
    f: Value,
    args: Variadic<Value>,
    every: bool,
) -> mlua::Result<(Value, Option<&'static str>)> {
    let secs = match delay {
        Value::Integer(i) => i as f64,
        Value::Number(n) => n,
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #1 to '{name}' (number expected, got {})",
                other.type_name()
            )))
        }
    };
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{name}' (delay must be a non-negative number)"
        )));
    }
    if every && secs == 0.0 {
        return Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{name}' (delay cannot be zero)"
        )));
    }
    let Value::Function(f) = f else {
        return Err(mlua::Error::runtime(format!(
            "bad argument #2 to '{name}' (function expected, got {})",
            f.type_name()
        )));
    };
    if exiting() {
        return Ok((Value::Nil, Some("process exiting")));
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return Ok((
            Value::Nil,
            Some("no event loop: timers start from a request or a timer"),
        ));
    };
    let timers = Timers::of(lua)?;
    if timers.pending.load(Ordering::Relaxed) >= timers.max_pending {
        return Ok((Value::Nil, Some("too many pending timers")));
    }
    timers.pending.fetch_add(1, Ordering::Relaxed);
    let delay = Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX);
    let lua = lua.clone();
    let args: Vec<Value> = args.into_iter().collect();
    handle.spawn(run(lua, f, args, delay, every, timers));
    Ok((Value::Boolean(true), None))
}

/// Sleeps `delay` unless the process starts shutting down; `true` = premature.
async fn wait(delay: Duration) -> bool {
    let notified = SHUTDOWN.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if exiting() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = notified => true,
    }
}

async fn run(
    lua: Lua,
    f: Function,
    args: Vec<Value>,
    delay: Duration,
    every: bool,
    timers: Timers,
) {
    loop {
        let premature = wait(delay).await;
        timers.pending.fetch_sub(1, Ordering::Relaxed);
        timers.running.fetch_add(1, Ordering::Relaxed);
        let owned = super::owned::for_timer();
        let result = run_once(&lua, &f, premature, &args, &owned).await;
        owned.finish_threads(result.is_err()).await;
        owned.end();
        timers.running.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = result {
            let failure = super::LuaFailure::from_error(&e);
            tracing::error!(kind = failure.kind(), "lua timer failed: {failure}");
        }
        if !every || premature || exiting() {
            return;
        }
        timers.pending.fetch_add(1, Ordering::Relaxed);
    }
}

async fn run_once(
    lua: &Lua,
    f: &Function,
    premature: bool,
    args: &[Value],
    owned: &Arc<super::owned::Owned>,
) -> mlua::Result<()> {
    let slicer = Slicer::of(lua)?;
    super::ngx_lib::refresh_time(lua);
    let thread = lua.create_thread(f.clone())?;
    let mut call = Vec::with_capacity(args.len() + 1);
    call.push(Value::Boolean(premature));
    call.extend(args.iter().cloned());
    let fut = thread.into_async::<MultiValue>(MultiValue::from_vec(call))?;
    slicer
        .drive(Running::Timer(Arc::clone(owned)), fut)
        .await
        .map(|_| ())
}
