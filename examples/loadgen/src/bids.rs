//! `bids`: bid decisions per second, POST → `bid.accepted` latency, and a
//! check that every bid is decided exactly once.
//!
//! The run creates `--products` products (seller `bench-seller`, starting
//! price 1, increment 1, no end), opens each product's stream
//! (`GET /events/products/{id}`) and, with the admin token, streams of the
//! bidders' `user:` topics (where `bid.rejected` goes). Bid `k` goes to
//! product `k % products` from bidder `(k / products) % bidders` with amount
//! `k / products + 1`, so each product sees increasing amounts: in arrival
//! order they are accepted, and a bid overtaken in flight by a later one is
//! rejected `too_low`. Bids go out at `--rate` per second, or with `--rate 0`
//! as fast as `--concurrency` connections get their 202s.
//!
//! Decisions are seen twice: as `bid.accepted` / `bid.rejected` events
//! (matched by `bid_id`), and, after the run, as each bid's status from
//! `GET /api/bids/{id}` (with `decided_at`). Decisions/s is decided bids over
//! the time from the first 202 to the last decision. Latency is the stream's
//! clock at `bid.accepted` minus the clock just before the POST was written.

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

/// Options `bids` accepts.
pub const BIDS_OPTS: &[&str] = &[
    "url",
    "token",
    "tenant",
    "products",
    "bidders",
    "rate",
    "count",
    "duration-secs",
    "concurrency",
    "settle-secs",
    "check-status",
    "status-concurrency",
    "connect-timeout-secs",
    "report",
    "threads",
];

/// Topics per admin stream (the server's limit).
const TOPICS_PER_STREAM: usize = 32;

/// What one run does.
pub struct Config {
    targets: Vec<Target>,
    admin: String,
    tenant: String,
    products: usize,
    bidders: usize,
    rate: f64,
    count: Option<u64>,
    duration: Option<Duration>,
    concurrency: usize,
    settle: Duration,
    check_status: bool,
    status_concurrency: usize,
    connect_timeout: Duration,
    report: Option<String>,
}

impl Config {
    /// Builds the configuration from the command line.
    pub async fn from_args(a: &Args) -> Result<Config, String> {
        let secs: f64 = a.num("duration-secs", 0.0)?;
        let count: Option<u64> = a.num_opt("count")?;
        if secs <= 0.0 && count.is_none() {
            return Err("give --duration-secs or --count (or both)".into());
        }
        let products: usize = a.num("products", 1)?;
        let bidders: usize = a.num("bidders", 8)?;
        let concurrency: usize = a.num("concurrency", 32)?;
        if products == 0 || bidders == 0 || concurrency == 0 {
            return Err("--products, --bidders and --concurrency must be at least 1".into());
        }
        Ok(Config {
            targets: http::targets(&a.str_or("url", "http://127.0.0.1:8080")).await?,
            admin: a.required("token")?,
            tenant: a.str_or("tenant", "demo"),
            products,
            bidders,
            rate: a.num("rate", 0.0)?,
            count,
            duration: (secs > 0.0).then(|| Duration::from_secs_f64(secs)),
            concurrency,
            settle: Duration::from_secs_f64(a.num("settle-secs", 30.0)?),
            check_status: a.num::<u8>("check-status", 1)? != 0,
            status_concurrency: a.num("status-concurrency", 16)?.max(1),
            connect_timeout: Duration::from_secs_f64(a.num("connect-timeout-secs", 10.0)?),
            report: a.opt("report").map(str::to_string),
        })
    }

    fn bidder(&self, j: usize) -> String {
        format!("bidder{j}")
    }
}

/// A bid the server took (202).
struct Submitted {
    /// Index into the products.
    product: usize,
    /// Wall clock just before the POST, µs.
    sent_us: u64,
}

/// Decision events seen for one bid.
#[derive(Default)]
struct Decided {
    accepted: u32,
    rejected: u32,
    /// First decision event, µs since the epoch.
    at_us: u64,
}

