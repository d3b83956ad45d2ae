//! `publish` and `publish-nchan`: a fixed-rate publisher over keep-alive
//! connections.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;

use crate::args::Args;
use crate::http::{self, Target};
use crate::stats::{self, Latency};

/// Where events go.
enum Sink {
    /// `POST /api/events` with a bearer token.
    Switchyard {
        /// The JSON-encoded tenant and topic, ready to splice in.
        tenant: String,
        topic: String,
        token: String,
        /// Events per request (more than 1: `POST /api/events/batch`).
        batch: u64,
        /// Send an `Idempotency-Key` (the same on a retry).
        keyed: bool,
    },
    /// `POST /pub/<channel>`, the body being the event data.
    Nchan { channel: String },
}

/// What one run does.
pub struct Config {
    target: Target,
    sink: Sink,
    /// Events per second; 0 means as fast as the connections allow.
    rate: f64,
    duration: Option<Duration>,
    count: Option<u64>,
    pad: String,
    concurrency: usize,
    report: Option<String>,
    /// Tells this run's idempotency keys from an earlier run's.
    run: u64,
}

/// Options `publish` accepts.
pub const PUBLISH_OPTS: &[&str] = &[
    "url",
    "tenant",
    "topic",
    "token",
    "rate",
    "duration-secs",
    "count",
    "payload-bytes",
    "concurrency",
    "report",
    "threads",
    "batch",
    "keyed",
];

/// Options `publish-nchan` accepts.
pub const PUBLISH_NCHAN_OPTS: &[&str] = &[
    "url",
    "channel",
    "rate",
    "duration-secs",
    "count",
    "payload-bytes",
    "concurrency",
    "report",
    "threads",
];

impl Config {
    /// Builds the configuration from the command line.
    pub async fn from_args(a: &Args, nchan: bool) -> Result<Config, String> {
        let default_url = if nchan {
            "http://127.0.0.1:18080"
        } else {
            "http://127.0.0.1:8080"
        };
        let target = http::target(&a.str_or("url", default_url)).await?;
        let sink = if nchan {
            let channel = a.required("channel")?;
            if channel.is_empty()
                || !channel
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!("--channel must be [A-Za-z0-9_-]+, got {channel:?}"));
            }
            Sink::Nchan { channel }
        } else {
            let enc = |s: String| serde_json::to_string(&s).map_err(|e| e.to_string());
            let batch: u64 = a.num("batch", 1)?;
            if !(1..=1000).contains(&batch) {
                return Err("--batch must be 1 to 1000".into());
            }
            Sink::Switchyard {
                tenant: enc(a.str_or("tenant", "demo"))?,
                topic: enc(a.required("topic")?)?,
                token: a.required("token")?,
                batch,
                keyed: a.num::<u8>("keyed", 0)? == 1,
            }
        };
        let secs: f64 = a.num("duration-secs", 0.0)?;
        let count: Option<u64> = a.num_opt("count")?;
        if secs <= 0.0 && count.is_none() {
            return Err("give --duration-secs or --count (or both)".into());
        }
        let concurrency: usize = a.num("concurrency", 4)?;
        if concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        Ok(Config {
            target,
            sink,
            rate: a.num("rate", 100.0)?,
            duration: (secs > 0.0).then(|| Duration::from_secs_f64(secs)),
            count,
            pad: "x".repeat(a.num("payload-bytes", 64)?),
            concurrency,
            report: a.opt("report").map(str::to_string),
            run: stats::now_us(),
        })
    }

    /// Events one request carries.
    fn batch(&self) -> u64 {
        match self.sink {
            Sink::Switchyard { batch, .. } => batch,
            Sink::Nchan { .. } => 1,
        }
    }

    fn request(&self, n: u64) -> Vec<u8> {
        let sent_us = stats::now_us();
        let pad = &self.pad;
        let (path, body, auth) = match &self.sink {
            Sink::Switchyard {
                tenant,
                topic,
                token,
                batch,
                keyed,
            } => {
                let event = |n: u64| {
                    format!(
                        r#"{{"tenant":{tenant},"topic":{topic},"type":"bench","data":{{"n":{n},"sent_us":{sent_us},"pad":"{pad}"}}}}"#
                    )
                };
                let (path, body) = if *batch == 1 {
                    ("/api/events".to_string(), event(n))
                } else {
                    let events: Vec<String> = (n..n + batch).map(event).collect();
                    (
                        "/api/events/batch".to_string(),
                        format!(r#"{{"events":[{}]}}"#, events.join(",")),
                    )
                };
                let mut auth = format!("Authorization: Bearer {token}\r\n");
                if *keyed {
                    // One key per request; a retry sends the same key (and
                    // gets the first answer back, not a second event).
                    auth.push_str(&format!("Idempotency-Key: lg-{}-{n}\r\n", self.run));
                }
                (path, body, auth)
            }
            Sink::Nchan { channel } => (
                format!("/pub/{channel}"),
                format!(r#"{{"n":{n},"sent_us":{sent_us},"pad":"{pad}"}}"#),
                String::new(),
            ),
        };
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.target.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        req
    }
}

#[derive(Default)]
struct Shared {
    /// The publisher's counter (`data.n`), shared by the connections.
    next_n: AtomicU64,
    ok: AtomicU64,
    errors: AtomicU64,
    /// Events given up on after retries (subscribers will see them missing).
    failed: AtomicU64,
    halt: AtomicBool,
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut m) = self.error_kinds.lock() {
            *m.entry(what).or_default() += 1;
        }
    }
}

