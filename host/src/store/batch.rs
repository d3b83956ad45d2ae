//! Group commit for the domain writes that follow every request: event
//! appends, messages, read marks, bids, products and (embedded) the results
//! of decision rounds, decided before they are submitted (`Op::Round`).
//!
//! One task per store takes whatever writes are waiting and runs them in one
//! transaction, so many requests share one commit (one fsync in SQLite, one
//! WAL flush and one hold of each tenant's sequence row in Postgres). Each
//! write does its own rows and hands back the events it wants appended; the
//! batch appends all of them at the end with one bump of each tenant's counter
//! and commits. Ids therefore stay gapless and in commit order.
//!
//! A write that is refused on its own terms (an idempotency key reused for
//! another bid) touches nothing and does not disturb the batch. A batch that
//! fails as a whole (an unknown tenant, a database error) is retried one write
//! at a time, so one bad request never fails the others.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::bids::{RoundSummary, RoundWrite};
use super::{Error, Message, NewMessage, Notification, PublishKey};
use crate::bids::{Bid, Product};
use crate::event::{NewEvent, StoredEvent};

/// Most writes committed in one transaction.
const MAX_OPS: usize = 256;
/// Most events a batch collects before it stops taking more writes.
const MAX_EVENTS: usize = 2_048;

/// One write.
#[derive(Clone)]
pub(crate) enum Op {
    /// Events to append as they are.
    Append(Vec<NewEvent>),
    /// Events to append under an idempotency key (the key row is written
    /// after the append, with the ids: `keyed_rows`).
    Keyed(PublishKey, Vec<NewEvent>),
    /// A message and the notifications announcing it.
    Message(NewMessage, Vec<Notification>),
    /// A read mark: `(tenant, user, up_to)`.
    MarkRead(String, String, i64),
    /// A new queued bid.
    Bid(Bid),
    /// A new product.
    Product(Product),
    /// A decision round's result, decided off the writer: written only if
    /// the product and its bids are still as the round read them (embedded
    /// mode; cluster rounds run in their own transactions).
    Round(Arc<RoundWrite>),
}

impl Op {
    fn weight(&self) -> usize {
        match self {
            Op::Append(e) | Op::Keyed(_, e) => e.len(),
            Op::Round(w) => w.round.events.len().max(1),
            _ => 2,
        }
    }
}

/// What a write did, besides its events.
#[derive(Debug)]
pub(crate) enum Done {
    /// Events appended.
    Appended,
    /// A repeated idempotency key: the ids answered the first time and the
    /// time of the first event; nothing appended.
    Repeated(Vec<crate::event::Seq>, i64),
    /// The stored message and the recipient's unread count.
    Message(Message, u64),
    /// The user's unread count after the mark.
    Read(u64),
    /// The bid (the stored one for a repeated idempotency key) and whether it
    /// is new.
    Bid(Bid, bool),
    /// The product was stored.
    Product,
    /// The round was written.
    Decided,
    /// The round read a product or bids that changed since: nothing written.
    Stale,
}

/// The answer to a write was meant for another kind of write (a bug).
pub(crate) fn unexpected(done: Done) -> Error {
    Error::Internal(format!("the store's writer answered {done:?}"))
}

/// A write's outcome with its committed events.
pub(crate) type Outcome = Result<(Done, Vec<StoredEvent>), Error>;

/// What a write did inside the transaction, before the batch appends its
/// events (borrowed from the op where it carries them): `Err` is a refusal
/// that wrote nothing.
pub(crate) type Applied<'a> = Result<(Done, Cow<'a, [NewEvent]>), Error>;

/// A backend that runs a batch of writes in one transaction.
#[async_trait]
pub(crate) trait Target: Send + Sync + 'static {
    /// Runs `ops` in one transaction: each op in turn, then one append of all
    /// their events, then the commit. `Err` means nothing was committed.
    async fn run(&self, ops: Arc<[Op]>) -> Result<Vec<Outcome>, Error>;
}

/// Hands each op's events back to it, in op order.
pub(crate) fn split(applied: Vec<Applied<'_>>, stored: Vec<StoredEvent>) -> Vec<Outcome> {
    let mut rest = stored.into_iter();
    applied
        .into_iter()
        .map(|a| a.map(|(done, events)| (done, rest.by_ref().take(events.len()).collect())))
        .collect()
}

