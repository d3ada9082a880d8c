//! `ngx.thread`: light threads (`spawn`, `wait`, `kill`).
//!
//! A light thread is a coroutine of the same VM driven by a task of its own on the
//! worker's runtime, each resume a slice of the request (or timer) that spawned it, so
//! it has the same `ngx` API, budget and owner. `spawn` yields once so the new thread
//! runs first, until its first yield, as in OpenResty. The spawning handler waits for
//! its threads when its function returns, and kills them when it failed or exited.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use mlua::{AnyUserData, Lua, MultiValue, Table, UserData, Value, Variadic};

use super::light_task::LightThread;
use super::slice::Slicer;

/// The Lua handle of a light thread.
struct ThreadHandle(Arc<LightThread>);

impl UserData for ThreadHandle {
    fn add_methods<M: mlua::UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method("__tostring", |_, this, ()| {
            Ok(format!("thread: {:p}", Arc::as_ptr(&this.0)))
        });
    }
}

/// Installs `ngx.thread`.
pub(super) fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.raw_set("spawn", lua.create_async_function(spawn)?)?;
    t.raw_set("wait", lua.create_async_function(wait)?)?;
    t.raw_set("kill", lua.create_function(kill)?)?;
    ngx.raw_set("thread", t)?;
    Ok(())
}

fn spawn(
    lua: Lua,
    (f, args): (Value, Variadic<Value>),
) -> impl Future<Output = mlua::Result<AnyUserData>> {
    // The part before `async` runs inside the caller's slice: it sees its owner.
    let started = (|| {
        let running = super::slice::yieldable_context(&lua, "ngx.thread.spawn")?;
        let Value::Function(f) = f else {
            return Err(mlua::Error::runtime(format!(
                "bad argument #1 to 'spawn' (function expected, got {})",
                f.type_name()
            )));
        };
        let slicer = Slicer::of(&lua)?;
        let thread = lua.create_thread(f)?;
        let fut = thread.into_async::<MultiValue>(MultiValue::from_iter(args))?;
        let light = Arc::new(LightThread::new());
        let owner = running.owned();
        let task = {
            let light = Arc::clone(&light);
            tokio::spawn(async move {
                let r = slicer.drive(running, fut).await;
                light.finish(r.map(|v| v.into_vec()).map_err(|e| e.to_string()));
            })
        };
        *light.task.lock() = Some(task.abort_handle());
        owner.adopt_thread(Arc::clone(&light));
        lua.create_userdata(ThreadHandle(light))
    })();
    async move {
        let handle = started?;
        tokio::task::yield_now().await;
        Ok(handle)
    }
}

/// `ngx.thread.wait(t1, t2, ...)`: the first of them to end: `true, results...` or
/// `false, err`.
async fn wait(lua: Lua, handles: Variadic<AnyUserData>) -> mlua::Result<MultiValue> {
    let mut threads = Vec::with_capacity(handles.len());
    for (i, h) in handles.iter().enumerate() {
        match h.borrow::<ThreadHandle>() {
            Ok(t) => threads.push(Arc::clone(&t.0)),
            Err(_) => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #{} to 'wait' (thread expected)",
                    i + 1
                )))
            }
        }
    }
    if threads.is_empty() {
        return Err(mlua::Error::runtime(
            "at least one coroutine should be specified",
        ));
    }
    loop {
        for t in &threads {
            if t.is_finished() {
                if t.collected.swap(true, Ordering::AcqRel) {
                    return Ok(MultiValue::from_vec(vec![
                        Value::Nil,
                        Value::String(lua.create_string("already waited or killed")?),
                    ]));
                }
                let outcome = t.outcome.lock().take();
                return Ok(match outcome {
                    Some(Ok(values)) => {
                        let mut out = vec![Value::Boolean(true)];
                        out.extend(values);
                        MultiValue::from_vec(out)
                    }
                    Some(Err(e)) => MultiValue::from_vec(vec![
                        Value::Boolean(false),
                        Value::String(lua.create_string(&e)?),
                    ]),
                    None => MultiValue::from_vec(vec![Value::Boolean(true)]),
                });
            }
        }
        let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = threads
            .iter()
            .map(|t| {
                let t = Arc::clone(t);
                Box::pin(async move { t.finished().await })
                    as Pin<Box<dyn Future<Output = ()> + Send>>
            })
            .collect();
        std::future::poll_fn(|cx| {
            if waits.iter_mut().any(|w| w.as_mut().poll(cx).is_ready()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// `ngx.thread.kill(t)`: `true`, or `nil, err`.
fn kill(_: &Lua, handle: AnyUserData) -> mlua::Result<(Option<bool>, Option<&'static str>)> {
    let t = handle
        .borrow::<ThreadHandle>()
        .map_err(|_| mlua::Error::runtime("bad argument #1 to 'kill' (thread expected)"))?;
    if t.0.is_finished() {
        return Ok((None, Some("already terminated")));
    }
    t.0.kill();
    t.0.collected.store(true, Ordering::Release);
    Ok((Some(true), None))
}
