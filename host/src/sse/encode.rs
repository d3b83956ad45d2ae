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
    let mut buf = BytesMut::with_capacity(json.len() + kind.len() + 40);
    buf.put_slice(b"id: ");
    buf.put_slice(itoa(seq).as_bytes());
    buf.put_slice(b"\nevent: ");
    buf.put_slice(kind.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(json.as_bytes());
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// `retry: {ms}` hint, the first thing on every stream.
pub fn retry(ms: u128) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// The heartbeat comment; one static buffer shared by every connection.
pub fn heartbeat() -> Bytes {
    Bytes::from_static(b": heartbeat\n\n")
}

fn itoa(n: u64) -> String {
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_layout() {
        let f = event(12, "note", r#"{"id":12}"#);
        assert_eq!(&f[..], b"id: 12\nevent: note\ndata: {\"id\":12}\n\n");
    }
}
