//! `ngx.socket.tcp()`: the TCP cosocket object.
//!
//! Every method that touches the network is an mlua async method: the coroutine is
//! suspended while tokio waits, so the worker thread serves others. The connection and
//! its read buffer live in a slot shared with the run that created the socket, which
//! closes it when the request or timer ends. While a method works on the connection it
//! is out of the slot (`slot.rs`).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mlua::{Function, Lua, MultiValue, Table, UserData, UserDataMethods, Value};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{io_error_words, Conn};
use super::pool::{Pool, DEFAULT_IDLE, DEFAULT_POOL_SIZE};
use super::reader::{take, Pattern, Until, UntilStep};
use super::slot::{Slot, State, Timeouts};
use super::{payload, Failure, DEFAULT_TIMEOUT};
use crate::lua::budget::WorkGuard;
use crate::lua::owned::Closable;
use crate::lua::slice::yieldable_context;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

pub(crate) struct TcpSocket(Arc<Slot>);

impl TcpSocket {
    /// A new socket owned by the running request or timer.
    pub(crate) fn new(owner: &crate::lua::owned::Owned) -> TcpSocket {
        let slot = Arc::new(Slot(Mutex::new(State {
            conn: None,
            busy: false,
            revoked: false,
            buf: BytesMut::new(),
            timeouts: Timeouts {
                connect: DEFAULT_TIMEOUT,
                send: DEFAULT_TIMEOUT,
                read: DEFAULT_TIMEOUT,
            },
            pool: String::new(),
            pool_size: None,
            reused: 0,
        })));
        let weak: std::sync::Weak<dyn Closable> = Arc::downgrade(&slot) as _;
        owner.adopt_socket(weak);
        TcpSocket(slot)
    }
}

fn millis(v: Option<f64>) -> Option<Duration> {
    v.filter(|n| *n >= 0.0 && n.is_finite())
        .map(|n| Duration::from_secs_f64(n / 1000.0))
}

/// `connect`'s options table: `pool`, `pool_size` (`backlog` is accepted and ignored:
/// connections beyond the pool are simply opened).
fn connect_options(opts: Option<Table>) -> mlua::Result<(Option<String>, Option<usize>)> {
    let Some(t) = opts else {
        return Ok((None, None));
    };
    let pool = match t.raw_get::<Value>("pool")? {
        Value::Nil => None,
        Value::String(s) => Some(s.to_string_lossy()),
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad \"pool\" option type: {}",
                other.type_name()
            )))
        }
    };
    let size = match t.raw_get::<Value>("pool_size")? {
        Value::Nil => None,
        Value::Integer(n) if n > 0 => Some(n as usize),
        Value::Number(n) if n >= 1.0 => Some(n as usize),
        _ => return Err(mlua::Error::runtime("bad \"pool_size\" option value")),
    };
    Ok((pool, size))
}

async fn open(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addr = portico_outbound::resolve_cached(host, port, Some(timeout))
        .await
        .map_err(|e| format!("{host} could not be resolved ({e})"))?;
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(e)) => Err(io_error_words(&e)),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

async fn connect(
    lua: Lua,
    slot: Arc<Slot>,
    host: String,
    port: u16,
    pool: Option<String>,
    pool_size: Option<usize>,
) -> mlua::Result<MultiValue> {
    let key = pool.unwrap_or_else(|| format!("{host}:{port}"));
    let timeouts = {
        let mut s = slot.0.lock();
        if s.busy {
            return Failure::new("socket busy").into_lua(&lua);
        }
        // Connecting again closes the current connection, as in OpenResty.
        s.conn = None;
        s.buf.clear();
        s.pool = key.clone();
        s.pool_size = pool_size;
        s.reused = 0;
        s.busy = true;
        s.timeouts
    };
    let pooled = Pool::of(&lua).take(&key).await;
    let (conn, reused) = match pooled {
        Some((conn, reused)) => (Ok(conn), reused + 1),
        None => (
            open(&host, port, timeouts.connect).await.map(Conn::Plain),
            0,
        ),
    };
    match conn {
        Ok(conn) => {
            slot.0.lock().reused = reused;
            slot.end(Some(conn), BytesMut::new());
            Ok(MultiValue::from_vec(vec![Value::Integer(1)]))
        }
        Err(e) => {
            slot.end(None, BytesMut::new());
            Failure::new(e).into_lua(&lua)
        }
    }
}

