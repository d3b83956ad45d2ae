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
use crate::plugins::{EventFilters, Shape};

/// One connection's end of the fan-out.
pub(super) struct Subscriber {
    pub(super) queue: Queue,
    /// Set when the queue overflowed; cleared by the connection once it has
    /// drained the queue and is about to read the log.
    pub(super) lagged: AtomicBool,
    /// Subscription shape, for the event filter.
    pub(super) shape: Shape,
    /// Set when an operator closed the stream ([`Kicker::kick`]).
    kicked: AtomicBool,
}

/// Ends one connection's stream from outside it (an operator's disconnect):
/// a flag its session reads when it wakes, and a wake-up in its queue, as
/// the node's shutdown does for every connection.
#[derive(Clone)]
pub struct Kicker(Arc<Subscriber>);

impl Kicker {
    /// Asks the stream to end; it says `disconnected` and closes.
    pub fn kick(&self) {
        self.0.kicked.store(true, Ordering::SeqCst);
        // Never written directly: its id is below every cursor. A full
        // queue gets nothing: its session is awake already.
        let _ = self.0.queue.try_send(&wake_up());
    }
}

type TopicMap = HashMap<Box<str>, TopicSubs>;

/// The subscribers of one topic, and their distinct shapes.
#[derive(Default)]
pub(super) struct TopicSubs {
    /// In one array, so an offer walks them in order and can split them
    /// between threads (see [`offer_all`]).
    list: Vec<(u64, Arc<Subscriber>)>,
    /// Each subscription id's place in `list`.
    index: HashMap<u64, usize>,
    /// Each distinct shape among the subscribers once, with how many use it:
    /// what a filter lane asks the filter about per event, without a pass
    /// over the subscribers. A subscriber's shape is this list's `Arc` when
    /// it registers, so matching it to an answer is a pointer comparison.
    shapes: Vec<(Shape, usize)>,
}

impl TopicSubs {
    /// Adds a subscriber (its shape counted; already interned by the caller).
    fn insert(&mut self, id: u64, sub: Arc<Subscriber>) {
        match self.shapes.iter_mut().find(|(s, _)| **s == *sub.shape) {
            Some((_, n)) => *n += 1,
            None => self.shapes.push((sub.shape.clone(), 1)),
        }
        self.index.insert(id, self.list.len());
        self.list.push((id, sub));
    }

    /// Removes a subscriber and, with its last user, its shape.
    fn remove(&mut self, id: u64) {
        let Some(i) = self.index.remove(&id) else {
            return;
        };
        let (_, sub) = self.list.swap_remove(i);
        if let Some((moved, _)) = self.list.get(i) {
            self.index.insert(*moved, i);
        }
        if let Some(i) = self.shapes.iter().position(|(s, _)| **s == *sub.shape) {
            self.shapes[i].1 -= 1;
            if self.shapes[i].1 == 0 {
                self.shapes.swap_remove(i);
            }
        }
    }

    /// The shape equal to `shape` some subscriber already has, if any.
    fn interned(&self, shape: &Shape) -> Option<&Shape> {
        self.shapes.iter().map(|(s, _)| s).find(|s| ***s == **shape)
    }

    /// The subscribers.
    fn subscribers(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.list.iter().map(|(_, s)| s)
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The registry the dispatcher, the lanes and the subscriptions share.
pub(super) struct Inner {
    /// tenant -> topic -> subscribers. A std lock: it is never held across an
    /// `.await` or a plugin call, and dispatch only takes it for reading.
    pub(super) subs: RwLock<HashMap<Box<str>, TopicMap>>,
    next_id: AtomicU64,
    pub(super) metrics: Arc<Metrics>,
    pub(super) filters: Arc<dyn EventFilters>,
    /// Set (under the `subs` write lock) once the node is shutting down.
    closing: AtomicBool,
    /// Told (under the `subs` write lock, so in order) when a tenant gets
    /// its first subscriber here and when it loses its last.
    interest: std::sync::OnceLock<Arc<dyn TenantInterest>>,
}

/// What wants to know which tenants have subscribers on this node (the
/// sharded bus reads only their shards). Called under the registry's lock:
/// it must only take note (a channel send), never block.
pub trait TenantInterest: Send + Sync + 'static {
    /// `tenant` has a subscriber here now (`true`), or no longer (`false`).
    fn changed(&self, tenant: &str, present: bool);
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

    /// True once an operator asked this stream to end ([`Kicker`]).
    pub fn kicked(&self) -> bool {
        self.shared.kicked.load(Ordering::Relaxed)
    }

    /// The handle that ends this stream from outside it.
    pub fn kicker(&self) -> Kicker {
        Kicker(self.shared.clone())
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
    pub fn attach(&self, sink: Arc<tokio::net::TcpStream>, form: crate::event::FrameForm) {
        self.shared.queue.attach(sink, form);
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
                    set.remove(self.id);
                    if set.is_empty() {
                        topics.remove(t);
                    }
                }
            }
            if topics.is_empty() {
                subs.remove(&self.tenant);
                if let Some(w) = self.hub.interest.get() {
                    w.changed(&self.tenant, false);
                }
            }
        }
    }
}