#[derive(Default)]
struct Shared {
    streams_open: AtomicU64,
    streams_failed: AtomicU64,
    ok: AtomicU64,
    post_errors: AtomicU64,
    post_failed: AtomicU64,
    first_202_us: AtomicU64,
    last_202_us: AtomicU64,
    accepted_events: AtomicU64,
    rejected_events: AtomicU64,
    outbid_events: AtomicU64,
    other_events: AtomicU64,
    bad_events: AtomicU64,
    submitted: Mutex<HashMap<String, Submitted>>,
    decided: Mutex<HashMap<String, Decided>>,
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

fn on_frame(f: &Frame<'_>, shared: &Shared) {
    let accepted = match f.event {
        b"bid.accepted" => true,
        b"bid.rejected" => false,
        b"bid.outbid" => {
            shared.outbid_events.fetch_add(1, Relaxed);
            return;
        }
        // Keep-alive: it only moves the last id.
        b"heartbeat" => return,
        _ => {
            if f.data.is_some() {
                shared.other_events.fetch_add(1, Relaxed);
            }
            return;
        }
    };
    let now = stats::now_us();
    let v: Value = f
        .data
        .and_then(|d| serde_json::from_slice(d).ok())
        .unwrap_or(Value::Null);
    let Some(bid) = v["data"]["bid_id"].as_str() else {
        shared.bad_events.fetch_add(1, Relaxed);
        return;
    };
    let mut decided = lock(&shared.decided);
    let d = decided.entry(bid.to_string()).or_default();
    if d.accepted + d.rejected == 0 {
        d.at_us = now;
    }
    if accepted {
        d.accepted += 1;
        shared.accepted_events.fetch_add(1, Relaxed);
    } else {
        d.rejected += 1;
        shared.rejected_events.fetch_add(1, Relaxed);
    }
}

async fn watch_stream(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    target: usize,
    path: String,
    token: bool,
    mut stop: watch::Receiver<bool>,
    ready: Arc<AtomicU64>,
) {
    let target = &cfg.targets[target % cfg.targets.len()];
    let mut up = false;
    let r = stream::sse(
        target,
        &path,
        token.then_some(cfg.admin.as_str()),
        cfg.connect_timeout,
        &mut stop,
        || {
            up = true;
            shared.streams_open.fetch_add(1, Relaxed);
            ready.fetch_add(1, Relaxed);
        },
        |f| on_frame(f, &shared),
    )
    .await;
    if let Err(e) = r {
        if !up {
            shared.streams_failed.fetch_add(1, Relaxed);
            ready.fetch_add(1, Relaxed);
        }
        shared.error(format!("stream {path}: {e}"));
    }
    if up {
        shared.streams_open.fetch_sub(1, Relaxed);
    }
}

async fn create_products(cfg: &Config) -> Result<Vec<String>, String> {
    let target = &cfg.targets[0];
    let mut conn = None;
    let mut ids = Vec::with_capacity(cfg.products);
    let tenant = serde_json::to_string(&cfg.tenant).map_err(|e| e.to_string())?;
    for i in 0..cfg.products {
        let body = format!(
            r#"{{"tenant":{tenant},"seller_id":"bench-seller","title":"bench {i}","starting_price":1,"min_increment":1}}"#
        );
        let req = http::request(
            "POST",
            &target.host,
            "/api/products",
            Some(&cfg.admin),
            Some(&body),
        );
        let (status, body) = http::exchange(target.addr, &mut conn, &req)
            .await
            .map_err(|e| format!("POST /api/products: {e}"))?;
        let id = stream::body_json(&body)["id"].as_str().map(str::to_string);
        match (status, id) {
            (201, Some(id)) => ids.push(id),
            _ => {
                return Err(format!(
                    "POST /api/products: HTTP {status} {}",
                    stream::snippet(&body)
                ))
            }
        }
    }
    Ok(ids)
}

async fn bidder(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    products: Arc<Vec<String>>,
    slots: stream::Slots,
    w: usize,
) {
    let target = &cfg.targets[w % cfg.targets.len()];
    let mut conn: Option<http::Conn> = None;
    let p = cfg.products as u64;
    while let Some(k) = slots.next().await {
        let product = (k % p) as usize;
        let round = k / p;
        let bidder = cfg.bidder((round as usize) % cfg.bidders);
        let amount = round + 1;
        let path = format!("/api/products/{}/bids", products[product]);
        let body =
            format!(r#"{{"bidder_id":"{bidder}","amount":{amount},"idempotency_key":"lg-{k}"}}"#);
        let req = http::request("POST", &target.host, &path, Some(&cfg.admin), Some(&body));
        for attempt in 1..=3 {
            let sent_us = stats::now_us();
            let t = Instant::now();
            match http::exchange(target.addr, &mut conn, &req).await {
                Ok((202, body)) => {
                    let now = stats::now_us();
                    lock(&shared.post_latencies).push(us32(t.elapsed().as_micros() as u64));
                    shared.ok.fetch_add(1, Relaxed);
                    let _ = shared
                        .first_202_us
                        .compare_exchange(0, now, Relaxed, Relaxed);
                    shared.last_202_us.fetch_max(now, Relaxed);
                    match stream::body_json(&body)["bid_id"].as_str() {
                        Some(id) => {
                            // A retried bid (same idempotency key) keeps its
                            // first send time.
                            lock(&shared.submitted)
                                .entry(id.to_string())
                                .or_insert(Submitted { product, sent_us });
                        }
                        None => shared
                            .error(format!("202 without a bid_id: {}", stream::snippet(&body))),
                    }
                    break;
                }
                Ok((status, body)) => {
                    shared.post_errors.fetch_add(1, Relaxed);
                    shared.error(format!(
                        "POST bid HTTP {status}: {}",
                        stream::snippet(&body)
                    ));
                    if status < 500 || attempt == 3 {
                        shared.post_failed.fetch_add(1, Relaxed);
                        break;
                    }
                }
                Err(e) => {
                    conn = None;
                    shared.post_errors.fetch_add(1, Relaxed);
                    shared.error(format!("POST bid io: {e}"));
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

/// Final statuses from `GET /api/bids/{id}`.
#[derive(Default)]
struct Statuses {
    accepted: u64,
    rejected: u64,
    queued: u64,
    other: u64,
    errors: u64,
    reasons: BTreeMap<String, u64>,
    /// Latest `decided_at`, ms.
    last_decided_ms: i64,
    /// Bid ids by status, to compare with the events.
    accepted_ids: Vec<String>,
}

async fn fetch_statuses(cfg: Arc<Config>, ids: Vec<String>) -> Statuses {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..cfg.status_concurrency {
        let (cfg, ids, next) = (cfg.clone(), ids.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let target = &cfg.targets[w % cfg.targets.len()];
            let mut conn = None;
            let mut st = Statuses::default();
            loop {
                let i = next.fetch_add(1, Relaxed) as usize;
                let Some(id) = ids.get(i) else { break };
                let req = http::request(
                    "GET",
                    &target.host,
                    &format!("/api/bids/{id}"),
                    Some(&cfg.admin),
                    None,
                );
                let v = match http::exchange(target.addr, &mut conn, &req).await {
                    Ok((200, body)) => stream::body_json(&body),
                    _ => {
                        conn = None;
                        st.errors += 1;
                        continue;
                    }
                };
                match v["status"].as_str() {
                    Some("accepted") => {
                        st.accepted += 1;
                        st.accepted_ids.push(id.clone());
                    }
                    Some("rejected") => {
                        st.rejected += 1;
                        let r = v["reason"].as_str().unwrap_or("?").to_string();
                        *st.reasons.entry(r).or_default() += 1;
                    }
                    Some("queued") => st.queued += 1,
                    _ => st.other += 1,
                }
                if let Some(d) = v["decided_at"].as_i64() {
                    st.last_decided_ms = st.last_decided_ms.max(d);
                }
            }
            st
        }));
    }
    let mut all = Statuses::default();
    for t in tasks {
        if let Ok(st) = t.await {
            all.accepted += st.accepted;
            all.rejected += st.rejected;
            all.queued += st.queued;
            all.other += st.other;
            all.errors += st.errors;
            for (r, n) in st.reasons {
                *all.reasons.entry(r).or_default() += n;
            }
            all.last_decided_ms = all.last_decided_ms.max(st.last_decided_ms);
            all.accepted_ids.extend(st.accepted_ids);
        }
    }
    all
}

/// Sum of the products' `bid_count` (accepted bids, as the products say).
async fn product_bid_counts(cfg: &Config, products: &[String]) -> Result<i64, String> {
    let target = &cfg.targets[0];
    let mut conn = None;
    let mut total = 0;
    for id in products {
        let req = http::request(
            "GET",
            &target.host,
            &format!("/api/products/{id}?tenant={}", cfg.tenant),
            Some(&cfg.admin),
            None,
        );
        let (status, body) = http::exchange(target.addr, &mut conn, &req)
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("GET product: HTTP {status}"));
        }
        total += stream::body_json(&body)["bid_count"].as_i64().unwrap_or(0);
    }
    Ok(total)
}

/// Runs `bids`.
pub async fn run(cfg: Config) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let shared = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let cpu0 = stats::cpu_secs();
    let nodes: Vec<&str> = cfg.targets.iter().map(|t| t.host.as_str()).collect();
    println!(
        "bids: {} product(s), {} bidders, over {} node(s) ({}), at {}, {} connection(s)",
        cfg.products,
        cfg.bidders,
        nodes.len(),
        nodes.join(", "),
        if cfg.rate > 0.0 {
            format!("{} bids/s", cfg.rate)
        } else {
            "max rate".into()
        },
        cfg.concurrency
    );
    let products = Arc::new(create_products(&cfg).await?);
    println!("created {} product(s)", products.len());

    // Streams: each product's, and the bidders' user topics (admin token).
    let ready = Arc::new(AtomicU64::new(0));
    let mut streams = Vec::new();
    for (i, id) in products.iter().enumerate() {
        let path = format!("/events/products/{id}?tenant={}", cfg.tenant);
        streams.push(tokio::spawn(watch_stream(
            cfg.clone(),
            shared.clone(),
            i,
            path,
            false,
            stop_rx.clone(),
            ready.clone(),
        )));
    }
    let bidders: Vec<String> = (0..cfg.bidders).map(|j| cfg.bidder(j)).collect();
    for (c, chunk) in bidders.chunks(TOPICS_PER_STREAM).enumerate() {
        let mut path = format!("/events?tenant={}", cfg.tenant);
        for b in chunk {
            path.push_str(&format!("&topic=user:{b}"));
        }
        streams.push(tokio::spawn(watch_stream(
            cfg.clone(),
            shared.clone(),
            c,
            path,
            true,
            stop_rx.clone(),
            ready.clone(),
        )));
    }
    let want = streams.len() as u64;
    let t_ramp = Instant::now();
    while ready.load(Relaxed) < want {
        if t_ramp.elapsed() > Duration::from_secs(60) {
            return Err("streams did not open within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if shared.streams_failed.load(Relaxed) > 0 {
        let errors = lock(&shared.errors).clone();
        return Err(format!("some streams failed: {errors:?}"));
    }
    println!("{want} streams open");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Bidding.
    let p = shared.clone();
    let mut last = 0u64;
    let (slots, pacer) = stream::slots(
        cfg.rate,
        cfg.count,
        cfg.duration,
        cfg.concurrency,
        move |t| {
            let ok = p.ok.load(Relaxed);
            println!(
                "[bid {t:5.1}s] 202 {ok} ({}/s) errors {} accepted events {} rejected events {}",
                ok - last,
                p.post_errors.load(Relaxed),
                p.accepted_events.load(Relaxed),
                p.rejected_events.load(Relaxed)
            );
            last = ok;
        },
    );
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|w| {
            tokio::spawn(bidder(
                cfg.clone(),
                shared.clone(),
                products.clone(),
                slots.clone(),
                w,
            ))
        })
        .collect();
    drop(slots);
    let paced = pacer.await.map_err(|e| e.to_string())?;
    for w in workers {
        let _ = w.await;
    }
    let ok = shared.ok.load(Relaxed);
    println!(
        "bidding done: {ok} bids queued; waiting up to {:.0}s for their decisions",
        cfg.settle.as_secs_f64()
    );
    let settle0 = Instant::now();
    let mut last_print = Instant::now();
    while settle0.elapsed() < cfg.settle {
        let decided = lock(&shared.decided).len() as u64;
        if decided >= ok {
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!("[settle] {decided} of {ok} decided");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    for s in streams {
        let _ = s.await;
    }

    // Accounting by events.
    let submitted = std::mem::take(&mut *lock(&shared.submitted));
    let decided = std::mem::take(&mut *lock(&shared.decided));
    let first_202 = shared.first_202_us.load(Relaxed);
    let last_202 = shared.last_202_us.load(Relaxed);
    let mut accept_lat = Vec::new();
    let mut decide_lat = Vec::new();
    let (mut once, mut twice, mut missing) = (0u64, 0u64, 0u64);
    let mut last_decision_us = 0u64;
    let mut accepted_by_event = 0u64;
    let mut per_product = vec![0u64; cfg.products];
    for (id, s) in &submitted {
        match decided.get(id) {
            None => missing += 1,
            Some(d) => {
                if d.accepted + d.rejected == 1 {
                    once += 1;
                } else {
                    twice += 1;
                }
                let lat = us32(d.at_us.saturating_sub(s.sent_us));
                decide_lat.push(lat);
                if d.accepted > 0 {
                    accept_lat.push(lat);
                    accepted_by_event += 1;
                    per_product[s.product] += 1;
                }
                last_decision_us = last_decision_us.max(d.at_us);
            }
        }
    }
    let unknown = decided
        .keys()
        .filter(|id| !submitted.contains_key(*id))
        .count() as u64;
    let events_window = last_decision_us.saturating_sub(first_202) as f64 / 1e6;
    let decided_by_events = once + twice;
    let accept = Latency::of(&mut accept_lat);
    let decide = Latency::of(&mut decide_lat);
    let post_lat = Latency::of(&mut lock(&shared.post_latencies));
    let submit_window = last_202.saturating_sub(first_202) as f64 / 1e6;
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };

    // Accounting by the store.
    let statuses = if cfg.check_status {
        println!("reading {} bids' statuses", submitted.len());
        Some(fetch_statuses(cfg.clone(), submitted.keys().cloned().collect()).await)
    } else {
        None
    };
    let bid_count_sum = product_bid_counts(&cfg, &products).await;
    let cpu = stats::cpu_secs() - cpu0;
    let errors = lock(&shared.errors).clone();

    println!("--- summary ---");
    for (e, n) in &errors {
        println!("  error x{n}: {e}");
    }
    println!(
        "bids: {ok} got 202 in {:.2}s ({:.0}/s; target {}), {} errors, {} given up, {} ticks missed",
        submit_window,
        rate(ok, submit_window),
        if cfg.rate > 0.0 { format!("{}/s", cfg.rate) } else { "max".into() },
        shared.post_errors.load(Relaxed),
        shared.post_failed.load(Relaxed),
        paced.missed
    );
    println!("POST latency (to 202): {}", post_lat.line());
    println!(
        "decisions by events: {decided_by_events} of {} bids in {events_window:.3}s from the first 202 = {:.0} decisions/s; last decision {:.3}s after the last 202",
        submitted.len(),
        rate(decided_by_events, events_window),
        last_decision_us.saturating_sub(last_202) as f64 / 1e6
    );
    println!(
        "events: {} bid.accepted, {} bid.rejected, {} bid.outbid, {} other, {} unparsable; per bid: {once} exactly once, {twice} more than once, {missing} none, {unknown} unknown ids",
        shared.accepted_events.load(Relaxed),
        shared.rejected_events.load(Relaxed),
        shared.outbid_events.load(Relaxed),
        shared.other_events.load(Relaxed),
        shared.bad_events.load(Relaxed)
    );
    println!("POST -> bid.accepted latency: {}", accept.line());
    println!("POST -> any decision event latency: {}", decide.line());
    let mut status_json = Value::Null;
    let mut consistent = missing == 0 && twice == 0 && unknown == 0;
    if let Some(st) = &statuses {
        let window = (st.last_decided_ms * 1000 - first_202 as i64).max(0) as f64 / 1e6;
        let n_decided = st.accepted + st.rejected;
        println!(
            "statuses: {} accepted, {} rejected {:?}, {} queued, {} other, {} unreadable; last decided_at {window:.3}s after the first 202 = {:.0} decisions/s",
            st.accepted,
            st.rejected,
            st.reasons,
            st.queued,
            st.other,
            st.errors,
            rate(n_decided, window)
        );
        // A bid the store says is accepted must have had its bid.accepted event.
        let mismatched = st
            .accepted_ids
            .iter()
            .filter(|id| {
                !decided
                    .get(*id)
                    .is_some_and(|d| d.accepted == 1 && d.rejected == 0)
            })
            .count();
        if mismatched > 0 {
            println!(
                "{mismatched} bids accepted in the store without exactly one bid.accepted event"
            );
        }
        consistent &= st.queued == 0
            && st.other == 0
            && st.errors == 0
            && n_decided == submitted.len() as u64
            && st.accepted == accepted_by_event
            && mismatched == 0;
        status_json = json!({
            "accepted": st.accepted,
            "rejected": st.rejected,
            "reasons": st.reasons,
            "queued": st.queued,
            "other": st.other,
            "unreadable": st.errors,
            "last_decided_after_first_202_secs": window,
            "decisions_per_sec": rate(n_decided, window),
        });
    }
    match &bid_count_sum {
        Ok(n) => {
            println!("products' bid_count sum: {n} (accepted by events: {accepted_by_event})");
            consistent &= *n as u64 == accepted_by_event;
        }
        Err(e) => println!("products' bid_count: {e}"),
    }
    println!(
        "every bid decided exactly once: {}",
        if consistent { "yes" } else { "NO" }
    );
    println!("loadgen CPU: {cpu:.2}s");

    if let Some(path) = &cfg.report {
        let report = json!({
            "mode": "bids",
            "urls": nodes,
            "products": cfg.products,
            "bidders": cfg.bidders,
            "target_rate": cfg.rate,
            "concurrency": cfg.concurrency,
            "errors": errors,
            "bids_202": ok,
            "post_errors": shared.post_errors.load(Relaxed),
            "post_failed": shared.post_failed.load(Relaxed),
            "issued": paced.issued,
            "missed_ticks": paced.missed,
            "submit_secs": submit_window,
            "submit_rate": rate(ok, submit_window),
            "post_latency": post_lat.json(),
            "decided_by_events": decided_by_events,
            "decision_window_secs": events_window,
            "decisions_per_sec": rate(decided_by_events, events_window),
            "drain_after_last_202_secs": last_decision_us.saturating_sub(last_202) as f64 / 1e6,
            "accepted_events": shared.accepted_events.load(Relaxed),
            "rejected_events": shared.rejected_events.load(Relaxed),
            "outbid_events": shared.outbid_events.load(Relaxed),
            "decided_exactly_once": once,
            "decided_more_than_once": twice,
            "undecided": missing,
            "unknown_ids": unknown,
            "accept_latency": accept.json(),
            "decision_latency": decide.json(),
            "statuses": status_json,
            "products_bid_count_sum": bid_count_sum.ok(),
            "accepted_per_product_min": per_product.iter().min(),
            "accepted_per_product_max": per_product.iter().max(),
            "consistent": consistent,
            "loadgen_cpu_secs": cpu,
        });
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {path}: {e}"))?;
        println!("report written to {path}");
    }
    Ok(())
}
