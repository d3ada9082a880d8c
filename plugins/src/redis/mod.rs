//! A small Redis client for the limit plugins' `redis` policy: a connection pool per
//! Redis target and `EVALSHA` of a script (loaded with `EVAL` when the server does not
//! have it yet). Everything is async on tokio and bounded by the caller's timeout, so a
//! slow or gone Redis never blocks a worker thread.
//!
//! Why not the `redis` crate: the limit scripts need one command, and its async stack
//! (with `combine` and its own connection manager) would be most of this crate's build
//! time for that.

mod resp;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use resp::Reply;

/// Where a Redis is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: u32,
}

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis {0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("redis timed out after {0:?}")]
    Timeout(Duration),
    #[error("redis replied with an error: {0}")]
    Reply(String),
    #[error("redis protocol error: {0}")]
    Protocol(String),
}

/// A Lua script run server-side, atomically.
pub struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    pub fn new(source: &'static str) -> Script {
        let sha = Sha1::digest(source.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Script { source, sha }
    }
}

/// Idle connections kept per target.
const MAX_IDLE: usize = 64;

/// The connections to one Redis target.
pub struct RedisPool {
    target: RedisTarget,
    idle: Mutex<Vec<Connection>>,
}

/// The pool of `target`, shared by every plugin instance that names it.
pub fn pool(target: &RedisTarget) -> Arc<RedisPool> {
    static POOLS: OnceLock<Mutex<HashMap<RedisTarget, Arc<RedisPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock();
    Arc::clone(pools.entry(target.clone()).or_insert_with(|| {
        Arc::new(RedisPool {
            target: target.clone(),
            idle: Mutex::new(Vec::new()),
        })
    }))
}

impl RedisPool {
    /// Runs `script` with `keys` and `args`, the whole call (connect included) within
    /// `timeout`. A connection that saw an error is dropped, never reused.
    pub async fn eval(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, RedisError> {
        tokio::time::timeout(timeout, self.eval_inner(script, keys, args))
            .await
            .map_err(|_| RedisError::Timeout(timeout))?
    }

    async fn eval_inner(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Reply, RedisError> {
        let numkeys = keys.len().to_string();
        let mut cmd: Vec<&[u8]> = vec![b"EVALSHA", script.sha.as_bytes(), numkeys.as_bytes()];
        cmd.extend_from_slice(keys);
        cmd.extend_from_slice(args);
        let pooled = self.idle.lock().pop();
        let (mut conn, mut reply) = match pooled {
            Some(mut c) => match c.call(&cmd).await {
                Ok(r) => (c, r),
                // A pooled connection the server closed (a restart, an idle timeout):
                // one retry on a new connection.
                Err(RedisError::Io(..)) => {
                    let mut c = Connection::open(&self.target).await?;
                    let r = c.call(&cmd).await?;
                    (c, r)
                }
                Err(e) => return Err(e),
            },
            None => {
                let mut c = Connection::open(&self.target).await?;
                let r = c.call(&cmd).await?;
                (c, r)
            }
        };
        if matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) {
            cmd[0] = b"EVAL";
            cmd[1] = script.source.as_bytes();
            reply = conn.call(&cmd).await?;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        drop(idle);
        match reply {
            Reply::Error(e) => Err(RedisError::Reply(e)),
            r => Ok(r),
        }
    }
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(target: &RedisTarget) -> Result<Connection, RedisError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| RedisError::Io("connect", e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(512),
        };
        match (&target.username, &target.password) {
            (Some(user), Some(password)) => {
                conn.expect_ok(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                    .await?
            }
            (None, Some(password)) => conn.expect_ok(&[b"AUTH", password.as_bytes()]).await?,
            _ => {}
        }
        if target.database != 0 {
            let db = target.database.to_string();
            conn.expect_ok(&[b"SELECT", db.as_bytes()]).await?;
        }
        Ok(conn)
    }

    async fn expect_ok(&mut self, cmd: &[&[u8]]) -> Result<(), RedisError> {
        match self.call(cmd).await? {
            Reply::Error(e) => Err(RedisError::Reply(e)),
            _ => Ok(()),
        }
    }

    async fn call(&mut self, cmd: &[&[u8]]) -> Result<Reply, RedisError> {
        let mut out = Vec::with_capacity(128);
        resp::encode(cmd, &mut out);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| RedisError::Io("write", e))?;
        loop {
            match resp::parse(&self.buf).map_err(|e| RedisError::Protocol(e.0))? {
                Some((reply, used)) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                None => {
                    let mut chunk = [0u8; 512];
                    let n = self
                        .stream
                        .read(&mut chunk)
                        .await
                        .map_err(|e| RedisError::Io("read", e))?;
                    if n == 0 {
                        return Err(RedisError::Io(
                            "read",
                            std::io::ErrorKind::UnexpectedEof.into(),
                        ));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}
