//! The accept loop: one task per connection, a connection cap, a clear answer
//! when file descriptors run out, a write deadline on every socket, and a
//! drain with a bound at shutdown.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Descriptors kept free for the database, Redis, plugins and files.
const FD_RESERVE: u64 = 256;

/// How the accept loop behaves.
pub struct ServeOptions {
    /// Most concurrent connections.
    pub max_connections: usize,
    /// A socket that accepts no bytes for this long is closed.
    pub write_deadline: Duration,
    /// How long to wait for connections to finish at shutdown.
    pub grace: Duration,
}

/// Raises the soft open-file limit to the hard one and returns the limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}

/// The connection cap for an open-file limit: the limit less a reserve.
pub fn default_max_connections(fd_limit: u64) -> usize {
    fd_limit.saturating_sub(FD_RESERVE).max(16) as usize
}

/// Serves `app` on `listener` until `shutdown`, then drains within the grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    metrics: Arc<Metrics>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    // Kept open so that, when descriptors run out, closing it frees one to
    // accept the waiting client and tell it why (the libev/nginx trick).
    let mut reserve = std::fs::File::open("/dev/null").ok();
    let mut last_fd_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let app = app.clone();
                        let metrics = metrics.clone();
                        let shutdown = shutdown.clone();
                        let deadline = opts.write_deadline;
                        tracker.spawn(async move {
                            serve_connection(stream, app, metrics, deadline, shutdown).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        metrics.connections_refused.inc();
                        tracker.spawn(refuse(
                            stream,
                            "at_capacity",
                            "this node is at its connection limit; retry another node or later",
                        ));
                    }
                }
            }
            Err(e) if is_fd_exhaustion(&e) => {
                metrics.fd_exhausted.inc();
                if last_fd_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::error!(
                        error = %e,
                        "out of file descriptors: new connections are answered 503; raise the open-file limit (ulimit -n) or lower SWITCHYARD_MAX_CONNECTIONS"
                    );
                    last_fd_log = Some(Instant::now());
                }
                drop(reserve.take());
                if let Ok(Ok((stream, _))) =
                    tokio::time::timeout(Duration::from_millis(5), listener.accept()).await
                {
                    refuse(
                        stream,
                        "out_of_file_descriptors",
                        "this node has run out of file descriptors; retry another node or later",
                    )
                    .await;
                }
                reserve = std::fs::File::open("/dev/null").ok();
                if reserve.is_none() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Err(e) if is_transient(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(opts.grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "shutdown grace period over; closing remaining connections"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    metrics: Arc<Metrics>,
    deadline: Duration,
    shutdown: CancellationToken,
) {
    let io = TokioIo::new(DeadlineIo::new(stream, deadline, metrics));
    let svc = TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(15))
        .serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            // Finish the response in flight (streams end by themselves once
            // they have sent `shutdown`), then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answers 503 on a connection we cannot serve, then closes it.
async fn refuse(mut stream: TcpStream, code: &str, message: &str) {
    use tokio::io::AsyncReadExt;
    let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{message}\"}}}}");
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read the request head first: closing a socket with unread bytes
        // resets it, and the client would never see the answer.
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Linger until the client closes, so the answer is not reset away.
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
        Ok::<_, io::Error>(())
    })
    .await;
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// A socket whose writes fail once it has accepted no bytes for `deadline`.
///
/// hyper stops polling a response body while the socket is not writable, so
/// the deadline has to live at the socket: the timer is armed only while a
/// write is pending, and costs nothing on a connection that keeps up.
pub struct DeadlineIo {
    inner: TcpStream,
    deadline: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    metrics: Arc<Metrics>,
}

impl DeadlineIo {
    /// Wraps a socket.
    pub fn new(inner: TcpStream, deadline: Duration, metrics: Arc<Metrics>) -> Self {
        DeadlineIo {
            inner,
            deadline,
            timer: None,
            armed: false,
            metrics,
        }
    }

    fn on_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(deadline)));
        if !self.armed {
            timer.as_mut().reset(tokio::time::Instant::now() + deadline);
            self.armed = true;
        }
        if timer.as_mut().poll(cx).is_ready() {
            self.metrics.write_deadline_closed.inc();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client accepted no bytes within the write deadline",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for DeadlineIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DeadlineIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.on_pending(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.on_pending(cx),
            ready => {
                self.armed = false;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
