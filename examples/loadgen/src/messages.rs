//! `messages`: message POST → recipient's SSE latency, and exactly-once
//! delivery, with one private stream per user.
//!
//! Every user in `--tokens FILE` (lines `USER TOKEN`) holds its own
//! `GET /events/users/{id}` with its own token. Then `POST /api/messages`
//! `{tenant, from, to, body}` goes out at `--rate` per second with the admin
//! token, message `n` to user `n % users`. The body is `bench n{n} t{sent_us}`
//! (`sent_us`: the wall clock just before the request is written); latency is
//! the recipient stream's clock at the `message` event minus `sent_us`.
//! Each event's `message_id` is matched against the ids the POSTs returned:
//! every posted message must arrive exactly once, on its recipient's stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::args::Args;
use crate::http::{self, Target};
use crate::sse::Frame;
use crate::stats::{self, Latency};
use crate::stream::{self, us32};

/// Options `messages` accepts.
pub const MESSAGES_OPTS: &[&str] = &[
    "url",
    "tokens",
    "users",
    "token",
    "tenant",
    "from",
    "rate",
    "count",
    "duration-secs",
    "concurrency",
    "ramp-per-sec",
    "settle-secs",
    "connect-timeout-secs",
    "report",
    "threads",
];

/// What one run does.
pub struct Config {
    targets: Vec<Target>,
    users: Vec<(String, String)>,
    admin: String,
    tenant: String,
    from: String,
    rate: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    concurrency: usize,
    ramp_per_sec: f64,
    settle: Duration,
    connect_timeout: Duration,
    report: Option<String>,
}

impl Config {
    /// Builds the configuration from the command line.
    pub async fn from_args(a: &Args) -> Result<Config, String> {
        let targets = http::targets(&a.str_or("url", "http://127.0.0.1:8080")).await?;
        let file = a.required("tokens")?;
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let mut users: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(u), Some(t)) => users.push((u.to_string(), t.to_string())),
                _ => return Err(format!("{file}:{}: expected `USER TOKEN`", i + 1)),
            }
        }
        if let Some(n) = a.num_opt::<usize>("users")? {
            if n > users.len() {
                return Err(format!("--users {n} but {file} has {} users", users.len()));
            }
            users.truncate(n);
        }
        if users.is_empty() {
            return Err(format!("{file} has no users"));
        }
        let secs: f64 = a.num("duration-secs", 0.0)?;
        let count: Option<u64> = a.num_opt("count")?;
        if secs <= 0.0 && count.is_none() {
            return Err("give --duration-secs or --count (or both)".into());
        }
        let concurrency: usize = a.num("concurrency", 32)?;
        if concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        Ok(Config {
            targets,
            users,
            admin: a.required("token")?,
            tenant: a.str_or("tenant", "demo"),
            from: a.str_or("from", "bench-sender"),
            rate: a.num("rate", 100.0)?,
            count,
            duration: (secs > 0.0).then(|| Duration::from_secs_f64(secs)),
            concurrency,
            ramp_per_sec: a.num("ramp-per-sec", 500.0)?,
            settle: Duration::from_secs_f64(a.num("settle-secs", 10.0)?),
            connect_timeout: Duration::from_secs_f64(a.num("connect-timeout-secs", 10.0)?),
            report: a.opt("report").map(str::to_string),
        })
    }
}

/// One received `message` event.
struct Seen {
    /// How many times it arrived (on any stream).
    count: u32,
    /// It arrived on a stream other than its recipient's.
    wrong_stream: bool,
}

#[derive(Default)]
struct Shared {
    established: AtomicU64,
    failed: AtomicU64,
    open: AtomicU64,
    /// `message` events received (with duplicates).
    delivered: AtomicU64,
    unread_events: AtomicU64,
    snapshots: AtomicU64,
    other_frames: AtomicU64,
    bad_events: AtomicU64,
    posted_ok: AtomicU64,
    post_errors: AtomicU64,
    post_failed: AtomicU64,
    /// message id → what arrived.
    seen: Mutex<HashMap<u64, Seen>>,
    /// Delivery latencies, µs.
    latencies: Mutex<Vec<u32>>,
    /// message id → n, for every 201.
    posted: Mutex<HashMap<u64, u64>>,
    /// POST round trips, µs.
    post_latencies: Mutex<Vec<u32>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, what: String) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(what).or_default() += 1;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `bench n{n} t{sent_us}` out of a preview.
