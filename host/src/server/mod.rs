//! The accept loop: one task per connection, a connection cap, a clear answer
//! when file descriptors run out, a write deadline on every socket, and a
//! drain with a bound at shutdown.
//!
//! The first request head of each connection is read here, into a small
//! buffer. A plain `GET` of an event stream goes to the router as it is; if
//! the answer is a stream, the server writes it itself (`sse::writer`) and
//! hyper never holds the connection, nor its 16 KiB of buffers, for the
//! stream's life. Every other request, an error answer to a stream request,
//! and anything the parse does not fully understand go to hyper, with the
//! bytes already read put back in front of the socket (`Rewind`).
//!
//! Request heads are bounded on both paths (`HeadLimits`): a head larger
//! than `max_bytes` or with more than `max_headers` lines gets `431`, and a
//! client that takes longer than `timeout` to send one is disconnected, so
//! idle or trickling connections cannot pin memory. The first request's 431
//! is written here with the usual JSON error; hyper answers later requests
//! on a keep-alive connection with its own (empty-bodied) 431.
//!
//! With TLS on (`tls`), each connection's handshake comes first (bounded by
//! the head timeout), then ALPN picks hyper's HTTP/2 or HTTP/1.1: over TLS
//! every request, streams included, goes through hyper (`http2` keeps the
//! write deadline per stream). In clear text a connection that opens with
//! the HTTP/2 preface (prior knowledge) is served by `http2` as well.
//!
//! # Files
//!
//! - `mod.rs`: the accept loop, the connection cap, refusals, the drain.
//! - `first_request`: reading and routing a connection's first request head,
//!   and handing a stream to the lean writer.
//! - `conn`: serving a connection with hyper (HTTP/1.1; TLS connections).
//! - `http2`: HTTP/2 connections, with per-stream write deadlines.
//! - `tls`: certificate files, ALPN, reloading.
//! - `io`: socket wrappers (`Rewind`, `DeadlineIo`).
//! - `process`: process settings (open-file limit, allocator).

mod conn;
pub(crate) mod first_request;
mod http2;
mod io;
mod process;
pub mod tls;

use std::io as stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

pub use self::io::DeadlineIo;
pub use self::process::{default_max_connections, raise_fd_limit, tune_allocator};
pub use crate::config::{HeadLimits, TlsFiles};

use self::first_request::route_first;

/// How the accept loop behaves.
pub struct ServeOptions {
    /// Most concurrent connections.
    pub max_connections: usize,
    /// A socket that accepts no bytes for this long is closed.
    pub write_deadline: Duration,
    /// How long to wait for connections to finish at shutdown.
    pub grace: Duration,
    /// Bounds on every request head.
    pub head: HeadLimits,
    /// An HTTP/2 connection with no open stream this long is closed.
    pub idle_timeout: Duration,
    /// TLS on every connection (`tls::acceptor`); `None`: clear text.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
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
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let app = app.clone();
                        let metrics = metrics.clone();
                        let shutdown = shutdown.clone();
                        let deadline = opts.write_deadline;
                        let head = opts.head;
                        let idle = opts.idle_timeout;
                        let streams = tracker.clone();
                        let tls = opts.tls.clone();
                        tracker.spawn(async move {
                            let conn = Conn {
                                app,
                                metrics: metrics.clone(),
                                deadline,
                                head,
                                idle,
                                shutdown,
                                peer: crate::net::PeerAddr(peer),
                            };
                            if let Some(tls) = tls {
                                conn::serve_tls(stream, tls, conn).await;
                                drop(permit);
                                return;
                            }
                            let lean = route_first(stream, conn).await;
                            // A stream continues in a task of its own, the size
                            // of what a stream needs: everything before it
                            // (head, router, response) is freed with this one.
                            if let Some((stream, head, session)) = lean {
                                streams.spawn(crate::sse::writer::run(
                                    stream,
                                    head,
                                    Box::new(session),
                                    deadline,
                                    metrics,
                                    permit,
                                ));
                            }
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

/// What serving one connection needs.
struct Conn {
    app: Router,
    metrics: Arc<Metrics>,
    deadline: Duration,
    head: HeadLimits,
    idle: Duration,
    shutdown: CancellationToken,
    /// The peer, put on every request of the connection.
    peer: crate::net::PeerAddr,
}

/// Answers 503 on a connection we cannot serve, then closes it.
async fn refuse(stream: TcpStream, code: &str, message: &str) {
    reject(stream, "503 Service Unavailable", code, message, true).await;
}

/// Answers `status` with a JSON error and closes the connection;
/// `read_head`: read the request head first (nothing of it was read yet).
async fn reject(mut stream: TcpStream, status: &str, code: &str, message: &str, read_head: bool) {
    use tokio::io::AsyncReadExt;
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let retry = if status.starts_with("503") {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{retry}connection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read the request head first: closing a socket with unread bytes
        // resets it, and the client would never see the answer.
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while read_head && !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
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
        Ok::<_, stdio::Error>(())
    })
    .await;
}

fn is_fd_exhaustion(e: &stdio::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

fn is_transient(e: &stdio::Error) -> bool {
    matches!(
        e.kind(),
        stdio::ErrorKind::ConnectionAborted
            | stdio::ErrorKind::ConnectionReset
            | stdio::ErrorKind::Interrupted
    )
}
