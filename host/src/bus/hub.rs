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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::lane::Lane;
use crate::event::{Frame, Seq, StoredEvent};
use crate::metrics::Metrics;
use crate::plugins::Plugins;
use crate::store::Store;

/// How long an out-of-order event waits for the ones before it before the
/// dispatcher reads them from the store.
const GAP_WAIT: Duration = Duration::from_millis(30);
/// Most events one gap fill reads.
const FILL_LIMIT: Seq = 5_000;

/// One connection's end of the fan-out.
struct Subscriber {
    queue: Queue,
    /// Set when the queue overflowed; cleared by the connection once it has
    /// drained the queue and is about to read the log.
    lagged: AtomicBool,
    /// Subscription shape, for the event filter.
    shape: Shape,
}

pub use crate::plugins::Shape;

/// A connection's live queue: bounded, one consumer. A `VecDeque` under a
/// mutex that allocates only when frames arrive (tokio's channel costs about
/// 1 KiB per connection even while idle). A send takes the consumer's waker,
/// so frames that arrive before the consumer runs wake it once.
struct Queue {
    cap: usize,
    inner: Mutex<QueueInner>,
}

#[derive(Default)]
struct QueueInner {
    items: VecDeque<Arc<Frame>>,
    waker: Option<Waker>,
}

