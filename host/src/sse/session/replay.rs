//! Catch-up: reading the log from the cursor, a page at a time (the next
//! page read while this one is written), through the event filter (whose
//! answers streams of one shape share), until the live queue takes over.

use std::borrow::Cow;

use bytes::BytesMut;

use super::control::ResetReason;
use super::{Phase, Session, PAGE};
use crate::event::FrameForm;
use crate::sse::encode;
use crate::store::{self, Page, TopicState};

/// A read of the next log page; dropping it stops the read.
pub(super) struct ReadAhead(tokio::task::JoinHandle<Result<Page, store::Error>>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Session {
    pub(super) async fn catch_up(&mut self) {
        if self.ctx.shutdown.is_cancelled() {
            self.finish_shutdown();
            return;
        }
        let read = match self.prefetch.take() {
            Some(mut ahead) => match (&mut ahead.0).await {
                Ok(read) => read,
                // The read-ahead task failed to run: read here instead.
                Err(_) => self.read_page().await,
            },
            None => self.read_page().await,
        };
        match read {
            Ok(page) => {
                if self.with_filter(|s| s.apply(page, PAGE)) {
                    self.phase = Phase::Live;
                } else {
                    self.read_ahead();
                }
            }
            Err(e) => {
                // The client resumes from its last id once the store is back.
                tracing::warn!(tenant = %self.req.tenant, error = %e, "replay read failed; closing stream");
                self.phase = Phase::Done;
            }
        }
    }

    async fn read_page(&self) -> Result<Page, store::Error> {
        self.ctx
            .store
            .read(&self.req.tenant, &self.req.topics, Some(self.cursor), PAGE)
            .await
    }

    /// Starts reading the page after the cursor while the current one is
    /// being written.
    pub(super) fn read_ahead(&mut self) {
        let store = self.ctx.store.clone();
        let tenant = self.req.tenant.clone();
        let topics = self.req.topics.clone();
        let after = self.cursor;
        self.prefetch = Some(ReadAhead(tokio::spawn(async move {
            store.read(&tenant, &topics, Some(after), PAGE).await
        })));
    }

    /// Runs `f`, which may call the tenant's event filter (replay pages,
    /// snapshots), where guest code may run: one move off the runtime worker
    /// for the whole page, not one per event.
    pub(super) fn with_filter<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        if self.ctx.plugins.has_filters() {
            crate::plugins::wasm::WasmHost::off_runtime(|| f(self))
        } else {
            f(self)
        }
    }

    /// Applies one page of the log; returns true when the log is exhausted.
    pub(super) fn apply(&mut self, page: Page, limit: usize) -> bool {
        if self.cursor > page.head {
            // An id this tenant never issued: start over on every topic.
            self.cursor = page.head;
            self.told = page.head;
            let by_topic: Vec<TopicState> = page.topics;
            for topic in self.req.topics.clone() {
                self.push_reset(&topic, ResetReason::UnknownId);
                let st = by_topic.iter().find(|s| s.topic == topic);
                self.push_snapshot(&topic, st.and_then(|s| s.retained.as_ref()));
            }
            self.skip.clear();
            return true;
        }
        for st in &page.topics {
            let already = self
                .skip
                .iter()
                .any(|(t, upto)| *t == st.topic && *upto >= st.trimmed);
            if st.trimmed > self.cursor && !already {
                // History no longer covers the gap: say so, hand over the
                // current state, and carry on from the head for this topic.
                self.push_reset(&st.topic, ResetReason::HistoryTrimmed);
                self.push_snapshot(&st.topic, st.retained.as_ref());
                self.skip.retain(|(t, _)| *t != st.topic);
                self.skip.push((st.topic.clone(), page.head));
            }
        }
        let exhausted = page.events.len() < limit;
        let mut buf = BytesMut::with_capacity(
            page.events
                .iter()
                .map(|e| encode::frame_len(&e.kind, &e.json))
                .sum(),
        );
        let mut sent = 0u64;
        let filter = self.ctx.plugins.filter(&self.req.tenant);
        for e in &page.events {
            self.cursor = e.seq;
            if !self.wants(&e.topic, &e.kind, e.seq) {
                continue;
            }
            let json = match &filter {
                None => Cow::Borrowed(e.json.as_str()),
                // Streams of one shape replaying the same events share the
                // filter's answers (`plugins::registry::shapes`).
                Some(f) => match f.replay_json(e, &self.req.shape) {
                    Some(json) => json,
                    None => continue,
                },
            };
            match self.req.frames {
                FrameForm::Named => encode::put_event(&mut buf, e.seq, &e.kind, &json),
                FrameForm::Message => encode::put_unnamed(&mut buf, e.seq, &json),
            }
            self.told = e.seq;
            sent += 1;
        }
        if !buf.is_empty() {
            self.out.push_back(buf.freeze());
        }
        if sent > 0 {
            self.ctx.metrics.events_replayed.add(sent);
            self.ctx.metrics.events_sent.add(sent);
        }
        if exhausted {
            self.skip.retain(|(_, upto)| *upto > page.head);
        }
        exhausted
    }
}
