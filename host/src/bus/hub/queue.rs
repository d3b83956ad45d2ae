//! A connection's live queue, and the direct write that bypasses it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::event::{Frame, FrameForm, Seq};

/// A connection's live queue: bounded, one consumer. A `VecDeque` under a
/// mutex that allocates only when frames arrive (tokio's channel costs about
/// 1 KiB per connection even while idle). A send takes the consumer's waker,
/// so frames that arrive before the consumer runs wake it once.
///
/// A queue may also hold the connection's socket ([`Direct`]): while its
/// consumer sleeps with nothing left to write, a frame is written to the
/// socket by the sender, under the queue's lock, instead of being queued
/// and the consumer woken to write it. That saves a task wake-up, a poll and
/// a readiness round trip per delivery, and is what one write per delivery
/// costs in the floor benchmark. The moment the socket does not take a frame
/// whole, the queue falls back: the frame (or its unwritten tail) goes to the
/// consumer, which writes it with its write deadline, as it would have.
pub(super) struct Queue {
    cap: usize,
    inner: Mutex<QueueInner>,
}

#[derive(Default)]
struct QueueInner {
    items: VecDeque<Arc<Frame>>,
    waker: Option<Waker>,
    direct: Option<Direct>,
}

/// The socket of a connection whose frames the sender may write itself.
struct Direct {
    /// Keeps the socket open while the queue may write to it.
    _sink: Arc<TcpStream>,
    /// Its descriptor, written with `send(2)` directly (see [`send`]).
    fd: RawFd,
    /// How the stream writes event frames: the shared buffer whole, or
    /// the two slices of it around its `event:` line.
    form: FrameForm,
    /// True while the consumer sleeps with its own output written: only then
    /// may the sender write (never both at once, so frames stay whole and in
    /// order).
    armed: bool,
    /// The highest id the client has been sent (directly or by the consumer).
    cursor: Seq,
    /// The unwritten tail of a frame the socket took only part of (one
    /// or two slices of its buffer).
    rest: VecDeque<Bytes>,
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offered {
    /// Queued for the consumer.
    Queued,
    /// Written to the client's socket whole.
    Written,
    /// The queue is full: the frame was dropped.
    Full,
}

/// What the consumer takes back when it wakes: the id the client has been
/// sent up to, and what is left of a frame written in part.
pub struct Disarmed {
    /// The highest id written directly (or the cursor the queue was armed with).
    pub cursor: Seq,
    /// The unwritten tail of the last frame, to be written first.
    pub rest: VecDeque<Bytes>,
}

/// One non-blocking `send(2)` of `bytes` on `fd`.
///
/// Not tokio's `try_write`: that goes through the stream's registration and
/// its readiness state (two more objects to load per delivery, measured in
/// docs/benchmarks.md) only to learn what the call itself says. Bypassing it
/// is safe: a full socket answers `EAGAIN` here, the frame goes to the
/// stream's task, and tokio, whose readiness may still say writable, finds
/// out on its own next write and waits for the socket as it always does.
///
/// Not glibc's `send` either, but the system call itself: `send` is a
/// thread cancellation point, so glibc wraps every call in enabling and
/// disabling asynchronous cancellation, which nothing here uses (about 3%
/// of the fan-out's user time, docs/benchmarks.md).
///
/// A frame written without its `event:` line (`frames=message`) is the two
/// slices of its buffer around that line, given to one `sendmsg(2)` (the
/// same system call, by way of a two-entry `iovec`), so it is neither
/// copied nor split over two writes.
fn send(fd: RawFd, [first, second]: [&[u8]; 2]) -> std::io::Result<usize> {
    let n = if second.is_empty() {
        // SAFETY: `fd` is the descriptor of the `TcpStream` the caller's
        // `Direct` holds open; `first` is a live slice of `first.len()`
        // bytes; no address is passed (a connected socket).
        // MSG_NOSIGNAL: a closed peer is an error here, not a SIGPIPE.
        unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd,
                first.as_ptr(),
                first.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                std::ptr::null::<libc::sockaddr>(),
                0 as libc::socklen_t,
            )
        }
    } else {
        let mut iov = [
            libc::iovec {
                iov_base: first.as_ptr() as *mut libc::c_void,
                iov_len: first.len(),
            },
            libc::iovec {
                iov_base: second.as_ptr() as *mut libc::c_void,
                iov_len: second.len(),
            },
        ];
        // SAFETY: as above; `iov` points at two live slices (only read by
        // the call) and outlives it; `msg` names no address and no control
        // data.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = iov.len() as _;
            libc::syscall(
                libc::SYS_sendmsg,
                fd,
                &msg as *const libc::msghdr,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        }
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A frame no consumer sends (id 0 is below every cursor): it only ends the
/// consumer's wait (after a partial write here, at shutdown in `Hub::wake_all`).
pub(super) fn wake_up() -> Arc<Frame> {
    Arc::new(Frame {
        seq: 0,
        topic: "".into(),
        kind: "".into(),
        bytes: Bytes::new(),
        event_line: (0, 0),
    })
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

    /// Offers `f`: written to the socket when the queue is armed and the
    /// socket takes it whole, else queued (and the consumer woken), or
    /// dropped when the queue is full. Cloned only to be queued.
    pub(super) fn try_send(&self, f: &Arc<Frame>) -> Offered {
        let (offered, waker) = {
            let mut q = self.lock();
            if q.items.len() >= self.cap {
                return Offered::Full;
            }
            match q.direct.as_mut().filter(|d| d.armed && f.seq > d.cursor) {
                Some(d) => match send(d.fd, f.slices(d.form)) {
                    Ok(n) if n == f.len_for(d.form) => {
                        d.cursor = f.seq;
                        return Offered::Written;
                    }
                    Ok(n) => {
                        // The socket took a part: the consumer writes the
                        // rest. A frame it skips (id 0) makes its wait end.
                        d.cursor = f.seq;
                        f.push_to(d.form, n, &mut d.rest);
                        d.armed = false;
                        q.items.push_back(wake_up());
                        (Offered::Written, q.waker.take())
                    }
                    // Full, or failed (the consumer's own write sees why):
                    // the consumer takes over.
                    Err(_) => {
                        d.armed = false;
                        q.items.push_back(f.clone());
                        (Offered::Queued, q.waker.take())
                    }
                },
                None => {
                    q.items.push_back(f.clone());
                    (Offered::Queued, q.waker.take())
                }
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        offered
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

    /// Lets senders write frames to `sink` (as a stream of `form` writes
    /// them) while the queue is armed.
    pub(super) fn attach(&self, sink: Arc<TcpStream>, form: FrameForm) {
        self.lock().direct = Some(Direct {
            fd: sink.as_raw_fd(),
            form,
            _sink: sink,
            armed: false,
            cursor: 0,
            rest: VecDeque::new(),
        });
    }

    /// Forgets the socket (the connection is ending).
    pub(super) fn detach(&self) {
        self.lock().direct = None;
    }

    /// Arms the queue: the consumer has written everything up to `cursor`
    /// and is about to sleep. Does nothing without a socket, or when frames
    /// are queued already (the consumer takes those first).
    pub(super) fn arm(&self, cursor: Seq) {
        let mut q = self.lock();
        let empty = q.items.is_empty();
        if let Some(d) = q.direct.as_mut() {
            if empty && d.rest.is_empty() {
                d.armed = true;
                d.cursor = cursor;
            }
        }
    }

    /// Disarms the queue when the consumer wakes: from here on frames are
    /// queued for it. `None` when it has no socket.
    pub(super) fn disarm(&self) -> Option<Disarmed> {
        let mut q = self.lock();
        let d = q.direct.as_mut()?;
        d.armed = false;
        Some(Disarmed {
            cursor: d.cursor,
            rest: std::mem::take(&mut d.rest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(seq: Seq, bytes: Bytes) -> Arc<Frame> {
        Arc::new(Frame {
            seq,
            topic: "t".into(),
            kind: "k".into(),
            bytes,
            event_line: (0, 0),
        })
    }

    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (
            Arc::new(accepted.expect("accept").0),
            client.expect("connect"),
        )
    }

    /// Armed, a frame goes to the socket and not to the queue; disarmed,
    /// frames queue again, and the cursor says what was written.
    #[tokio::test]
    async fn an_armed_queue_writes_to_the_socket_and_a_disarmed_one_queues() {
        let (server, mut client) = pair().await;
        let q = Queue::new(8);
        q.attach(server, FrameForm::Named);
        // Not armed yet: queued.
        assert_eq!(
            q.try_send(&frame(1, Bytes::from_static(b"one\n"))),
            Offered::Queued
        );
        // Frames queued: arming waits until the consumer has taken them.
        q.arm(0);
        assert_eq!(
            q.try_send(&frame(2, Bytes::from_static(b"two\n"))),
            Offered::Queued
        );
        assert_eq!(q.try_recv().expect("queued").seq, 1);
        assert_eq!(q.try_recv().expect("queued").seq, 2);
        q.arm(2);
        // Already sent ids are never written again.
        assert_eq!(
            q.try_send(&frame(2, Bytes::from_static(b"two\n"))),
            Offered::Queued
        );
        assert_eq!(q.try_recv().expect("queued").seq, 2);
        assert_eq!(
            q.try_send(&frame(3, Bytes::from_static(b"three\n"))),
            Offered::Written
        );
        assert_eq!(
            q.try_send(&frame(4, Bytes::from_static(b"four\n"))),
            Offered::Written
        );
        assert!(q.try_recv().is_none());
        let d = q.disarm().expect("a socket is attached");
        assert_eq!(d.cursor, 4);
        assert!(d.rest.is_empty());
        assert_eq!(
            q.try_send(&frame(5, Bytes::from_static(b"five\n"))),
            Offered::Queued
        );
        let mut got = vec![0u8; 11];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"three\nfour\n");
        q.detach();
        assert!(q.disarm().is_none());
    }

    /// A socket that stops taking bytes hands the frame, or its unwritten
    /// tail, back to the consumer: nothing is lost, nothing written twice.
    #[tokio::test]
    async fn a_full_socket_hands_frames_back_to_the_consumer() {
        let (server, mut client) = pair().await;
        let q = Queue::new(1_000_000);
        q.attach(server, FrameForm::Named);
        q.arm(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut seq = 0;
        let mut written = 0usize;
        let rest = loop {
            seq += 1;
            match q.try_send(&frame(seq, chunk.clone())) {
                Offered::Written => {
                    written += chunk.len();
                    if let Some(d) = q.disarm() {
                        if !d.rest.is_empty() {
                            // Part of this frame went out; the tail is the consumer's.
                            let rest: usize = d.rest.iter().map(|b| b.len()).sum();
                            written -= rest;
                            assert_eq!(d.cursor, seq);
                            break Some(rest);
                        }
                    }
                    q.arm(seq);
                }
                Offered::Queued => break None,
                Offered::Full => unreachable!("the queue is large"),
            }
            assert!(seq < 10_000, "the socket never filled");
        };
        // Either way, the consumer now holds what the socket did not take,
        // and a queued frame ends its wait: the refused frame itself, or,
        // after a partial write, a wake-up it skips (id 0).
        let queued = q.try_recv().expect("a frame ends the consumer's wait");
        match &rest {
            Some(_) => assert_eq!(queued.seq, 0),
            None => assert_eq!(queued.seq, seq),
        }
        assert!(q.try_recv().is_none());
        let mut got = vec![0u8; written];
        client.read_exact(&mut got).await.expect("read");
        assert!(got.iter().all(|b| *b == b'x'));
    }

    /// A stream of unnamed frames (`frames=message`) gets each frame
    /// without its `event:` line, from the fan-out's own write; a socket
    /// that takes part of one hands back exactly the rest, as slices of the
    /// shared buffer.
    #[tokio::test]
    async fn unnamed_frames_are_written_without_their_event_line() {
        let (server, mut client) = pair().await;
        let q = Queue::new(1_000_000);
        q.attach(server, FrameForm::Message);
        q.arm(0);
        let small = Arc::new(Frame::from_parts(7, "t", "note", r#"{"id":7}"#));
        assert_eq!(q.try_send(&small), Offered::Written);
        let want = b"id: 7\ndata: {\"id\":7}\n\n";
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..], &want[..]);
        // Fill the socket with big frames until one is taken in part.
        let json = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
        let mut seq = 7;
        let mut expected = Vec::new();
        let rest = loop {
            seq += 1;
            let f = Arc::new(Frame::from_parts(seq, "t", "note", &json));
            let whole = format!("id: {seq}\ndata: {json}\n\n").into_bytes();
            match q.try_send(&f) {
                Offered::Written => {
                    let d = q.disarm().expect("a socket is attached");
                    if d.rest.is_empty() {
                        expected.extend_from_slice(&whole);
                        q.arm(seq);
                        continue;
                    }
                    let rest: Vec<u8> = d.rest.iter().flat_map(|b| b.to_vec()).collect();
                    assert!(whole.ends_with(&rest), "the rest is the frame's tail");
                    expected.extend_from_slice(&whole[..whole.len() - rest.len()]);
                    break Some(rest);
                }
                Offered::Queued => break None,
                Offered::Full => unreachable!("the queue is large"),
            }
        };
        assert!(rest.is_some() || q.try_recv().is_some());
        let mut got = vec![0u8; expected.len()];
        client.read_exact(&mut got).await.expect("read");
        assert!(
            got == expected,
            "what the socket took is the unnamed frames"
        );
    }
}
