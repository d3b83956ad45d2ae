//! `switchyard-loadgen`: a lean load generator for Switchyard and other SSE
//! servers (nginx + nchan). It speaks HTTP/1.1 by hand over
//! `tokio::net::TcpStream`, so one process holds ~19,000 connections with
//! little memory and CPU. It raises its soft open-file limit to the hard limit
//! at start and runs on one thread unless `--threads N` is given.
//!
//! ```text
//! switchyard-loadgen subscribe --url http://127.0.0.1:8080 \
//!     --path '/events?tenant=demo&topic=bench:1' --clients 1000 \
//!     [--ramp-per-sec 1000] [--duration-secs 30] [--expect-count K] \
//!     [--last-event-id ID] [--shapes K] [--report FILE.json]
//! switchyard-loadgen publish --url http://127.0.0.1:8080 --tenant demo \
//!     --topic bench:1 --token ADMIN --rate 100 --duration-secs 20 \
//!     [--count N] [--payload-bytes 64] [--concurrency 4] [--batch 1] [--keyed 0|1]
//!     [--report FILE.json]
//! switchyard-loadgen publish-nchan --url http://127.0.0.1:18080 \
//!     --channel bench1 --rate 100 --duration-secs 20 [same options as publish]
//! switchyard-loadgen idle --url http://127.0.0.1:8080 \
//!     --path '/events?tenant=demo&topic=idle' --clients 10000 [--duration-secs D]
//! switchyard-loadgen idle-tls --url https://127.0.0.1:8443 --ca CA.pem \
//!     --path '/events?tenant=demo&topic=idle:1' --clients 5000 [--h2-streams K]
//! switchyard-loadgen messages --url http://127.0.0.1:8080[,http://…] \
//!     --tokens USERS.txt --token ADMIN --rate 1000 --duration-secs 20 \
//!     [--users N] [--concurrency 32] [--settle-secs 10] [--report FILE.json]
//! switchyard-loadgen bids --url http://127.0.0.1:8080[,http://…] --token ADMIN \
//!     --products 1 --rate 0 --count 20000 [--bidders 8] [--concurrency 32] \
//!     [--settle-secs 30] [--check-status 1] [--report FILE.json]
//! switchyard-loadgen redis-bus --url redis://127.0.0.1:6379 --mode streams|pubsub \
//!     --readers 3 --rate 1000 [--duration-secs 10] [--payload-bytes 400] [--batch 1]
//!     [--key K] [--report FILE.json]
//! ```
//!
//! - `subscribe` opens `--clients` SSE connections at `--ramp-per-sec`, prints
//!   `ramp complete: …` once every attempt has succeeded or failed, then runs
//!   for `--duration-secs` (or until every connection has `--expect-count`
//!   events, or SIGINT/SIGTERM). For each event carrying `sent_us` (under
//!   `data`, as Switchyard wraps it, or at the top level, as nchan relays the
//!   posted body) it records latency = now − `sent_us`. Duplicates and order
//!   are checked by the server's `id` when the JSON has one, otherwise by the
//!   publisher's counter `n`; gaps are counters `n` missing between the lowest
//!   and highest seen on a connection. `event: shutdown`, `reset` and
//!   `snapshot` frames are counted. With `--last-event-id 0 --expect-count K`
//!   it measures replay: the time until K events have arrived. With
//!   `--shapes K`, `{shape}` in `--path` becomes `i % K` for connection `i`
//!   (K distinct subscription shapes, e.g. `&min_amount={shape}`).
//! - `publish` posts `{"tenant","topic","type":"bench","data":{"n","sent_us","pad"}}`
//!   to `POST /api/events` at a fixed rate (a ticker feeding `--concurrency`
//!   keep-alive connections; `--rate 0` means as fast as they go, with
//!   `--count`). Failed posts are retried with the same `n` (5xx and I/O
//!   errors, up to 3 attempts). `--batch N` posts N events per request to
//!   `POST /api/events/batch` (the rate is then requests per second);
//!   `--keyed 1` sends an `Idempotency-Key` per request, the same on a retry.
//! - `publish-nchan` posts the `data` object alone to `POST /pub/<channel>`.
//! - `idle` holds connections open and reports how many are open, to measure
//!   server memory per connection; it runs until SIGINT/SIGTERM unless
//!   `--duration-secs` is given.
//! - `idle-tls` does the same over TLS (rustls, trusting `--ca`): one
//!   HTTP/1.1 connection per stream, or with `--h2-streams K` HTTP/2 with K
//!   streams per connection (the server allows 200).
//! - `messages`: one `GET /events/users/{id}` per user with that user's token
//!   (`--tokens`: lines `USER TOKEN`), then `POST /api/messages` at a fixed
//!   rate to the users in turn; POST → `message` event latency and a check
//!   that every message arrives exactly once, on its recipient's stream.
//! - `bids`: creates products, watches their streams, posts bids (fixed rate,
//!   or `--rate 0` as fast as 202s come back); decisions/s, POST →
//!   `bid.accepted` latency, and every bid's final status.
//! - `redis-bus`: Redis alone, with the bus's shape of traffic: a publisher
//!   appending entries (`XADD`, or `PUBLISH`) at a fixed rate and `--readers`
//!   readers taking every one (`XREAD BLOCK`, or `SUBSCRIBE`); entries
//!   published and received, and what pub/sub lost.
//!
//! `messages` and `bids` take several comma-separated `--url`s (cluster
//! nodes): streams and POST connections are spread over them in turn.
//!
//! Every subcommand writes a JSON summary with `--report FILE.json`.

