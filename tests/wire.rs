//! The HTTP/1 wire around event streams, over raw sockets: a stream that is
//! a connection's first request is written by the server itself (body
//! delimited by the close); everything else on a connection (a request
//! before the stream, a refused stream, a request with a body, a head the
//! server does not understand) is served by hyper from the bytes already read.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{secs, Env, Mode, Node};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw HTTP/1 client connection.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

/// A response head.
struct Head {
    status: u16,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Raw {
    async fn connect(node: &Node) -> Raw {
        let addr = node.url.trim_start_matches("http://");
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Raw {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// A connection whose receive buffer is small (`bytes`), so that the
    /// server's writes stop short while the client has not read.
    async fn connect_small(node: &Node, bytes: u32) -> Raw {
        let addr = node.url.trim_start_matches("http://");
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(bytes).expect("rcvbuf");
        let s = sock
            .connect(addr.parse().expect("addr"))
            .await
            .expect("connect");
        Raw {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.s.write_all(bytes.as_bytes()).await.expect("write");
    }

    /// Reads more; false at end of file or after the deadline.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// Everything up to and including `needle`, taken off the buffer.
    async fn until(&mut self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(at) = find(&self.buf, needle.as_bytes()) {
                let taken: Vec<u8> = self.buf.drain(..at + needle.len()).collect();
                return String::from_utf8_lossy(&taken).into_owned();
            }
            if !self.fill(deadline).await {
                panic!(
                    "{needle:?} not received; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    async fn head(&mut self) -> Head {
        let text = self.until("\r\n\r\n", secs(10)).await;
        let mut lines = text.trim_end().split("\r\n");
        let status_line = lines.next().expect("status line");
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_string();
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .map(|l| {
                let (k, v) = l.split_once(':').expect("header line");
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Head {
            status,
            version,
            headers,
        }
    }

    /// A body of `content-length` bytes.
    async fn body(&mut self, head: &Head) -> String {
        let n: usize = head
            .get("content-length")
            .expect("content-length")
            .parse()
            .expect("length");
        let deadline = tokio::time::Instant::now() + secs(10);
        while self.buf.len() < n {
            assert!(self.fill(deadline).await, "body cut short");
        }
        let body: Vec<u8> = self.buf.drain(..n).collect();
        String::from_utf8(body).expect("utf-8 body")
    }

    /// The content of chunks of a chunked body, read until it holds `needle`.
    async fn dechunked_until(&mut self, needle: &str, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        let mut content = Vec::new();
        while find(&content, needle.as_bytes()).is_none() {
            let size_line = self.until("\r\n", within).await;
            let n = usize::from_str_radix(size_line.trim_end(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            while self.buf.len() < n + 2 {
                assert!(self.fill(deadline).await, "chunk cut short");
            }
            content.extend(self.buf.drain(..n));
            assert_eq!(self.buf.drain(..2).as_slice(), b"\r\n", "chunk end");
        }
        String::from_utf8(content).expect("utf-8 frames")
    }

    /// True once the server has closed the connection.
    async fn closed(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.fill(deadline).await {}
        self.eof
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
}

/// A stream as a connection's first request: `200`, `connection: close`, no
/// chunking, frames as they are, and the server notices the client leaving.
async fn first_request_stream(mode: Mode) {
    let env = Env::new(mode).await;
    let nodes = env.start_nodes(2).await;
    let (sub, publ) = (&nodes[0], nodes.last().expect("a node"));
    let tenant = sub.tenant().await;
    let mut raw = Raw::connect(sub).await;
    raw.send(&get(&format!("/events?tenant={tenant}&topic=wire:1")))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("connection"), Some("close"));
    assert_eq!(head.get("cache-control"), Some("no-cache"));
    assert!(head.get("date").is_some());
    assert!(head.get("transfer-encoding").is_none());
    assert!(head.get("content-length").is_none());
    let first = raw.until("\n\n", secs(10)).await;
    assert!(first.starts_with("retry: "), "{first:?}");
    let id = publ
        .publish(&tenant, "wire:1", "note", json!({"n": 1}))
        .await;
    let frame = raw.until("\n\n", secs(10)).await;
    assert!(
        frame.starts_with(&format!("id: {id}\nevent: note\ndata: {{")),
        "{frame:?}"
    );
    // The client hangs up: the stream ends and is no longer counted.
    drop(raw);
    support::wait_for("stream closed", secs(10), || async {
        sub.metric("switchyard_connections").await == 0.0
    })
    .await;
    env.cleanup().await;
}
both_modes!(first_request_stream_test, first_request_stream);

/// A keep-alive request before a stream on the same connection: hyper serves
/// both, the stream chunked.
async fn keep_alive_then_stream(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    let _ = raw.body(&head).await;
    raw.send(&get(&format!("/events?tenant={tenant}&topic=wire:2")))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    raw.until("retry: ", secs(10)).await;
    let id = node.publish(&tenant, "wire:2", "note", json!({})).await;
    raw.until(&format!("id: {id}\nevent: note\n"), secs(10))
        .await;
    env.cleanup().await;
}
both_modes!(keep_alive_then_stream_test, keep_alive_then_stream);

/// A heartbeat is the same frame from both writers: `id:` with the cursor,
/// then `event: heartbeat` with the interval in its data (an event, so a
/// browser's `EventSource` shows it); the opening frame tells the interval.
async fn heartbeats_from_both_writers(mode: Mode) {
    // No occupancy events: the cursor in every frame stays the one id.
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_HEARTBEAT_MS", 200)
        .set("SWITCHYARD_PRESENCE_OCCUPANCY", "none");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let id = node.publish(&tenant, "wire:3", "note", json!({})).await;
    let path = format!("/events?tenant={tenant}&topic=wire:3");
    let opening =
        format!("retry: 3000\nid: {id}\nevent: heartbeat\ndata: {{\"interval_ms\":200}}\n\n");
    let beat = format!("id: {id}\nevent: heartbeat\ndata: {{\"interval_ms\":200}}\n\n");
    // The lean writer: the stream is the connection's first request.
    let mut lean = Raw::connect(&node).await;
    lean.send(&get(&path)).await;
    assert_eq!(lean.head().await.status, 200);
    assert_eq!(lean.until("\n\n", secs(10)).await, opening);
    assert_eq!(lean.until("\n\n", secs(10)).await, beat);
    assert_eq!(lean.until("\n\n", secs(10)).await, beat);
    // hyper: a request before the stream on the same connection.
    let mut kept = Raw::connect(&node).await;
    kept.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let head = kept.head().await;
    let _ = kept.body(&head).await;
    kept.send(&get(&path)).await;
    let head = kept.head().await;
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    let want = format!("{opening}{beat}{beat}");
    assert_eq!(kept.dechunked_until(&want, secs(10)).await, want);
    env.cleanup().await;
}
both_modes!(
    heartbeats_from_both_writers_test,
    heartbeats_from_both_writers
);

/// `frames=message`: both writers send events without their `event:` line
/// (replayed, live, and live through the fan-out's own write on the lean
/// path), the server's frames keep their names, and `events=` filters the
/// same; any other value is a 400.
async fn unnamed_frames_from_both_writers(mode: Mode) {
    // No occupancy events: the ids are the test's own.
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_PRESENCE_OCCUPANCY", "none");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let state = node
        .retain(&tenant, "wire:u", "state", json!({"s": 1}))
        .await;
    let note = node.publish(&tenant, "wire:u", "note", json!({})).await;
    let other = node.publish(&tenant, "wire:u", "other", json!({})).await;
    let base = format!(
        "/events?tenant={tenant}&topic=wire:u&frames=message&snapshot=wire:u&lastEventId={state}"
    );
    let unnamed = |frame: &str, id: u64, kind: &str| {
        let want = format!("id: {id}\ndata: {{\"id\":{id},\"tenant\":\"{tenant}\",\"topic\":\"wire:u\",\"type\":\"{kind}\",");
        assert!(
            frame.starts_with(&want) && frame.ends_with("}\n\n") && !frame.contains("\nevent:"),
            "{frame:?} is not {want:?}..."
        );
    };
    let named = |frame: &str, id: u64, kind: &str| {
        let want = format!("id: {id}\nevent: {kind}\ndata: {{");
        assert!(frame.starts_with(&want), "{frame:?} is not {want:?}...");
    };
    // The lean writer: replay, then live (written by the fan-out while the
    // stream sleeps), the opening heartbeat and the snapshot named.
    let mut lean = Raw::connect(&node).await;
    lean.send(&get(&base)).await;
    assert_eq!(lean.head().await.status, 200);
    let opening = lean.until("\n\n", secs(10)).await;
    assert!(opening.contains("\nevent: heartbeat\n"), "{opening:?}");
    named(&lean.until("\n\n", secs(10)).await, state, "snapshot");
    unnamed(&lean.until("\n\n", secs(10)).await, note, "note");
    unnamed(&lean.until("\n\n", secs(10)).await, other, "other");
    // With `events=`, only those types, unnamed too.
    let mut filtered = Raw::connect(&node).await;
    filtered.send(&get(&format!("{base}&events=tick"))).await;
    assert_eq!(filtered.head().await.status, 200);
    let opening = filtered.until("\n\n", secs(10)).await;
    assert!(opening.contains("\nevent: heartbeat\n"), "{opening:?}");
    named(&filtered.until("\n\n", secs(10)).await, state, "snapshot");
    // hyper: a request before the stream on the same connection.
    let mut kept = Raw::connect(&node).await;
    kept.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let head = kept.head().await;
    let _ = kept.body(&head).await;
    kept.send(&get(&base)).await;
    let head = kept.head().await;
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    let replayed = kept
        .dechunked_until(&format!("\"id\":{other},"), secs(10))
        .await;
    // Chunks up to the last event's JSON, then up to that frame's end.
    let rest = match replayed.ends_with("\n\n") {
        true => String::new(),
        false => kept.dechunked_until("\n\n", secs(10)).await,
    };
    let frames: Vec<String> = format!("{replayed}{rest}")
        .split_inclusive("\n\n")
        .map(str::to_string)
        .collect();
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert!(frames[0].contains("\nevent: heartbeat\n"), "{frames:?}");
    named(&frames[1], state, "snapshot");
    unnamed(&frames[2], note, "note");
    unnamed(&frames[3], other, "other");
    // Live, on all three.
    let tick = node.publish(&tenant, "wire:u", "tick", json!({})).await;
    unnamed(&lean.until("\n\n", secs(10)).await, tick, "tick");
    unnamed(&filtered.until("\n\n", secs(10)).await, tick, "tick");
    let live = kept.dechunked_until("\n\n", secs(10)).await;
    unnamed(&live, tick, "tick");
    // A value that is neither is refused, naming the parameter.
    let r = node
        .get(&format!(
            "/events?tenant={tenant}&topic=wire:u&frames=unnamed"
        ))
        .await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "invalid_frames");
    env.cleanup().await;
}
both_modes!(
    unnamed_frames_from_both_writers_test,
    unnamed_frames_from_both_writers
);

/// Two requests in one write, the stream second: both answered, in order.
async fn pipelined_then_stream(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let mut raw = Raw::connect(&node).await;
    raw.send(&format!(
        "GET /health HTTP/1.1\r\nHost: test\r\n\r\n{}",
        get(&format!("/events?tenant={tenant}&topic=wire:3"))
    ))
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    let _ = raw.body(&head).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    let id = node.publish(&tenant, "wire:3", "note", json!({})).await;
    raw.until(&format!("id: {id}\nevent: note\n"), secs(10))
        .await;
    env.cleanup().await;
}
both_modes!(pipelined_then_stream_test, pipelined_then_stream);

/// A stream request answered with an error keeps the connection: the error
/// is the usual JSON with a length, and the next request (here pipelined
/// behind it) is served.
async fn refused_stream_keeps_connection(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let mut raw = Raw::connect(&node).await;
    raw.send(&format!(
        "{}GET /health HTTP/1.1\r\nHost: test\r\n\r\n",
        get(&format!("/events?tenant={tenant}"))
    ))
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 400);
    assert_eq!(head.get("content-type"), Some("application/json"));
    let body = raw.body(&head).await;
    assert!(body.contains("missing_topic"), "{body}");
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    let _ = raw.body(&head).await;
    // And a stream after it on the same connection works too.
    raw.send(&get(&format!("/events?tenant={tenant}&topic=wire:4")))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    let id = node.publish(&tenant, "wire:4", "note", json!({})).await;
    raw.until(&format!("id: {id}\nevent: note\n"), secs(10))
        .await;
    env.cleanup().await;
}
both_modes!(
    refused_stream_keeps_connection_test,
    refused_stream_keeps_connection
);

/// An unknown tenant is a 404 on the first request too, and the server
/// closes when the client asked it to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_stream_with_close() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /events?tenant=no-such-tenant&topic=wire:5 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 404);
    let body = raw.body(&head).await;
    assert!(body.contains("\"error\""), "{body}");
    assert!(
        raw.closed(secs(10)).await,
        "connection closed after the answer"
    );
    env.cleanup().await;
}

/// An HTTP/1.0 client gets the stream, delimited by the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_stream() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /events?tenant=demo&topic=wire:6 HTTP/1.0\r\n\r\n")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert!(head.version.starts_with("HTTP/1."), "{}", head.version);
    assert!(head.get("transfer-encoding").is_none());
    let id = node.publish("demo", "wire:6", "note", json!({})).await;
    raw.until(&format!("id: {id}\nevent: note\n"), secs(10))
        .await;
    env.cleanup().await;
}

/// A head that does not parse is hyper's to answer: 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_head_is_400() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let mut raw = Raw::connect(&node).await;
    raw.send(
        "GET /events?tenant=demo&topic=wire:7 HTTP/1.1\r\nHost: test\r\nthis is no header\r\n\r\n",
    )
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 400);
    assert!(raw.closed(secs(10)).await);
    env.cleanup().await;
}

/// A stream request with a body, or with `Expect`, is left to hyper from the
/// bytes already read; it still gets its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_request_with_body_falls_back() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /events?tenant=demo&topic=wire:8 HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\n{}")
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("transfer-encoding"), Some("chunked"));
    let id = node.publish("demo", "wire:8", "note", json!({})).await;
    raw.until(&format!("id: {id}\nevent: note\n"), secs(10))
        .await;
    env.cleanup().await;
}

/// A head that arrives in pieces is still one stream request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_in_pieces() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let mut raw = Raw::connect(&node).await;
    let req = get("/events?tenant=demo&topic=wire:9");
    for piece in req.as_bytes().chunks(7) {
        raw.s.write_all(piece).await.expect("write");
        raw.s.flush().await.expect("flush");
        tokio::task::yield_now().await;
    }
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("connection"), Some("close"));
    let id = node.publish("demo", "wire:9", "note", json!({})).await;
    raw.until(&format!("id: {id}\nevent: note\n"), secs(10))
        .await;
    env.cleanup().await;
}

