//! `Session`: one SSE connection, from registration to its last frame.
//!
//! The order of operations is what makes resume exact:
//!
//! 1. Register with the hub (live events start queueing).
//! 2. Read the log from the cursor (`Last-Event-ID`), page by page, sending
//!    what is there and advancing the cursor.
//! 3. Go live: send queued events with an id above the cursor, skip the rest.
//!
//! Every event committed after the read in step 2 reaches the queue, because
//! the hub dispatches only committed events and registration came first. A
//! queue that overflows is emptied and the session goes back to step 2 from
//! its cursor, so a slow reader catches up from the log instead of being cut
//! off or silently losing events.
//!
//! The cursor is a single per-tenant id, so the `id:` of the last frame is the
//! whole resume state of a multi-topic stream.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, Interval, Sleep};
use tokio_util::sync::CancellationToken;

use super::encode;
use crate::bus::hub::{Hub, Subscription};
use crate::event::{Frame, Seq};
use crate::metrics::{Gauge, Metrics};
use crate::plugins::Plugins;
use crate::store::{self, Page, Retained, Store, TopicState};

/// Events read from the log per page while replaying.
const PAGE: usize = 2_000;
/// Live events taken from the queue per wake-up.
const LIVE_BATCH: usize = 128;

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
    /// ([`encode::heartbeat_body`] of `heartbeat`), rendered once per node.
    pub heartbeat_body: Bytes,
    /// The window the `shutdown` event asks clients to spread reconnects over.
    pub reconnect_window: Duration,
    /// Live queue capacity per connection.
    pub queue: usize,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Event filters (and the other plugins).
    pub plugins: Plugins,
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

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    CatchUp,
    Live,
    Done,
}

