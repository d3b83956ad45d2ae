//! The body deadline: a request body must arrive whole within
//! `SWITCHYARD_BODY_TIMEOUT_MS` of its head. A client trickling one byte
//! every few seconds would otherwise hold its connection (and a handler's
//! buffer) for as long as it likes: the head has a deadline of its own
//! (`HeadLimits`), the body had none. The deadline is the whole body's, not
//! one per read, so a trickle cannot reset it.
//!
//! A body that misses it ends with an error; the handler's answer is then
//! replaced by `408 body_timeout` with `Connection: close`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::ApiError;
use crate::state::AppState;

/// The middleware: bodies that can carry anything get the deadline.
pub async fn body_deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let missed = Arc::new(AtomicBool::new(false));
    let timeout = state.config.body_timeout;
    let req = req.map(|inner| {
        Body::new(Deadlined {
            inner,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            missed: missed.clone(),
        })
    });
    let res = next.run(req).await;
    if !missed.load(Ordering::Acquire) {
        return res;
    }
    state.metrics.body_timeouts.inc();
    let mut res = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        format!(
            "the request body did not arrive within {} ms of its head",
            timeout.as_millis()
        ),
    )
    .into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// A request body that fails once its deadline has passed.
struct Deadlined {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    missed: Arc<AtomicBool>,
}

impl http_body::Body for Deadlined {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.missed.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a late body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;
