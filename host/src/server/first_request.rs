//! A connection's first request: its head is read into a small buffer and
//! parsed here; a plain `GET` of an event stream is routed at once and, if
//! the answer is a stream, handed back for the lean writer.
//!
//! Written by hand (with `httparse`) rather than left to hyper for a
//! measured reason: a stream kept on hyper's connection holds its read and
//! write buffers and connection state for the stream's whole life, 13.4 KiB
//! resident per idle stream at 10,000 streams; parsed here and written by
//! `sse::writer`, 2.2 KiB (docs/benchmarks.md, "Event core after the lean
//! stream writer"). Everything else still goes to hyper.

use std::io;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode, Version};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

use super::conn::{serve_h2c, serve_hyper};
use super::{reject, Conn, HeadLimits};
use crate::sse::session::StreamSlot;

/// How an HTTP/2 connection with prior knowledge opens (RFC 9113, 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Read size for a request head.
const HEAD_CHUNK: usize = 1024;
/// Header lines parsed on the stack; a head with more is parsed again with
/// room for `HeadLimits::max_headers`.
const STACK_HEADERS: usize = 48;

/// Reads and routes the connection's first request. A stream answer comes
/// back (socket, response head, session) for the lean writer; anything else
/// is served here, by hyper, to the end of the connection.
pub(super) async fn route_first(
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
        First::H2(read) => {
            serve_h2c(stream, read, conn).await;
            return None;
        }
        First::Stream(mut req, read) => {
            req.extensions_mut().insert(conn.peer);
            (req, read)
        }
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
    /// The HTTP/2 connection preface (clear text, prior knowledge), and
    /// every byte read so far.
    H2(Bytes),
}

/// Which limit a head broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TooLarge {
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
        if buf.starts_with(H2_PREFACE) {
            return First::H2(buf.freeze());
        }
        if H2_PREFACE.starts_with(&buf) {
            // Perhaps the preface, in pieces.
            continue;
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

pub(crate) enum Parsed {
    Partial,
    Stream(Box<Request<Body>>),
    Other,
    TooLarge(TooLarge),
}

/// A `GET` of an event-stream route with no body, no `Expect` and no
/// upgrade becomes a request for the router; a head over `limits` is
/// `TooLarge`; anything else is `Other`.
pub(crate) fn parse_stream_request(buf: &[u8], limits: &HeadLimits) -> Parsed {
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

/// The routes that answer with an event stream: the router's own
/// declarations (`http::router::stream_route`).
pub(crate) fn is_stream_path(path: &str) -> bool {
    crate::http::router::stream_route(path)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
