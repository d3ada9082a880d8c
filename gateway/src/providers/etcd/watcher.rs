//! The background service that keeps the running configuration equal to etcd's.
//!
//! Read the whole prefix at a revision and apply it as one change, then watch from that
//! revision + 1; each batch of events (a burst arriving within [`COALESCE`] is one batch)
//! is one apply. A compaction of the watched revision, a lost connection or a different
//! etcd cluster (restored or restarted empty) lead to a full read again, applied as one
//! change that replaces everything. A watch that stays silent for `etcd.timeout` is
//! re-opened from the same revision after checking etcd's revision did not go
//! backwards: a timeout never advances the revision. Reconnections back off
//! exponentially with jitter, up to [`MAX_BACKOFF`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::Rng;

use super::client::{EtcdClient, EtcdError, WatchStream};
use super::follow::{Follow, Position};
use super::wire::{Event, WatchMessage};
use super::{layout, EtcdStatus};

/// Events arriving this soon after a batch join it.
const COALESCE: Duration = Duration::from_millis(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A watch that ended sooner than this backs off before the next full read.
const MIN_WATCH: Duration = Duration::from_secs(1);

pub struct EtcdWatcher {
    pub client: EtcdClient,
    pub follow: Arc<Mutex<Follow>>,
    pub status: Arc<EtcdStatus>,
    /// Where the startup read left etcd (`None`: it could not read etcd).
    pub start: Option<Position>,
}

/// Why a watch ended.
enum WatchEnd {
    Shutdown,
    /// Silent for `etcd.timeout`.
    Timeout,
    /// Compacted, cancelled, or the connection broke: read everything again.
    Resync(String),
}

#[async_trait]
impl BackgroundService for EtcdWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let dir = layout::dir(&self.follow.lock().prefix);
        let mut position = self.start;
        // The position of the running configuration, kept across resyncs to skip
        // applying a full read that changes nothing.
        let mut applied = self.start;
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let Some(mut pos) = position else {
                match self.full_read(&dir, applied).await {
                    Ok(p) => {
                        position = Some(p);
                        applied = Some(p);
                    }
                    Err(e) => {
                        self.status
                            .set_disconnected(&e.to_string(), &self.follow.lock().metrics);
                        if sleep_or_shutdown(&mut shutdown, jitter(backoff)).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
                continue;
            };
            let stream = match self.client.watch(&dir, pos.revision + 1).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("etcd watch could not start: {e}");
                    self.status
                        .set_disconnected(&e.to_string(), &self.follow.lock().metrics);
                    position = None;
                    if sleep_or_shutdown(&mut shutdown, jitter(backoff)).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            self.status.set_connected(&self.follow.lock().metrics);
            let watched = std::time::Instant::now();
            let end = self.follow_stream(stream, &mut pos, &mut shutdown).await;
            // Reset only by a watch that lasted, so a flapping etcd keeps backing off.
            if watched.elapsed() >= MIN_WATCH {
                backoff = FIRST_BACKOFF;
            }
            match end {
                WatchEnd::Shutdown => return,
                WatchEnd::Timeout => {
                    // Same cluster, not behind us: watch on from where we are.
                    match self.client.header(&dir).await {
                        Ok(h) if h.cluster_id == pos.cluster_id && h.revision >= pos.revision => {
                            tracing::debug!(
                                revision = pos.revision,
                                "etcd watch silent for etcd.timeout: re-opened from the same revision"
                            );
                            position = Some(pos)
                        }
                        Ok(_) => {
                            tracing::warn!("etcd went back to an older revision or another cluster: reading everything again");
                            position = None;
                        }
                        Err(_) => position = None,
                    }
                }
                WatchEnd::Resync(why) => {
                    tracing::warn!("etcd watch ended ({why}): reading everything again");
                    position = None;
                    // A watch that ends as soon as it starts (a proxy in between, an
                    // overloaded etcd) must not become a loop of full reads.
                    if watched.elapsed() < MIN_WATCH {
                        if sleep_or_shutdown(&mut shutdown, jitter(backoff)).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            applied = Some(pos);
        }
    }
}

impl EtcdWatcher {
    /// Reads everything and applies it (unless it is what runs already).
    async fn full_read(&self, dir: &str, applied: Option<Position>) -> Result<Position, EtcdError> {
        let reply = self.client.range(dir).await?;
        let pos = Position {
            revision: reply.header.revision,
            cluster_id: reply.header.cluster_id,
        };
        let mut follow = self.follow.lock();
        follow.metrics.etcd.count_full_read();
        if applied != Some(pos) || self.status.serving_local_copy() {
            follow.apply_full(reply.kvs, pos.revision);
            tracing::info!(revision = pos.revision, "applied etcd's configuration");
        }
        self.status.set_connected(&follow.metrics);
        Ok(pos)
    }

    /// Applies the stream's batches until it ends.
    async fn follow_stream(
        &self,
        mut stream: WatchStream,
        pos: &mut Position,
        shutdown: &mut ShutdownWatch,
    ) -> WatchEnd {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<WatchMessage, EtcdError>>(1024);
        // The reader owns the stream, so batching below never cancels a read halfway.
        let reader = tokio::spawn(async move {
            loop {
                let message = stream.next().await;
                let end = message.is_err();
                if tx.send(message).await.is_err() || end {
                    return;
                }
            }
        });
        let end = loop {
            let first = tokio::select! {
                _ = shutdown.changed() => break WatchEnd::Shutdown,
                m = rx.recv() => m,
            };
            let mut events: Vec<Event> = Vec::new();
            let mut ended = None;
            let cluster_id = pos.cluster_id;
            ended = ended.or(take(first, cluster_id, &mut events));
            if ended.is_none() && !events.is_empty() {
                tokio::time::sleep(COALESCE).await;
                while let Ok(m) = rx.try_recv() {
                    if let Some(end) = take(Some(m), cluster_id, &mut events) {
                        ended = Some(end);
                        break;
                    }
                }
            }
            if !events.is_empty() {
                let revision = events
                    .iter()
                    .map(|e| match e {
                        Event::Put(kv) => kv.mod_revision,
                        Event::Delete { revision, .. } => *revision,
                    })
                    .max()
                    .unwrap_or(pos.revision)
                    .max(pos.revision);
                self.follow.lock().apply_events(events, revision);
                pos.revision = revision;
            }
            if let Some(end) = ended {
                break end;
            }
        };
        reader.abort();
        end
    }
}

/// Adds a message's events to `events`; `Some` when the watch ended with it.
fn take(
    message: Option<Result<WatchMessage, EtcdError>>,
    cluster_id: u64,
    events: &mut Vec<Event>,
) -> Option<WatchEnd> {
    match message {
        None => Some(WatchEnd::Resync("the watch reader stopped".into())),
        Some(Err(EtcdError::Timeout)) => Some(WatchEnd::Timeout),
        Some(Err(e)) => Some(WatchEnd::Resync(e.to_string())),
        Some(Ok(WatchMessage::Canceled {
            compact_revision,
            reason,
        })) => Some(WatchEnd::Resync(format!(
            "cancelled by etcd (compacted at revision {compact_revision}) {reason}"
        ))),
        Some(Ok(WatchMessage::Created { header })) if header.cluster_id != cluster_id => {
            Some(WatchEnd::Resync("a different etcd cluster answered".into()))
        }
        Some(Ok(WatchMessage::Created { .. } | WatchMessage::Progress { .. })) => None,
        Some(Ok(WatchMessage::Events { events: batch, .. })) => {
            events.extend(batch);
            None
        }
    }
}

/// Sleeps `d`; true when a shutdown came first.
async fn sleep_or_shutdown(shutdown: &mut ShutdownWatch, d: Duration) -> bool {
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// `d` ± 50 %, so a fleet does not reconnect in step.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::rng().random_range(0.5..1.5))
}