/// Reads more into `buf`: `Ok(false)` at end of stream.
async fn fill(
    lua: &Lua,
    conn: &mut Conn,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<bool, String> {
    WorkGuard::new(lua)
        .check(lua, buf.len() + READ_CHUNK, "receive")
        .map_err(|_| {
            "the data read passes the Lua VM memory limit (lua.max_memory_mb)".to_string()
        })?;
    buf.reserve(READ_CHUNK);
    match tokio::time::timeout(timeout, conn.read_buf(buf)).await {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(e)) => Err(io_error_words(&e)),
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
    }
}

/// OpenResty keeps a connection open after a read timeout, closes it on other errors.
fn keep_after(err: &str) -> bool {
    err == "timeout"
}

async fn receive(lua: Lua, slot: Arc<Slot>, pattern: Pattern) -> mlua::Result<MultiValue> {
    let (mut conn, mut buf, t) = match slot.begin() {
        Ok(x) => x,
        Err(e) => return Failure::new(e).into_lua(&lua),
    };
    loop {
        if let Some(data) = take(&mut buf, pattern) {
            slot.end(Some(conn), buf);
            return Ok(MultiValue::from_vec(vec![Value::String(
                lua.create_string(&data)?,
            )]));
        }
        match fill(&lua, &mut conn, &mut buf, t.read).await {
            Ok(true) => {}
            Ok(false) => {
                let partial = buf.split().freeze();
                slot.end(None, BytesMut::new());
                if pattern == Pattern::All {
                    return Ok(MultiValue::from_vec(vec![Value::String(
                        lua.create_string(&partial)?,
                    )]));
                }
                return Failure::partial("closed", partial).into_lua(&lua);
            }
            Err(e) => {
                let partial = buf.split().freeze();
                slot.end(keep_after(&e).then_some(conn), buf);
                return Failure::partial(e, partial).into_lua(&lua);
            }
        }
    }
}

async fn receiveany(lua: Lua, slot: Arc<Slot>, max: usize) -> mlua::Result<MultiValue> {
    let (mut conn, mut buf, t) = match slot.begin() {
        Ok(x) => x,
        Err(e) => return Failure::new(e).into_lua(&lua),
    };
    if buf.is_empty() {
        match fill(&lua, &mut conn, &mut buf, t.read).await {
            Ok(true) => {}
            Ok(false) => {
                slot.end(None, BytesMut::new());
                return Failure::new("closed").into_lua(&lua);
            }
            Err(e) => {
                slot.end(keep_after(&e).then_some(conn), buf);
                return Failure::new(e).into_lua(&lua);
            }
        }
    }
    let data = buf.split_to(max.min(buf.len())).freeze();
    slot.end(Some(conn), buf);
    Ok(MultiValue::from_vec(vec![Value::String(
        lua.create_string(&data)?,
    )]))
}

async fn until_step(
    lua: Lua,
    slot: Arc<Slot>,
    state: Arc<Mutex<Until>>,
    size: Option<usize>,
) -> mlua::Result<MultiValue> {
    let (mut conn, mut buf, t) = match slot.begin() {
        Ok(x) => x,
        Err(e) => return Failure::new(e).into_lua(&lua),
    };
    loop {
        let step = state.lock().step(&mut buf, size);
        match step {
            Some(UntilStep::Data(d)) => {
                slot.end(Some(conn), buf);
                return Ok(MultiValue::from_vec(vec![Value::String(
                    lua.create_string(&d)?,
                )]));
            }
            Some(UntilStep::End) => {
                slot.end(Some(conn), buf);
                return Ok(MultiValue::from_vec(vec![Value::Nil]));
            }
            None => {}
        }
        match fill(&lua, &mut conn, &mut buf, t.read).await {
            Ok(true) => {}
            Ok(false) => {
                let partial = buf.split().freeze();
                slot.end(None, BytesMut::new());
                return Failure::partial("closed", partial).into_lua(&lua);
            }
            Err(e) => {
                let partial = buf.split().freeze();
                slot.end(keep_after(&e).then_some(conn), buf);
                return Failure::partial(e, partial).into_lua(&lua);
            }
        }
    }
}

