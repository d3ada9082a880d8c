//! `require "ngx.semaphore"` (lua-resty-core's API): `new(n)`, `sema:post(n)`,
//! `sema:wait(timeout)`, `sema:count()`. A semaphore lives in the VM that made it, as in
//! OpenResty where one is per worker; `wait` yields, never blocks the worker.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, Table, UserData, UserDataMethods, Value};

const REGISTRY_KEY: &str = "portico.ngx.semaphore";

struct Semaphore {
    permits: Arc<tokio::sync::Semaphore>,
    /// Light threads waiting now (`count()` is negative while there are some).
    waiting: Arc<AtomicI64>,
}

impl UserData for Semaphore {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("post", |_, this, n: Option<i64>| {
            let n = n.unwrap_or(1);
            if n < 1 {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to 'post' (n must be positive, got {n})"
                )));
            }
            this.permits.add_permits(n.min(1 << 20) as usize);
            Ok(true)
        });
        methods.add_method("count", |_, this, ()| {
            Ok(this.permits.available_permits() as i64 - this.waiting.load(Ordering::Relaxed))
        });
        methods.add_async_method("wait", |lua, this, timeout: Option<f64>| {
            let permits = Arc::clone(&this.permits);
            let waiting = Arc::clone(&this.waiting);
            let allowed = super::slice::yieldable_context(&lua, "semaphore:wait").map(|_| ());
            async move {
                if let Err(e) = allowed {
                    return Ok((Value::Nil, Some(e.to_string())));
                }
                let timeout = timeout.unwrap_or(0.0);
                if !(timeout >= 0.0 && timeout.is_finite()) {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'wait' (timeout must be a non-negative number)",
                    ));
                }
                if let Ok(p) = permits.try_acquire() {
                    p.forget();
                    return Ok((Value::Boolean(true), None));
                }
                if timeout == 0.0 {
                    return Ok((Value::Nil, Some("timeout".to_string())));
                }
                waiting.fetch_add(1, Ordering::Relaxed);
                let d = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::MAX);
                let r = tokio::time::timeout(d, permits.acquire()).await;
                waiting.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(Ok(p)) => {
                        p.forget();
                        Ok((Value::Boolean(true), None))
                    }
                    Ok(Err(_)) => Ok((Value::Nil, Some("closed".to_string()))),
                    Err(_) => Ok((Value::Nil, Some("timeout".to_string()))),
                }
            }
        });
    }
}

/// The `ngx.semaphore` module table (one per VM).
pub(super) fn module(lua: &Lua) -> mlua::Result<Table> {
    if let Value::Table(t) = lua.named_registry_value::<Value>(REGISTRY_KEY)? {
        return Ok(t);
    }
    let m = lua.create_table()?;
    m.raw_set("version", "0.1.17-portico")?;
    m.raw_set(
        "new",
        lua.create_function(|lua, n: Option<i64>| {
            let n = n.unwrap_or(0);
            if n < 0 {
                return Ok((Value::Nil, Some("no memory")));
            }
            let s = Semaphore {
                permits: Arc::new(tokio::sync::Semaphore::new(n.min(1 << 20) as usize)),
                waiting: Arc::default(),
            };
            Ok((Value::UserData(lua.create_userdata(s)?), None))
        })?,
    )?;
    m.set_readonly(true);
    lua.set_named_registry_value(REGISTRY_KEY, &m)?;
    Ok(m)
}
