//! The hit handler both storages hand to Pingora: a whole body in memory (a disk entry
//! is read whole before it is served, so its checksum is verified first), seekable so
//! range requests are served from the cached full response.

use std::any::Any;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::{Error, ErrorType, Result};
use pingora_cache::storage::{HandleHit, Storage};
use pingora_cache::trace::SpanHandle;
use pingora_cache::CacheKey;

pub struct BodyHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

impl BodyHit {
    pub fn new(body: Bytes) -> BodyHit {
        let end = body.len();
        BodyHit {
            body,
            start: 0,
            end,
            done: false,
        }
    }
}

#[async_trait]
impl HandleHit for BodyHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} beyond the body ({})", self.body.len()),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_whole_then_seeks_a_range() {
        let mut h = BodyHit::new(Bytes::from_static(b"0123456789"));
        assert_eq!(h.read_body().await.unwrap().unwrap(), "0123456789");
        assert!(h.read_body().await.unwrap().is_none());
        h.seek(2, Some(5)).unwrap();
        assert_eq!(h.read_body().await.unwrap().unwrap(), "234");
        assert!(h.seek(10, None).is_err());
    }
}
