//! Just enough HTTP/1.1 client: URL parsing, response heads, and body
//! decoding (chunked, `Content-Length`, or until close).

use std::io;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect and what to send as `Host`.
#[derive(Clone, Debug)]
pub struct Target {
    /// Resolved socket address.
    pub addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub host: String,
}

/// Parses and resolves `http://host[:port][/...]` (the path part is ignored).
pub async fn target(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported, got {url:?}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("cannot resolve {with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port} resolves to nothing"))?;
    Ok(Target {
        addr,
        host: authority.to_string(),
    })
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// `Content-Length`, if any.
    pub content_length: Option<usize>,
    /// `Connection: close`.
    pub close: bool,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads a response head from `s`, leaving any body bytes in `buf`.
pub async fn read_head(s: &mut TcpStream, buf: &mut BytesMut) -> io::Result<Head> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = buf.split_to(pos + 4);
            return parse_head(&head);
        }
        if buf.len() > 64 * 1024 {
            return Err(invalid("response head larger than 64 KiB"));
        }
        buf.reserve(2048);
        if s.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
    }
}

fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1 response: {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut h = Head {
        status,
        chunked: false,
        content_length: None,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            h.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                h.close = true;
            } else if v.contains("keep-alive") {
                h.close = false;
            }
        }
    }
    Ok(h)
}

#[derive(Debug)]
enum Mode {
    /// Next: a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailer,
    /// `Content-Length` body, this many bytes left.
    Length(usize),
    /// Body runs until the connection closes.
    UntilClose,
    /// Body complete.
    Done,
}

/// Incremental body decoder.
#[derive(Debug)]
pub struct Decoder {
    mode: Mode,
}

impl Decoder {
    /// A decoder for the body that follows `head`.
    pub fn new(head: &Head) -> Decoder {
        let mode = if head.chunked {
            Mode::Size
        } else if let Some(n) = head.content_length {
            if n == 0 {
                Mode::Done
            } else {
                Mode::Length(n)
            }
        } else if head.status == 204 || head.status == 304 || head.status < 200 {
            Mode::Done
        } else {
            Mode::UntilClose
        };
        Decoder { mode }
    }

    /// Whether the whole body has been decoded.
    pub fn done(&self) -> bool {
        matches!(self.mode, Mode::Done)
    }

    /// Moves decoded body bytes from `raw` to `out`, as far as `raw` goes.
    pub fn decode(&mut self, raw: &mut BytesMut, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Done => return Ok(()),
                Mode::UntilClose => {
                    out.extend_from_slice(raw);
                    raw.clear();
                    return Ok(());
                }
                Mode::Length(left) => {
                    let take = left.min(raw.len());
                    out.extend_from_slice(&raw[..take]);
                    raw.advance(take);
                    self.mode = if take == left {
                        Mode::Done
                    } else {
                        Mode::Length(left - take)
                    };
                    return Ok(());
                }
                Mode::Size => {
                    let Some(nl) = raw.iter().position(|&b| b == b'\n') else {
                        if raw.len() > 1024 {
                            return Err(invalid("chunk-size line too long"));
                        }
                        return Ok(());
                    };
                    let line = std::str::from_utf8(&raw[..nl])
                        .map_err(|_| invalid("chunk-size line is not UTF-8"))?;
                    let hex = line.trim_end_matches('\r');
                    let hex = hex.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| invalid(format!("bad chunk size {hex:?}")))?;
                    raw.advance(nl + 1);
                    self.mode = if size == 0 {
                        Mode::Trailer
                    } else {
                        Mode::Data(size)
                    };
                }
                Mode::Data(left) => {
                    if raw.is_empty() {
                        return Ok(());
                    }
                    let take = left.min(raw.len());
                    out.extend_from_slice(&raw[..take]);
                    raw.advance(take);
                    self.mode = if take == left {
                        Mode::DataEnd
                    } else {
                        Mode::Data(left - take)
                    };
                }
                Mode::DataEnd => {
                    if raw.len() < 2 {
                        return Ok(());
                    }
                    if &raw[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    raw.advance(2);
                    self.mode = Mode::Size;
                }
                Mode::Trailer => {
                    let Some(nl) = raw.iter().position(|&b| b == b'\n') else {
                        return Ok(());
                    };
                    let empty = raw[..nl].iter().all(|&b| b == b'\r');
                    raw.advance(nl + 1);
                    if empty {
                        self.mode = Mode::Done;
                    }
                }
            }
        }
    }
}

/// Reads one complete response (head and body) from a keep-alive connection;
/// returns the head and the body.
pub async fn read_response(s: &mut TcpStream, buf: &mut BytesMut) -> io::Result<(Head, Vec<u8>)> {
    let head = read_head(s, buf).await?;
    let mut dec = Decoder::new(&head);
    let mut body = Vec::new();
    loop {
        dec.decode(buf, &mut body)?;
        if dec.done() {
            return Ok((head, body));
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            if matches!(dec.mode, Mode::UntilClose) {
                return Ok((head, body));
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a response body",
            ));
        }
    }
}

/// A keep-alive connection and its read buffer.
pub type Conn = (TcpStream, BytesMut);

/// Sends one request on `conn` (connecting to `addr` first if needed);
/// returns the status and the response body. Drops the connection when the
/// server asks to close it.
pub async fn exchange(
    addr: SocketAddr,
    conn: &mut Option<Conn>,
    req: &[u8],
) -> io::Result<(u16, Vec<u8>)> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        *conn = Some((s, BytesMut::with_capacity(4096)));
    }
    let Some((s, buf)) = conn.as_mut() else {
        return Err(io::Error::other("no connection"));
    };
    s.write_all(req).await?;
    let (head, body) = read_response(s, buf).await?;
    if head.close {
        *conn = None;
    }
    Ok((head.status, body))
}

/// An HTTP/1.1 request with an optional bearer token and JSON body.
pub fn request(
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    match body {
        Some(b) => {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        }
        None => req.push_str("\r\n"),
    }
    req.into_bytes()
}

/// Targets from a comma-separated list of URLs (one per node).
pub async fn targets(urls: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        out.push(target(u).await?);
    }
    if out.is_empty() {
        return Err("--url is empty".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(chunked: bool) -> Head {
        Head {
            status: 200,
            chunked,
            content_length: None,
            close: false,
        }
    }

    #[test]
    fn dechunks_split_input() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for split in 0..wire.len() {
            let mut dec = Decoder::new(&head(true));
            let mut out = Vec::new();
            let mut raw = BytesMut::from(&wire[..split]);
            dec.decode(&mut raw, &mut out).expect("first part");
            raw.extend_from_slice(&wire[split..]);
            dec.decode(&mut raw, &mut out).expect("second part");
            assert_eq!(out, b"hello, world");
            assert!(dec.done());
        }
    }

    #[test]
    fn parses_heads() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n",
        )
        .expect("head");
        assert_eq!(h.status, 200);
        assert!(h.chunked && !h.close);
        let h = parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n").expect("head");
        assert_eq!(h.content_length, Some(12));
    }
}
