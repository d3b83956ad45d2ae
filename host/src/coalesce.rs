//! Coalesced reads: concurrent callers that ask the same question share
//! one answer, so a burst (thousands of browsers opening a stream on the
//! same topic, a node's first requests for a tenant it has not seen)
//! costs a few database round trips rather than one per caller, and does
//! not drain the connection pool into `store_unavailable` for everyone
//! else.
//!
//! A caller joins only a batch whose read has not started: the read a
//! caller gets back began after the caller arrived. That is what a stream
//! needs (it subscribes to live events, then reads the head; a read that
//! started before the subscription could miss an event committed in
//! between), and it is why this is not a plain single-flight (which
//! hands a newcomer the answer of a read already under way; the crates
//! that offer one do only that). One read runs at a time per key; the
//! callers that arrive meanwhile form the next batch, which starts when
//! it ends. The read runs in its own task, so callers that give up (a
//! client that disconnects) neither cancel it for the others nor leave a
//! batch behind.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures_util::future::{BoxFuture, FutureExt, Shared};

type Answer<T> = Shared<BoxFuture<'static, Option<T>>>;

/// The batches of one key.
struct Slot<T: Clone> {
    /// The batch still taking callers (its read waits for `running`).
    waiting: Option<(u64, Answer<T>)>,
    /// The batch whose read is under way.
    running: Option<(u64, Answer<T>)>,
}

/// Reads by key, coalesced (see the module's documentation).
pub struct Coalescer<K, T: Clone> {
    slots: Arc<Mutex<HashMap<K, Slot<T>>>>,
    next: std::sync::atomic::AtomicU64,
}

impl<K, T> Default for Coalescer<K, T>
where
    T: Clone,
{
    fn default() -> Self {
        Coalescer {
            slots: Arc::new(Mutex::new(HashMap::new())),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl<K, T> Coalescer<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// The answer of a read of `key` that starts after this call: `read`
    /// runs it unless a batch that has not started yet takes this caller
    /// (then that batch's `read` does). `None` if the read panicked.
    pub async fn get<F, Fut>(&self, key: K, read: F) -> Option<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let answer = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let slot = slots.entry(key.clone()).or_insert(Slot {
                waiting: None,
                running: None,
            });
            match &slot.waiting {
                Some((_, answer)) => answer.clone(),
                None => {
                    let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let before = slot.running.as_ref().map(|(_, a)| a.clone());
                    let slots = self.slots.clone();
                    let key = key.clone();
                    let task = tokio::spawn(async move {
                        if let Some(before) = before {
                            let _ = before.await;
                        }
                        // From here on, newcomers form the next batch.
                        let done = Done { slots, key, id };
                        {
                            let mut slots = done.slots.lock().unwrap_or_else(|p| p.into_inner());
                            if let Some(slot) = slots.get_mut(&done.key) {
                                if slot.waiting.as_ref().is_some_and(|(w, _)| *w == id) {
                                    slot.running = slot.waiting.take();
                                }
                            }
                        }
                        read().await
                        // `done` clears the batch, also if `read` panicked.
                    });
                    let answer: Answer<T> = task.map(Result::ok).boxed().shared();
                    slot.waiting = Some((id, answer.clone()));
                    answer
                }
            }
        };
        answer.await
    }

    /// Keys with a batch waiting or running (for tests).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Clears a finished batch from its key (on drop, so a read that panicked
/// is cleared too).
struct Done<K: Hash + Eq, T: Clone> {
    slots: Arc<Mutex<HashMap<K, Slot<T>>>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, T: Clone> Drop for Done<K, T> {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get_mut(&self.key) {
            if slot.running.as_ref().is_some_and(|(r, _)| *r == self.id) {
                slot.running = None;
            }
            if slot.running.is_none() && slot.waiting.is_none() {
                slots.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_burst_shares_few_reads_and_each_read_starts_after_its_callers() {
        let c: Arc<Coalescer<&'static str, (usize, u64)>> = Arc::default();
        let reads = Arc::new(AtomicUsize::new(0));
        // A clock the callers stamp on arrival; a read records when it starts.
        let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let callers = (0..500u64).map(|i| {
            let c = c.clone();
            let reads = reads.clone();
            let clock = clock.clone();
            async move {
                // Arrivals spread over 40 ms, reads take 20.
                tokio::time::sleep(Duration::from_millis(i % 5 * 10)).await;
                let arrived = clock.fetch_add(1, Ordering::SeqCst);
                let clock2 = clock.clone();
                let (_, started) = c
                    .get("room", move || async move {
                        let started = clock2.fetch_add(1, Ordering::SeqCst);
                        let n = reads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        (n, started)
                    })
                    .await
                    .expect("answered");
                assert!(
                    started > arrived,
                    "read started at {started}, caller came at {arrived}"
                );
            }
        });
        futures_util::future::join_all(callers).await;
        let n = reads.load(Ordering::SeqCst);
        assert!((2..=6).contains(&n), "{n} reads for one burst");
        assert_eq!(c.keys(), 0, "no batch left behind");
    }

    #[tokio::test]
    async fn callers_that_give_up_leave_nothing_behind() {
        let c: Arc<Coalescer<u32, u32>> = Arc::default();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            c.get(7, || async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                1
            }),
        )
        .await;
        assert!(gave_up.is_err());
        // The read still ran to its end and cleaned up after itself.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.keys(), 0);
        // Different keys do not share.
        let (a, b) = tokio::join!(c.get(1, || async { 1 }), c.get(2, || async { 2 }));
        assert_eq!((a, b), (Some(1), Some(2)));
    }

    #[tokio::test]
    async fn a_panicking_read_answers_none_and_the_next_one_runs() {
        let c: Arc<Coalescer<u32, u32>> = Arc::default();
        let r = c.get(1, || async { panic!("boom") }).await;
        assert_eq!(r, None);
        assert_eq!(c.keys(), 0);
        assert_eq!(c.get(1, || async { 5 }).await, Some(5));
    }
}