async fn send(lua: Lua, slot: Arc<Slot>, data: Vec<u8>) -> mlua::Result<MultiValue> {
    let (mut conn, buf, t) = match slot.begin() {
        Ok(x) => x,
        Err(e) => return Failure::new(e).into_lua(&lua),
    };
    let written = tokio::time::timeout(t.send, async {
        conn.write_all(&data).await?;
        conn.flush().await
    })
    .await;
    match written {
        Ok(Ok(())) => {
            slot.end(Some(conn), buf);
            Ok(MultiValue::from_vec(vec![
                Value::Integer(data.len() as i64),
            ]))
        }
        Ok(Err(e)) => {
            slot.end(None, buf);
            Failure::new(io_error_words(&e)).into_lua(&lua)
        }
        Err(_) => {
            slot.end(None, buf);
            Failure::new("timeout").into_lua(&lua)
        }
    }
}

fn receive_pattern(v: &Value) -> mlua::Result<Pattern> {
    match v {
        Value::Nil => Ok(Pattern::Line),
        Value::String(s) => match &*s.as_bytes() {
            b"*l" | b"l" => Ok(Pattern::Line),
            b"*a" | b"a" => Ok(Pattern::All),
            other => match std::str::from_utf8(other)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                Some(n) => Ok(Pattern::Size(n)),
                None => Err(mlua::Error::runtime(
                    "bad argument #1 to 'receive' (bad pattern argument)",
                )),
            },
        },
        Value::Integer(n) if *n >= 0 => Ok(Pattern::Size(*n as usize)),
        Value::Number(n) if *n >= 0.0 && n.is_finite() => Ok(Pattern::Size(*n as usize)),
        _ => Err(mlua::Error::runtime(
            "bad argument #1 to 'receive' (bad pattern argument)",
        )),
    }
}

