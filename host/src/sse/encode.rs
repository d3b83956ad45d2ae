//! SSE wire format: each frame is built into `Bytes` once.
//!
//! Every frame the server sends carries `id:` (the stream's cursor) and
//! `event:`, so a browser's `EventSource` always resumes from the right place.

use bytes::{BufMut, Bytes, BytesMut};

use crate::event::Seq;

/// `id: {seq}\nevent: {kind}\ndata: {json}\n\n`.
///
/// `kind` and `json` hold no newline: types are validated and the JSON is compact.
pub fn event(seq: Seq, kind: &str, json: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame_len(kind, json));
    put_event(&mut buf, seq, kind, json);
    buf.freeze()
}

/// An upper bound of the length of `event(_, kind, json)`.
pub fn frame_len(kind: &str, json: &str) -> usize {
    json.len() + kind.len() + 40
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

/// `retry: {ms}` hint, the first thing on every stream.
pub fn retry(ms: u128) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// The heartbeat comment; one static buffer shared by every connection.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b": heartbeat\n\n")
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
}
