//! The keepalive pool of one VM (one worker, as OpenResty's is per worker): idle
//! connections by pool name (`host:port`, or `connect`'s `pool` option).
//!
//! Each idle connection is held by a small task that watches it: it closes the
//! connection when the idle timeout passes or when the peer closes it (or sends
//! anything, which a connection at rest must not), and hands it over when a `connect`
//! of the same pool asks for it. So a dead connection is never handed out and none
//! stays open past its timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::conn::Conn;

/// `lua_socket_pool_size`'s default: idle connections kept per pool.
pub(crate) const DEFAULT_POOL_SIZE: usize = 30;
/// `lua_socket_keepalive_timeout`'s default.
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(60);

struct Idle {
    /// Asks the watcher for the connection (it answers on the enclosed sender).
    want: oneshot::Sender<oneshot::Sender<Conn>>,
    reused: u32,
}

#[derive(Default, Clone)]
pub struct Pool(Arc<Mutex<HashMap<String, VecDeque<Idle>>>>);

impl Pool {
    pub(crate) fn of(lua: &mlua::Lua) -> Pool {
        lua.app_data_ref::<Pool>()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Parks `conn` in pool `key` (the oldest idle one is closed when the pool is full).
    /// `idle`: `None` keeps it until the peer closes it.
    pub(crate) fn put(
        &self,
        key: String,
        conn: Conn,
        reused: u32,
        idle: Option<Duration>,
        size: usize,
    ) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (want, asked) = oneshot::channel();
        rt.spawn(watch(conn, idle, asked));
        let mut pools = self.0.lock();
        let q = pools.entry(key).or_default();
        q.retain(|i| !i.want.is_closed());
        while q.len() >= size.max(1) {
            q.pop_front();
        }
        q.push_back(Idle { want, reused });
    }

    /// The most recently parked live connection of pool `key`, and how many times it
    /// was reused before.
    pub(crate) async fn take(&self, key: &str) -> Option<(Conn, u32)> {
        loop {
            let idle = {
                let mut pools = self.0.lock();
                let q = pools.get_mut(key)?;
                let idle = q.pop_back();
                if q.is_empty() {
                    pools.remove(key);
                }
                idle?
            };
            let (reply, answer) = oneshot::channel();
            if idle.want.send(reply).is_err() {
                continue;
            }
            if let Ok(conn) = answer.await {
                return Some((conn, idle.reused));
            }
        }
    }

    /// Idle connections in pool `key` (tests).
    #[cfg(test)]
    pub(crate) fn idle(&self, key: &str) -> usize {
        self.0
            .lock()
            .get(key)
            .map_or(0, |q| q.iter().filter(|i| !i.want.is_closed()).count())
    }
}

async fn watch(
    conn: Conn,
    idle: Option<Duration>,
    mut asked: oneshot::Receiver<oneshot::Sender<Conn>>,
) {
    let expire = async {
        match idle {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    let handover = tokio::select! {
        r = &mut asked => r.ok(),
        _ = expire => None,
        _ = conn.peer_activity() => None,
    };
    if let Some(reply) = handover {
        let _ = reply.send(conn);
    }
}
