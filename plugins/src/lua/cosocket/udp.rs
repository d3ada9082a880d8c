//! `ngx.socket.udp()`: `setpeername`, `send`, `receive`, `settimeout`, `close`.

use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, MultiValue, UserData, UserDataMethods, Value};
use parking_lot::Mutex;
use tokio::net::UdpSocket as TokioUdp;

use super::conn::io_error_words;
use super::{payload, Failure, DEFAULT_TIMEOUT};
use crate::lua::owned::{Closable, Owned};
use crate::lua::slice::yieldable_context;

/// The largest datagram `receive` returns (OpenResty's default and maximum).
const MAX_DATAGRAM: usize = 65536;

struct State {
    sock: Option<Arc<TokioUdp>>,
    timeout: Duration,
}

pub(crate) struct Slot(Mutex<State>);

impl Closable for Slot {
    fn close_from_owner(&self) {
        self.0.lock().sock = None;
    }
}

pub(crate) struct UdpSocket(Arc<Slot>);

impl UdpSocket {
    pub(crate) fn new(owner: &Owned) -> UdpSocket {
        let slot = Arc::new(Slot(Mutex::new(State {
            sock: None,
            timeout: DEFAULT_TIMEOUT,
        })));
        let weak: std::sync::Weak<dyn Closable> = Arc::downgrade(&slot) as _;
        owner.adopt_socket(weak);
        UdpSocket(slot)
    }

    fn socket(&self) -> Option<(Arc<TokioUdp>, Duration)> {
        let s = self.0 .0.lock();
        s.sock.as_ref().map(|u| (Arc::clone(u), s.timeout))
    }
}

async fn setpeername(
    lua: Lua,
    slot: Arc<Slot>,
    host: String,
    port: u16,
) -> mlua::Result<MultiValue> {
    let timeout = slot.0.lock().timeout;
    let addr = match portico_outbound::resolve_cached(&host, port, Some(timeout)).await {
        Ok(a) => a,
        Err(e) => {
            return Failure::new(format!("{host} could not be resolved ({e})")).into_lua(&lua)
        }
    };
    let local = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let sock = match TokioUdp::bind(local).await {
        Ok(s) => s,
        Err(e) => return Failure::new(io_error_words(&e)).into_lua(&lua),
    };
    if let Err(e) = sock.connect(addr).await {
        return Failure::new(io_error_words(&e)).into_lua(&lua);
    }
    slot.0.lock().sock = Some(Arc::new(sock));
    Ok(MultiValue::from_vec(vec![Value::Integer(1)]))
}

impl UserData for UdpSocket {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method(
            "setpeername",
            |lua, this, (host, port): (String, Option<i64>)| {
                let slot = Arc::clone(&this.0);
                let checked = yieldable_context(&lua, "setpeername").and_then(|_| match port {
                    Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
                    _ => Err(mlua::Error::runtime(
                        "bad argument #2 to 'setpeername' (bad port number)",
                    )),
                });
                async move { setpeername(lua, slot, host, checked?).await }
            },
        );
        methods.add_async_method("send", |lua, this, data: Value| {
            let sock = this.socket();
            let checked =
                yieldable_context(&lua, "send").and_then(|_| payload(&lua, &data, "send"));
            async move {
                let data = checked?;
                let Some((sock, timeout)) = sock else {
                    return Failure::new("closed").into_lua(&lua);
                };
                match tokio::time::timeout(timeout, sock.send(&data)).await {
                    Ok(Ok(_)) => Ok(MultiValue::from_vec(vec![Value::Integer(1)])),
                    Ok(Err(e)) => Failure::new(io_error_words(&e)).into_lua(&lua),
                    Err(_) => Failure::new("timeout").into_lua(&lua),
                }
            }
        });
        methods.add_async_method("receive", |lua, this, size: Option<i64>| {
            let sock = this.socket();
            let checked = yieldable_context(&lua, "receive");
            let size = size
                .filter(|n| *n > 0)
                .map_or(MAX_DATAGRAM, |n| (n as usize).min(MAX_DATAGRAM));
            async move {
                checked?;
                let Some((sock, timeout)) = sock else {
                    return Failure::new("closed").into_lua(&lua);
                };
                let mut buf = vec![0u8; size];
                match tokio::time::timeout(timeout, sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => Ok(MultiValue::from_vec(vec![Value::String(
                        lua.create_string(&buf[..n])?,
                    )])),
                    Ok(Err(e)) => Failure::new(io_error_words(&e)).into_lua(&lua),
                    Err(_) => Failure::new("timeout").into_lua(&lua),
                }
            }
        });
        methods.add_method("settimeout", |_, this, ms: Option<f64>| {
            if let Some(ms) = ms.filter(|n| *n >= 0.0 && n.is_finite()) {
                this.0 .0.lock().timeout = Duration::from_secs_f64(ms / 1000.0);
            }
            Ok(())
        });
        methods.add_method("close", |_, this, ()| {
            if this.0 .0.lock().sock.take().is_none() {
                return Ok((None, Some("closed")));
            }
            Ok((Some(1), None))
        });
    }
}
