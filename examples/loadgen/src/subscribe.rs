//! `subscribe` and `idle`: many SSE connections from one process.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::Args;
use crate::http::{self, Decoder, Target};
use crate::sse::{self, Frame};
use crate::stats::{self, BitSet, Latency};

/// What one run does.
pub struct Config {
    target: Target,
    path: String,
    /// One request per shape: connection `i` sends `requests[i % len]`.
    requests: Vec<Vec<u8>>,
    clients: usize,
    ramp_per_sec: f64,
    /// Measured phase after the ramp; `None` runs until interrupted.
    duration: Option<Duration>,
    expect: Option<u64>,
    report: Option<String>,
    connect_timeout: Duration,
    idle: bool,
}

/// Options `subscribe` accepts.
pub const SUBSCRIBE_OPTS: &[&str] = &[
    "url",
    "path",
    "clients",
    "ramp-per-sec",
    "duration-secs",
    "expect-count",
    "report",
    "last-event-id",
    "connect-timeout-secs",
    "shapes",
    "threads",
];

/// Options `idle` accepts.
pub const IDLE_OPTS: &[&str] = &[
    "url",
    "path",
    "tokens",
    "clients",
    "ramp-per-sec",
    "duration-secs",
    "report",
    "connect-timeout-secs",
    "threads",
];

impl Config {
    /// Builds the configuration from the command line.
    pub async fn from_args(a: &Args, idle: bool) -> Result<Config, String> {
        let target = http::target(&a.str_or("url", "http://127.0.0.1:8080")).await?;
        let path = a.required("path")?;
        if !path.starts_with('/') {
            return Err(format!("--path must start with '/', got {path:?}"));
        }
        // `{shape}` in the path: connection i asks for shape i % shapes.
        let shapes: usize = a.num("shapes", 1)?;
        if shapes == 0 || (shapes > 1 && !path.contains("{shape}")) {
            return Err("--shapes K needs K >= 1 and a {shape} in --path".into());
        }
        // `--tokens FILE` (lines `USER TOKEN`): connection i signs in as
        // user i % users.
        let tokens: Vec<String> = match a.opt("tokens") {
            None => Vec::new(),
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| format!("--tokens {file}: {e}"))?
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                .collect(),
        };
        if a.opt("tokens").is_some() && (tokens.is_empty() || shapes > 1) {
            return Err("--tokens needs a file of `USER TOKEN` lines, and no --shapes".into());
        }
        let requests = (0..shapes.max(tokens.len()))
            .map(|k| {
                let mut request = format!(
                    "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: switchyard-loadgen\r\n",
                    path.replace("{shape}", &k.to_string()),
                    target.host
                );
                if let Some(token) = tokens.get(k) {
                    request.push_str(&format!("Authorization: Bearer {token}\r\n"));
                }
                if let Some(id) = a.opt("last-event-id") {
                    request.push_str(&format!("Last-Event-ID: {id}\r\n"));
                }
                request.push_str("\r\n");
                request.into_bytes()
            })
            .collect();
        let secs: f64 = a.num("duration-secs", if idle { 0.0 } else { 30.0 })?;
        Ok(Config {
            target,
            path,
            requests,
            clients: a.num("clients", 1)?,
            ramp_per_sec: a.num("ramp-per-sec", 1000.0)?,
            duration: (secs > 0.0).then(|| Duration::from_secs_f64(secs)),
            expect: a.num_opt("expect-count")?,
            report: a.opt("report").map(str::to_string),
            connect_timeout: Duration::from_secs_f64(a.num("connect-timeout-secs", 10.0)?),
            idle,
        })
    }
}