mod args;
mod bids;
mod floor;
mod http;
mod idle_tls;
mod messages;
mod publish;
mod redis_bus;
mod sse;
mod stats;
mod stream;
mod subscribe;

use args::Args;

const USAGE: &str = "usage: switchyard-loadgen <subscribe|publish|publish-nchan|idle|idle-tls|messages|bids|floor> [--option value ...]
  subscribe     --url U --path P --clients N [--ramp-per-sec R] [--duration-secs D] [--expect-count K] [--last-event-id ID] [--shapes K] [--report F]
  publish       --url U --tenant T --topic X --token ADMIN --rate RPS (--duration-secs D | --count N) [--payload-bytes B] [--concurrency C] [--batch N] [--keyed 0|1] [--report F]
  publish-nchan --url U --channel CH --rate EPS (--duration-secs D | --count N) [--payload-bytes B] [--concurrency C] [--report F]
  idle          --url U --path P --clients N [--ramp-per-sec R] [--duration-secs D] [--tokens FILE]
  idle-tls      --url https://H:P --ca CA.pem --path P --clients N [--h2-streams K] [--ramp-per-sec R] [--duration-secs D]
  messages      --url U[,U2] --tokens FILE --token ADMIN --rate MPS (--duration-secs D | --count N) [--users N] [--tenant T] [--concurrency C] [--ramp-per-sec R] [--settle-secs S] [--report F]
  bids          --url U[,U2] --token ADMIN (--duration-secs D | --count N) [--rate BPS (0: max)] [--products P] [--bidders B] [--tenant T] [--concurrency C] [--settle-secs S] [--check-status 0|1] [--report F]
  redis-bus     --url redis://H:P [--mode streams|pubsub] [--readers R] [--rate EPS] [--duration-secs D] [--payload-bytes B] [--batch N] [--key K] [--report F]
  floor         [--listen ADDR] [--nodelay 1|0] (a minimal SSE server: GET subscribes, POST is sent to every subscriber)
  all: [--threads T] (default 1: a current-thread runtime)";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = real_main(&argv) {
        eprintln!("error: {e}");
        if e.starts_with("unknown subcommand") || e.starts_with("expected") {
            eprintln!("{USAGE}");
        }
        std::process::exit(2);
    }
}

fn real_main(argv: &[String]) -> Result<(), String> {
    let Some(cmd) = argv.first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let rest = &argv[1..];
    let allowed = match cmd.as_str() {
        "subscribe" => subscribe::SUBSCRIBE_OPTS,
        "idle" => subscribe::IDLE_OPTS,
        "idle-tls" => idle_tls::IDLE_TLS_OPTS,
        "publish" => publish::PUBLISH_OPTS,
        "publish-nchan" => publish::PUBLISH_NCHAN_OPTS,
        "messages" => messages::MESSAGES_OPTS,
        "bids" => bids::BIDS_OPTS,
        "floor" => floor::FLOOR_OPTS,
        "redis-bus" => redis_bus::REDIS_BUS_OPTS,
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return Ok(());
        }
        other => return Err(format!("unknown subcommand {other:?}")),
    };
    let a = Args::parse(rest, allowed)?;
    let nofile = stats::raise_nofile();
    if cmd == "floor" {
        return floor::run(&a);
    }
    if let ("subscribe" | "idle" | "idle-tls" | "messages", Ok(n)) = (
        cmd.as_str(),
        a.num::<u64>(
            if cmd == "messages" {
                "users"
            } else {
                "clients"
            },
            1,
        ),
    ) {
        if n + 64 > nofile {
            eprintln!(
                "warning: {n} clients but the open-file limit is {nofile}; run several processes"
            );
        }
    }
    let threads: usize = a.num("threads", 1)?;
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        match cmd.as_str() {
            "subscribe" => subscribe::run(subscribe::Config::from_args(&a, false).await?).await,
            "idle" => subscribe::run(subscribe::Config::from_args(&a, true).await?).await,
            "idle-tls" => idle_tls::run(&a).await,
            "publish" => publish::run(publish::Config::from_args(&a, false).await?).await,
            "messages" => messages::run(messages::Config::from_args(&a).await?).await,
            "bids" => bids::run(bids::Config::from_args(&a).await?).await,
            "redis-bus" => redis_bus::run(&a).await,
            _ => publish::run(publish::Config::from_args(&a, true).await?).await,
        }
    })
}
