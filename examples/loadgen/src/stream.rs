//! Building blocks of `messages` and `bids`: one SSE stream that hands its
//! frames to a closure, a fixed-rate (or unpaced) slot dispenser feeding a
//! pool of request workers, and a few JSON helpers.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::http::{self, Decoder, Target};
use crate::sse::{self, Frame};

/// Opens `GET path` as an SSE stream (with `token` as a bearer token, if
/// given), calls `established` once the server answers 200, then `on_frame`
/// for every frame until `stop` turns true or the server closes the stream.
/// Errors before the 200 carry the status and the start of the body.
pub async fn sse(
    target: &Target,
    path: &str,
    token: Option<&str>,
    connect_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
    established: impl FnOnce(),
    mut on_frame: impl FnMut(&Frame<'_>),
) -> io::Result<()> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: switchyard-loadgen\r\n",
        target.host
    );
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    request.push_str("\r\n");
    let open = async {
        let mut s = TcpStream::connect(target.addr).await?;
        s.set_nodelay(true)?;
        s.write_all(request.as_bytes()).await?;
        let mut raw = BytesMut::with_capacity(2048);
        let head = http::read_head(&mut s, &mut raw).await?;
        Ok::<_, io::Error>((s, raw, head))
    };
    let (mut s, mut raw, head) = tokio::select! {
        biased;
        _ = stop.changed() => return Err(io::Error::other("stopped before connecting")),
        r = tokio::time::timeout(connect_timeout, open) => match r {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
            Ok(r) => r?,
        },
    };
    let mut dec = Decoder::new(&head);
    if head.status != 200 {
        let mut body = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while !dec.done() && body.len() < 200 {
                if dec.decode(&mut raw, &mut body).is_err() || dec.done() {
                    break;
                }
                raw.reserve(1024);
                if !matches!(s.read_buf(&mut raw).await, Ok(n) if n > 0) {
                    break;
                }
            }
        })
        .await;
        let snippet: String = String::from_utf8_lossy(&body).chars().take(160).collect();
        return Err(io::Error::other(format!("HTTP {} {snippet}", head.status)));
    }
    established();
    let mut parser = sse::Parser::default();
    loop {
        dec.decode(&mut raw, parser.input())?;
        parser.process(&mut on_frame);
        if dec.done() {
            return Err(io::Error::other("closed by the server"));
        }
        if raw.capacity() - raw.len() < 1024 {
            raw.reserve(4096);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            r = s.read_buf(&mut raw) => {
                if r? == 0 {
                    return Err(io::Error::other("closed by the server"));
                }
            }
        }
    }
}

/// Hands out request numbers 0, 1, 2, … to workers, either at a fixed rate
/// or as fast as the workers take them.
#[derive(Clone)]
pub struct Slots {
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<u64>>>,
}

impl Slots {
    /// The next request number; `None` when the run is over.
    pub async fn next(&self) -> Option<u64> {
        self.rx.lock().await.recv().await
    }
}

/// How `pace` ended.
pub struct Paced {
    /// Slots handed out.
    pub issued: u64,
    /// Ticks dropped because every worker was busy and the queue was full.
    pub missed: u64,
    /// Seconds from the first slot to the last.
    pub secs: f64,
}

/// A slot queue and the dispenser that fills it: `rate` per second (0: as
/// fast as workers take them), until `count` slots or `duration` have passed.
/// `progress` is called about once a second.
pub fn slots(
    rate: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    workers: usize,
    mut progress: impl FnMut(f64) + Send + 'static,
) -> (Slots, tokio::task::JoinHandle<Paced>) {
    let (tx, rx) = mpsc::channel::<u64>(if rate > 0.0 { 4096 } else { workers });
    let task = tokio::spawn(async move {
        let t0 = Instant::now();
        let mut issued = 0u64;
        let mut missed = 0u64;
        let mut ticker = (rate > 0.0).then(|| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let mut last_print = Instant::now();
        loop {
            if count.is_some_and(|c| issued >= c) || duration.is_some_and(|d| t0.elapsed() >= d) {
                break;
            }
            match ticker.as_mut() {
                Some(t) => {
                    t.tick().await;
                    if duration.is_some_and(|d| t0.elapsed() >= d) {
                        break;
                    }
                    match tx.try_send(issued) {
                        Ok(()) => issued += 1,
                        Err(_) => missed += 1,
                    }
                }
                None => {
                    if tx.send(issued).await.is_err() {
                        break;
                    }
                    issued += 1;
                }
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                progress(t0.elapsed().as_secs_f64());
                last_print = Instant::now();
            }
        }
        Paced {
            issued,
            missed,
            secs: t0.elapsed().as_secs_f64(),
        }
    });
    (
        Slots {
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        },
        task,
    )
}

/// A response body as JSON (`Null` if it is not JSON).
pub fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// The start of a response body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(160).collect()
}

/// Microseconds as `u32` for the latency summaries (saturating).
pub fn us32(us: u64) -> u32 {
    us.min(u64::from(u32::MAX)) as u32
}