async fn worker(
    cfg: Arc<Config>,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<()>>>,
    shared: Arc<Shared>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut conn: Option<http::Conn> = None;
    loop {
        let slot = rx.lock().await.recv().await;
        if slot.is_none() || shared.halt.load(Relaxed) {
            break;
        }
        let batch = cfg.batch();
        let n = shared.next_n.fetch_add(batch, Relaxed) + 1;
        for attempt in 1..=3 {
            let req = cfg.request(n);
            let t = Instant::now();
            match http::exchange(cfg.target.addr, &mut conn, &req).await {
                Ok((status, _)) if (200..300).contains(&status) => {
                    latencies.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    shared.ok.fetch_add(batch, Relaxed);
                    break;
                }
                Ok((status, body)) => {
                    let snippet: String =
                        String::from_utf8_lossy(&body).chars().take(160).collect();
                    shared.error(format!("HTTP {status}: {snippet}"));
                    if status < 500 || attempt == 3 {
                        shared.failed.fetch_add(batch, Relaxed);
                        break;
                    }
                }
                Err(e) => {
                    conn = None;
                    shared.error(format!("io: {e}"));
                    if attempt == 3 {
                        shared.failed.fetch_add(batch, Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    latencies
}

/// Runs the publisher.
pub async fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared::default());
    let queue = if cfg.rate > 0.0 {
        4096
    } else {
        cfg.concurrency
    };
    let (tx, rx) = mpsc::channel::<()>(queue);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let what = match &cfg.sink {
        Sink::Switchyard {
            topic,
            batch: 1,
            keyed,
            ..
        } => format!("POST /api/events topic {topic} (idempotency keys: {keyed})"),
        Sink::Switchyard {
            topic,
            batch,
            keyed,
            ..
        } => format!("POST /api/events/batch of {batch} topic {topic} (idempotency keys: {keyed})"),
        Sink::Nchan { channel } => format!("POST /pub/{channel}"),
    };
    println!(
        "publish: {what} to http://{} at {} events/s, {} connection(s), pad {} bytes",
        cfg.target.host,
        if cfg.rate > 0.0 {
            cfg.rate.to_string()
        } else {
            "max".into()
        },
        cfg.concurrency,
        cfg.pad.len()
    );
    let cpu0 = stats::cpu_secs();
    let t0 = Instant::now();
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|_| tokio::spawn(worker(cfg.clone(), rx.clone(), shared.clone())))
        .collect();

    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut issued: u64 = 0;
    let mut missed: u64 = 0;
    let mut ticker = (cfg.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut last_print = Instant::now();
    let mut last_ok = 0;
    loop {
        if cfg.count.is_some_and(|c| issued >= c) || cfg.duration.is_some_and(|d| t0.elapsed() >= d)
        {
            break;
        }
        match ticker.as_mut() {
            Some(t) => {
                tokio::select! {
                    _ = t.tick() => {}
                    _ = &mut interrupt => { shared.halt.store(true, Relaxed); break; }
                }
                if cfg.duration.is_some_and(|d| t0.elapsed() >= d) {
                    break;
                }
                match tx.try_send(()) {
                    Ok(()) => issued += 1,
                    Err(_) => missed += 1,
                }
            }
            None => {
                tokio::select! {
                    r = tx.send(()) => { if r.is_err() { break; } issued += 1; }
                    _ = &mut interrupt => { shared.halt.store(true, Relaxed); break; }
                }
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let ok = shared.ok.load(Relaxed);
            println!(
                "[{:6.1}s] ok {ok} ({:.0}/s) errors {}",
                t0.elapsed().as_secs_f64(),
                (ok - last_ok) as f64 / last_print.elapsed().as_secs_f64(),
                shared.errors.load(Relaxed)
            );
            last_ok = ok;
            last_print = Instant::now();
        }
    }
    let issue_secs = t0.elapsed().as_secs_f64();
    drop(tx);
    let mut latencies = Vec::new();
    for w in workers {
        if let Ok(l) = w.await {
            latencies.extend(l);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = stats::cpu_secs() - cpu0;
    let lat = Latency::of(&mut latencies);
    let ok = shared.ok.load(Relaxed);
    let errors = shared.errors.load(Relaxed);
    let failed = shared.failed.load(Relaxed);
    let kinds = shared
        .error_kinds
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    println!("--- summary ---");
    println!(
        "published {ok} ok in {elapsed:.2}s: {:.1} events/s achieved (target {}); {errors} errors, {failed} events given up, {missed} ticks missed (queue full)",
        ok as f64 / elapsed,
        if cfg.rate > 0.0 { format!("{}/s", cfg.rate) } else { "max".into() }
    );
    for (e, n) in &kinds {
        println!("  error x{n}: {e}");
    }
    println!("publish latency: {}", lat.line());
    println!("loadgen CPU: {cpu:.2}s");
    if let Some(path) = &cfg.report {
        let report = json!({
            "mode": match cfg.sink { Sink::Switchyard { .. } => "publish", Sink::Nchan { .. } => "publish-nchan" },
            "url": format!("http://{}", cfg.target.host),
            "target_rate": cfg.rate,
            "concurrency": cfg.concurrency,
            "batch": cfg.batch(),
            "payload_pad_bytes": cfg.pad.len(),
            "ok": ok,
            "errors": errors,
            "failed": failed,
            "error_kinds": kinds,
            "missed_ticks": missed,
            "issue_secs": issue_secs,
            "elapsed_secs": elapsed,
            "achieved_rate": ok as f64 / elapsed,
            "latency": lat.json(),
            "loadgen_cpu_secs": cpu,
        });
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {path}: {e}"))?;
        println!("report written to {path}");
    }
    Ok(())
}
