//! What every session shares (`StreamContext`), what one stream asks for
//! (`StreamRequest`), and where a session waits for its writer (`StreamSlot`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Session;
use crate::bus::hub::Hub;
use crate::coalesce::Coalescer;
use crate::event::Seq;
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::store::{self, Page, Store};

/// What every session shares.
pub struct StreamContext {
    /// The log.
    pub store: Arc<dyn Store>,
    /// Live fan-out.
    pub hub: Hub,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `retry:` hint.
    pub retry: Duration,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// The shared part of every heartbeat frame
    /// ([`crate::sse::encode::heartbeat_body`] of `heartbeat`), rendered once per node.
    pub heartbeat_body: Bytes,
    /// The window the `shutdown` event asks clients to spread reconnects over.
    pub reconnect_window: Duration,
    /// Live queue capacity per connection.
    pub queue: usize,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Event filters (and the other plugins).
    pub plugins: Plugins,
    /// The first reads of opening streams, coalesced (`crate::coalesce`).
    pub first_reads: Coalescer<ReadKey, Result<Arc<Page>, Arc<store::Error>>>,
}

/// What a stream's first read asks: tenant, topics, after, limit.
type ReadKey = (String, Vec<String>, Option<Seq>, usize);

impl StreamContext {
    /// A stream's first read (see [`Store::read`]), shared with the other
    /// streams that asked the same meanwhile; it starts after this call, so
    /// after the caller subscribed to live events (nothing committed in
    /// between is missed). A burst of browsers opening the same topic costs
    /// a few reads, not one each.
    pub async fn first_read(
        &self,
        tenant: &str,
        topics: &[String],
        after: Option<Seq>,
        limit: usize,
    ) -> Result<Page, store::Error> {
        let store = self.store.clone();
        let (t, tp) = (tenant.to_string(), topics.to_vec());
        let key = (t.clone(), tp.clone(), after, limit);
        let answer = self
            .first_reads
            .get(key, move || async move {
                store
                    .read(&t, &tp, after, limit)
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .await;
        match answer {
            Some(Ok(page)) => Ok(Arc::unwrap_or_clone(page)),
            Some(Err(e)) => Err(store::Error::shared(e)),
            None => Err(store::Error::Internal(
                "a stream's first read panicked".into(),
            )),
        }
    }
}

/// A validated subscription request.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// Tenant slug (known to exist).
    pub tenant: String,
    /// Topics (validated, deduplicated, access checked).
    pub topics: Vec<String>,
    /// Only these event types, if given.
    pub types: Option<Vec<String>>,
    /// How event frames are written (`frames=`): with their `event:` line,
    /// or without it for `EventSource`'s `onmessage`.
    pub frames: crate::event::FrameForm,
    /// Resume after this id.
    pub last_event_id: Option<Seq>,
    /// End the stream with `auth.expired` at this instant.
    pub expires_at: Option<Instant>,
    /// Snapshot data (JSON) for topics that have no retained state.
    pub defaults: Vec<(String, String)>,
    /// Topics whose snapshot is sent even when resuming (a client that
    /// starts serving a topic on a stream it resumes, as a shared browser
    /// stream does when a tab joins).
    pub snapshots: Vec<String>,
    /// Subscription shape: the parameters the event filter sees.
    pub shape: crate::plugins::Shape,
}

/// A session waiting for its writer: the response's extension and its body
/// share it, and whichever takes it first drives the stream.
#[derive(Clone)]
pub struct StreamSlot(Arc<std::sync::Mutex<Option<Session>>>);

impl StreamSlot {
    /// Parks a session.
    pub fn new(session: Session) -> StreamSlot {
        StreamSlot(Arc::new(std::sync::Mutex::new(Some(session))))
    }

    /// Takes the session, once.
    pub fn take(&self) -> Option<Session> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