/// Many frames at once (a replay) arrive whole and in order, and the stream
/// goes live after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_on_lean_stream() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    // More than two pages of the log, published 32 at a time.
    let mut ids = Vec::new();
    for batch in 0..70 {
        let posts = (0..32)
            .map(|n| node.publish("demo", "wire:10", "note", json!({ "n": batch * 32 + n })));
        ids.extend(futures_util::future::join_all(posts).await);
    }
    ids.sort_unstable();
    let mut raw = Raw::connect(&node).await;
    raw.send(
        "GET /events?tenant=demo&topic=wire:10 HTTP/1.1\r\nHost: test\r\nLast-Event-ID: 0\r\n\r\n",
    )
    .await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    for id in &ids {
        raw.until(&format!("id: {id}\nevent: note\n"), secs(30))
            .await;
    }
    // The rest of the last replayed frame, then the live one, next.
    raw.until("\n\n", secs(10)).await;
    let id = node.publish("demo", "wire:10", "note", json!({})).await;
    let frame = raw.until("\n\n", secs(10)).await;
    assert!(frame.starts_with(&format!("id: {id}\n")), "{frame:?}");
    env.cleanup().await;
}

/// A live frame larger than the socket takes at once reaches the client
/// whole and at once, not at the next event or heartbeat: the part the
/// fan-out could not write goes back to the stream's own writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_live_frame_arrives_whole_at_once() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_HEARTBEAT_MS", 120_000)
        .set("SWITCHYARD_MAX_BODY_BYTES", 16 << 20);
    let node = env.start().await;
    let mut raw = Raw::connect_small(&node, 4096).await;
    raw.send(&get("/events?tenant=demo&topic=wire:big")).await;
    assert_eq!(raw.head().await.status, 200);
    raw.until("event: heartbeat\n", secs(10)).await;
    raw.until("\n\n", secs(10)).await;
    // More than a socket's send buffer (at most 4 MiB by Linux's defaults).
    let pad = "z".repeat(6 << 20);
    for i in 0..2 {
        // The stream sleeps with everything written: the fan-out writes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let id = node
            .publish("demo", "wire:big", "blob", json!({ "i": i, "pad": pad }))
            .await;
        // Read the frame by its length (a search per read would be slow).
        let deadline = tokio::time::Instant::now() + secs(10);
        while raw.buf.len() < pad.len() + 64 {
            assert!(
                raw.fill(deadline).await,
                "{i}: the frame stopped after {} bytes",
                raw.buf.len()
            );
        }
        let frame = raw.until("\n\n", secs(10)).await;
        assert!(
            frame.starts_with(&format!("id: {id}\n")),
            "{i}: {frame:.80}"
        );
        assert!(frame.contains(&pad), "{i}: the frame arrived whole");
    }
    env.cleanup().await;
}

