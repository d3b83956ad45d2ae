//! SSE wire format: each frame is built into `Bytes` once.
//!
//! Every frame the server sends carries `id:` (the stream's cursor) and
//! `event:`, so a browser's `EventSource` always resumes from the right place.
//! Heartbeats are events too (`event: heartbeat`, its data the interval), not
//! comments: `EventSource` never shows a comment to JavaScript, and a client
//! can only notice a stalled stream by the heartbeats it does not get.
//!
//! A leaf: it knows the wire layout and nothing of events (`event::Frame`
//! is built with it), so ids are plain numbers here.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// An event id (`event::Seq`).
type Seq = u64;

/// `id: {seq}\nevent: {kind}\ndata: {json}\n\n`.
///
/// `kind` and `json` hold no newline: types are validated and the JSON is compact.
pub fn event(seq: Seq, kind: &str, json: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame_len(kind, json));
    put_event(&mut buf, seq, kind, json);
    buf.freeze()
}

/// An upper bound of the length of `event(_, kind, json)`: the fixed text
/// (`id: `, `\nevent: `, `\ndata: `, `\n\n`: 21 bytes) and an id of up to
/// 20 digits (`u64::MAX`; found short by one by fuzz/sse_encode).
pub fn frame_len(kind: &str, json: &str) -> usize {
    json.len() + kind.len() + 41
}

/// Appends the frame `event` builds to `buf`.
pub fn put_event(buf: &mut BytesMut, seq: Seq, kind: &str, json: &str) {
    buf.put_slice(b"id: ");
    put_u64(buf, seq);
    buf.put_slice(b"\nevent: ");
    buf.put_slice(kind.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(json.as_bytes());
    buf.put_slice(b"\n\n");
}

/// Appends the frame `event` builds without its `event:` line:
/// `id: {seq}\ndata: {json}\n\n`, which `EventSource` hands to `onmessage`
/// (the type is in the event JSON). For streams asked with `frames=message`.
pub fn put_unnamed(buf: &mut BytesMut, seq: Seq, json: &str) {
    buf.put_slice(b"id: ");
    put_u64(buf, seq);
    buf.put_slice(b"\ndata: ");
    buf.put_slice(json.as_bytes());
    buf.put_slice(b"\n\n");
}

/// Where the `event:` line of `event(seq, kind, _)` starts and ends (its
/// newline included): the frame without it is the bytes before and the
/// bytes after, two slices of the one buffer, written to an unnamed
/// (`frames=message`) stream without a copy. Computed from the layout, so
/// a frame's build finds it without a search.
pub fn event_line(seq: Seq, kind: &str) -> (usize, usize) {
    let start = "id: ".len() + digits(seq) + 1;
    (start, start + "event: ".len() + kind.len() + 1)
}

/// The number of decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// The shared part of every heartbeat frame of a node:
/// `event: heartbeat\ndata: {"interval_ms":N}\n\n`. Rendered once at start
/// (the interval does not change) and cloned into every heartbeat.
pub fn heartbeat_body(interval: Duration) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_slice(b"event: heartbeat\ndata: {\"interval_ms\":");
    put_u64(&mut buf, interval.as_millis().min(u64::MAX as u128) as u64);
    buf.put_slice(b"}\n\n");
    buf.freeze()
}

/// `id: {seq}\n`: a connection's own part of a heartbeat frame, written just
/// before the shared [`heartbeat_body`].
pub fn id_line(seq: Seq) -> Bytes {
    let mut buf = BytesMut::with_capacity(26);
    buf.put_slice(b"id: ");
    put_u64(&mut buf, seq);
    buf.put_u8(b'\n');
    buf.freeze()
}

/// The first frame of every stream: the `retry:` hint, the cursor and a
/// heartbeat, so a client knows the interval before the first tick.
pub fn opening(retry: Duration, seq: Seq, heartbeat_body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(40 + heartbeat_body.len());
    buf.put_slice(b"retry: ");
    put_u64(&mut buf, retry.as_millis().min(u64::MAX as u128) as u64);
    buf.put_slice(b"\nid: ");
    put_u64(&mut buf, seq);
    buf.put_u8(b'\n');
    buf.put_slice(heartbeat_body);
    buf.freeze()
}

/// Appends `n` in decimal, without an intermediate `String`.
fn put_u64(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_layout() {
        let f = event(12, "note", r#"{"id":12}"#);
        assert_eq!(&f[..], b"id: 12\nevent: note\ndata: {\"id\":12}\n\n");
        for n in [0, 7, 10, 99, 100, 12345, u64::MAX] {
            let mut b = BytesMut::new();
            put_u64(&mut b, n);
            assert_eq!(&b[..], n.to_string().as_bytes());
        }
    }

    /// The unnamed frame is the named one without its `event:` line, and
    /// `event_line` finds that line for any id.
    #[test]
    fn unnamed_frames_are_the_named_ones_without_the_event_line() {
        for seq in [0, 1, 9, 10, 99, 100, 12345, u64::MAX / 7, u64::MAX] {
            let named = event(seq, "bid.accepted", r#"{"id":1}"#);
            let (start, end) = event_line(seq, "bid.accepted");
            assert_eq!(&named[start..end], b"event: bid.accepted\n");
            let mut unnamed = BytesMut::new();
            put_unnamed(&mut unnamed, seq, r#"{"id":1}"#);
            let mut cut = named[..start].to_vec();
            cut.extend_from_slice(&named[end..]);
            assert_eq!(&unnamed[..], &cut[..]);
            assert_eq!(
                &unnamed[..],
                format!("id: {seq}\ndata: {{\"id\":1}}\n\n").as_bytes()
            );
        }
    }

    #[test]
    fn heartbeat_frames() {
        let body = heartbeat_body(Duration::from_millis(1500));
        assert_eq!(
            &body[..],
            b"event: heartbeat\ndata: {\"interval_ms\":1500}\n\n"
        );
        let mut frame = id_line(42).to_vec();
        frame.extend_from_slice(&body);
        assert_eq!(
            &frame[..],
            b"id: 42\nevent: heartbeat\ndata: {\"interval_ms\":1500}\n\n"
        );
        assert_eq!(
            &opening(Duration::from_secs(3), 7, &body)[..],
            b"retry: 3000\nid: 7\nevent: heartbeat\ndata: {\"interval_ms\":1500}\n\n"
        );
    }
}
