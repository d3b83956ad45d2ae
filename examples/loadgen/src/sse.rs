//! An incremental `text/event-stream` parser.

/// One dispatched frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The `id:` field, if the frame had one.
    pub id: Option<&'a [u8]>,
    /// The `event:` field (empty if none).
    pub event: &'a [u8],
    /// The `data:` lines joined with `\n`, if the frame had any.
    pub data: Option<&'a [u8]>,
}

/// Parser state: bytes of an incomplete line and the frame being built.
#[derive(Default)]
pub struct Parser {
    pending: Vec<u8>,
    id: Vec<u8>,
    has_id: bool,
    event: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl Parser {
    /// The buffer decoded body bytes go into before `process`.
    pub fn input(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    /// Parses every complete line in the input buffer, calling `on_frame` at
    /// each blank line that ends a frame with fields.
    pub fn process(&mut self, mut on_frame: impl FnMut(&Frame<'_>)) {
        let mut start = 0;
        let buf = std::mem::take(&mut self.pending);
        while let Some(off) = buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &buf[start..start + off];
            start += off + 1;
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            if line.is_empty() {
                self.dispatch(&mut on_frame);
            } else {
                self.field(line);
            }
        }
        self.pending = buf;
        self.pending.drain(..start);
    }

    fn field(&mut self, line: &[u8]) {
        if line[0] == b':' {
            return; // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" => {
                self.id.clear();
                self.id.extend_from_slice(value);
                self.has_id = true;
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            _ => {} // retry and unknown fields
        }
    }

    fn dispatch(&mut self, on_frame: &mut impl FnMut(&Frame<'_>)) {
        if self.has_id || self.has_data || !self.event.is_empty() {
            on_frame(&Frame {
                id: self.has_id.then_some(&self.id[..]),
                event: &self.event,
                data: self.has_data.then_some(&self.data[..]),
            });
        }
        self.has_id = false;
        self.has_data = false;
        self.event.clear();
        self.data.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames_across_feeds() {
        let wire = b"retry: 3000\nid: 0\n\n: heartbeat\n\nid: 7\nevent: bench\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\n";
        for split in 0..wire.len() {
            let mut p = Parser::default();
            let mut got = Vec::new();
            let mut rec = |f: &Frame<'_>| {
                got.push((
                    f.id.map(<[u8]>::to_vec),
                    f.event.to_vec(),
                    f.data.map(<[u8]>::to_vec),
                ))
            };
            p.input().extend_from_slice(&wire[..split]);
            p.process(&mut rec);
            p.input().extend_from_slice(&wire[split..]);
            p.process(&mut rec);
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0], (Some(b"0".to_vec()), vec![], None));
            assert_eq!(
                got[1],
                (
                    Some(b"7".to_vec()),
                    b"bench".to_vec(),
                    Some(b"{\"a\":1}".to_vec())
                )
            );
            assert_eq!(got[2], (None, vec![], Some(b"x\ny".to_vec())));
        }
    }
}