/// The idempotency-key rows to write after the append: for each keyed op
/// that appended, its key, the ids of its events and the first one's time.
pub(crate) fn keyed_rows<'a>(
    ops: &'a [Op],
    outcomes: &[Outcome],
) -> Vec<(&'a PublishKey, Vec<crate::event::Seq>, i64)> {
    ops.iter()
        .zip(outcomes)
        .filter_map(|(op, outcome)| match (op, outcome) {
            (Op::Keyed(key, _), Ok((Done::Appended, stored))) => Some((
                key,
                stored.iter().map(|e| e.seq).collect(),
                stored.first().map_or(0, |e| e.ts),
            )),
            _ => None,
        })
        .collect()
}

/// What a keyed op does inside the transaction, given the key's row
/// (`hash`, `ids` as JSON, `ts`, `created_at`) if one exists.
pub(crate) fn apply_keyed<'a>(
    key: &PublishKey,
    events: &'a [NewEvent],
    row: Option<(String, String, i64, i64)>,
) -> Applied<'a> {
    match row {
        Some((hash, ids, ts, created_at)) if created_at >= key.since_ms => {
            if hash != key.hash {
                return Err(Error::KeyReused);
            }
            let ids: Vec<crate::event::Seq> = serde_json::from_str(&ids)
                .map_err(|e| Error::Internal(format!("a stored idempotency key's ids: {e}")))?;
            Ok((Done::Repeated(ids, ts), Cow::Owned(Vec::new())))
        }
        _ => Ok((Done::Appended, Cow::Borrowed(events))),
    }
}

/// Runs a keyed append through `batcher`; a write that lost a race for its
/// key runs once more, and then sees the key.
pub(crate) async fn write_keyed(
    batcher: &Batcher,
    key: PublishKey,
    events: Vec<NewEvent>,
) -> Result<super::Keyed, Error> {
    let op = Op::Keyed(key, events);
    let mut outcome = batcher.write(op.clone()).await;
    if matches!(outcome, Err(Error::KeyRaced)) {
        outcome = batcher.write(op).await;
    }
    match outcome? {
        (Done::Appended, stored) => Ok(super::Keyed::New(stored)),
        (Done::Repeated(ids, ts), _) => Ok(super::Keyed::Repeated(ids, ts)),
        (other, _) => Err(unexpected(other)),
    }
}

