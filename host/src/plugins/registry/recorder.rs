//! Stream requests recorded for `switchyard plugin replay`: what the stream
//! authorizer was asked (the built-in rule included), what was decided and
//! by which version. Records go to a task through a bounded queue (a full
//! queue drops the record, it never delays a request) and are written in
//! batches, keeping the latest `keep` of each tenant.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Plugins;
use crate::store::plugins::RecordedRequest;

/// Records waiting for the writer; past this, new ones are dropped.
const QUEUE: usize = 1_024;
/// Most records one write takes.
const BATCH: usize = 256;

/// The sending side of the recorder task.
pub(super) struct Recorder {
    tx: mpsc::Sender<RecordedRequest>,
    /// Records dropped because the queue was full.
    pub(super) dropped: AtomicU64,
}

impl Plugins {
    /// Starts recording stream requests into the system of record, keeping
    /// the latest `keep` per tenant (`0`: no recording). Once per registry.
    pub fn record_stream_requests(&self, keep: usize, stop: CancellationToken) {
        if keep == 0 {
            return;
        }
        let (tx, mut rx) = mpsc::channel::<RecordedRequest>(QUEUE);
        let recorder = Recorder {
            tx,
            dropped: AtomicU64::new(0),
        };
        if self.inner.recorder.set(recorder).is_err() {
            return;
        }
        let db = self.inner.db.clone();
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = rx.recv() => match r {
                        Some(r) => r,
                        None => return,
                    },
                };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                if let Err(e) = db.record_stream_requests(batch, keep).await {
                    tracing::warn!(error = %e, "cannot record stream requests; they are left out of replay");
                }
            }
        });
    }

    /// Whether stream requests are recorded.
    pub fn records_stream_requests(&self) -> bool {
        self.inner.recorder.get().is_some()
    }

    /// Hands a record to the writer, or drops it when the queue is full.
    pub(super) fn record(&self, r: RecordedRequest) {
        if let Some(rec) = self.inner.recorder.get() {
            if rec.tx.try_send(r).is_err() {
                rec.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records dropped because the writer was behind.
    pub fn stream_records_dropped(&self) -> u64 {
        self.inner
            .recorder
            .get()
            .map_or(0, |r| r.dropped.load(Ordering::Relaxed))
    }
}