/// Counters every connection updates.
#[derive(Default)]
struct Shared {
    established: AtomicU64,
    failed: AtomicU64,
    open: AtomicU64,
    events: AtomicU64,
    /// Connection tasks not yet finished.
    active: AtomicU64,
    closed_by_server: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn error(&self, what: String) {
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(what).or_default() += 1;
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct ConnStats {
    established: bool,
    events: u64,
    latencies: Vec<u32>,
    duplicates: u64,
    out_of_order: u64,
    last_id: Option<u64>,
    /// The last numeric `id:` line, including id-only frames.
    sse_last_id: Option<u64>,
    seen_n: BitSet,
    min_n: Option<u64>,
    max_n: u64,
    shutdown_frames: u64,
    resets: u64,
    snapshots: u64,
    other_frames: u64,
    bad_json: u64,
    started: Option<Instant>,
    first_event: Option<Instant>,
    last_event: Option<Instant>,
    /// When `--expect-count` events had arrived.
    done: Option<Instant>,
}

impl ConnStats {
    fn on_frame(&mut self, f: &Frame<'_>, shared: &Shared) {
        match f.event {
            b"shutdown" => self.shutdown_frames += 1,
            b"reset" => self.resets += 1,
            b"snapshot" => self.snapshots += 1,
            _ => {}
        }
        let sse_id =
            f.id.and_then(|i| std::str::from_utf8(i).ok())
                .and_then(|i| i.parse::<u64>().ok());
        if sse_id.is_some() {
            self.sse_last_id = sse_id;
        }
        // A frame with `id:` and no data only moves the last id.
        let Some(data) = f.data else { return };
        let fields = match Fields::fast(data) {
            Some(f) => f,
            None => match Fields::parse(data) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    if !matches!(f.event, b"shutdown" | b"reset" | b"snapshot" | b"heartbeat") {
                        self.other_frames += 1;
                    }
                    return;
                }
                Err(()) => {
                    self.bad_json += 1;
                    return;
                }
            },
        };
        let (sent_us, n) = (fields.sent_us, fields.n);
        let now = Instant::now();
        let lat = stats::now_us().saturating_sub(sent_us);
        self.latencies.push(lat.min(u64::from(u32::MAX)) as u32);
        self.events += 1;
        shared.events.fetch_add(1, Relaxed);
        self.first_event.get_or_insert(now);
        self.last_event = Some(now);

        let fresh_n = n.and_then(|n| self.seen_n.insert(n));
        if let Some(n) = n {
            self.min_n = Some(self.min_n.map_or(n, |m| m.min(n)));
        }
        match fields.id.or(sse_id) {
            // The server's own ids: they must only increase.
            Some(id) => match self.last_id {
                Some(last) if id <= last => {
                    if fresh_n == Some(true) {
                        self.out_of_order += 1;
                    } else {
                        self.duplicates += 1;
                    }
                }
                _ => {
                    if fresh_n == Some(false) {
                        self.duplicates += 1;
                    }
                    self.last_id = Some(id);
                }
            },
            // No server id (nchan): order by the publisher's counter.
            None => {
                if let Some(n) = n {
                    if fresh_n == Some(false) {
                        self.duplicates += 1;
                    } else if n < self.max_n {
                        self.out_of_order += 1;
                    }
                }
            }
        }
        if let Some(n) = n {
            self.max_n = self.max_n.max(n);
        }
    }

    /// Publisher counters missing between the lowest and highest seen.
    fn missing(&self) -> u64 {
        match self.min_n {
            Some(min) => (self.max_n - min + 1).saturating_sub(self.seen_n.len()),
            None => 0,
        }
    }
}

/// What the load generator reads from an event's JSON.
#[derive(Debug, PartialEq)]
struct Fields {
    /// Top-level `id` (Switchyard's event id).
    id: Option<u64>,
    /// The publisher's counter.
    n: Option<u64>,
    /// The publisher's clock at send.
    sent_us: u64,
}

impl Fields {
    /// A scan for `"sent_us":`, `"n":` and `"id":` in the compact JSON this
    /// tool publishes, without building a tree (the subscriber's hot path).
    /// `None` if `sent_us` is not there; the caller then parses properly.
    fn fast(data: &[u8]) -> Option<Fields> {
        if data.first() != Some(&b'{') || data.last() != Some(&b'}') {
            return None;
        }
        Some(Fields {
            sent_us: number_after(data, b"\"sent_us\":")?,
            n: number_after(data, b"\"n\":"),
            id: number_after(data, b"\"id\":"),
        })
    }

    /// A full JSON parse: `data.sent_us` and `data.n` if `data` has
    /// `sent_us` (Switchyard), else the top-level ones (nchan relays the
    /// posted body). `Ok(None)`: valid JSON but no `sent_us`.
    fn parse(data: &[u8]) -> Result<Option<Fields>, ()> {
        let v: Value = serde_json::from_slice(data).map_err(|_| ())?;
        let payload = match v.get("data") {
            Some(d) if d.get("sent_us").is_some() => d,
            _ => &v,
        };
        let Some(sent_us) = payload.get("sent_us").and_then(Value::as_u64) else {
            return Ok(None);
        };
        Ok(Some(Fields {
            id: v.get("id").and_then(Value::as_u64),
            n: payload.get("n").and_then(Value::as_u64),
            sent_us,
        }))
    }
}