fn parse_body(preview: &str) -> Option<(u64, u64)> {
    let mut n = None;
    let mut t = None;
    for word in preview.split_whitespace() {
        if let Some(v) = word.strip_prefix('n') {
            n = v.parse().ok();
        } else if let Some(v) = word.strip_prefix('t') {
            t = v.parse().ok();
        }
    }
    Some((n?, t?))
}

fn on_frame(user: &str, f: &Frame<'_>, shared: &Shared) {
    match f.event {
        b"message" => {}
        b"unread" => {
            shared.unread_events.fetch_add(1, Relaxed);
            return;
        }
        b"snapshot" => {
            shared.snapshots.fetch_add(1, Relaxed);
            return;
        }
        // Keep-alive: it only moves the last id.
        b"heartbeat" => return,
        _ => {
            if f.data.is_some() {
                shared.other_frames.fetch_add(1, Relaxed);
            }
            return;
        }
    }
    let now = stats::now_us();
    let v: Value = f
        .data
        .and_then(|d| serde_json::from_slice(d).ok())
        .unwrap_or(Value::Null);
    let data = &v["data"];
    let (Some(id), Some((_n, sent_us))) = (
        data["message_id"].as_u64(),
        data["preview"].as_str().and_then(parse_body),
    ) else {
        shared.bad_events.fetch_add(1, Relaxed);
        return;
    };
    shared.delivered.fetch_add(1, Relaxed);
    lock(&shared.latencies).push(us32(now.saturating_sub(sent_us)));
    let mut seen = lock(&shared.seen);
    let s = seen.entry(id).or_insert(Seen {
        count: 0,
        wrong_stream: false,
    });
    s.count += 1;
    if data["to"].as_str() != Some(user) {
        s.wrong_stream = true;
    }
}

async fn user_stream(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    i: usize,
    mut stop: watch::Receiver<bool>,
) {
    let (user, token) = &cfg.users[i];
    let target = &cfg.targets[i % cfg.targets.len()];
    let path = format!("/events/users/{user}");
    let mut up = false;
    let r = stream::sse(
        target,
        &path,
        Some(token),
        cfg.connect_timeout,
        &mut stop,
        || {
            up = true;
            shared.established.fetch_add(1, Relaxed);
            shared.open.fetch_add(1, Relaxed);
        },
        |f| on_frame(user, f, &shared),
    )
    .await;
    if let Err(e) = r {
        if up {
            shared.error(format!("stream: {e}"));
        } else {
            shared.failed.fetch_add(1, Relaxed);
            shared.error(format!("connect: {e}"));
        }
    }
    if up {
        shared.open.fetch_sub(1, Relaxed);
    }
}

