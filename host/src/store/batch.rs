//! Group commit for the domain writes that follow every request: event
//! appends, messages, read marks, bids, products and (embedded) the results
//! of decision rounds, decided before they are submitted (`Write::Round`).
//!
//! One task per store takes whatever writes are waiting and runs them in one
//! transaction, so many requests share one commit (one fsync in SQLite, one
//! WAL flush and one hold of each tenant's sequence row in Postgres). Each
//! write does its own rows and hands back the events it wants appended; the
//! batch appends all of them at the end with one bump of each tenant's counter
//! and commits. Ids therefore stay gapless and in commit order.
//!
//! Each write carries its own reply channel, typed by what that kind of write
//! answers (`Write`), so a caller gets exactly its reply type back.
//!
//! A write that is refused on its own terms (an idempotency key reused for
//! another bid) touches nothing and does not disturb the batch. A batch that
//! fails as a whole (an unknown tenant, a database error) is retried one write
//! at a time, so one bad request never fails the others.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::bids::{RoundSummary, RoundWrite};
use super::{Commits, Error, Keyed, Message, NewMessage, Notification, PublishKey};
use crate::bids::{Bid, Product};
use crate::event::{NewEvent, Seq, StoredEvent};

/// Most writes committed in one transaction.
const MAX_OPS: usize = 256;
/// Most events a batch collects before it stops taking more writes.
const MAX_EVENTS: usize = 2_048;

/// Where a write's answer goes: typed by what that kind of write answers.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// One write with its own reply. The backend's transaction fills in what
/// the write found (the `None`/`false`/empty fields) while it runs; the batch
/// then appends every write's `events()` at once and answers each write
/// with its committed events.
pub(crate) enum Write {
    /// Events to append as they are.
    Append {
        /// The events.
        events: Vec<NewEvent>,
        /// Their ids.
        reply: Reply<Vec<StoredEvent>>,
    },
    /// Events to append under an idempotency key (the key row is written
    /// after the append, with the ids: `keyed_rows`).
    Keyed {
        /// The key.
        key: PublishKey,
        /// The events.
        events: Vec<NewEvent>,
        /// Set when the key was used before for the same request: the ids
        /// answered then and the first event's time (nothing is appended).
        repeated: Option<(Vec<Seq>, i64)>,
        /// What the append did.
        reply: Reply<Keyed>,
    },
    /// A message and the notifications announcing it.
    Message {
        /// The message.
        msg: NewMessage,
        /// Its notifications.
        notes: Vec<Notification>,
        /// Set by the transaction: the stored message and the recipient's
        /// unread count.
        stored: Option<(Message, u64)>,
        /// Set by the transaction: the events announcing it.
        events: Vec<NewEvent>,
        /// The message, the unread count and the committed events.
        reply: Reply<(Message, u64, Vec<StoredEvent>)>,
    },
    /// A read mark.
    MarkRead {
        /// Tenant slug.
        tenant: String,
        /// Whose messages.
        user: String,
        /// Read up to this message id.
        up_to: i64,
        /// Set by the transaction: the unread count left.
        unread: u64,
        /// Set by the transaction: the new unread count's event.
        events: Vec<NewEvent>,
        /// The unread count and the committed events.
        reply: Reply<(u64, Vec<StoredEvent>)>,
    },
    /// A new queued bid.
    Bid {
        /// The bid.
        bid: Bid,
        /// Set by the transaction: the stored bid (the earlier one for a
        /// repeated idempotency key) and whether it is new.
        stored: Option<(Bid, bool)>,
        /// The stored bid and whether it is new.
        reply: Reply<(Bid, bool)>,
    },
    /// A new product.
    Product {
        /// The product.
        product: Product,
        /// Its `product.created` event.
        events: Vec<NewEvent>,
        /// The committed events.
        reply: Reply<Vec<StoredEvent>>,
    },
    /// A decision round's result, decided off the writer: written only if
    /// the product and its bids are still as the round read them (embedded
    /// mode; cluster rounds run in their own transactions).
    Round {
        /// The round and what it read.
        write: Box<RoundWrite>,
        /// Set by the transaction: whether it was written (`false`: stale).
        written: bool,
        /// Its summary, or `None` when stale.
        reply: Reply<Option<RoundSummary>>,
    },
}

impl Write {
    fn weight(&self) -> usize {
        match self {
            Write::Append { events, .. } | Write::Keyed { events, .. } => events.len(),
            Write::Round { write, .. } => write.round.events.len().max(1),
            _ => 2,
        }
    }

    /// The events this write appends, as the transaction left it.
    pub(crate) fn events(&self) -> &[NewEvent] {
        match self {
            Write::Append { events, .. }
            | Write::Message { events, .. }
            | Write::MarkRead { events, .. }
            | Write::Product { events, .. } => events,
            Write::Keyed {
                events, repeated, ..
            } => match repeated {
                Some(_) => &[],
                None => events,
            },
            Write::Bid { .. } => &[],
            Write::Round { write, written, .. } => match written {
                true => &write.round.events,
                false => &[],
            },
        }
    }

