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
//! Here: the `Hub` handle. Below it, from the top: `order.rs`, the
//! dispatcher (per-tenant id order, gap fills, the tail check); `lane.rs`,
//! the filter lanes; `subscribers.rs`, the registry of subscribers and the
//! offer of a framed event to them; `queue.rs`, a connection's bounded queue
//! (and the direct write). Each imports only those below it.

mod lane;
mod order;
mod queue;
mod subscribers;

use order::{Dispatcher, Input};
use subscribers::Inner;
pub use subscribers::{Kicker, Subscription, TenantInterest};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::event::{Seq, StoredEvent};
use crate::metrics::Metrics;
use crate::plugins::EventFilters;
pub use crate::plugins::Shape;
use crate::store::Store;

/// Handle to the hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
    input: mpsc::UnboundedSender<Input>,
}

impl Hub {
    /// Starts the dispatcher. `heads` are the store's per-tenant heads at
    /// start: the dispatcher expects each tenant's next id after them.
    pub fn start(
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        heads: Vec<(String, Seq)>,
        tail_check: Duration,
        filters: Arc<dyn EventFilters>,
    ) -> Hub {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner::new(metrics, filters));
        tokio::spawn(Dispatcher::new(inner.clone(), tx.clone(), store, heads).run(rx, tail_check));
        Hub { inner, input: tx }
    }

    /// Hands committed events to the dispatcher.
    pub fn deliver(&self, events: Vec<StoredEvent>) {
        if !events.is_empty() {
            // Fails only once the dispatcher is gone, at shutdown.
            let _ = self.input.send(Input::Events(events));
        }
    }

    /// Wakes every connection because the node is shutting down (and every
    /// connection that registers from now on): each gets a frame with id 0,
    /// which a session never sends, and then sees the shutdown flag. So a
    /// session waits on its queue alone rather than on the shutdown token as
    /// well, which would cost a shared lock on every wake-up. A full queue
    /// gets nothing: its session is awake already.
    pub fn wake_all(&self) {
        self.inner.wake_all();
    }

    /// Tells `w` of every tenant with subscribers here, now and from here on
    /// (its first subscriber came, its last went).
    pub fn watch_tenants(&self, w: Arc<dyn TenantInterest>) {
        self.inner.watch(w);
    }

    /// Checks every tenant's tail against the store now (as the periodic
    /// check does): a bus reader that has just taken its position asks, so
    /// what was committed before it did is not left to the next period.
    pub fn check_tail(&self) {
        let _ = self.input.send(Input::CheckTail);
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
        self.inner.subscribe(tenant, topics, capacity, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::plugins::{NoFilters, ShapeFilter};
    use crate::store::sqlite::SqliteStore;
    use std::borrow::Cow;

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
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::start(
            store.clone(),
            metrics.clone(),
            vec![("acme".into(), 0)],
            Duration::from_secs(3600),
            Arc::new(NoFilters),
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

    /// A filter in plain Rust: `acme`'s subscriptions of shape `lang=fr`
    /// get no odd events and the even ones with their data replaced; every
    /// other shape gets every event as it is.
    struct FrenchEven;

    impl EventFilters for FrenchEven {
        fn any(&self) -> bool {
            true
        }

        fn of_tenant(&self, tenant: &str) -> Option<Box<dyn ShapeFilter>> {
            (tenant == "acme").then(|| Box::new(FrenchEven) as Box<dyn ShapeFilter>)
        }
    }

    impl ShapeFilter for FrenchEven {
        fn answers<'a>(&self, e: &'a StoredEvent, shapes: &[Shape]) -> Vec<Option<Cow<'a, str>>> {
            shapes
                .iter()
                .map(|s| match s.first() {
                    Some((k, v)) if k == "lang" && v == "fr" => e
                        .seq
                        .is_multiple_of(2)
                        .then(|| Cow::Owned(format!("{{\"seq\":{},\"lang\":\"fr\"}}", e.seq))),
                    _ => Some(Cow::Borrowed(e.json.as_str())),
                })
                .collect()
        }
    }

    /// A tenant's filter answers per shape through its lane: one shape's
    /// subscribers get what it passes or replaces, in order, the other
    /// shape's everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_filter_answers_each_shape_through_the_lane() {
        let dir = std::env::temp_dir().join(format!("switchyard-hub-{}", crate::bids::new_id("t")));
        let store = Arc::new(SqliteStore::open(&dir).await.expect("open"));
        store.create_tenant("acme", "Acme").await.expect("tenant");
        let hub = Hub::start(
            store.clone(),
            Arc::new(Metrics::default()),
            vec![("acme".into(), 0)],
            Duration::from_secs(3600),
            Arc::new(FrenchEven),
        );
        let fr: Shape = Arc::new(vec![("lang".into(), "fr".into())]);
        let en: Shape = Arc::new(vec![("lang".into(), "en".into())]);
        let sub_fr = hub.subscribe("acme", &["feed:1".into()], 16, fr);
        let sub_en = hub.subscribe("acme", &["feed:1".into()], 16, en);
        let events = store
            .append((1..=4).map(note).collect())
            .await
            .expect("append");
        hub.deliver(events);
        let mut en_got = Vec::new();
        for _ in 0..4 {
            let f = tokio::time::timeout(Duration::from_secs(5), sub_en.recv())
                .await
                .expect("every event for `en`");
            en_got.push(f.seq);
        }
        assert_eq!(en_got, [1, 2, 3, 4]);
        let mut fr_got = Vec::new();
        for _ in 0..2 {
            let f = tokio::time::timeout(Duration::from_secs(5), sub_fr.recv())
                .await
                .expect("the even events for `fr`");
            fr_got.push(f.seq);
        }
        assert_eq!(fr_got, [2, 4]);
        let more = tokio::time::timeout(Duration::from_millis(200), sub_fr.recv()).await;
        assert!(more.is_err(), "an odd event reached `fr`");
        drop((sub_fr, sub_en));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