/// The unsigned integer right after the first occurrence of `key`.
fn number_after(data: &[u8], key: &[u8]) -> Option<u64> {
    let at = data.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = data[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&data[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn connection(
    cfg: Arc<Config>,
    index: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> ConnStats {
    let mut st = ConnStats {
        started: Some(Instant::now()),
        ..ConnStats::default()
    };
    match run_connection(&cfg, index, &shared, &mut stop, &mut st).await {
        Ok(()) => {}
        Err(e) => {
            let what = if st.established {
                format!("stream: {e}")
            } else {
                shared.failed.fetch_add(1, Relaxed);
                format!("connect: {e}")
            };
            shared.error(what);
        }
    }
    if st.established {
        shared.open.fetch_sub(1, Relaxed);
    }
    shared.active.fetch_sub(1, Relaxed);
    st
}

async fn run_connection(
    cfg: &Config,
    index: usize,
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    st: &mut ConnStats,
) -> io::Result<()> {
    let open = async {
        let mut s = TcpStream::connect(cfg.target.addr).await?;
        s.set_nodelay(true)?;
        s.write_all(&cfg.requests[index % cfg.requests.len()])
            .await?;
        let mut raw = BytesMut::with_capacity(2048);
        let head = http::read_head(&mut s, &mut raw).await?;
        Ok::<_, io::Error>((s, raw, head))
    };
    let (mut s, mut raw, head) = tokio::select! {
        biased;
        _ = stop.changed() => return Err(io::Error::other("stopped before connecting")),
        r = tokio::time::timeout(cfg.connect_timeout, open) => match r {
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
            Ok(r) => r?,
        },
    };
    if head.status != 200 {
        // Show the start of the error body, if it comes quickly.
        let mut dec = Decoder::new(&head);
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
    st.established = true;
    shared.established.fetch_add(1, Relaxed);
    shared.open.fetch_add(1, Relaxed);
    let mut dec = Decoder::new(&head);
    let mut parser = sse::Parser::default();
    let mut discard = Vec::new();
    loop {
        if cfg.idle {
            dec.decode(&mut raw, &mut discard)?;
            discard.clear();
        } else {
            dec.decode(&mut raw, parser.input())?;
            parser.process(|f| st.on_frame(f, shared));
            if let Some(k) = cfg.expect {
                if st.events >= k {
                    st.done = Some(Instant::now());
                    return Ok(());
                }
            }
        }
        if dec.done() {
            shared.closed_by_server.fetch_add(1, Relaxed);
            return Ok(());
        }
        if raw.capacity() - raw.len() < 1024 {
            raw.reserve(4096);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            r = s.read_buf(&mut raw) => {
                if r? == 0 {
                    shared.closed_by_server.fetch_add(1, Relaxed);
                    return Ok(());
                }
            }
        }
    }
}

/// Resolves when the process gets SIGINT or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn progress(t0: Instant, shared: &Shared, last_events: &mut u64, last_at: &mut Instant) {
    let events = shared.events.load(Relaxed);
    let dt = last_at.elapsed().as_secs_f64().max(1e-6);
    println!(
        "[{:6.1}s] open {} established {} failed {} events {} ({:.0}/s)",
        t0.elapsed().as_secs_f64(),
        shared.open.load(Relaxed),
        shared.established.load(Relaxed),
        shared.failed.load(Relaxed),
        events,
        (events - *last_events) as f64 / dt
    );
    *last_events = events;
    *last_at = Instant::now();
}

/// Runs `subscribe` or `idle`.
pub async fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let cpu0 = stats::cpu_secs();
    let t0 = Instant::now();
    println!(
        "{} {} connections to http://{}{} at {}/s",
        if cfg.idle { "idle:" } else { "subscribe:" },
        cfg.clients,
        cfg.target.host,
        cfg.path,
        cfg.ramp_per_sec
    );

    let mut handles: Vec<JoinHandle<ConnStats>> = Vec::with_capacity(cfg.clients);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_print = Instant::now();
    let mut last_events = 0;
    let mut interrupted_early = false;
    // Ramp: open connections at the requested rate, then wait for every
    // attempt to resolve.
    loop {
        let spawned = handles.len();
        let resolved = shared.established.load(Relaxed) + shared.failed.load(Relaxed);
        if spawned == cfg.clients && resolved as usize >= cfg.clients {
            break;
        }
        if spawned < cfg.clients {
            let due = if cfg.ramp_per_sec > 0.0 {
                ((t0.elapsed().as_secs_f64() * cfg.ramp_per_sec) as usize + 1).min(cfg.clients)
            } else {
                cfg.clients
            };
            for index in spawned..due {
                shared.active.fetch_add(1, Relaxed);
                handles.push(tokio::spawn(connection(
                    cfg.clone(),
                    index,
                    shared.clone(),
                    stop_rx.clone(),
                )));
            }
        } else if shared.active.load(Relaxed) == 0 {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut interrupt => { interrupted_early = true; break; }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            progress(t0, &shared, &mut last_events, &mut last_print);
        }
    }
    let ramp_secs = t0.elapsed().as_secs_f64();
    println!(
        "ramp complete: {} established, {} failed in {:.2}s",
        shared.established.load(Relaxed),
        shared.failed.load(Relaxed),
        ramp_secs
    );

    // Measured phase.
    let t1 = Instant::now();
    let mut open_reported = u64::MAX;
    if !interrupted_early {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut interrupt => break,
            }
            if cfg.duration.is_some_and(|d| t1.elapsed() >= d) {
                break;
            }
            if shared.active.load(Relaxed) == 0 {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(1) {
                let open = shared.open.load(Relaxed);
                if !cfg.idle
                    || open != open_reported
                    || last_print.elapsed() >= Duration::from_secs(10)
                {
                    progress(t0, &shared, &mut last_events, &mut last_print);
                    open_reported = open;
                }
            }
        }
    }
    let measured_secs = t1.elapsed().as_secs_f64();
    let open_at_end = shared.open.load(Relaxed);
    let _ = stop_tx.send(true);
    let mut conns = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(st) = h.await {
            conns.push(st);
        }
    }
    let cpu = stats::cpu_secs() - cpu0;
    summarize(
        &cfg,
        &shared,
        conns,
        ramp_secs,
        measured_secs,
        open_at_end,
        cpu,
    )
}

fn summarize(
    cfg: &Config,
    shared: &Shared,
    conns: Vec<ConnStats>,
    ramp_secs: f64,
    measured_secs: f64,
    open_at_end: u64,
    cpu_secs: f64,
) -> Result<(), String> {
    let mut latencies = Vec::with_capacity(conns.iter().map(|c| c.latencies.len()).sum());
    let (mut events, mut dups, mut ooo, mut missing) = (0u64, 0u64, 0u64, 0u64);
    let (mut shutdowns, mut resets, mut snapshots, mut other, mut bad_json) = (0, 0, 0, 0, 0);
    let mut incomplete = 0u64;
    let mut last_id_max: Option<u64> = None;
    let mut per_conn: Vec<u64> = Vec::new();
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut time_to_expect: Vec<f64> = Vec::new();
    for c in &conns {
        latencies.extend_from_slice(&c.latencies);
        events += c.events;
        dups += c.duplicates;
        ooo += c.out_of_order;
        missing += c.missing();
        shutdowns += c.shutdown_frames;
        resets += c.resets;
        snapshots += c.snapshots;
        other += c.other_frames;
        bad_json += c.bad_json;
        if let Some(id) = c.sse_last_id {
            last_id_max = Some(last_id_max.map_or(id, |m| m.max(id)));
        }
        if c.established {
            per_conn.push(c.events);
            if cfg.expect.is_some_and(|k| c.events < k) {
                incomplete += 1;
            }
        }
        if let Some(f) = c.first_event {
            first = Some(first.map_or(f, |x| x.min(f)));
        }
        if let Some(l) = c.last_event {
            last = Some(last.map_or(l, |x| x.max(l)));
        }
        if let (Some(s), Some(d)) = (c.started, c.done) {
            time_to_expect.push((d - s).as_secs_f64());
        }
    }
    per_conn.sort_unstable();
    time_to_expect.sort_by(f64::total_cmp);
    let lat = Latency::of(&mut latencies);
    let window = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if window > 0.0 {
        events as f64 / window
    } else {
        0.0
    };
    let errors = shared.errors.lock().map(|m| m.clone()).unwrap_or_default();

    println!("--- summary ---");
    println!(
        "connections: {} requested, {} established, {} failed, {} closed by server, {} open at end (ramp {:.2}s, measured {:.2}s)",
        cfg.clients,
        shared.established.load(Relaxed),
        shared.failed.load(Relaxed),
        shared.closed_by_server.load(Relaxed),
        open_at_end,
        ramp_secs,
        measured_secs
    );
    for (e, n) in &errors {
        println!("  error x{n}: {e}");
    }
    if !cfg.idle {
        println!(
            "events: {events} received, {rate:.0}/s over {window:.2}s (first to last event); per connection min {} median {} max {}",
            per_conn.first().copied().unwrap_or(0),
            per_conn.get(per_conn.len() / 2).copied().unwrap_or(0),
            per_conn.last().copied().unwrap_or(0)
        );
        println!("latency: {}", lat.line());
        println!(
            "duplicates {dups}, gaps (missing n) {missing}, out-of-order {ooo}, shutdown frames {shutdowns}, resets {resets}, snapshots {snapshots}, other frames {other}, bad JSON {bad_json}"
        );
        if let Some(id) = last_id_max {
            println!("highest numeric SSE id seen: {id}");
        }
        if let Some(k) = cfg.expect {
            println!("expect-count {k}: {incomplete} established connection(s) got fewer");
            if !time_to_expect.is_empty() {
                let med = time_to_expect[time_to_expect.len() / 2];
                let max = time_to_expect[time_to_expect.len() - 1];
                println!(
                    "time to {k} events: median {med:.3}s ({:.0} events/s), max {max:.3}s ({:.0} events/s)",
                    k as f64 / med,
                    k as f64 / max
                );
            }
        }
    }
    println!("loadgen CPU: {cpu_secs:.2}s");

    if let Some(path) = &cfg.report {
        let report = json!({
            "mode": if cfg.idle { "idle" } else { "subscribe" },
            "url": format!("http://{}", cfg.target.host),
            "path": cfg.path,
            "clients": cfg.clients,
            "established": shared.established.load(Relaxed),
            "failed": shared.failed.load(Relaxed),
            "closed_by_server": shared.closed_by_server.load(Relaxed),
            "open_at_end": open_at_end,
            "errors": errors,
            "ramp_secs": ramp_secs,
            "measured_secs": measured_secs,
            "events": events,
            "events_per_sec": rate,
            "event_window_secs": window,
            "latency": lat.json(),
            "duplicates": dups,
            "gaps": missing,
            "out_of_order": ooo,
            "shutdown_frames": shutdowns,
            "resets": resets,
            "snapshots": snapshots,
            "other_frames": other,
            "bad_json": bad_json,
            "last_sse_id_max": last_id_max,
            "expect_count": cfg.expect,
            "incomplete": incomplete,
            "time_to_expect_secs": {
                "min": time_to_expect.first(),
                "median": time_to_expect.get(time_to_expect.len() / 2),
                "max": time_to_expect.last(),
            },
            "loadgen_cpu_secs": cpu_secs,
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
    fn fields_from_both_shapes() {
        let sy = br#"{"id":42,"tenant":"demo","topic":"bench:1","type":"bench","data":{"n":7,"sent_us":1700000000000000,"pad":"xx"},"ts":1700000000000}"#;
        let nchan = br#"{"n":7,"sent_us":1700000000000000,"pad":"xx"}"#;
        for (data, id) in [(&sy[..], Some(42)), (&nchan[..], None)] {
            let want = Fields {
                id,
                n: Some(7),
                sent_us: 1_700_000_000_000_000,
            };
            assert_eq!(Fields::fast(data).as_ref(), Some(&want));
            assert_eq!(Fields::parse(data), Ok(Some(want)));
        }
        assert_eq!(Fields::fast(br#"{"reason":"bye"}"#), None);
        assert_eq!(Fields::parse(br#"{"reason":"bye"}"#), Ok(None));
        assert_eq!(Fields::parse(b"{nope"), Err(()));
    }
}