/// Capacity kept by an emptied queue; a burst's larger buffer is freed.
const QUEUE_KEEP: usize = 32;

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            cap: cap.max(1),
            inner: Mutex::new(QueueInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `f`; false (and `f` dropped) when the queue is full.
    fn try_send(&self, f: Arc<Frame>) -> bool {
        let waker = {
            let mut q = self.lock();
            if q.items.len() >= self.cap {
                return false;
            }
            q.items.push_back(f);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn try_recv(&self) -> Option<Arc<Frame>> {
        let mut q = self.lock();
        let f = q.items.pop_front();
        if q.items.is_empty() && q.items.capacity() > QUEUE_KEEP {
            q.items = VecDeque::new();
        }
        f
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Arc<Frame>> {
        let mut q = self.lock();
        if let Some(f) = q.items.pop_front() {
            return Poll::Ready(f);
        }
        if q.items.capacity() > QUEUE_KEEP {
            q.items = VecDeque::new();
        }
        match &q.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => q.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

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

enum Input {
    /// Committed events, from any node, in any order.
    Events(Vec<StoredEvent>),
    /// A gap fill (or tail check) finished for a tenant.
    Filled {
        tenant: Arc<str>,
        events: Vec<StoredEvent>,
        upto: Seq,
    },
    /// The store's current heads, for the tail check.
    Heads(Vec<(String, Seq)>),
    /// A fill failed; allow another.
    FillFailed(Arc<str>),
}

impl Input {
    /// What it is, for the dispatch span.
    fn label(&self) -> &'static str {
        match self {
            Input::Events(_) => "events",
            Input::Filled { .. } => "filled",
            Input::Heads(_) => "heads",
            Input::FillFailed(_) => "fill_failed",
        }
    }
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

    /// Empties the queue and rejoins live fan-out. The caller must read the
    /// log from its cursor *after* this, so nothing falls between the two.
    pub fn rearm(&mut self) {
        while self.try_recv().is_some() {}
        self.shared.lagged.store(false, Ordering::SeqCst);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
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
        let mut d = Dispatcher {
            hub: inner.clone(),
            store,
            tenants: HashMap::new(),
            gap_due: None,
            lanes: HashMap::new(),
        };
        for (slug, head) in heads {
            d.tenants.insert(Arc::from(slug), TenantSeq::new(head + 1));
        }
        tokio::spawn(d.run(rx, tail_check));
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
        let nudge = nudge();
        for topics in subs.values() {
            for set in topics.values() {
                for sub in set.values() {
                    let _ = sub.queue.try_send(nudge.clone());
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
                let _ = shared.queue.try_send(nudge());
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

/// The wake-up `wake_all` sends: id 0, which every session has passed.
fn nudge() -> Arc<Frame> {
    Arc::new(Frame {
        seq: 0,
        topic: "".into(),
        kind: "".into(),
        bytes: bytes::Bytes::new(),
    })
}

/// Per-tenant ordering state.
struct TenantSeq {
    /// The id to dispatch next.
    next: Seq,
    /// Events that arrived ahead of `next`.
    pending: BTreeMap<Seq, StoredEvent>,
    /// When the oldest unresolved gap was first seen.
    gap_since: Option<Instant>,
    /// A fill is running.
    filling: bool,
}

impl TenantSeq {
    fn new(next: Seq) -> Self {
        TenantSeq {
            next,
            pending: BTreeMap::new(),
            gap_since: None,
            filling: false,
        }
    }
}

struct Dispatcher {
    hub: Arc<Inner>,
    store: Arc<dyn Store>,
    tenants: HashMap<Arc<str>, TenantSeq>,
    /// When the earliest waiting gap is due for a fill; `None` while there
    /// is none (it may be early: a gap can close before its fill is due).
    gap_due: Option<Instant>,
    /// Filter lanes of the tenants that have had a filter.
    lanes: HashMap<Arc<str>, Lane>,
}

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>, tail_check: Duration) {
        let mut tail = tokio::time::interval(tail_check);
        tail.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A timer only while a gap waits (an idle node does not wake
            // every `GAP_WAIT` for nothing).
            let gap_due = self.gap_due;
            tokio::select! {
                input = rx.recv() => match input {
                    Some(input) => self.handle(input),
                    // Every `Hub` handle is gone: the node is shutting down.
                    None => return,
                },
                _ = tokio::time::sleep_until(gap_due.unwrap_or_else(Instant::now).into()),
                    if gap_due.is_some() => {
                    self.fill_overdue_gaps();
                    self.gap_due = self.next_gap_due();
                }
                _ = tail.tick() => self.spawn_tail_check(),
            }
        }
    }

    /// When the oldest gap not being filled is due for a fill (a walk over
    /// the tenants: only when a gap timer fires or a fill ends).
    fn next_gap_due(&self) -> Option<Instant> {
        self.tenants
            .values()
            .filter(|st| !st.filling && !st.pending.is_empty())
            .filter_map(|st| st.gap_since)
            .min()
            .map(|since| since + GAP_WAIT)
    }

    /// One input (a batch of committed events, a fill, the heads): each
    /// event dispatched in order to every subscriber.
    #[tracing::instrument(name = "hub.dispatch", level = "debug", skip_all, fields(input = input.label()))]
    fn handle(&mut self, input: Input) {
        let ended_fill = matches!(input, Input::Filled { .. } | Input::FillFailed(_));
        match input {
            Input::Events(events) => {
                for e in events {
                    self.accept(e);
                }
            }
            Input::Filled {
                tenant,
                events,
                upto,
            } => {
                for e in events {
                    self.accept(e);
                }
                if let Some(st) = self.tenants.get_mut(&tenant) {
                    st.filling = false;
                    // Ids the store no longer has were trimmed by retention:
                    // connections that need them get `reset` from the log.
                    if st.next <= upto && !st.pending.keys().any(|&s| s <= upto) {
                        let skipped = upto + 1 - st.next;
                        self.hub.metrics.fanout_gap_skipped.add(skipped);
                        st.next = upto + 1;
                        self.drain(&tenant);
                    }
                }
            }
            Input::Heads(heads) => {
                for (slug, head) in heads {
                    let key: Arc<str> = Arc::from(slug);
                    let st = self
                        .tenants
                        .entry(key.clone())
                        .or_insert_with(|| TenantSeq::new(1));
                    if head >= st.next && !st.filling && st.pending.is_empty() {
                        self.hub.metrics.fanout_tail_fills.inc();
                        self.spawn_fill(key, head);
                    }
                }
            }
            Input::FillFailed(tenant) => {
                if let Some(st) = self.tenants.get_mut(&tenant) {
                    st.filling = false;
                }
            }
        }
        if ended_fill {
            // Gaps that waited on the fill (or remain after it) need the timer.
            self.gap_due = self.next_gap_due();
        }
    }

    fn accept(&mut self, e: StoredEvent) {
        let st = match self.tenants.get_mut(&e.tenant) {
            Some(st) => st,
            None => self
                .tenants
                .entry(e.tenant.clone())
                .or_insert_with(|| TenantSeq::new(1)),
        };
        if e.seq < st.next {
            return; // already dispatched (our own event echoed back, or a fill overlap)
        }
        if e.seq > st.next {
            let due = *st.gap_since.get_or_insert_with(Instant::now) + GAP_WAIT;
            st.pending.insert(e.seq, e);
            if !st.filling && self.gap_due.is_none_or(|d| due < d) {
                self.gap_due = Some(due);
            }
            return;
        }
        st.next += 1;
        let tenant = e.tenant.clone();
        self.dispatch(e);
        self.drain(&tenant);
    }

    /// Dispatches pending events that are now in order.
    fn drain(&mut self, tenant: &Arc<str>) {
        loop {
            let Some(st) = self.tenants.get_mut(tenant) else {
                return;
            };
            let Some(entry) = st.pending.first_entry() else {
                st.gap_since = None;
                return;
            };
            if *entry.key() > st.next {
                return;
            }
            let e = entry.remove();
            if e.seq < st.next {
                continue;
            }
            st.next += 1;
            if st.pending.is_empty() {
                st.gap_since = None;
            }
            self.dispatch(e);
        }
    }

    fn fill_overdue_gaps(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (tenant, st) in &mut self.tenants {
            if st.filling {
                continue;
            }
            if let (Some(since), Some(&first)) = (st.gap_since, st.pending.keys().next()) {
                if now.duration_since(since) >= GAP_WAIT {
                    st.filling = true;
                    due.push((tenant.clone(), first - 1));
                }
            }
        }
        for (tenant, upto) in due {
            self.hub.metrics.fanout_gap_fills.inc();
            self.spawn_fill_marked(tenant, upto);
        }
    }

    fn spawn_fill(&mut self, tenant: Arc<str>, upto: Seq) {
        if let Some(st) = self.tenants.get_mut(&tenant) {
            st.filling = true;
        }
        self.spawn_fill_marked(tenant, upto);
    }

    fn spawn_fill_marked(&self, tenant: Arc<str>, upto: Seq) {
        let Some(st) = self.tenants.get(&tenant) else {
            return;
        };
        let after = st.next - 1;
        let upto = upto.min(after + FILL_LIMIT);
        let store = self.store.clone();
        let input = self.hub.input.clone();
        tokio::spawn(async move {
            match store.range(&tenant, after, upto).await {
                Ok(events) => {
                    let _ = input.send(Input::Filled {
                        tenant,
                        events,
                        upto,
                    });
                }
                Err(e) => {
                    tracing::warn!(%tenant, error = %e, "fan-out gap fill failed; will retry");
                    let _ = input.send(Input::FillFailed(tenant));
                }
            }
        });
    }

    fn spawn_tail_check(&self) {
        let store = self.store.clone();
        let input = self.hub.input.clone();
        tokio::spawn(async move {
            match store.heads().await {
                Ok(heads) => {
                    let _ = input.send(Input::Heads(heads));
                }
                Err(e) => tracing::debug!(error = %e, "tail check failed"),
            }
        });
    }

    /// Offers the event to every subscriber of its topic, framed once; a
    /// tenant with a filter (or whose lane still has events) through its
    /// lane.
    fn dispatch(&mut self, e: StoredEvent) {
        self.hub.metrics.events_dispatched.inc();
        let filtered =
            self.hub.plugins.has_filters() && self.hub.plugins.filter(&e.tenant).is_some();
        if filtered || self.lanes.get(&e.tenant).is_some_and(Lane::busy) {
            let hub = &self.hub;
            let lane = self
                .lanes
                .entry(e.tenant.clone())
                .or_insert_with(|| Lane::start(hub.clone()));
            // Fails only once the runtime is shutting down.
            let _ = lane.send(e);
            return;
        }
        let m = &self.hub.metrics;
        let subs = self.hub.subs.read().unwrap_or_else(|p| p.into_inner());
        let Some(set) = subs.get(&*e.tenant).and_then(|t| t.get(e.topic.as_str())) else {
            return;
        };
        let frame = Arc::new(Frame::from_parts(e.seq, &e.topic, &e.kind, &e.json));
        let mut lagged = 0;
        for sub in set.values() {
            if sub.lagged.load(Ordering::Relaxed) {
                continue;
            }
            if !sub.queue.try_send(frame.clone()) {
                sub.lagged.store(true, Ordering::SeqCst);
                lagged += 1;
            }
        }
        m.fanout_offers.add(set.len() as u64);
        if lagged > 0 {
            m.client_lagged.add(lagged);
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
    let mut lagged = 0;
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
        if !sub.queue.try_send(frame.clone()) {
            sub.lagged.store(true, Ordering::SeqCst);
            lagged += 1;
        }
    }
    hub.metrics.fanout_offers.add(set.len() as u64);
    if lagged > 0 {
        hub.metrics.client_lagged.add(lagged);
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