impl Inner {
    pub(super) fn new(metrics: Arc<Metrics>, filters: Arc<dyn EventFilters>) -> Inner {
        Inner {
            subs: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            metrics,
            filters,
            closing: AtomicBool::new(false),
            interest: std::sync::OnceLock::new(),
        }
    }

    /// Tells `w` of every tenant with subscribers now and of every change
    /// from here on (once per hub: a second watcher is ignored).
    pub(super) fn watch(&self, w: Arc<dyn TenantInterest>) {
        let subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
        if self.interest.set(w.clone()).is_ok() {
            for tenant in subs.keys() {
                w.changed(tenant, true);
            }
        }
    }

    /// Whether any connection here subscribes to one of the tenant's topics.
    pub(super) fn has_tenant(&self, tenant: &str) -> bool {
        let subs = self.subs.read().unwrap_or_else(|p| p.into_inner());
        subs.contains_key(tenant)
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
                for sub in set.subscribers() {
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared;
        {
            let mut subs = self.subs.write().unwrap_or_else(|p| p.into_inner());
            if !subs.contains_key(tenant) {
                if let Some(w) = self.interest.get() {
                    w.changed(tenant, true);
                }
            }
            let by_topic = subs.entry(tenant.into()).or_default();
            // One `Arc` per distinct shape of a topic (the first topic's).
            let shape = topics
                .iter()
                .find_map(|t| by_topic.get(t.as_str())?.interned(&shape).cloned())
                .unwrap_or(shape);
            shared = Arc::new(Subscriber {
                queue: Queue::new(capacity),
                lagged: AtomicBool::new(false),
                shape,
                kicked: AtomicBool::new(false),
            });
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

    /// How many connections subscribe to a topic.
    pub(super) fn subscribers_of(&self, tenant: &str, topic: &str) -> usize {
        let subs = self.subs.read().unwrap_or_else(|p| p.into_inner());
        subs.get(tenant)
            .and_then(|t| t.get(topic))
            .map_or(0, |set| set.list.len())
    }

    /// The distinct subscription shapes among the subscribers of a topic.
    pub(super) fn shapes(&self, tenant: &str, topic: &str) -> Vec<Shape> {
        let subs = self.subs.read().unwrap_or_else(|p| p.into_inner());
        subs.get(tenant)
            .and_then(|t| t.get(topic))
            .map(|set| set.shapes.iter().map(|(s, _)| s.clone()).collect())
            .unwrap_or_default()
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
    let offered = offer_all(set, &hub.metrics, |sub| {
        // Interned: the pointer matches, unless the shape registered after
        // the answers were made (then an equal one may still match).
        let answer = answers
            .iter()
            .find(|(s, _)| Arc::ptr_eq(s, &sub.shape))
            .or_else(|| answers.iter().find(|(s, _)| **s == *sub.shape));
        match answer {
            Some((_, Some(frame))) => Some(frame),
            _ => None,
        }
    });
    if offered > 0 {
        hub.metrics.tenant_delivered(&e.tenant, offered);
    }
}

/// Subscribers of a topic past which one event's offers are split between
/// two threads.
pub(super) const PARALLEL_FROM: usize = 512;

/// Offers each subscriber of `set` that is not lagged the frame `frame_for`
/// gives it (none: nothing), counting once per event. With direct writes an
/// offer is a `send(2)`, microseconds each, so a large topic's offers run on
/// two threads at once: the event reaches its last subscriber in half the
/// time. Each subscriber still gets the event's frame before the next
/// event's: the caller offers one event at a time, and waits for both halves.
///
/// The second thread is a scoped thread of its own per such event, not a
/// pool's: at 512 subscribers an event's sends take milliseconds, against
/// tens of microseconds to start a thread, and a pool's workers spin while
/// they wait for work (`rayon::join` cost 0.3 µs of user time per delivery
/// more at 1,000 × 100/s, docs/benchmarks.md).
pub(super) fn offer_all<'f>(
    set: &TopicSubs,
    metrics: &Metrics,
    frame_for: impl Fn(&Subscriber) -> Option<&'f Arc<Frame>> + Sync,
) -> u64 {
    let run = |part: &[(u64, Arc<Subscriber>)]| {
        let mut tally = Tally::default();
        for (i, (_, sub)) in part.iter().enumerate() {
            if let Some((_, ahead)) = part.get(i + PREFETCH_AHEAD) {
                prefetch(ahead);
            }
            if sub.lagged.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(frame) = frame_for(sub) {
                tally.offer(sub, frame);
            }
        }
        tally
    };
    let list = &set.list;
    let tally = if list.len() >= PARALLEL_FROM {
        let (a, b) = list.split_at(list.len() / 2);
        std::thread::scope(|scope| {
            let other = std::thread::Builder::new()
                .name("offer".into())
                .spawn_scoped(scope, || run(b));
            let ta = run(a);
            match other {
                Ok(h) => ta.and(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))),
                // No thread to be had: this one offers the other half too.
                Err(_) => ta.and(run(b)),
            }
        })
    } else {
        run(list)
    };
    let offered = tally.offered;
    tally.count(metrics, list.len());
    offered
}

/// How far ahead of the subscriber being offered to the offer loop asks the
/// CPU to load one. Between two events the kernel's sends push the
/// subscribers out of the caches, and without it the loop stalls on a load
/// from memory at each (`perf annotate`: most of the loop's own time was the
/// load of the `lagged` flag, docs/benchmarks.md). A send takes
/// microseconds, a load a tenth of one: two ahead is enough.
const PREFETCH_AHEAD: usize = 2;

/// Asks the CPU to start loading what an offer to `sub` reads (its flag,
/// shape and queue), without waiting for it.
#[inline(always)]
fn prefetch(sub: &Arc<Subscriber>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = Arc::as_ptr(sub).cast::<i8>();
        // The subscriber spans a few cache lines: each is asked for.
        for line in (0..std::mem::size_of::<Subscriber>()).step_by(64) {
            // SAFETY: a prefetch is a hint and never faults; every address
            // is inside the live subscriber `sub` points to.
            unsafe { _mm_prefetch(p.wrapping_add(line), _MM_HINT_T0) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = sub;
}

/// One event's offers to its subscribers, counted once per event.
#[derive(Default)]
struct Tally {
    lagged: u64,
    written: u64,
    offered: u64,
}

impl Tally {
    /// Both tallies in one.
    fn and(self, other: Tally) -> Tally {
        Tally {
            lagged: self.lagged + other.lagged,
            written: self.written + other.written,
            offered: self.offered + other.offered,
        }
    }

    /// Offers `frame` to `sub`, marking it lagged when its queue is full.
    fn offer(&mut self, sub: &Subscriber, frame: &Arc<Frame>) {
        self.offered += 1;
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
    fn count(self, m: &Metrics, offers: usize) {
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
    use crate::plugins::NoFilters;

    fn shape(pairs: &[(&str, &str)]) -> Shape {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A registry of subscribers with no event filters.
    fn registry(metrics: Arc<Metrics>) -> Arc<Inner> {
        Arc::new(Inner::new(metrics, Arc::new(NoFilters)))
    }

    /// A topic's distinct shapes are kept as subscribers come and go, each
    /// once, and equal shapes share one `Arc`.
    #[tokio::test]
    async fn a_topics_shapes_follow_its_subscribers() {
        let inner = registry(Arc::default());
        let topics = ["t:1".to_string()];
        let a = inner.subscribe("acme", &topics, 4, shape(&[("lang", "en")]));
        let b = inner.subscribe("acme", &topics, 4, shape(&[("lang", "en")]));
        let c = inner.subscribe("acme", &topics, 4, shape(&[("lang", "fr")]));
        assert!(Arc::ptr_eq(&a.shared.shape, &b.shared.shape));
        let langs = |inner: &Inner| {
            let mut v: Vec<String> = inner
                .shapes("acme", "t:1")
                .iter()
                .map(|s| s[0].1.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(langs(&inner), ["en", "fr"]);
        drop(a);
        assert_eq!(langs(&inner), ["en", "fr"]);
        drop(b);
        assert_eq!(langs(&inner), ["fr"]);
        drop(c);
        assert!(inner.shapes("acme", "t:1").is_empty());
        assert!(inner
            .subs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty());
    }

    /// A topic large enough for its offers to be split over two threads:
    /// every subscriber, in both halves, gets every event once and in order,
    /// and each offer is counted once.
    #[tokio::test]
    async fn a_split_offer_reaches_every_subscriber_in_order() {
        let metrics = Arc::new(Metrics::default());
        let inner = registry(metrics.clone());
        let topics = ["t:1".to_string()];
        let n = PARALLEL_FROM + 89;
        let subs: Vec<Subscription> = (0..n)
            .map(|_| inner.subscribe("acme", &topics, 8, Shape::default()))
            .collect();
        let shapes = inner.shapes("acme", "t:1");
        assert_eq!(shapes.len(), 1, "one interned shape for {n} subscribers");
        for seq in 1..=3 {
            let e = StoredEvent {
                seq,
                tenant: "acme".into(),
                topic: "t:1".into(),
                kind: "note".into(),
                json: format!("{{\"n\":{seq}}}"),
                ts: 0,
            };
            let frame = Arc::new(Frame::from_parts(seq, &e.topic, &e.kind, &e.json));
            offer(&inner, &e, &[(shapes[0].clone(), Some(frame))]);
        }
        for (i, sub) in subs.iter().enumerate() {
            let got: Vec<Seq> = std::iter::from_fn(|| sub.try_recv().map(|f| f.seq)).collect();
            assert_eq!(got, [1, 2, 3], "subscriber {i} of {n}");
        }
        assert_eq!(metrics.fanout_offers.get(), 3 * n as u64);
        drop(subs);
    }
}