/// Every op's events, in op order, for the one append of the batch.
pub(crate) fn events_of<'a>(applied: &'a [Applied<'_>]) -> Vec<&'a NewEvent> {
    applied
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .flat_map(|(_, events)| events.iter())
        .collect()
}

struct Job {
    op: Op,
    reply: oneshot::Sender<Outcome>,
}

/// Handle to a store's batching task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the task (inside a tokio runtime).
    pub(crate) fn start(target: Arc<dyn Target>) -> Batcher {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(rx, target));
        Batcher { tx }
    }

    /// Runs one write; answers after its batch committed.
    pub(crate) async fn write(&self, op: Op) -> Outcome {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::Unavailable("the store's writer has stopped".into());
        self.tx.send(Job { op, reply }).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Stores a product; its committed events.
    pub(crate) async fn product(&self, p: &Product) -> Result<Vec<StoredEvent>, Error> {
        match self.write(Op::Product(p.clone())).await? {
            (Done::Product, events) => Ok(events),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Queues a bid: the stored one, and whether it is new.
    pub(crate) async fn bid(&self, bid: &Bid) -> Result<(Bid, bool), Error> {
        match self.write(Op::Bid(bid.clone())).await? {
            (Done::Bid(b, new), _) => Ok((b, new)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Commits a decided round if what it read still holds: its summary,
    /// or `None` when it is stale (run it again from the read).
    pub(crate) async fn round(&self, w: RoundWrite) -> Result<Option<RoundSummary>, Error> {
        let w = Arc::new(w);
        match self.write(Op::Round(w.clone())).await? {
            (Done::Decided, events) => Ok(Some(RoundSummary::of(&w.round, events))),
            (Done::Stale, _) => Ok(None),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Stores a message and its notifications: the message, the
    /// recipient's unread count, the committed events.
    pub(crate) async fn message(
        &self,
        msg: &NewMessage,
        notes: &[Notification],
    ) -> Result<(Message, u64, Vec<StoredEvent>), Error> {
        match self.write(Op::Message(msg.clone(), notes.to_vec())).await? {
            (Done::Message(m, unread), events) => Ok((m, unread, events)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Marks a user's messages read up to `up_to`: the unread count left,
    /// and the committed events.
    pub(crate) async fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        up_to: i64,
    ) -> Result<(u64, Vec<StoredEvent>), Error> {
        match self
            .write(Op::MarkRead(tenant.into(), user.into(), up_to))
            .await?
        {
            (Done::Read(unread), events) => Ok((unread, events)),
            (other, _) => Err(unexpected(other)),
        }
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, target: Arc<dyn Target>) {
    while let Some(first) = rx.recv().await {
        let mut weight = first.op.weight();
        let mut jobs = vec![first];
        while jobs.len() < MAX_OPS && weight < MAX_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    weight += job.op.weight();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = jobs.into_iter().map(|j| (j.op, j.reply)).unzip();
        commit(target.as_ref(), ops.into(), replies).await;
    }
}

/// Runs one batch and answers its writes: all at once after the commit, or
/// one by one when it failed as a whole.
#[tracing::instrument(name = "store.batch", level = "debug", skip_all, fields(writes = ops.len()))]
async fn commit(target: &dyn Target, ops: Arc<[Op]>, replies: Vec<oneshot::Sender<Outcome>>) {
    let stats = &crate::metrics::STORE_BATCHES;
    stats.batches.inc();
    stats.writes.add(ops.len() as u64);
    match target.run(ops.clone()).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        // Nothing to learn from running the writes alone: a database that
        // does not answer fails them all at once.
        Err(Error::Unavailable(m)) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(m.clone())));
            }
        }
        Err(e) if ops.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(e) => {
            stats.retried.inc();
            tracing::debug!(error = %e, ops = ops.len(), "batch failed; retrying its writes one by one");
            for (op, reply) in ops.iter().zip(replies) {
                let outcome = match target.run(Arc::new([op.clone()])).await {
                    Ok(mut one) => one
                        .pop()
                        .unwrap_or_else(|| Err(Error::Internal("empty batch outcome".into()))),
                    Err(e) => Err(e),
                };
                let _ = reply.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::Store;

    fn event(tenant: &str, n: usize) -> NewEvent {
        NewEvent {
            tenant: tenant.into(),
            topic: "feed:1".into(),
            kind: "note".into(),
            data: format!("{{\"n\":{n}}}"),
            retain: n.is_multiple_of(2),
        }
    }

    /// Appends that arrive together share a batch; one naming an unknown
    /// tenant fails alone and the others get gapless ids.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_alone() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-batch-{}", crate::bids::new_id("t")));
        let store = Arc::new(SqliteStore::open(&dir).await.expect("open"));
        store.create_tenant("acme", "Acme").await.expect("tenant");
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..200 {
            let store = store.clone();
            let tenant = if n == 77 { "nobody" } else { "acme" };
            writes.spawn(async move { (n, store.append(vec![event(tenant, n)]).await) });
        }
        let mut ids = BTreeSet::new();
        while let Some(done) = writes.join_next().await {
            let (n, result) = done.expect("task");
            match result {
                Ok(stored) if n != 77 => {
                    assert_eq!(stored.len(), 1);
                    assert!(stored[0].json.contains(&format!("\"n\":{n}")));
                    ids.insert(stored[0].seq);
                }
                Err(Error::UnknownTenant(t)) if n == 77 => assert_eq!(t, "nobody"),
                other => panic!("write {n}: {other:?}"),
            }
        }
        assert_eq!(ids.len(), 199);
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&199));
        let page = store
            .read("acme", &["feed:1".into()], Some(0), 1000)
            .await
            .expect("read");
        assert_eq!(page.events.len(), 199);
        assert_eq!(page.head, 199);
        // The retained state is the last retained event's, written once.
        let retained = page.topics[0].retained.as_ref().expect("retained");
        let last_even = page.events.iter().rev().find(|e| {
            let n: serde_json::Value = serde_json::from_str(&e.json).expect("json");
            n["data"]["n"].as_u64().expect("n").is_multiple_of(2)
        });
        assert_eq!(Some(retained.seq), last_even.map(|e| e.seq));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
