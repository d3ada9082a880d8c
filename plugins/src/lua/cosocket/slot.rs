//! A TCP cosocket's state, shared between its Lua object and the run that owns it:
//! the connection, its read buffer, timeouts and pool identity. While a method works
//! on the connection it is out of the slot ("busy"); a second method on the same socket
//! meanwhile gets `nil, "socket busy"`, and the owner closing the socket then makes the
//! method drop the connection when it is done.

use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;

use super::conn::Conn;
use crate::lua::owned::Closable;

#[derive(Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) send: Duration,
    pub(crate) read: Duration,
}

pub(crate) struct State {
    pub(crate) conn: Option<Conn>,
    pub(crate) busy: bool,
    /// The owner closed the socket while a method had the connection out.
    pub(crate) revoked: bool,
    pub(crate) buf: BytesMut,
    pub(crate) timeouts: Timeouts,
    pub(crate) pool: String,
    pub(crate) pool_size: Option<usize>,
    pub(crate) reused: u32,
}

pub(crate) struct Slot(pub(crate) Mutex<State>);

impl Closable for Slot {
    fn close_from_owner(&self) {
        let mut s = self.0.lock();
        s.conn = None;
        s.buf.clear();
        if s.busy {
            s.revoked = true;
        }
    }
}

impl Slot {
    /// Takes the connection out for one operation.
    pub(super) fn begin(&self) -> Result<(Conn, BytesMut, Timeouts), &'static str> {
        let mut s = self.0.lock();
        if s.busy {
            return Err("socket busy");
        }
        let conn = s.conn.take().ok_or("closed")?;
        s.busy = true;
        let buf = std::mem::take(&mut s.buf);
        Ok((conn, buf, s.timeouts))
    }

    /// Puts it back (`None`: the operation failed and closed it).
    pub(super) fn end(&self, conn: Option<Conn>, buf: BytesMut) {
        let mut s = self.0.lock();
        s.busy = false;
        if std::mem::take(&mut s.revoked) {
            return;
        }
        s.buf = if conn.is_some() { buf } else { BytesMut::new() };
        s.conn = conn;
    }
}