async fn poster(cfg: Arc<Config>, shared: Arc<Shared>, slots: stream::Slots, w: usize) {
    let target = &cfg.targets[w % cfg.targets.len()];
    let mut conn: Option<http::Conn> = None;
    let tenant = serde_json::to_string(&cfg.tenant).unwrap_or_default();
    let from = serde_json::to_string(&cfg.from).unwrap_or_default();
    while let Some(n) = slots.next().await {
        let to =
            serde_json::to_string(&cfg.users[(n as usize) % cfg.users.len()].0).unwrap_or_default();
        for attempt in 1..=3 {
            let sent_us = stats::now_us();
            let body = format!(
                r#"{{"tenant":{tenant},"from":{from},"to":{to},"body":"bench n{n} t{sent_us}"}}"#
            );
            let req = http::request(
                "POST",
                &target.host,
                "/api/messages",
                Some(&cfg.admin),
                Some(&body),
            );
            let t = Instant::now();
            match http::exchange(target.addr, &mut conn, &req).await {
                Ok((201, body)) => {
                    lock(&shared.post_latencies).push(us32(t.elapsed().as_micros() as u64));
                    shared.posted_ok.fetch_add(1, Relaxed);
                    match stream::body_json(&body)["id"].as_u64() {
                        Some(id) => {
                            lock(&shared.posted).insert(id, n);
                        }
                        None => {
                            shared.error(format!("201 without an id: {}", stream::snippet(&body)))
                        }
                    }
                    break;
                }
                Ok((status, body)) => {
                    shared.post_errors.fetch_add(1, Relaxed);
                    shared.error(format!("POST HTTP {status}: {}", stream::snippet(&body)));
                    if status < 500 || attempt == 3 {
                        shared.post_failed.fetch_add(1, Relaxed);
                        break;
                    }
                }
                Err(e) => {
                    // The message may or may not have been stored; a retry
                    // could then deliver it twice, which the run would count.
                    conn = None;
                    shared.post_errors.fetch_add(1, Relaxed);
                    shared.error(format!("POST io: {e}"));
                    if attempt == 3 {
                        shared.post_failed.fetch_add(1, Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Runs `messages`.
pub async fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu0 = stats::cpu_secs();
    let t0 = Instant::now();
    let nodes: Vec<&str> = cfg.targets.iter().map(|t| t.host.as_str()).collect();
    println!(
        "messages: {} user streams over {} node(s) ({}), then POST /api/messages at {} /s",
        cfg.users.len(),
        nodes.len(),
        nodes.join(", "),
        if cfg.rate > 0.0 {
            cfg.rate.to_string()
        } else {
            "max".into()
        }
    );

    // Ramp: every user's stream, at --ramp-per-sec.
    let mut streams = Vec::with_capacity(cfg.users.len());
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_print = Instant::now();
    loop {
        let resolved = shared.established.load(Relaxed) + shared.failed.load(Relaxed);
        if streams.len() == cfg.users.len() && resolved as usize >= cfg.users.len() {
            break;
        }
        let due = if cfg.ramp_per_sec > 0.0 {
            ((t0.elapsed().as_secs_f64() * cfg.ramp_per_sec) as usize + 1).min(cfg.users.len())
        } else {
            cfg.users.len()
        };
        for i in streams.len()..due {
            streams.push(tokio::spawn(user_stream(
                cfg.clone(),
                shared.clone(),
                i,
                stop_rx.clone(),
            )));
        }
        tick.tick().await;
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!(
                "[{:6.1}s] streams established {} failed {}",
                t0.elapsed().as_secs_f64(),
                shared.established.load(Relaxed),
                shared.failed.load(Relaxed)
            );
            last_print = Instant::now();
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err("streams did not all resolve within 300 s".into());
        }
    }
    let ramp_secs = t0.elapsed().as_secs_f64();
    println!(
        "ramp complete: {} established, {} failed in {:.2}s",
        shared.established.load(Relaxed),
        shared.failed.load(Relaxed),
        ramp_secs
    );
    if shared.established.load(Relaxed) == 0 {
        let errors = lock(&shared.errors).clone();
        return Err(format!("no stream could be opened: {errors:?}"));
    }
    // Let every session finish its snapshot before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Publishing.
    let p = shared.clone();
    let t_pub = Instant::now();
    let mut last = 0u64;
    let (slots, pacer) = stream::slots(
        cfg.rate,
        cfg.count,
        cfg.duration,
        cfg.concurrency,
        move |t| {
            let ok = p.posted_ok.load(Relaxed);
            println!(
                "[pub {t:5.1}s] posted {ok} ({}/s) errors {} delivered {} open {}",
                ok - last,
                p.post_errors.load(Relaxed),
                p.delivered.load(Relaxed),
                p.open.load(Relaxed)
            );
            last = ok;
        },
    );
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|w| tokio::spawn(poster(cfg.clone(), shared.clone(), slots.clone(), w)))
        .collect();
    drop(slots);
    let paced = pacer.await.map_err(|e| e.to_string())?;
    for w in workers {
        let _ = w.await;
    }
    let publish_secs = t_pub.elapsed().as_secs_f64();
    let posted_ok = shared.posted_ok.load(Relaxed);
    println!(
        "publishing done: {posted_ok} posted in {publish_secs:.2}s; waiting up to {:.0}s for deliveries",
        cfg.settle.as_secs_f64()
    );

    // Settle: wait for every posted message to arrive somewhere.
    let settle0 = Instant::now();
    while settle0.elapsed() < cfg.settle {
        let unique = lock(&shared.seen).len() as u64;
        if unique >= posted_ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer, so that late duplicates would be seen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_at_end = shared.open.load(Relaxed);
    let _ = stop_tx.send(true);
    for s in streams {
        let _ = s.await;
    }
    let cpu = stats::cpu_secs() - cpu0;

    // Accounting.
    let posted = std::mem::take(&mut *lock(&shared.posted));
    let seen = std::mem::take(&mut *lock(&shared.seen));
    let mut once = 0u64;
    let mut duplicated = 0u64;
    let mut wrong = 0u64;
    let mut missing = 0u64;
    for id in posted.keys() {
        match seen.get(id) {
            None => missing += 1,
            Some(s) => {
                if s.count == 1 {
                    once += 1;
                } else {
                    duplicated += 1;
                }
                if s.wrong_stream {
                    wrong += 1;
                }
            }
        }
    }
    let unexpected = seen.keys().filter(|id| !posted.contains_key(id)).count() as u64;
    let extra_copies: u64 = seen
        .values()
        .map(|s| u64::from(s.count.saturating_sub(1)))
        .sum();
    let lat = Latency::of(&mut lock(&shared.latencies));
    let post_lat = Latency::of(&mut lock(&shared.post_latencies));
    let errors = lock(&shared.errors).clone();
    let achieved = posted_ok as f64 / paced.secs.max(1e-9);
    let exactly_once = missing == 0
        && duplicated == 0
        && unexpected == 0
        && wrong == 0
        && shared.post_failed.load(Relaxed) == 0;

    println!("--- summary ---");
    println!(
        "streams: {} users, {} established, {} failed, {} open at end (ramp {ramp_secs:.2}s)",
        cfg.users.len(),
        shared.established.load(Relaxed),
        shared.failed.load(Relaxed),
        open_at_end
    );
    for (e, n) in &errors {
        println!("  error x{n}: {e}");
    }
    println!(
        "posted {posted_ok} messages in {:.2}s: {achieved:.1}/s (target {}), {} errors, {} given up, {} ticks missed",
        paced.secs,
        if cfg.rate > 0.0 { format!("{}/s", cfg.rate) } else { "max".into() },
        shared.post_errors.load(Relaxed),
        shared.post_failed.load(Relaxed),
        paced.missed
    );
    println!("POST latency: {}", post_lat.line());
    println!("POST -> message event latency: {}", lat.line());
    println!(
        "delivery: {} message events; {once} of {} posted arrived exactly once, {duplicated} more than once ({extra_copies} extra copies), {missing} never, {wrong} on a wrong stream, {unexpected} unknown ids; {} unread events, {} snapshots, {} other, {} unparsable",
        shared.delivered.load(Relaxed),
        posted.len(),
        shared.unread_events.load(Relaxed),
        shared.snapshots.load(Relaxed),
        shared.other_frames.load(Relaxed),
        shared.bad_events.load(Relaxed)
    );
    println!("exactly once: {}", if exactly_once { "yes" } else { "NO" });
    println!("loadgen CPU: {cpu:.2}s");

    if let Some(path) = &cfg.report {
        let report = json!({
            "mode": "messages",
            "urls": nodes,
            "users": cfg.users.len(),
            "established": shared.established.load(Relaxed),
            "failed": shared.failed.load(Relaxed),
            "open_at_end": open_at_end,
            "errors": errors,
            "target_rate": cfg.rate,
            "concurrency": cfg.concurrency,
            "posted_ok": posted_ok,
            "post_errors": shared.post_errors.load(Relaxed),
            "post_failed": shared.post_failed.load(Relaxed),
            "issued": paced.issued,
            "missed_ticks": paced.missed,
            "publish_secs": paced.secs,
            "achieved_rate": achieved,
            "post_latency": post_lat.json(),
            "latency": lat.json(),
            "message_events": shared.delivered.load(Relaxed),
            "exactly_once_count": once,
            "duplicated": duplicated,
            "extra_copies": extra_copies,
            "missing": missing,
            "wrong_stream": wrong,
            "unknown_ids": unexpected,
            "exactly_once": exactly_once,
            "unread_events": shared.unread_events.load(Relaxed),
            "snapshots": shared.snapshots.load(Relaxed),
            "loadgen_cpu_secs": cpu,
        });
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {path}: {e}"))?;
        println!("report written to {path}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trip() {
        assert_eq!(
            parse_body("bench n17 t1700000000000001"),
            Some((17, 1_700_000_000_000_001))
        );
        assert_eq!(parse_body("hello"), None);
    }
}