/// A request head with one header of `pad` bytes.
fn padded(method_path: &str, pad: usize) -> String {
    format!(
        "{method_path} HTTP/1.1\r\nHost: test\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(pad)
    )
}

/// Heads over 16 KiB, or with more than 100 header lines, get 431: as a
/// connection's first request (the server's own path, with the JSON error)
/// and as a later one on a keep-alive connection (hyper's); heads under the
/// limit are served on both.
async fn request_head_limits(mode: Mode) {
    let env = Env::new(mode).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let stream = format!("GET /events?tenant={tenant}&topic=wire:11");
    for first in [stream.as_str(), "GET /health", "POST /api/events"] {
        let mut raw = Raw::connect(&node).await;
        raw.send(&padded(first, 20 * 1024)).await;
        let head = raw.head().await;
        assert_eq!(head.status, 431, "{first}");
        assert_eq!(head.get("connection"), Some("close"));
        let body = raw.body(&head).await;
        let v: serde_json::Value = serde_json::from_str(&body).expect("json error");
        assert_eq!(v["error"]["code"], "headers_too_large", "{body}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("16384"),
            "{body}"
        );
        assert!(raw.closed(secs(10)).await, "closed after the 431");
    }
    // Too many lines, small as they are.
    let lines: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut raw = Raw::connect(&node).await;
    raw.send(&format!("{stream} HTTP/1.1\r\nHost: test\r\n{lines}\r\n"))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 431);
    assert!(raw.body(&head).await.contains("header lines"));
    // Under the limit: a stream, and a request on a kept connection.
    let mut raw = Raw::connect(&node).await;
    raw.send(&padded(&stream, 15 * 1024)).await;
    assert_eq!(raw.head().await.status, 200);
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let head = raw.head().await;
    let _ = raw.body(&head).await;
    raw.send(&padded("GET /health", 15 * 1024)).await;
    let head = raw.head().await;
    assert_eq!(head.status, 200);
    let _ = raw.body(&head).await;
    // Over it, on the same kept connection: hyper's 431, then the close.
    raw.send(&padded("GET /health", 20 * 1024)).await;
    assert_eq!(raw.head().await.status, 431);
    assert!(raw.closed(secs(10)).await, "closed after the 431");
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let head = raw.head().await;
    let _ = raw.body(&head).await;
    raw.send(&format!(
        "GET /health HTTP/1.1\r\nHost: test\r\n{lines}\r\n"
    ))
    .await;
    assert_eq!(raw.head().await.status, 431);
    assert_eq!(node.metric("switchyard_heads_too_large_total").await, 4.0);
    env.cleanup().await;
}
both_modes!(request_head_limits_test, request_head_limits);