/// One connection's stream.
pub struct Session {
    ctx: Arc<StreamContext>,
    req: StreamRequest,
    /// Highest id dealt with (sent, filtered out or skipped).
    cursor: Seq,
    /// Highest id the client has been told (its `lastEventId`).
    told: Seq,
    sub: Subscription,
    phase: Phase,
    out: VecDeque<Bytes>,
    heartbeat: Interval,
    expiry: Option<Pin<Box<Sleep>>>,
    /// Topics reset during this session: their events up to the id are skipped
    /// (the snapshot already covers them).
    skip: Vec<(String, Seq)>,
    tenant_gauge: Gauge,
    /// The stream's slot under the connection caps, released on drop.
    lease: Option<crate::sse::caps::Lease>,
    /// The next page of the log, being read while this one is written.
    prefetch: Option<ReadAhead>,
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

/// A read of the next log page; dropping it stops the read.
struct ReadAhead(tokio::task::JoinHandle<Result<Page, store::Error>>);

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Session {
    /// Registers and performs the first read, so that an unknown tenant or a
    /// store that is down becomes an HTTP error rather than an empty stream.
    pub async fn open(
        ctx: Arc<StreamContext>,
        req: StreamRequest,
    ) -> Result<Session, store::Error> {
        let sub = ctx
            .hub
            .subscribe(&req.tenant, &req.topics, ctx.queue, req.shape.clone());
        let (cursor, page, phase) = match req.last_event_id {
            None => {
                let page = ctx.store.read(&req.tenant, &req.topics, None, 0).await?;
                (page.head, page, Phase::Live)
            }
            Some(c) => {
                let page = ctx
                    .store
                    .read(&req.tenant, &req.topics, Some(c), PAGE)
                    .await?;
                (c, page, Phase::CatchUp)
            }
        };
        let hb = ctx.heartbeat;
        let tenant_gauge = ctx.metrics.tenant_connections(&req.tenant);
        tenant_gauge.add(1);
        ctx.metrics.connections.add(1);
        ctx.metrics.connections_opened.inc();
        let mut s = Session {
            expiry: req
                .expires_at
                .map(|at| Box::pin(tokio::time::sleep_until(at))),
            ctx,
            req,
            cursor,
            told: cursor,
            sub,
            phase,
            out: VecDeque::new(),
            heartbeat: {
                let mut t = tokio::time::interval_at(Instant::now() + hb, hb);
                // After a long replay, one heartbeat, not a burst of them.
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            },
            skip: Vec::new(),
            tenant_gauge,
            lease: None,
            prefetch: None,
        };
        s.out.push_back(encode::opening(
            s.ctx.retry,
            s.cursor,
            &s.ctx.heartbeat_body,
        ));
        match s.phase {
            Phase::Live => s.with_filter(|s| {
                // A fresh subscriber: the retained state, then live events.
                for topic in s.req.topics.clone() {
                    let st = page.topics.iter().find(|t| t.topic == topic);
                    s.push_snapshot(&topic, st.and_then(|t| t.retained.as_ref()));
                }
            }),
            _ => {
                let exhausted = s.with_filter(|s| {
                    if s.cursor <= page.head {
                        // Asked-for snapshots first: the retained state as of
                        // this read; the replay that follows may hold events it
                        // already covers (ids up to its `as_of`).
                        for topic in std::mem::take(&mut s.req.snapshots) {
                            let st = page.topics.iter().find(|t| t.topic == topic);
                            s.push_snapshot(&topic, st.and_then(|t| t.retained.as_ref()));
                        }
                    }
                    s.apply(page, PAGE)
                });
                if exhausted {
                    s.phase = Phase::Live;
                } else {
                    s.read_ahead();
                }
            }
        }
        Ok(s)
    }

    /// Keeps the stream's connection-cap slot until the session ends.
    pub fn hold(&mut self, lease: crate::sse::caps::Lease) {
        self.lease = Some(lease);
    }

    /// The next bytes to write; `None` ends the stream.
    pub async fn next(&mut self) -> Option<Bytes> {
        if self.fill().await {
            self.out.pop_front()
        } else {
            None
        }
    }

    /// Waits until there are frames to write (see [`Session::out`]); false
    /// once the stream is over and everything has been taken.
    ///
    /// Cancel-safe between frames: dropping the future loses nothing queued.
    pub async fn fill(&mut self) -> bool {
        loop {
            if !self.out.is_empty() {
                return true;
            }
            match self.phase {
                Phase::Done => return false,
                Phase::CatchUp => self.catch_up().await,
                Phase::Live => self.live().await,
            }
        }
    }

    /// The frames ready to write, oldest first; a writer takes them from the front.
    pub fn out(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.out
    }

    async fn catch_up(&mut self) {
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
    fn read_ahead(&mut self) {
        let store = self.ctx.store.clone();
        let tenant = self.req.tenant.clone();
        let topics = self.req.topics.clone();
        let after = self.cursor;
        self.prefetch = Some(ReadAhead(tokio::spawn(async move {
            store.read(&tenant, &topics, Some(after), PAGE).await
        })));
    }

    async fn live(&mut self) {
        // The hub wakes every queue at shutdown (`Hub::wake_all`), so its
        // flag is enough here: no waiter on the shutdown token per wake-up.
        if self.sub.closing() {
            self.finish_shutdown();
            return;
        }
        if self.sub.lagged() {
            // Queue overflowed: drop it and catch up from the log by cursor.
            self.sub.rearm();
            self.phase = Phase::CatchUp;
            return;
        }
        let expiry = async {
            match self.expiry.as_mut() {
                Some(s) => s.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = expiry => {
                let data = format!(
                    "{{\"tenant\":{},\"reason\":\"token expired; reconnect with a fresh token\"}}",
                    json_str(&self.req.tenant)
                );
                self.out.push_back(control(self.cursor, "auth.expired", &data));
                self.phase = Phase::Done;
            }
            f = self.sub.recv() => {
                let mut sent = self.offer(&f) as u64;
                for _ in 0..LIVE_BATCH {
                    match self.sub.try_recv() {
                        Some(f) => sent += self.offer(&f) as u64,
                        None => break,
                    }
                }
                if sent > 0 {
                    self.ctx.metrics.events_sent.add(sent);
                }
            },
            _ = self.heartbeat.tick() => {
                // The heartbeat carries the cursor, which filtered-out events
                // may have moved: the client's resume point stays inside the
                // retained history. Only the id line is this connection's;
                // the rest is the node's one shared buffer.
                self.told = self.cursor;
                self.out.push_back(encode::id_line(self.cursor));
                self.out.push_back(self.ctx.heartbeat_body.clone());
            }
        }
    }

    /// Queues a live frame if the client has not had it; returns whether it was sent.
    fn offer(&mut self, f: &Arc<Frame>) -> bool {
        if f.seq <= self.cursor {
            return false;
        }
        self.cursor = f.seq;
        if !self.wants(&f.topic, &f.kind, f.seq) {
            return false;
        }
        self.told = f.seq;
        self.out.push_back(f.bytes.clone());
        true
    }

    fn wants(&self, topic: &str, kind: &str, seq: Seq) -> bool {
        if self.skip.iter().any(|(t, upto)| t == topic && seq <= *upto) {
            return false;
        }
        match &self.req.types {
            Some(types) => types.iter().any(|t| t == kind),
            None => true,
        }
    }

    /// Runs `f`, which may call the tenant's event filter (replay pages,
    /// snapshots), where guest code may run: one move off the runtime worker
    /// for the whole page, not one per event.
    fn with_filter<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        if self.ctx.plugins.has_filters() {
            crate::plugins::wasm::WasmHost::off_runtime(|| f(self))
        } else {
            f(self)
        }
    }

    /// Applies one page of the log; returns true when the log is exhausted.
    fn apply(&mut self, page: Page, limit: usize) -> bool {
        if self.cursor > page.head {
            // An id this tenant never issued: start over on every topic.
            self.cursor = page.head;
            self.told = page.head;
            let by_topic: Vec<TopicState> = page.topics;
            for topic in self.req.topics.clone() {
                self.push_reset(&topic, "unknown_id");
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
                self.push_reset(&st.topic, "history_trimmed");
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
                Some(f) => {
                    let input = crate::plugins::convert::event(e);
                    match f.event_json(e, &input, &self.req.shape) {
                        Some(json) => json,
                        None => continue,
                    }
                }
            };
            encode::put_event(&mut buf, e.seq, &e.kind, &json);
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

    fn push_snapshot(&mut self, topic: &str, retained: Option<&Retained>) {
        let (data, as_of, ts) = match retained {
            Some(r) => (r.data.as_str(), r.seq, r.ts),
            None => match self.req.defaults.iter().find(|(t, _)| t == topic) {
                Some((_, d)) => (d.as_str(), 0, crate::event::now_ms()),
                None => return,
            },
        };
        // The event filter sees a snapshot too (`snapshot_data`), so a
        // redacting filter redacts the state.
        let data = match self.ctx.plugins.filter(&self.req.tenant) {
            None => Cow::Borrowed(data),
            Some(f) => {
                match f.snapshot_data(&self.req.tenant, topic, as_of, data, ts, &self.req.shape) {
                    Some(d) => d,
                    None => return,
                }
            }
        };
        let data = format!(
            "{{\"tenant\":{},\"topic\":{},\"type\":\"snapshot\",\"data\":{},\"as_of\":{},\"ts\":{}}}",
            json_str(&self.req.tenant),
            json_str(topic),
            data,
            as_of,
            ts
        );
        self.out.push_back(control(self.cursor, "snapshot", &data));
    }

    fn push_reset(&mut self, topic: &str, reason: &str) {
        self.ctx.metrics.resets.inc();
        let data = format!(
            "{{\"tenant\":{},\"topic\":{},\"type\":\"reset\",\"reason\":\"{reason}\",\"resume_from\":{}}}",
            json_str(&self.req.tenant),
            json_str(topic),
            self.cursor
        );
        self.out.push_back(control(self.cursor, "reset", &data));
    }

    /// Flushes what is already queued, then says goodbye.
    fn finish_shutdown(&mut self) {
        if !self.sub.lagged() {
            let mut sent = 0;
            while let Some(f) = self.sub.try_recv() {
                sent += self.offer(&f) as u64;
            }
            self.ctx.metrics.events_sent.add(sent);
        }
        // The window lets this node's clients land on the others spread
        // out, each after a random wait within it, instead of all at once.
        let data = format!(
            "{{\"reason\":\"server shutting down\",\"resume_from\":{},\"reconnect_window_ms\":{}}}",
            self.told,
            self.ctx.reconnect_window.as_millis()
        );
        self.out.push_back(control(self.told, "shutdown", &data));
        self.phase = Phase::Done;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.tenant_gauge.add(-1);
        self.ctx.metrics.connections.add(-1);
    }
}

/// A server frame (`snapshot`, `reset`, `shutdown`, ...) that keeps the cursor.
fn control(cursor: Seq, kind: &str, data: &str) -> Bytes {
    encode::event(cursor, kind, data)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}
