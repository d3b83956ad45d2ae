//! `redis-bus`: what a bus costs Redis, with Switchyard's shape of traffic
//! and without Switchyard: one publisher appends entries of `--payload-bytes`
//! at `--rate` per second, and `--readers` readers (each a node of a
//! deployment) take every one, through a Redis Stream (`XADD` capped with
//! `MAXLEN ~`, each reader `XREAD BLOCK` from its last id, as the bus does)
//! or through pub/sub (`PUBLISH`, each reader `SUBSCRIBE`d: what sharded
//! pub/sub, `SPUBLISH`/`SSUBSCRIBE`, does on the one server that holds a
//! shard). Reports entries published and received and what pub/sub lost;
//! the caller measures Redis' CPU around it (`bench.sh redis-bus`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::Args;

pub const REDIS_BUS_OPTS: &[&str] = &[
    "url",
    "mode",
    "readers",
    "rate",
    "duration-secs",
    "payload-bytes",
    "batch",
    "key",
    "report",
    "threads",
];

/// Runs the publisher and the readers, then prints and writes the report.
pub async fn run(a: &Args) -> Result<(), String> {
    let url = a.required("url")?;
    let mode = a.str_or("mode", "streams");
    let readers: usize = a.num("readers", 3)?;
    let rate: u64 = a.num("rate", 1_000)?;
    let secs: u64 = a.num("duration-secs", 10)?;
    let payload: usize = a.num("payload-bytes", 400)?;
    let batch: usize = a.num("batch", 1)?;
    let key = a.str_or("key", "loadgen:bus");
    if mode != "streams" && mode != "pubsub" {
        return Err("--mode is streams or pubsub".into());
    }
    let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..readers {
        let client = client.clone();
        let received = received.clone();
        let stop = stop.clone();
        let key = key.clone();
        let pubsub = mode == "pubsub";
        let ready = tokio::sync::oneshot::channel::<()>();
        tasks.push(tokio::spawn(async move {
            let r = if pubsub {
                read_pubsub(client, key, received, stop, ready.0).await
            } else {
                read_stream(client, key, received, stop, ready.0).await
            };
            if let Err(e) = r {
                eprintln!("reader: {e}");
            }
        }));
        let _ = ready.1.await;
    }
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let body = "x".repeat(payload);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(batch as f64 / rate as f64));
    let mut published = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let mut pipe = redis::pipe();
        for _ in 0..batch {
            if mode == "pubsub" {
                pipe.cmd("PUBLISH").arg(&key).arg(&body).ignore();
            } else {
                pipe.cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(100_000)
                    .arg("*")
                    .arg("b")
                    .arg(&body)
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        published += batch as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Let the readers take what is on its way.
    let want = published * readers as u64;
    let settle = Instant::now();
    while received.load(Ordering::Relaxed) < want && settle.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let got = received.load(Ordering::Relaxed);
    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
    let report = serde_json::json!({
        "mode": mode,
        "readers": readers,
        "published": published,
        "received": got,
        "lost": want.saturating_sub(got),
        "entries_per_sec": published as f64 / elapsed,
        "deliveries_per_sec": got as f64 / elapsed,
        "payload_bytes": payload,
    });
    println!("summary: {report}");
    if let Some(path) = a.opt("report") {
        std::fs::write(path, report.to_string()).map_err(|e| e.to_string())?;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn read_stream(
    client: redis::Client,
    key: String,
    received: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> redis::RedisResult<()> {
    use redis::streams::{StreamReadOptions, StreamReadReply};
    use redis::AsyncCommands;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut last = "$".to_string();
    let opts = StreamReadOptions::default().block(500).count(1_000);
    let _ = ready.send(());
    while !stop.load(Ordering::Relaxed) {
        let reply: Option<StreamReadReply> = conn.xread_options(&[&key], &[&last], &opts).await?;
        for s in reply.into_iter().flat_map(|r| r.keys) {
            received.fetch_add(s.ids.len() as u64, Ordering::Relaxed);
            if let Some(e) = s.ids.last() {
                last = e.id.clone();
            }
        }
    }
    Ok(())
}

async fn read_pubsub(
    client: redis::Client,
    key: String,
    received: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt;
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&key).await?;
    let _ = ready.send(());
    let mut messages = pubsub.on_message();
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(500), messages.next()).await {
            Ok(Some(_)) => {
                received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    Ok(())
}
