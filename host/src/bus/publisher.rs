//! `Publisher`: every event enters the log here.
//!
//! One task takes append requests, batches whatever is waiting into a single
//! transaction (group commit: one fsync for many events), then hands the
//! committed events to the fan-out and answers each caller with its ids.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::retention::Retention;
use super::Fanout;
use crate::event::{NewEvent, StoredEvent};
use crate::metrics::Metrics;
use crate::store::{self, Store};

/// Most events committed in one transaction.
const MAX_BATCH: usize = 512;

/// Why an append failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The tenant does not exist.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// The store does not answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (logged where it happened).
    #[error("append failed: {0}")]
    Failed(String),
    /// The node is shutting down.
    #[error("shutting down")]
    Closed,
}

impl From<&store::Error> for PublishError {
    fn from(e: &store::Error) -> Self {
        match e {
            store::Error::UnknownTenant(t) => PublishError::UnknownTenant(t.clone()),
            store::Error::Unavailable(m) => PublishError::Unavailable(m.clone()),
            other => PublishError::Failed(other.to_string()),
        }
    }
}

struct Request {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<StoredEvent>, PublishError>>,
}

/// What happens after every commit, whoever committed.
struct AfterCommit {
    fanout: Arc<dyn Fanout>,
    retention: Arc<Retention>,
    metrics: Arc<Metrics>,
}

impl AfterCommit {
    fn run(&self, stored: &[StoredEvent]) {
        if stored.is_empty() {
            return;
        }
        self.metrics.events_published.add(stored.len() as u64);
        self.fanout.publish(stored);
        self.retention.touched(stored);
    }
}

/// Handle to the appender; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Request>,
    after: Arc<AfterCommit>,
}

impl Publisher {
    /// Starts the appender task.
    pub fn start(
        store: Arc<dyn Store>,
        fanout: Arc<dyn Fanout>,
        retention: Arc<Retention>,
        metrics: Arc<Metrics>,
    ) -> Publisher {
        let (tx, rx) = mpsc::channel(4096);
        let after = Arc::new(AfterCommit {
            fanout,
            retention,
            metrics,
        });
        tokio::spawn(run(rx, store, after.clone()));
        Publisher { tx, after }
    }

    /// Hands events committed elsewhere (a message with its notifications, a
    /// bid decision with its events) to the fan-out.
    pub fn committed(&self, stored: &[StoredEvent]) {
        self.after.run(stored);
    }

    /// Appends events atomically and returns them with their ids.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, PublishError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { events, reply })
            .await
            .map_err(|_| PublishError::Closed)?;
        rx.await.map_err(|_| PublishError::Closed)?
    }
}

async fn run(mut rx: mpsc::Receiver<Request>, store: Arc<dyn Store>, after: Arc<AfterCommit>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut n = batch[0].events.len();
        while n < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    n += r.events.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let all: Vec<NewEvent> = batch
            .iter()
            .flat_map(|r| r.events.iter().cloned())
            .collect();
        match store.append(&all).await {
            Ok(stored) => {
                after.run(&stored);
                let mut rest = stored;
                for r in batch {
                    let tail = rest.split_off(r.events.len());
                    let _ = r.reply.send(Ok(rest));
                    rest = tail;
                }
            }
            Err(e) if batch.len() > 1 => {
                // One bad request must not fail the others: retry them alone.
                tracing::debug!(error = %e, "batch append failed; retrying requests one by one");
                for r in batch {
                    let result = store.append(&r.events).await;
                    if let Ok(stored) = &result {
                        after.run(stored);
                    }
                    let _ = r.reply.send(result.map_err(|e| log_error(&e)));
                }
            }
            Err(e) => {
                let err = log_error(&e);
                for r in batch {
                    let _ = r.reply.send(Err(err.clone()));
                }
            }
        }
    }
}

fn log_error(e: &store::Error) -> PublishError {
    match e {
        store::Error::UnknownTenant(_) => {}
        store::Error::Unavailable(_) => {
            tracing::warn!(error = %e, "append failed: store unavailable")
        }
        _ => tracing::error!(error = %e, "append failed"),
    }
    PublishError::from(e)
}