/// The limits are settings: with `SWITCHYARD_MAX_HEADER_BYTES=4096` a 5 KiB
/// head is refused on both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_limit_is_configurable() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_MAX_HEADER_BYTES", 4096);
    let node = env.start().await;
    let mut raw = Raw::connect(&node).await;
    raw.send(&padded("GET /events?tenant=demo&topic=wire:12", 5 * 1024))
        .await;
    let head = raw.head().await;
    assert_eq!(head.status, 431);
    assert!(raw.body(&head).await.contains("4096"));
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let head = raw.head().await;
    let _ = raw.body(&head).await;
    raw.send(&padded("GET /health", 5 * 1024)).await;
    assert_eq!(raw.head().await.status, 431);
    let mut raw = Raw::connect(&node).await;
    raw.send(&padded("GET /health", 3 * 1024)).await;
    assert_eq!(raw.head().await.status, 200);
    env.cleanup().await;
}

/// A client that sends its head too slowly is disconnected after
/// `SWITCHYARD_HEADER_TIMEOUT_MS`: as its first request, and as a later one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_head_is_closed() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_HEADER_TIMEOUT_MS", 500);
    let node = env.start().await;
    let started = std::time::Instant::now();
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /events?tenant=demo&topic=wire:13 HTTP/1.1\r\nHost: te")
        .await;
    assert!(raw.closed(secs(10)).await, "a trickling first head is cut");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(node.metric("switchyard_head_timeouts_total").await, 1.0);
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let head = raw.head().await;
    let _ = raw.body(&head).await;
    let started = std::time::Instant::now();
    raw.send("GET /health HTTP/1.1\r\nHo").await;
    assert!(raw.closed(secs(10)).await, "a trickling later head is cut");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // A head sent in time is served.
    let mut raw = Raw::connect(&node).await;
    raw.send("GET /health HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert_eq!(raw.head().await.status, 200);
    env.cleanup().await;
}
