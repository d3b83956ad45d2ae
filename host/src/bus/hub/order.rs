//! The dispatcher: puts committed events back in per-tenant id order,
//! fills gaps from the store after a short wait, checks the tail now and
//! then, and dispatches each event, framed once, to its topic's subscribers
//! (or to the tenant's filter lane).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::lane::Lane;
use super::subscribers::{offer_all, Inner, PARALLEL_FROM};
use crate::event::{Frame, Seq, StoredEvent};
use crate::store::Store;

/// How long an out-of-order event waits for the ones before it before the
/// dispatcher reads them from the store.
const GAP_WAIT: Duration = Duration::from_millis(30);
/// Most events one gap fill reads.
const FILL_LIMIT: Seq = 5_000;
/// How long a fill or a tail check may wait on the store. A fill that never
/// ended would leave its tenant marked as filling, so no later fill or tail
/// check would run for it: a read that a partition holds is given up and
/// tried again.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) enum Input {
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
    /// Check the tail now.
    CheckTail,
}

impl Input {
    /// What it is, for the dispatch span.
    fn label(&self) -> &'static str {
        match self {
            Input::Events(_) => "events",
            Input::Filled { .. } => "filled",
            Input::Heads(_) => "heads",
            Input::FillFailed(_) => "fill_failed",
            Input::CheckTail => "check_tail",
        }
    }
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

pub(super) struct Dispatcher {
    hub: Arc<Inner>,
    /// Its own input, for the results of the reads it starts.
    input: mpsc::UnboundedSender<Input>,
    store: Arc<dyn Store>,
    tenants: HashMap<Arc<str>, TenantSeq>,
    /// When the earliest waiting gap is due for a fill; `None` while there
    /// is none (it may be early: a gap can close before its fill is due).
    gap_due: Option<Instant>,
    /// Filter lanes of the tenants that have had a filter.
    lanes: HashMap<Arc<str>, Lane>,
}

impl Dispatcher {
    /// A dispatcher expecting each tenant's next id after its head in
    /// `heads` (the store's, at start).
    pub(super) fn new(
        hub: Arc<Inner>,
        input: mpsc::UnboundedSender<Input>,
        store: Arc<dyn Store>,
        heads: Vec<(String, Seq)>,
    ) -> Self {
        let mut d = Dispatcher {
            hub,
            input,
            store,
            tenants: HashMap::new(),
            gap_due: None,
            lanes: HashMap::new(),
        };
        for (slug, head) in heads {
            d.tenants.insert(Arc::from(slug), TenantSeq::new(head + 1));
        }
        d
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Input>,
        tail_check: Duration,
    ) {
        // The first check one period in: the heads it would read at start
        // are the ones this dispatcher was built with.
        let mut tail =
            tokio::time::interval_at(tokio::time::Instant::now() + tail_check, tail_check);
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
                        // Rare and worth seeing: which ids, of whom (a
                        // skip that retention does not explain is a bug).
                        tracing::info!(
                            %tenant,
                            from = st.next,
                            upto,
                            "ids not in the log (trimmed by retention): skipped"
                        );
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
                    if head < st.next || st.filling {
                        continue;
                    }
                    if !self.hub.has_tenant(&key) {
                        // No subscriber here: nothing to deliver, so no
                        // read. One that registers from now on reads the
                        // log after it registered, so up to at least
                        // `head` (read before this check): its events
                        // start after it.
                        st.next = head + 1;
                        st.pending = st.pending.split_off(&st.next);
                        if st.pending.is_empty() {
                            st.gap_since = None;
                        }
                        self.drain(&key);
                        continue;
                    }
                    if st.pending.is_empty() {
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
            Input::CheckTail => self.spawn_tail_check(),
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
        let input = self.input.clone();
        tokio::spawn(async move {
            let read = tokio::time::timeout(READ_TIMEOUT, store.range(&tenant, after, upto));
            match read.await.unwrap_or_else(|_| Err(timed_out())) {
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
        let input = self.input.clone();
        tokio::spawn(async move {
            let read = tokio::time::timeout(READ_TIMEOUT, store.heads());
            match read.await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(heads) => {
                    let _ = input.send(Input::Heads(heads));
                }
                Err(e) => tracing::debug!(error = %e, "tail check failed"),
            }
        });
    }

    /// Offers the event to every subscriber of its topic, framed once.
    /// Through the tenant's lane when the tenant has a filter, when its lane
    /// still has events, or when the topic is large: an offer to hundreds
    /// of subscribers is a send each (milliseconds), which would hold this
    /// task, every other tenant's dispatch and the runtime worker under it.
    fn dispatch(&mut self, e: StoredEvent) {
        self.hub.metrics.events_dispatched.inc();
        let lag_ms = crate::event::now_ms().saturating_sub(e.ts).max(0);
        self.hub
            .metrics
            .bus_lag
            .observe(std::time::Duration::from_millis(lag_ms as u64));
        let filtered = self.hub.filters.any() && self.hub.filters.active_for(&e.tenant);
        if filtered
            || self.lanes.get(&e.tenant).is_some_and(Lane::busy)
            || self.hub.subscribers_of(&e.tenant, &e.topic) >= PARALLEL_FROM
        {
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
        let offered = offer_all(set, m, |_| Some(&frame));
        drop(subs);
        if offered > 0 {
            m.tenant_delivered(&e.tenant, offered);
        }
    }
}

/// A store read the dispatcher gave up on.
fn timed_out() -> crate::store::Error {
    crate::store::Error::unavailable(format!("no answer within {} s", READ_TIMEOUT.as_secs()))
}
