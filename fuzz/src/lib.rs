//! What the fuzz targets share: arbitrary JSON, names biased towards the
//! ones the host accepts, and an SSE parser to read frames back with.

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Number, Value};

pub mod jwt;

/// Any JSON value, at most `depth` levels deep: strings with quotes,
/// backslashes, control characters and line separators, integers at the
/// edges of i64/u64, finite floats.
pub fn json(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let top = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Number(match u.int_in_range(0..=2)? {
            0 => Number::from(u.arbitrary::<i64>()?),
            1 => Number::from(u.arbitrary::<u64>()?),
            _ => Number::from_f64(u.arbitrary()?).unwrap_or_else(|| Number::from(0)),
        }),
        3 | 4 => Value::String(text(u)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| json(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// A JSON object of up to four members.
pub fn object(u: &mut Unstructured, depth: u32) -> Result<Map<String, Value>> {
    let n = u.int_in_range(0..=4)?;
    let mut m = Map::new();
    for _ in 0..n {
        m.insert(text(u)?, json(u, depth)?);
    }
    Ok(m)
}

/// A short string, often of the characters that break framings: quotes,
/// backslashes, CR, LF, NUL, U+2028, commas, colons.
pub fn text(u: &mut Unstructured) -> Result<String> {
    const TRICKY: &[char] = &[
        '"',
        '\\',
        '\r',
        '\n',
        '\0',
        '\u{2028}',
        '\u{feff}',
        ',',
        ':',
        ' ',
        '=',
        '&',
        '%',
        '.',
        '-',
        '_',
        '@',
        'é',
        '\u{1F600}',
    ];
    let n = u.int_in_range(0..=24)?;
    let mut s = String::new();
    for _ in 0..n {
        let c = match u.int_in_range(0..=3)? {
            0 => *u.choose(TRICKY)?,
            1 => u.arbitrary::<char>()?,
            _ => (b'a' + u.int_in_range(0..=25)?) as char,
        };
        s.push(c);
    }
    Ok(s)
}

/// A string over `alphabet`, `0..=max` long (so that valid names are
/// common; `text` covers the invalid ones).
pub fn name(u: &mut Unstructured, alphabet: &[u8], max: usize) -> Result<String> {
    let n = u.int_in_range(0..=max)?;
    (0..n)
        .map(|_| u.choose(alphabet).map(|c| *c as char))
        .collect()
}

/// Letters, digits and the punctuation of event types and ids.
pub const NAME_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:@";

/// One event as an SSE client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` (`message` when absent).
    pub kind: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The last event id when it was dispatched.
    pub last_id: String,
}

/// What an SSE client made of a stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseStream {
    /// Events dispatched, in order.
    pub events: Vec<SseEvent>,
    /// The last `retry:` hint, in milliseconds.
    pub retry: Option<u64>,
}

/// Reads a complete event stream as the WHATWG HTML standard's
/// "interpreting an event stream" says a browser does. Written out here
/// (rather than taken from a client library) as the fuzz oracle: it follows
/// the standard's steps one by one, line endings CR, LF and CRLF included,
/// so that a frame the host's encoder writes is checked against what
/// browsers do, not against another encoder's idea of it.
pub fn parse_sse(stream: &str) -> SseStream {
    let stream = stream.strip_prefix('\u{feff}').unwrap_or(stream);
    let mut out = SseStream::default();
    let (mut kind, mut data, mut last_id) = (String::new(), String::new(), String::new());
    let mut rest = stream;
    // A final line with no line ending is never processed.
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            // Dispatch.
            if data.is_empty() {
                kind.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            out.events.push(SseEvent {
                kind: if kind.is_empty() {
                    "message".into()
                } else {
                    std::mem::take(&mut kind)
                },
                data: std::mem::take(&mut data),
                last_id: last_id.clone(),
            });
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_string(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_id = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                out.retry = value.parse().ok();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_follows_the_standard() {
        let s = parse_sse("retry: 10\r\nid: 1\rdata: a\n: c\ndata:b\nevent: x\n\ndata\n\nid\n\n");
        assert_eq!(s.retry, Some(10));
        assert_eq!(
            s.events,
            vec![
                SseEvent {
                    kind: "x".into(),
                    data: "a\nb".into(),
                    last_id: "1".into()
                },
                SseEvent {
                    kind: "message".into(),
                    data: "".into(),
                    last_id: "1".into()
                },
            ]
        );
    }
}
