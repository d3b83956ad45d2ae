//! A connection's live queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::event::Frame;

/// A connection's live queue: bounded, one consumer. A `VecDeque` under a
/// mutex that allocates only when frames arrive (tokio's channel costs about
/// 1 KiB per connection even while idle). A send takes the consumer's waker,
/// so frames that arrive before the consumer runs wake it once.
pub(super) struct Queue {
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
    pub(super) fn new(cap: usize) -> Queue {
        Queue {
            cap: cap.max(1),
            inner: Mutex::new(QueueInner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `f`; false (and `f` dropped) when the queue is full.
    pub(super) fn try_send(&self, f: Arc<Frame>) -> bool {
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

    pub(super) fn try_recv(&self) -> Option<Arc<Frame>> {
        let mut q = self.lock();
        let f = q.items.pop_front();
        if q.items.is_empty() && q.items.capacity() > QUEUE_KEEP {
            q.items = VecDeque::new();
        }
        f
    }

    pub(super) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Arc<Frame>> {
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
