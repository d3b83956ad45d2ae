//! The lean stream writer: one SSE response written straight onto its socket.
//!
//! A stream that opened as the first request of a connection does not keep
//! hyper's buffered connection: the server writes the response head itself
//! (`Connection: close`, the body delimited by the close, so no chunk framing)
//! and this loop moves the session's frames to the socket, as many as are
//! ready in one `writev`. It holds no read or write buffer of its own: frames
//! are the shared `Bytes` the hub or the replay built.
//!
//! While the stream is live and everything is written, the fan-out writes the
//! next frames to the socket itself, one `send` each, without waking this
//! task (`bus/hub/queue.rs`); a frame the socket does not take whole comes
//! back here, to be written under the deadline.
//!
//! Hand-written for a measured reason: hyper's connection keeps its buffers
//! and state for a stream's whole life (13.4 against 2.2 KiB resident per
//! idle stream at 10,000 streams, docs/benchmarks.md, "Event core after the
//! lean stream writer"), and the direct writes of the fan-out need the
//! socket itself.
//!
//! What hyper did for a stream, this does too: a write deadline (a socket
//! that accepts no bytes for `deadline` is closed), noticing a client that
//! hung up (the read side reaches end of file), and ending after the
//! session's last frame (`shutdown`, `auth.expired`).

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

use super::session::Session;
use crate::metrics::Metrics;

/// How long a finished stream waits for the client to close.
const LINGER: Duration = Duration::from_secs(2);
/// Most frames handed to one `writev`.
const MAX_IOV: usize = 64;

/// Writes `head`, then the session's frames, until the stream ends, the
/// client goes away or a write misses the deadline. `slot` (the
/// connection's place under the connection cap) is released at the end.
///
/// This future is what an open stream costs besides its session, so it is
/// kept small: readiness is polled in place (no `readable()` futures), and
/// the deadline timer is allocated only while the socket is stalled.
pub async fn run(
    stream: TcpStream,
    head: Bytes,
    mut session: Box<Session>,
    deadline: Duration,
    metrics: Arc<Metrics>,
    slot: OwnedSemaphorePermit,
) {
    // The fan-out writes live frames to the socket itself while this loop
    // waits with everything written (`bus/hub/queue.rs`): this loop writes
    // only what it takes from the session, and asks for more only once that
    // is written, so the two never write at once.
    let stream = Arc::new(stream);
    session.attach(stream.clone());
    session.out().push_front(head);
    loop {
        if session.out().is_empty() {
            let more = tokio::select! {
                biased;
                more = session.fill() => more,
                _ = client_gone(&stream) => return,
            };
            if !more {
                break;
            }
        }
        if let Err(e) = write_all(&stream, session.out(), deadline).await {
            if e.kind() == io::ErrorKind::TimedOut {
                metrics.write_deadline_closed.inc();
            }
            return;
        }
    }
    // The stream is over: end the body by closing. Waiting (briefly) for
    // the client to close first keeps a late request byte from turning the
    // close into a reset that could discard the last frames.
    drop(session);
    if shutdown_write(&stream).is_ok() {
        let _ = tokio::time::timeout(LINGER, client_gone(&stream)).await;
    }
    drop(slot);
}

/// Resolves once the client has closed its side (or the socket failed).
/// Anything the client sends on a stream's connection is read and dropped.
async fn client_gone(stream: &TcpStream) {
    std::future::poll_fn(|cx| loop {
        match stream.poll_read_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => match discard(stream) {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Poll::Ready(()),
            },
        }
    })
    .await
}

/// Reads and drops what the client sent.
fn discard(stream: &TcpStream) -> io::Result<usize> {
    let mut sink = [0u8; 64];
    stream.try_read(&mut sink)
}

/// Writes every queued frame, several per `writev`, taking them off the queue
/// as they go. The deadline runs only while the socket accepts nothing.
async fn write_all(
    stream: &TcpStream,
    out: &mut VecDeque<Bytes>,
    deadline: Duration,
) -> io::Result<()> {
    let mut stalled: Option<Pin<Box<Sleep>>> = None;
    while !out.is_empty() {
        match write_some(stream, out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                stalled = None;
                while n > 0 {
                    let front = out.front_mut().expect("written bytes were queued");
                    if front.len() <= n {
                        n -= front.len();
                        out.pop_front();
                    } else {
                        front.advance(n);
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let timer = stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = stream.poll_write_ready(cx) {
                        return Poll::Ready(r);
                    }
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "client accepted no bytes within the write deadline",
                        ))),
                        Poll::Pending => Poll::Pending,
                    }
                })
                .await?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if out.capacity() > 64 {
        // A burst (a replay page, a lag catch-up) is over: give the memory back.
        out.shrink_to(8);
    }
    Ok(())
}

/// One `writev` of the queued frames (not kept in the writer's future: the
/// slice array lives on the stack for the call only).
fn write_some(stream: &TcpStream, out: &VecDeque<Bytes>) -> io::Result<usize> {
    let mut iov = [IoSlice::new(&[]); MAX_IOV];
    let mut n = 0;
    for b in out.iter().take(MAX_IOV) {
        iov[n] = IoSlice::new(b);
        n += 1;
    }
    stream.try_write_vectored(&iov[..n])
}

/// Sends FIN: the end of a body delimited by the close.
fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `shutdown` on the descriptor this stream owns, which stays open.
    match unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
