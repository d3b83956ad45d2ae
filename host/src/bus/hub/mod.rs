//! `Hub`: this node's live fan-out to its SSE connections.
//!
//! Committed events reach the hub from this node's publisher and, in cluster
//! mode, from other nodes through Redis, in no guaranteed order. One
//! dispatcher task puts them back in per-tenant id order (ids are gapless, see
//! `store`), fills any gap from the store after a short wait, and hands each
//! event, framed once, to the bounded queue of every connection subscribed to
//! its topic. Connections therefore see ids strictly increasing, and a
//! connection that registers *before* it reads the log misses nothing.
//!
//! A queue that is full is not waited on: the connection is marked lagged and
//! gets nothing more until it has caught up from the log itself.
//!
//! A tenant with an event filter has its events offered by its lane
//! (`lane.rs`) instead, so that guest code never runs on the dispatcher.
//!
//! Here: the registry of subscribers and the offer of a framed event to
//! them; `queue.rs`: a connection's bounded queue; `order.rs`: the
//! dispatcher (per-tenant id order, gap fills, the tail check).

mod order;
mod queue;

use order::{Dispatcher, Input};
pub use queue::Disarmed;
use queue::{wake_up, Offered, Queue};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::event::{Frame, Seq, StoredEvent};
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::store::Store;

/// One connection's end of the fan-out.
pub(super) struct Subscriber {
    queue: Queue,
    /// Set when the queue overflowed; cleared by the connection once it has
    /// drained the queue and is about to read the log.
    lagged: AtomicBool,
    /// Subscription shape, for the event filter.
    shape: Shape,
}

pub use crate::plugins::Shape;

type TopicMap = HashMap<Box<str>, HashMap<u64, Arc<Subscriber>>>;

pub(super) struct Inner {
    /// tenant -> topic -> subscribers. A std lock: it is never held across an
    /// `.await` or a plugin call, and dispatch only takes it for reading.
    subs: RwLock<HashMap<Box<str>, TopicMap>>,
    next_id: AtomicU64,
    input: mpsc::UnboundedSender<Input>,
    metrics: Arc<Metrics>,
    pub(super) plugins: Plugins,
    /// Set (under the `subs` write lock) once the node is shutting down.
    closing: AtomicBool,
}

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
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

    /// True once the node is shutting down (see [`Hub::wake_all`]): one
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

impl Hub {
    /// Starts the dispatcher. `heads` are the store's per-tenant heads at
    /// start: the dispatcher expects each tenant's next id after them.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        heads: Vec<(String, Seq)>,
        tail_check: Duration,
        plugins: Plugins,
    ) -> Hub {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            subs: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            input: tx,
            metrics,
            plugins,
            closing: AtomicBool::new(false),
        });
        tokio::spawn(Dispatcher::new(inner.clone(), store, heads).run(rx, tail_check));
        Hub { inner }
    }

    /// Hands committed events to the dispatcher.
    pub fn deliver(&self, events: Vec<StoredEvent>) {
        if !events.is_empty() {
            // Fails only once the dispatcher is gone, at shutdown.
            let _ = self.inner.input.send(Input::Events(events));
        }
    }

    /// Wakes every connection because the node is shutting down (and every
    /// connection that registers from now on): each gets a frame with id 0,
    /// which a session never sends, and then sees the shutdown flag. So a
    /// session waits on its queue alone rather than on the shutdown token as
    /// well, which would cost a shared lock on every wake-up. A full queue
    /// gets nothing: its session is awake already.
    pub fn wake_all(&self) {
        let subs = self.inner.subs.write().unwrap_or_else(|p| p.into_inner());
        self.inner.closing.store(true, Ordering::SeqCst);
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
    pub fn subscribe(
        &self,
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
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self.inner.subs.write().unwrap_or_else(|p| p.into_inner());
            let by_topic = subs.entry(tenant.into()).or_default();
            for t in topics {
                by_topic
                    .entry(t.as_str().into())
                    .or_default()
                    .insert(id, shared.clone());
            }
            if self.inner.closing.load(Ordering::SeqCst) {
                let _ = shared.queue.try_send(&wake_up());
            }
        }
        Subscription {
            hub: self.inner.clone(),
            id,
            tenant: tenant.into(),
            topics: topics.iter().map(|t| t.as_str().into()).collect(),
            shared,
        }
    }
}

impl Inner {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::plugins::wasm::{Limits, WasmHost};
    use crate::store::sqlite::SqliteStore;

    fn note(n: usize) -> NewEvent {
        NewEvent {
            tenant: "acme".into(),
            topic: "feed:1".into(),
            kind: "note".into(),
            data: format!("{{\"n\":{n}}}"),
            retain: false,
        }
    }

    /// An event that reaches the hub ahead of the ones before it waits for
    /// them; when they do not come, the hub reads them from the store, so
    /// the connection still gets every id in order, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gap_is_filled_from_the_store_in_order() {
        let dir = std::env::temp_dir().join(format!("switchyard-hub-{}", crate::bids::new_id("t")));
        let store = Arc::new(SqliteStore::open(&dir).await.expect("open"));
        store.create_tenant("acme", "Acme").await.expect("tenant");
        let wasm = WasmHost::new(Limits::default()).expect("engine");
        let plugins = Plugins::new(wasm, store.clone(), 4);
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::start(
            store.clone(),
            metrics.clone(),
            vec![("acme".into(), 0)],
            Duration::from_secs(3600),
            plugins,
        );
        let sub = hub.subscribe("acme", &["feed:1".into()], 16, Arc::default());
        let events = store
            .append((1..=3).map(note).collect())
            .await
            .expect("append");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        // Only the last one is handed over, as if 1 and 2 were still on their way.
        hub.deliver(vec![events[2].clone()]);
        let mut got = Vec::new();
        for _ in 0..3 {
            let f = tokio::time::timeout(Duration::from_secs(5), sub.recv())
                .await
                .expect("the gap is filled");
            got.push(f.seq);
        }
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(metrics.fanout_gap_fills.get(), 1);
        // Late copies of the filled events are not delivered twice.
        hub.deliver(events[..2].to_vec());
        let more = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await;
        assert!(more.is_err(), "a duplicate was delivered");
        drop(sub);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