impl UserData for TcpSocket {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method(
            "connect",
            |lua, this, (host, port, opts): (String, Option<Value>, Option<Value>)| {
                let slot = Arc::clone(&this.0);
                let checked = (|| {
                    yieldable_context(&lua, "connect")?;
                    // `connect(host, port, opts)`; a unix socket path is not supported.
                    let (port, opts) = match (port, opts) {
                        (Some(Value::Integer(p)), o) => (p, o),
                        (Some(Value::Number(p)), o) => (p as i64, o),
                        _ if host.starts_with("unix:") => {
                            return Err(mlua::Error::runtime(
                                "unix domain sockets are not supported by Portico's cosockets",
                            ))
                        }
                        _ => {
                            return Err(mlua::Error::runtime(
                                "bad argument #2 to 'connect' (number expected)",
                            ))
                        }
                    };
                    if !(1..=65535).contains(&port) {
                        return Err(mlua::Error::runtime(format!("bad port number: {port}")));
                    }
                    let opts = match opts {
                        Some(Value::Table(t)) => Some(t),
                        None | Some(Value::Nil) => None,
                        Some(_) => {
                            return Err(mlua::Error::runtime(
                                "bad argument #3 to 'connect' (table expected)",
                            ))
                        }
                    };
                    let (pool, size) = connect_options(opts)?;
                    Ok((port as u16, pool, size))
                })();
                async move {
                    let (port, pool, size) = checked?;
                    connect(lua, slot, host, port, pool, size).await
                }
            },
        );
        methods.add_async_method("send", |lua, this, data: Value| {
            let slot = Arc::clone(&this.0);
            let checked =
                yieldable_context(&lua, "send").and_then(|_| payload(&lua, &data, "send"));
            async move { send(lua, slot, checked?).await }
        });
        methods.add_async_method("receive", |lua, this, pattern: Value| {
            let slot = Arc::clone(&this.0);
            let checked =
                yieldable_context(&lua, "receive").and_then(|_| receive_pattern(&pattern));
            async move { receive(lua, slot, checked?).await }
        });
        methods.add_async_method("receiveany", |lua, this, max: Value| {
            let slot = Arc::clone(&this.0);
            let checked = yieldable_context(&lua, "receiveany").and_then(|_| match max {
                Value::Integer(n) if n > 0 => Ok(n as usize),
                Value::Number(n) if n >= 1.0 => Ok(n as usize),
                _ => Err(mlua::Error::runtime(
                    "bad argument #1 to 'receiveany' (bad max argument)",
                )),
            });
            async move { receiveany(lua, slot, checked?).await }
        });
        methods.add_method(
            "receiveuntil",
            |lua, this, (pattern, opts): (mlua::LuaString, Option<Table>)| {
                yieldable_context(lua, "receiveuntil")?;
                let pattern = pattern.as_bytes().to_vec();
                if pattern.is_empty() {
                    return Ok((Value::Nil, Some("pattern is empty")));
                }
                let inclusive = match &opts {
                    Some(t) => t.raw_get::<Option<bool>>("inclusive")?.unwrap_or(false),
                    None => false,
                };
                let slot = Arc::clone(&this.0);
                let state = Arc::new(Mutex::new(Until::new(pattern, inclusive)));
                let iter: Function = lua.create_async_function(move |lua, size: Option<f64>| {
                    let slot = Arc::clone(&slot);
                    let state = Arc::clone(&state);
                    let checked = yieldable_context(&lua, "receiveuntil iterator");
                    let size = size.filter(|s| *s >= 1.0).map(|s| s as usize);
                    async move {
                        checked?;
                        until_step(lua, slot, state, size).await
                    }
                })?;
                Ok((Value::Function(iter), None))
            },
        );
        methods.add_method("settimeout", |_, this, ms: Option<f64>| {
            if let Some(d) = millis(ms) {
                let mut s = this.0 .0.lock();
                s.timeouts = Timeouts {
                    connect: d,
                    send: d,
                    read: d,
                };
            }
            Ok(())
        });
        methods.add_method(
            "settimeouts",
            |_, this, (c, s, r): (Option<f64>, Option<f64>, Option<f64>)| {
                let mut st = this.0 .0.lock();
                if let Some(d) = millis(c) {
                    st.timeouts.connect = d;
                }
                if let Some(d) = millis(s) {
                    st.timeouts.send = d;
                }
                if let Some(d) = millis(r) {
                    st.timeouts.read = d;
                }
                Ok(())
            },
        );
        methods.add_method("setoption", |_, _, _: MultiValue| Ok(true));
        methods.add_method("getreusedtimes", |_, this, ()| {
            let s = this.0 .0.lock();
            if s.conn.is_none() && !s.busy {
                return Ok((None, Some("closed")));
            }
            Ok((Some(s.reused), None))
        });
        methods.add_method("close", |_, this, ()| {
            let mut s = this.0 .0.lock();
            if s.busy {
                return Ok((None, Some("socket busy")));
            }
            if s.conn.take().is_none() {
                return Ok((None, Some("closed")));
            }
            s.buf.clear();
            Ok((Some(1), None))
        });
        methods.add_method(
            "setkeepalive",
            |lua, this, (timeout, size): (Option<f64>, Option<f64>)| {
                yieldable_context(lua, "setkeepalive")?;
                let mut s = this.0 .0.lock();
                if s.busy {
                    return Ok((None, Some("socket busy")));
                }
                if s.conn.is_none() {
                    return Ok((None, Some("closed")));
                }
                if !s.buf.is_empty() {
                    // The rest of a response is still unread: the connection cannot be
                    // reused safely; OpenResty refuses and closes it.
                    s.conn = None;
                    s.buf.clear();
                    return Ok((None, Some("unread data in buffer")));
                }
                let Some(conn) = s.conn.take() else {
                    return Ok((None, Some("closed")));
                };
                let idle = match timeout {
                    None => Some(DEFAULT_IDLE),
                    Some(ms) if ms <= 0.0 => None,
                    Some(ms) => Some(Duration::from_secs_f64(ms / 1000.0)),
                };
                let size = size
                    .filter(|n| *n >= 1.0)
                    .map(|n| n as usize)
                    .or(s.pool_size)
                    .unwrap_or(DEFAULT_POOL_SIZE);
                Pool::of(lua).put(s.pool.clone(), conn, s.reused, idle, size);
                Ok((Some(1), None))
            },
        );
        methods.add_async_method(
            "sslhandshake",
            |lua, this, (_reused, name, verify): (Value, Option<String>, Option<bool>)| {
                let slot = Arc::clone(&this.0);
                let checked = yieldable_context(&lua, "sslhandshake").map(|_| ());
                async move {
                    checked?;
                    super::tls::sslhandshake(lua, slot, name, verify.unwrap_or(false)).await
                }
            },
        );
    }
}
