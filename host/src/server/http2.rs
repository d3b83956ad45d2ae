//! HTTP/2 connections (over TLS after ALPN `h2`, or in clear text with prior
//! knowledge): many streams share one socket, so the bounds the server keeps
//! per connection on HTTP/1.1 are kept per stream here.
//!
//! - **Write deadline per stream.** A reader that stops reading one stream
//!   keeps that stream's flow-control window shut while the socket, and the
//!   other streams on it, carry on; `DeadlineIo` at the socket never sees it.
//!   hyper runs each stream as a task through the connection's executor;
//!   the executor here wraps each task (`Guarded`) and the response body
//!   (`Watched`) marks, through a task-local, when it has handed a frame
//!   that hyper has not yet been able to send. A stream that stays like that
//!   for the write deadline has its task dropped, which resets the stream
//!   (`RST_STREAM`) and ends its session; the connection stays up.
//! - **Header limits.** The header list size is announced
//!   (`SETTINGS_MAX_HEADER_LIST_SIZE`; h2 answers a larger block with 431)
//!   and the number of header lines is checked before routing.
//! - **Shutdown.** A graceful shutdown sends `GOAWAY`; open streams end by
//!   themselves after their `shutdown` event, as on HTTP/1.1.
//! - **Idle connections.** A connection with no open stream for the idle
//!   limit (`SWITCHYARD_IDLE_TIMEOUT_MS`) is closed with `GOAWAY`: answering
//!   the keep-alive pings is not enough to hold one. The executor counts the
//!   streams' tasks (`Activity`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use super::Conn;
use crate::metrics::Metrics;

/// How often an otherwise quiet connection is pinged, and how long the
/// answer may take, so that a vanished client's connection is closed.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// Serves an HTTP/2 connection on `io` until it closes or `c.shutdown`.
pub(super) async fn serve<I>(io: I, c: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let exec = StreamExec {
        deadline: c.deadline,
        metrics: c.metrics.clone(),
        activity: activity.clone(),
    };
    let svc = Checked {
        app: TowerToHyperService::new(c.app),
        max_headers: c.head.max_headers,
        peer: c.peer,
    };
    let mut builder = hyper::server::conn::http2::Builder::new(exec);
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(c.head.max_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = c.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        _ = activity.idle_for(c.idle) => {
            tracing::debug!("HTTP/2 connection idle past the limit; GOAWAY");
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// How many of a connection's streams are running, and since when none is.
struct Activity {
    start: std::time::Instant,
    open: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `start` to when the last stream ended.
    quiet_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: std::time::Instant::now(),
            open: std::sync::atomic::AtomicUsize::new(0),
            quiet_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Returns once no stream has run for `limit`.
    async fn idle_for(&self, limit: Duration) {
        let limit_ms = limit.as_millis() as u64;
        let check = (limit / 4).max(Duration::from_millis(50));
        loop {
            tokio::time::sleep(check).await;
            if self.open.load(Ordering::Acquire) == 0
                && self
                    .now_ms()
                    .saturating_sub(self.quiet_since.load(Ordering::Acquire))
                    >= limit_ms
            {
                return;
            }
        }
    }
}

/// Held by a stream's task: counts it open until dropped.
struct OpenStream(Arc<Activity>);

impl OpenStream {
    fn new(a: Arc<Activity>) -> OpenStream {
        a.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(a)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.quiet_since.store(self.0.now_ms(), Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, behind a check of the number of header lines, with every
/// response body watched for stalls.
#[derive(Clone)]
struct Checked {
    app: TowerToHyperService<Router>,
    max_headers: usize,
    peer: crate::net::PeerAddr,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Checked {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn call(&self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        if req.headers().len() > self.max_headers {
            let body = serde_json::json!({"error": {
                "code": "headers_too_large",
                "message": format!("the request has more than {} header lines", self.max_headers),
            }})
            .to_string();
            let mut res = Response::new(Body::from(body));
            *res.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Box::pin(std::future::ready(Ok(res)));
        }
        let fut = self.app.call(req);
        Box::pin(async move {
            let res = fut.await?;
            Ok(res.map(|b| Body::new(Watched(b))))
        })
    }
}

/// What a stream's body tells the task guard about itself.
#[derive(Default)]
struct Progress {
    /// Times the body was asked for a frame.
    polls: AtomicU64,
    /// The body's last answer was a frame (hyper holds it until the peer
    /// opens the window); cleared when hyper asks again.
    handed: AtomicBool,
}

tokio::task_local! {
    /// The progress of the stream whose task is being polled.
    static PROGRESS: Arc<Progress>;
}

/// A response body that reports to its stream's guard.
struct Watched(Body);

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let out = Pin::new(&mut self.0).poll_frame(cx);
        let handed = matches!(out, Poll::Ready(Some(Ok(_))));
        let _ = PROGRESS.try_with(|p| {
            p.polls.fetch_add(1, Ordering::Relaxed);
            p.handed.store(handed, Ordering::Relaxed);
        });
        out
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// hyper's executor for a connection's streams: each task runs under a guard.
#[derive(Clone)]
struct StreamExec {
    deadline: Duration,
    metrics: Arc<Metrics>,
    activity: Arc<Activity>,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Guarded {
            inner: Box::pin(fut),
            progress: Arc::new(Progress::default()),
            timer: None,
            seen: 0,
            deadline: self.deadline,
            metrics: self.metrics.clone(),
            _open: OpenStream::new(self.activity.clone()),
        });
    }
}

/// A stream's task, dropped (the stream reset) once its body has waited
/// for the peer's window longer than the write deadline.
struct Guarded<F> {
    inner: Pin<Box<F>>,
    progress: Arc<Progress>,
    /// Armed while a handed frame waits.
    timer: Option<Pin<Box<Sleep>>>,
    /// `Progress::polls` when the timer was armed.
    seen: u64,
    deadline: Duration,
    metrics: Arc<Metrics>,
    _open: OpenStream,
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let progress = this.progress.clone();
        let inner = &mut this.inner;
        if PROGRESS
            .sync_scope(progress, || inner.as_mut().poll(cx))
            .is_ready()
        {
            return Poll::Ready(());
        }
        if !this.progress.handed.load(Ordering::Relaxed) {
            this.timer = None;
            return Poll::Pending;
        }
        let polls = this.progress.polls.load(Ordering::Relaxed);
        if this.timer.is_none() || this.seen != polls {
            this.seen = polls;
            this.timer = Some(Box::pin(tokio::time::sleep(this.deadline)));
        }
        let timer = this.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_ready() {
            this.metrics.write_deadline_closed.inc();
            tracing::debug!("HTTP/2 stream accepted no bytes within the write deadline; reset");
            // Dropping the task (on return) resets the stream.
            return Poll::Ready(());
        }
        Poll::Pending
    }
}