    /// Answers the write: `outcome` is its committed events, or why it
    /// failed.
    fn answer(self, outcome: Outcome) {
        fn send<T>(reply: Reply<T>, answer: Result<T, Error>) {
            // The caller may have gone (a dropped request): nothing to do.
            let _ = reply.send(answer);
        }
        let applied = || Error::Internal("a write was answered before it ran".into());
        match self {
            Write::Append { reply, .. } | Write::Product { reply, .. } => send(reply, outcome),
            Write::Keyed {
                repeated, reply, ..
            } => send(
                reply,
                outcome.map(|stored| match repeated {
                    Some((ids, ts)) => Keyed::Repeated(ids, ts),
                    None => Keyed::New(stored),
                }),
            ),
            Write::Message { stored, reply, .. } => send(
                reply,
                outcome.and_then(|events| {
                    let (m, unread) = stored.ok_or_else(applied)?;
                    Ok((m, unread, events))
                }),
            ),
            Write::MarkRead { unread, reply, .. } => {
                send(reply, outcome.map(|events| (unread, events)))
            }
            Write::Bid { stored, reply, .. } => {
                send(reply, outcome.and_then(|_| stored.ok_or_else(applied)))
            }
            Write::Round {
                write,
                written,
                reply,
            } => send(
                reply,
                outcome.map(|events| written.then(|| RoundSummary::of(&write.round, events))),
            ),
        }
    }
}

/// A write's outcome: its committed events, or why it failed.
pub(crate) type Outcome = Result<Vec<StoredEvent>, Error>;

/// What a write did inside the transaction, before the batch appends its
/// events: `Err` is a refusal that wrote nothing (and leaves the batch be).
pub(crate) type Applied = Result<(), Error>;

/// A backend that runs a batch of writes in one transaction.
#[async_trait]
pub(crate) trait Target: Send + Sync + 'static {
    /// Runs `writes` in one transaction: each in turn, then one append of
    /// all their events, then the commit. Hands the writes back with each
    /// one's outcome; `Err` means nothing was committed.
    async fn run(&self, writes: Vec<Write>) -> (Vec<Write>, Result<Vec<Outcome>, Error>);
}

/// Every applied write's events, in write order, for the one append of the
/// batch.
pub(crate) fn events_of<'a>(writes: &'a [Write], applied: &[Applied]) -> Vec<&'a NewEvent> {
    writes
        .iter()
        .zip(applied)
        .filter(|(_, a)| a.is_ok())
        .flat_map(|(w, _)| w.events().iter())
        .collect()
}

/// Hands each write its events, in write order.
pub(crate) fn split(
    writes: &[Write],
    applied: Vec<Applied>,
    stored: Vec<StoredEvent>,
) -> Vec<Outcome> {
    let mut rest = stored.into_iter();
    writes
        .iter()
        .zip(applied)
        .map(|(w, a)| a.map(|()| rest.by_ref().take(w.events().len()).collect()))
        .collect()
}

/// The idempotency-key rows to write after the append: for each keyed write
/// that appended, its key, the ids of its events and the first one's time.
pub(crate) fn keyed_rows<'a>(
    writes: &'a [Write],
    outcomes: &[Outcome],
) -> Vec<(&'a PublishKey, Vec<Seq>, i64)> {
    writes
        .iter()
        .zip(outcomes)
        .filter_map(|(w, outcome)| match (w, outcome) {
            (
                Write::Keyed {
                    key,
                    repeated: None,
                    ..
                },
                Ok(stored),
            ) => Some((
                key,
                stored.iter().map(|e| e.seq).collect(),
                stored.first().map_or(0, |e| e.ts),
            )),
            _ => None,
        })
        .collect()
}

/// What a keyed write found, given the key's row (`hash`, `ids` as JSON,
/// `ts`, `created_at`) if one exists: `Some` ids and time of a repeated
/// request, `None` for a key to use now, `KeyReused` for a live key of
/// another request.
pub(crate) fn keyed_repeat(
    key: &PublishKey,
    row: Option<(String, String, i64, i64)>,
) -> Result<Option<(Vec<Seq>, i64)>, Error> {
    match row {
        Some((hash, ids, ts, created_at)) if created_at >= key.since_ms => {
            if hash != key.hash {
                return Err(Error::KeyReused);
            }
            Ok(Some((stored_ids(&ids)?, ts)))
        }
        _ => Ok(None),
    }
}

/// The ids of a key row (a JSON array).
pub(crate) fn stored_ids(ids: &str) -> Result<Vec<Seq>, Error> {
    serde_json::from_str(ids)
        .map_err(|e| Error::Internal(format!("a stored idempotency key's ids: {e}")))
}

/// Handle to a store's batching task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Write>,
}

impl Batcher {
    /// Starts the task (inside a tokio runtime); committed events go to
    /// `commits` before their writes are answered.
    pub(crate) fn start(target: Arc<dyn Target>, commits: Commits) -> Batcher {
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(run(rx, target, commits));
        Batcher { tx }
    }

