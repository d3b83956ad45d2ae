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

//!
//! The session is split by job: what every session shares and what one asks
//! for (`context.rs`), reading the log up to the live queue (`replay.rs`),
//! and the frames the server itself sends (`control.rs`: snapshots, resets,
//! goodbyes). This file holds the state machine and the live path.

mod context;
mod control;
mod replay;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::{Instant, Interval, Sleep};

pub use context::{StreamContext, StreamRequest, StreamSlot};
use replay::ReadAhead;

use super::encode;
use crate::bus::hub::Subscription;
use crate::event::{Frame, Seq};
use crate::metrics::Gauge;
use crate::store;

/// Events read from the log per page while replaying.
const PAGE: usize = 2_000;
/// Live events taken from the queue per wake-up.
const LIVE_BATCH: usize = 128;

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
    /// The stream's presence on its topics, counted out on drop.
    presence: Option<crate::presence::Guard>,
    /// The next page of the log, being read while this one is written.
    prefetch: Option<ReadAhead>,
    /// The fan-out may write live frames to the socket itself (the lean
    /// writer's plain TCP; see `bus/hub/queue.rs`).
    direct: bool,
    /// The stream's place among its user's open streams (the operator's
    /// listing and disconnect), given up on drop.
    listed: Option<crate::console::Listed>,
}

/// What woke a live session.
enum Woke {
    Expired,
    Frame(Arc<Frame>),
    Heartbeat,
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
                let page = ctx.first_read(&req.tenant, &req.topics, None, 0).await?;
                (page.head, page, Phase::Live)
            }
            Some(c) => {
                let page = ctx
                    .first_read(&req.tenant, &req.topics, Some(c), PAGE)
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
            presence: None,
            prefetch: None,
            direct: false,
            listed: None,
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

    /// Lets the fan-out write live frames to `sink` while this session
    /// sleeps with everything written. Only for a writer that writes
    /// nothing else meanwhile and calls [`Session::fill`] only once the
    /// previous frames are written (the lean writer).
    pub fn attach(&mut self, sink: Arc<tokio::net::TcpStream>) {
        self.sub.attach(sink, self.req.frames);
        self.direct = true;
    }

    /// Keeps the stream's connection-cap slot until the session ends.
    pub fn hold(&mut self, lease: crate::sse::caps::Lease) {
        self.lease = Some(lease);
    }

    /// Keeps the stream counted on its topics until the session ends.
    pub fn hold_presence(&mut self, presence: crate::presence::Guard) {
        self.presence = Some(presence);
    }

    /// Keeps the stream among its user's open streams until the session ends.
    pub fn hold_listed(&mut self, listed: crate::console::Listed) {
        self.listed = Some(listed);
    }

    /// The handle that ends this stream from outside (an operator's disconnect).
    pub fn kicker(&self) -> crate::bus::hub::Kicker {
        self.sub.kicker()
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
            if self.phase != Phase::Done && self.sub.kicked() {
                self.finish_disconnected();
                continue;
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
        // Everything is written (the writer calls in only then): the fan-out
        // may write the next frames straight to the socket while this
        // sleeps, when every frame past the cursor is wanted as it is.
        let direct = self.direct && self.req.types.is_none() && self.skip.is_empty();
        if direct {
            self.sub.arm(self.cursor);
        }
        let expiry = async {
            match self.expiry.as_mut() {
                Some(s) => s.as_mut().await,
                None => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            biased;
            _ = expiry => Woke::Expired,
            f = self.sub.recv() => Woke::Frame(f),
            _ = self.heartbeat.tick() => Woke::Heartbeat,
        };
        if direct {
            // What the fan-out wrote comes first: its tail, if the socket
            // took only part of a frame, and the cursor it reached.
            if let Some(d) = self.sub.disarm() {
                if d.cursor > self.cursor {
                    self.cursor = d.cursor;
                    self.told = d.cursor;
                }
                self.out.extend(d.rest);
            }
        }
        match woke {
            Woke::Expired => self.finish_expired(),
            Woke::Frame(f) => {
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
            }
            Woke::Heartbeat => {
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
        // Named: the shared buffer; unnamed: two slices of it (no copy).
        f.push_to(self.req.frames, 0, &mut self.out);
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
}

impl Drop for Session {
    fn drop(&mut self) {
        self.tenant_gauge.add(-1);
        self.ctx.metrics.connections.add(-1);
    }
}
