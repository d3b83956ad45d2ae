//! The registry of this node's subscribers (tenant → topic → connection
//! queues), a connection's registration, and the offer of a framed event to
//! the subscribers of its topic: what the dispatcher, the filter lanes and
//! the sessions share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::queue::{wake_up, Disarmed, Offered, Queue};
use crate::event::{Frame, Seq, StoredEvent};
use crate::metrics::Metrics;
use crate::plugins::{Plugins, Shape};

/// One connection's end of the fan-out.
pub(super) struct Subscriber {
    pub(super) queue: Queue,
    /// Set when the queue overflowed; cleared by the connection once it has
    /// drained the queue and is about to read the log.
    pub(super) lagged: AtomicBool,
    /// Subscription shape, for the event filter.
    pub(super) shape: Shape,
}

type TopicMap = HashMap<Box<str>, HashMap<u64, Arc<Subscriber>>>;

/// The registry the dispatcher, the lanes and the subscriptions share.
pub(super) struct Inner {
    /// tenant -> topic -> subscribers. A std lock: it is never held across an
    /// `.await` or a plugin call, and dispatch only takes it for reading.
    pub(super) subs: RwLock<HashMap<Box<str>, TopicMap>>,
    next_id: AtomicU64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) plugins: Plugins,
    /// Set (under the `subs` write lock) once the node is shutting down.
    closing: AtomicBool,
}

/// A connection's registration; dropping it unregisters.
pub struct Subscription {
    hub: Arc<Inner>,
    id: u64,
    tenant: Box<str>,
    topics: Vec<Box<str>>,
    shared: Arc<Subscriber>,
}

impl Subscription {
    /// True when live events were dropped because the queue was full.
    pub fn lagged(&self) -> bool {
        self.shared.lagged.load(Ordering::SeqCst)
    }

    /// True once the node is shutting down (see [`Inner::wake_all`]): one
    /// atomic load, where the shutdown token would take a lock.
    pub fn closing(&self) -> bool {
        self.hub.closing.load(Ordering::Relaxed)
    }

    /// The next live event, in id order. Cancel-safe: an event is taken
    /// only when the future completes.
    pub async fn recv(&self) -> Arc<Frame> {
        std::future::poll_fn(|cx| self.shared.queue.poll_recv(cx)).await
    }

    /// The next live event if one is queued.
    pub fn try_recv(&self) -> Option<Arc<Frame>> {
        self.shared.queue.try_recv()
    }

    /// Lets the fan-out write this connection's frames to `sink` itself
    /// while the connection sleeps with everything written (see
    /// `queue.rs`). Only for a socket nothing else writes to meanwhile.
    pub fn attach(&self, sink: Arc<tokio::net::TcpStream>) {
        self.shared.queue.attach(sink);
    }

    /// About to sleep, with every frame up to `cursor` written: the fan-out
    /// may write the next ones itself (when a socket is attached).
    pub fn arm(&self, cursor: Seq) {
        self.shared.queue.arm(cursor);
    }

    /// Awake: frames are queued again. What was written meanwhile, if a
    /// socket is attached.
    pub fn disarm(&self) -> Option<Disarmed> {
        self.shared.queue.disarm()
    }

    /// Empties the queue and rejoins live fan-out. The caller must read the
    /// log from its cursor *after* this, so nothing falls between the two.
    pub fn rearm(&mut self) {
        while self.try_recv().is_some() {}
        self.shared.lagged.store(false, Ordering::SeqCst);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.queue.detach();
        let mut subs = self.hub.subs.write().unwrap_or_else(|p| p.into_inner());
        if let Some(topics) = subs.get_mut(&self.tenant) {
            for t in &self.topics {
                if let Some(set) = topics.get_mut(t) {
                    set.remove(&self.id);
                    if set.is_empty() {
                        topics.remove(t);
                    }
                }
            }
            if topics.is_empty() {
                subs.remove(&self.tenant);
            }
        }
    }
}

impl Inner {
    pub(super) fn new(metrics: Arc<Metrics>, plugins: Plugins) -> Inner {
        Inner {
            subs: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
            plugins,
            closing: AtomicBool::new(false),
        }
    }