    /// Runs one write, made with its reply channel; answers after its
    /// batch committed.
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Write) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let gone = || Error::unavailable("the store's writer has stopped");
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Appends events; their ids.
    pub(crate) async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<StoredEvent>, Error> {
        self.write(|reply| Write::Append { events, reply }).await
    }

    /// Appends events under an idempotency key; a write that lost a race
    /// for its key (`KeyRaced`) runs once more, and then sees the key.
    pub(crate) async fn keyed(
        &self,
        key: PublishKey,
        events: Vec<NewEvent>,
    ) -> Result<Keyed, Error> {
        let keyed = |key, events| {
            move |reply| Write::Keyed {
                key,
                events,
                repeated: None,
                reply,
            }
        };
        match self.write(keyed(key.clone(), events.clone())).await {
            Err(Error::KeyRaced) => self.write(keyed(key, events)).await,
            done => done,
        }
    }

    /// Stores a product; its committed events.
    pub(crate) async fn product(&self, p: &Product) -> Result<Vec<StoredEvent>, Error> {
        let events = vec![crate::bids::decision::created_event(p)];
        self.write(|reply| Write::Product {
            product: p.clone(),
            events,
            reply,
        })
        .await
    }

    /// Queues a bid: the stored one, and whether it is new.
    pub(crate) async fn bid(&self, bid: &Bid) -> Result<(Bid, bool), Error> {
        self.write(|reply| Write::Bid {
            bid: bid.clone(),
            stored: None,
            reply,
        })
        .await
    }

    /// Commits a decided round if what it read still holds: its summary,
    /// or `None` when it is stale (run it again from the read).
    pub(crate) async fn round(&self, w: RoundWrite) -> Result<Option<RoundSummary>, Error> {
        self.write(|reply| Write::Round {
            write: Box::new(w),
            written: false,
            reply,
        })
        .await
    }

    /// Stores a message and its notifications: the message, the
    /// recipient's unread count, the committed events.
    pub(crate) async fn message(
        &self,
        msg: &NewMessage,
        notes: &[Notification],
    ) -> Result<(Message, u64, Vec<StoredEvent>), Error> {
        self.write(|reply| Write::Message {
            msg: msg.clone(),
            notes: notes.to_vec(),
            stored: None,
            events: Vec::new(),
            reply,
        })
        .await
    }

    /// Marks a user's messages read up to `up_to`: the unread count left,
    /// and the committed events.
    pub(crate) async fn mark_read(
        &self,
        tenant: &str,
        user: &str,
        up_to: i64,
    ) -> Result<(u64, Vec<StoredEvent>), Error> {
        self.write(|reply| Write::MarkRead {
            tenant: tenant.into(),
            user: user.into(),
            up_to,
            unread: 0,
            events: Vec::new(),
            reply,
        })
        .await
    }
}

async fn run(mut rx: mpsc::Receiver<Write>, target: Arc<dyn Target>, commits: Commits) {
    while let Some(first) = rx.recv().await {
        let mut weight = first.weight();
        let mut writes = vec![first];
        while writes.len() < MAX_OPS && weight < MAX_EVENTS {
            match rx.try_recv() {
                Ok(w) => {
                    weight += w.weight();
                    writes.push(w);
                }
                Err(_) => break,
            }
        }
        commit(target.as_ref(), &commits, writes).await;
    }
}

/// Answers a write after handing its committed events to the commit path.
fn done(commits: &Commits, w: Write, outcome: Outcome) {
    if let Ok(events) = &outcome {
        commits.committed(events);
    }
    w.answer(outcome);
}

/// Runs one batch and answers its writes: all at once after the commit, or
/// one by one when it failed as a whole.
#[tracing::instrument(name = "store.batch", level = "debug", skip_all, fields(writes = writes.len()))]
async fn commit(target: &dyn Target, commits: &Commits, writes: Vec<Write>) {
    let stats = &crate::metrics::STORE_BATCHES;
    stats.batches.inc();
    stats.writes.add(writes.len() as u64);
    let n = writes.len();
    match target.run(writes).await {
        (writes, Ok(outcomes)) => {
            for (w, outcome) in writes.into_iter().zip(outcomes) {
                done(commits, w, outcome);
            }
        }
        // Nothing to learn from running the writes alone: a database that
        // does not answer fails them all at once.
        (writes, Err(Error::Unavailable(m))) => {
            for w in writes {
                w.answer(Err(Error::Unavailable(m.clone())));
            }
        }
        (writes, Err(e)) if n == 1 => {
            if let Some(w) = writes.into_iter().next() {
                w.answer(Err(e));
            }
        }
        (writes, Err(e)) => {
            stats.retried.inc();
            tracing::debug!(error = %e, writes = n, "batch failed; retrying its writes one by one");
            for w in writes {
                let (back, result) = target.run(vec![w]).await;
                let outcome = result.and_then(|mut one| {
                    one.pop()
                        .unwrap_or_else(|| Err(Error::Internal("empty batch outcome".into())))
                });
                if let Some(w) = back.into_iter().next() {
                    done(commits, w, outcome);
                }
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
