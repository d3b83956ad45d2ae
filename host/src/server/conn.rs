//! Serving a connection with hyper: every request that is not a stream
//! written by the lean writer, and every TLS connection.

use axum::http::Request;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::io::{DeadlineIo, Rewind};
use super::Conn;

/// hyper's own count of header lines, which needs no heap per request.
const HYPER_DEFAULT_HEADERS: usize = 100;

/// Serves a connection with hyper, replaying the bytes already read; `first`
/// answers the first request when the router already has.
pub(super) async fn serve_hyper(stream: TcpStream, read: Bytes, first: Option<Response>, c: Conn) {
    let io = Rewind {
        pre: read,
        inner: DeadlineIo::new(stream, c.deadline, c.metrics.clone()),
    };
    serve_http1(io, first, c).await;
}

/// Serves a clear-text connection that opened with the HTTP/2 preface.
pub(super) async fn serve_h2c(stream: TcpStream, read: Bytes, c: Conn) {
    let io = Rewind {
        pre: read,
        inner: DeadlineIo::new(stream, c.deadline, c.metrics.clone()),
    };
    super::http2::serve(io, c).await;
}

/// Serves a TLS connection: the handshake (within the head timeout), then
/// HTTP/2 or HTTP/1.1 as ALPN chose.
pub(super) async fn serve_tls(stream: TcpStream, tls: TlsAcceptor, c: Conn) {
    let io = DeadlineIo::new(stream, c.deadline, c.metrics.clone());
    let handshake = tokio::select! {
        _ = c.shutdown.cancelled() => return,
        r = tokio::time::timeout(c.head.timeout, tls.accept(io)) => r,
    };
    let io = match handshake {
        Ok(Ok(io)) => io,
        Ok(Err(e)) => {
            // A client that does not trust the certificate, or is not
            // speaking TLS: its problem, not the server's.
            tracing::debug!(error = %e, "TLS handshake failed");
            c.metrics.tls_handshake_failed.inc();
            return;
        }
        Err(_) => {
            c.metrics.head_timeouts.inc();
            return;
        }
    };
    if io.get_ref().1.alpn_protocol() == Some(b"h2") {
        super::http2::serve(io, c).await;
    } else {
        serve_http1(io, None, c).await;
    }
}

/// Serves HTTP/1.1 on `io`; `first` answers the first request when the
/// router already has.
async fn serve_http1<I>(io: I, first: Option<Response>, c: Conn)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let svc = FirstThen {
        first: std::sync::Mutex::new(first),
        app: TowerToHyperService::new(c.app),
        peer: c.peer,
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
    peer: crate::net::PeerAddr,
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

    fn call(&self, mut req: Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        match first {
            Some(res) => futures_util::future::Either::Left(std::future::ready(Ok(res))),
            None => futures_util::future::Either::Right(self.app.call(req)),
        }
    }
}