    /// Wakes every connection because the node is shutting down (and every
    /// connection that registers from now on): each gets a frame with id 0,
    /// which a session never sends, and then sees the shutdown flag. So a
    /// session waits on its queue alone rather than on the shutdown token as
    /// well, which would cost a shared lock on every wake-up. A full queue
    /// gets nothing: its session is awake already.
    pub(super) fn wake_all(&self) {
        let subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
        self.closing.store(true, Ordering::SeqCst);
        let nudge = wake_up();
        for topics in subs.values() {
            for set in topics.values() {
                for sub in set.values() {
                    // Never written directly: its id is below every cursor.
                    let _ = sub.queue.try_send(&nudge);
                }
            }
        }
    }

    /// Registers a connection for `topics` of `tenant` with a queue of
    /// `capacity`; `shape` is what the tenant's event filter sees of it.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        tenant: &str,
        topics: &[String],
        capacity: usize,
        shape: Shape,
    ) -> Subscription {
        let shared = Arc::new(Subscriber {
            queue: Queue::new(capacity),
            lagged: AtomicBool::new(false),
            shape,
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
            let by_topic = subs.entry(tenant.into()).or_default();
            for t in topics {
                by_topic
                    .entry(t.as_str().into())
                    .or_default()
                    .insert(id, shared.clone());
            }
            if self.closing.load(Ordering::SeqCst) {
                let _ = shared.queue.try_send(&wake_up());
            }
        }
        Subscription {
            hub: self.clone(),
            id,
            tenant: tenant.into(),
            topics: topics.iter().map(|t| t.as_str().into()).collect(),
            shared,
        }
    }

    /// The distinct subscription shapes among the live subscribers of a
    /// topic.
    pub(super) fn shapes(&self, tenant: &str, topic: &str) -> Vec<Shape> {
        let subs = self.subs.read().unwrap_or_else(|p| p.into_inner());
        let mut shapes: Vec<Shape> = Vec::new();
        if let Some(set) = subs.get(tenant).and_then(|t| t.get(topic)) {
            for sub in set.values() {
                if sub.lagged.load(Ordering::Relaxed) {
                    continue;
                }
                if !shapes
                    .iter()
                    .any(|s| Arc::ptr_eq(s, &sub.shape) || **s == *sub.shape)
                {
                    shapes.push(sub.shape.clone());
                }
            }
        }
        shapes
    }
}

/// Offers an event to the subscribers of its topic, each the frame its
/// shape was answered (none: the filter dropped it). A subscriber whose shape
/// has no answer registered after the answers were made and reads the event
/// from the log.
pub(super) fn offer(hub: &Inner, e: &StoredEvent, answers: &[(Shape, Option<Arc<Frame>>)]) {
    let subs = hub.subs.read().unwrap_or_else(|p| p.into_inner());
    let Some(set) = subs.get(&*e.tenant).and_then(|t| t.get(e.topic.as_str())) else {
        return;
    };
    let mut tally = Tally::default();
    for sub in set.values() {
        if sub.lagged.load(Ordering::Relaxed) {
            continue;
        }
        let answer = answers
            .iter()
            .find(|(s, _)| Arc::ptr_eq(s, &sub.shape) || **s == *sub.shape);
        let Some((_, Some(frame))) = answer else {
            continue;
        };
        tally.offer(sub, frame);
    }
    tally.count(&hub.metrics, set.len());
}

/// One event's offers to its subscribers, counted once per event.
#[derive(Default)]
pub(super) struct Tally {
    lagged: u64,
    written: u64,
}

impl Tally {
    /// Offers `frame` to `sub`, marking it lagged when its queue is full.
    pub(super) fn offer(&mut self, sub: &Subscriber, frame: &Arc<Frame>) {
        match sub.queue.try_send(frame) {
            Offered::Queued => {}
            Offered::Written => self.written += 1,
            Offered::Full => {
                sub.lagged.store(true, Ordering::SeqCst);
                self.lagged += 1;
            }
        }
    }

    /// Adds the event's offers (`offers` subscribers) to the metrics.
    pub(super) fn count(self, m: &Metrics, offers: usize) {
        m.fanout_offers.add(offers as u64);
        if self.written > 0 {
            m.events_sent.add(self.written);
        }
        if self.lagged > 0 {
            m.client_lagged.add(self.lagged);
        }
    }
}
