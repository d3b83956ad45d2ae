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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode, Version};
use axum::response::Response;
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tower::ServiceExt as _;

use crate::metrics::Metrics;
use crate::sse::session::StreamSlot;

/// Read size for a request head.
const HEAD_CHUNK: usize = 1024;
/// Header lines parsed on the stack; a head with more is parsed again with
/// room for `HeadLimits::max_headers`.
const STACK_HEADERS: usize = 48;
/// hyper's own count of header lines, which needs no heap per request.
const HYPER_DEFAULT_HEADERS: usize = 100;

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
    /// Bounds on every request head.
    pub head: HeadLimits,
}

/// Bounds on a request head, on the server's own path and hyper's alike.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head (request line and headers), in bytes; larger: 431.
    pub max_bytes: usize,
    /// Most header lines; more: 431.
    pub max_headers: usize,
    /// A head not complete this long after the server starts waiting for
    /// it closes the connection (on a keep-alive connection, the wait
    /// starts when the previous answer is sent).
    pub timeout: Duration,
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

/// Keeps freed heap memory in the process instead of returning it to the
/// kernel after every large free (glibc's default trims above 128 KiB).
/// A replay page (a few MB of rows, decoded on SQLite's thread and freed on a
/// runtime thread) otherwise costs fresh, zeroed pages from the kernel every
/// time: with this, replay runs about a fifth faster. Call before any thread
/// starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before threads start.
    unsafe {
        // Setting any of these turns off glibc's own raising of the mmap
        // threshold, so it is raised here too: otherwise every allocation
        // above 128 KiB (a compiled plugin's, a replay page's) would be a
        // fresh mmap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
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
                        let head = opts.head;
                        let streams = tracker.clone();
                        tracker.spawn(async move {
                            let conn = Conn {
                                app,
                                metrics: metrics.clone(),
                                deadline,
                                head,
                                shutdown,
                            };
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
    shutdown: CancellationToken,
}

/// Reads and routes the connection's first request. A stream answer comes
/// back (socket, response head, session) for the lean writer; anything else
/// is served here, by hyper, to the end of the connection.
async fn route_first(
    stream: TcpStream,
    conn: Conn,
) -> Option<(TcpStream, Bytes, crate::sse::session::Session)> {
    let first = tokio::select! {
        _ = conn.shutdown.cancelled() => return None,
        first = tokio::time::timeout(conn.head.timeout, read_first(&stream, &conn.head)) => match first {
            Ok(first) => first,
            Err(_) => {
                conn.metrics.head_timeouts.inc();
                return None;
            }
        },
    };
    let (req, read) = match first {
        First::Gone => return None,
        First::TooLarge(what) => {
            conn.metrics.heads_too_large.inc();
            let message = match what {
                TooLarge::Bytes => format!(
                    "the request head is larger than {} bytes",
                    conn.head.max_bytes
                ),
                TooLarge::Lines => format!(
                    "the request has more than {} header lines",
                    conn.head.max_headers
                ),
            };
            reject(
                stream,
                "431 Request Header Fields Too Large",
                "headers_too_large",
                &message,
                false,
            )
            .await;
            return None;
        }
        First::Other(read) => {
            serve_hyper(stream, read, None, conn).await;
            return None;
        }
        First::Stream(req, read) => (req, read),
    };
    let res = conn
        .app
        .clone()
        .oneshot(*req)
        .await
        .unwrap_or_else(|e| match e {});
    match stream_of(&res) {
        Some(session) => Some((stream, stream_head(&res), session)),
        // An error (or anything but a stream): hyper writes it, with
        // keep-alive and pipelining as usual, and serves what follows.
        None => {
            serve_hyper(stream, read, Some(res), conn).await;
            None
        }
    }
}

/// The connection's first request, as far as the accept loop needs to know it.
enum First {
    /// The client closed before sending a whole request.
    Gone,
    /// A plain `GET` of an event stream, and every byte read so far.
    Stream(Box<Request<Body>>, Bytes),
    /// Anything else (or anything not understood): hyper serves the connection
    /// from these bytes on.
    Other(Bytes),
    /// A head over the limits: answered 431 and closed.
    TooLarge(TooLarge),
}

/// Which limit a head broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TooLarge {
    Bytes,
    Lines,
}

/// Reads the first request head into a small buffer that lives only until
/// the request is parsed. The whole head is read whatever the request, so a
/// head over the limits gets its 431 here, with a JSON error.
async fn read_first(stream: &TcpStream, limits: &HeadLimits) -> First {
    let mut buf = BytesMut::new();
    loop {
        if stream.readable().await.is_err() {
            return First::Gone;
        }
        buf.reserve(HEAD_CHUNK);
        match stream.try_read_buf(&mut buf) {
            Ok(0) if buf.is_empty() => return First::Gone,
            // Closed mid-head: hyper gives the answer such a request gets.
            Ok(0) => return First::Other(buf.freeze()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return First::Gone,
        }
        match parse_stream_request(&buf, limits) {
            Parsed::Stream(req) => return First::Stream(req, buf.freeze()),
            Parsed::Other => return First::Other(buf.freeze()),
            Parsed::TooLarge(what) => return First::TooLarge(what),
            Parsed::Partial if buf.len() > limits.max_bytes => {
                return First::TooLarge(TooLarge::Bytes)
            }
            Parsed::Partial => {}
        }
    }
}

enum Parsed {
    Partial,
    Stream(Box<Request<Body>>),
    Other,
    TooLarge(TooLarge),
}

/// A `GET` of an event-stream route with no body, no `Expect` and no
/// upgrade becomes a request for the router; a head over `limits` is
/// `TooLarge`; anything else is `Other`.
fn parse_stream_request(buf: &[u8], limits: &HeadLimits) -> Parsed {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap;
    let mut req = httparse::Request::new(&mut stack);
    let mut parsed = req.parse(buf);
    if matches!(parsed, Err(httparse::Error::TooManyHeaders)) && limits.max_headers > STACK_HEADERS
    {
        heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        req = httparse::Request::new(&mut heap);
        parsed = req.parse(buf);
    }
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > limits.max_bytes => {
            return Parsed::TooLarge(TooLarge::Bytes)
        }
        Ok(httparse::Status::Complete(_)) if req.headers.len() > limits.max_headers => {
            return Parsed::TooLarge(TooLarge::Lines)
        }
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::TooLarge(TooLarge::Lines),
        Err(_) => return Parsed::Other,
    }
    let (Some("GET"), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if !is_stream_path(path) {
        return Parsed::Other;
    }
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(if version == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        });
    for h in req.headers.iter() {
        let name = h.name;
        let plain = if name.eq_ignore_ascii_case("content-length") {
            h.value.iter().all(|c| *c == b'0' || *c == b' ')
        } else if name.eq_ignore_ascii_case("connection") {
            !h.value
                .to_ascii_lowercase()
                .windows(7)
                .any(|w| w == b"upgrade")
        } else {
            !(name.eq_ignore_ascii_case("transfer-encoding")
                || name.eq_ignore_ascii_case("expect")
                || name.eq_ignore_ascii_case("upgrade"))
        };
        if !plain {
            return Parsed::Other;
        }
        b = b.header(name, h.value);
    }
    match b.body(Body::empty()) {
        Ok(req) => Parsed::Stream(Box::new(req)),
        Err(_) => Parsed::Other,
    }
}

/// The routes that answer with an event stream.
fn is_stream_path(path: &str) -> bool {
    match path.strip_prefix("/events") {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

/// The session of a `200` event-stream response, taken from it.
fn stream_of(res: &Response) -> Option<crate::sse::session::Session> {
    if res.status() != StatusCode::OK {
        return None;
    }
    res.extensions().get::<StreamSlot>()?.take()
}

/// The response head of a stream written by the server itself: the body runs
/// until the connection closes.
fn stream_head(res: &Response) -> Bytes {
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    for (name, value) in res.headers() {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"connection: close\r\ndate: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head.freeze()
}

/// Serves a connection with hyper, replaying the bytes already read; `first`
/// answers the first request when the router already has.
async fn serve_hyper(stream: TcpStream, read: Bytes, first: Option<Response>, c: Conn) {
    let io = TokioIo::new(Rewind {
        pre: read,
        inner: DeadlineIo::new(stream, c.deadline, c.metrics),
    });
    let svc = FirstThen {
        first: std::sync::Mutex::new(first),
        app: TowerToHyperService::new(c.app),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(c.head.timeout)
        .max_header_size(c.head.max_bytes);
    if c.head.max_headers != HYPER_DEFAULT_HEADERS {
        // A count of its own costs hyper a heap allocation per request.
        builder.max_headers(c.head.max_headers);
    }
    let conn = builder.serve_connection(io, svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = c.shutdown.cancelled() => {
            // Finish the response in flight (streams end by themselves once
            // they have sent `shutdown`), then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// The router as hyper's service, except that the first request's answer
/// may be given already (the server read and routed that request itself).
struct FirstThen {
    first: std::sync::Mutex<Option<Response>>,
    app: TowerToHyperService<Router>,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for FirstThen {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        futures_util::future::Either<
            std::future::Ready<Result<Response, Self::Error>>,
            <TowerToHyperService<Router> as hyper::service::Service<
                Request<hyper::body::Incoming>,
            >>::Future,
        >;

    fn call(&self, req: Request<hyper::body::Incoming>) -> Self::Future {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        match first {
            Some(res) => futures_util::future::Either::Left(std::future::ready(Ok(res))),
            None => futures_util::future::Either::Right(self.app.call(req)),
        }
    }
}

/// A socket with bytes already read from it put back in front.
struct Rewind {
    pre: Bytes,
    inner: DeadlineIo,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            if self.pre.is_empty() {
                // Let go of the buffer it came from.
                self.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 16 * 1024,
        max_headers: 100,
        timeout: Duration::from_secs(10),
    };

    fn parse(head: &str) -> Parsed {
        parse_stream_request(head.as_bytes(), &LIMITS)
    }

    #[test]
    fn which_heads_are_streams() {
        let Parsed::Stream(req) = parse(
            "GET /events?tenant=demo&topic=a:1 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n",
        ) else {
            panic!("a plain stream GET");
        };
        assert_eq!(req.uri().path(), "/events");
        assert_eq!(req.uri().query(), Some("tenant=demo&topic=a:1"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["last-event-id"], "7");
        let Parsed::Stream(req) = parse("GET /events/users/u1 HTTP/1.0\r\n\r\n") else {
            panic!("HTTP/1.0");
        };
        assert_eq!(req.version(), Version::HTTP_10);
        assert!(matches!(
            parse("GET /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Stream(_)
        ));
        for other in [
            "POST /events HTTP/1.1\r\n\r\n",
            "GET /health HTTP/1.1\r\n\r\n",
            "GET /eventsx HTTP/1.1\r\n\r\n",
            "GET /events HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "GET /events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /events HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /events HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /events HTTP/1.1\r\nno header here\r\n\r\n",
            "GET http://x/events HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(parse(other), Parsed::Other), "{other:?}");
        }
        // Any head is read whole, so that its size can be checked.
        for partial in [
            "GET /events?tenant=demo HTTP/1.1\r\nHost:",
            "PUT /admin/plugins/x HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert!(matches!(parse(partial), Parsed::Partial), "{partial:?}");
        }
    }

    #[test]
    fn heads_over_the_limits() {
        let big = format!(
            "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(LIMITS.max_bytes)
        );
        assert!(matches!(parse(&big), Parsed::TooLarge(TooLarge::Bytes)));
        let many = |n: usize| {
            let lines: String = (0..n).map(|i| format!("X-H{i}: v\r\n")).collect();
            format!("POST /api/events HTTP/1.1\r\n{lines}\r\n")
        };
        assert!(matches!(
            parse(&many(101)),
            Parsed::TooLarge(TooLarge::Lines)
        ));
        // 100 lines fit (more than the stack holds: parsed again on the heap).
        assert!(matches!(parse(&many(100)), Parsed::Other));
        let few = HeadLimits {
            max_headers: 3,
            ..LIMITS
        };
        let head = many(4);
        assert!(matches!(
            parse_stream_request(head.as_bytes(), &few),
            Parsed::TooLarge(TooLarge::Lines)
        ));
    }
}
