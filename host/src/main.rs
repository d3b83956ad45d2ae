//! The `switchyard` command line: `serve` (the default), `migrate`, `token`,
//! `plugin check|test|replay`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::{Config, Options};
use switchyard::plugins::Slot;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A real-time event router with exact resume"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

// Parsed once at start: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (what the bare `switchyard` does).
    Serve {
        #[command(flatten)]
        options: Options,
    },
    /// Apply database migrations and exit (serve also applies them at start).
    Migrate {
        #[command(flatten)]
        options: Options,
    },
    /// Mint a token (JWT, HS256) with this server's secret: a user's
    /// (`--sub`) or a publisher's (`--service` with `--publish`).
    Token {
        /// The user id (written to the configured user claim, `sub` by default).
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        sub: Option<String>,
        /// A publisher token for this service name.
        #[arg(long, requires = "publish")]
        service: Option<String>,
        /// Topic patterns the publisher may publish to, comma separated
        /// (`status:*,feed:*`, or whole topics).
        #[arg(long, requires = "service")]
        publish: Option<String>,
        /// The tenant slug.
        #[arg(long)]
        tenant: String,
        /// Lifetime: `90s`, `15m`, `1h`, `7d` (default: 1h for a user, 30d
        /// for a publisher).
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        options: Options,
    },
    /// Check, test or replay a plugin component without a server.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

// Parsed once at start: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum PluginCommand {
    /// Say which slot a component fits, and why not the others.
    Check {
        /// The component (`.wasm`).
        file: std::path::PathBuf,
    },
    /// Run recorded cases (see docs/plugins.md); exits non-zero on a mismatch.
    Test {
        /// The component (`.wasm`).
        file: std::path::PathBuf,
        /// The cases (`.json`).
        cases: std::path::PathBuf,
    },
    /// Time calls over recorded cases: per-call latency p50/p90/p99 (the
    /// inputs round-robin, instances reused, as in the server).
    Bench {
        /// The component (`.wasm`).
        file: std::path::PathBuf,
        /// The cases (`.json`); their `expect` is not checked.
        cases: std::path::PathBuf,
        /// Timed calls.
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a candidate over what the system of record holds and report
    /// where it differs: a bid validator over recorded decisions (vs the
    /// decisions taken), a notification shaper over recorded messages (vs
    /// the notifications sent), an event filter over recorded events for
    /// one subscription shape (vs the active filter, or none), a stream
    /// authorizer over recorded stream requests (vs the decisions taken).
    Replay {
        /// The candidate component (`.wasm`).
        file: std::path::PathBuf,
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// How many of the latest decisions, messages or stream requests
        /// (events: per tenant).
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Plugin configuration, `key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// Event filter: the subscription shape, `key=value` (repeatable).
        #[arg(long = "shape", value_name = "KEY=VALUE")]
        shape: Vec<String>,
        /// Event filter: only events of this topic.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        options: Options,
    },
}

/// What a command other than `plugin` does once the configuration is read.
enum Run {
    Serve,
    Migrate,
    Token {
        who: Subject,
        tenant: String,
        ttl: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let top = cli.options;
    let (run, sub) = match cli.command {
        Some(Command::Plugin { command }) => return plugin(command, top),
        None => (Run::Serve, Options::default()),
        Some(Command::Serve { options }) => (Run::Serve, options),
        Some(Command::Migrate { options }) => (Run::Migrate, options),
        Some(Command::Token {
            sub,
            service,
            publish,
            tenant,
            ttl,
            options,
        }) => {
            let who = match (sub, service) {
                (Some(sub), _) => Subject::User(sub),
                (None, Some(service)) => Subject::Service(service, publish.unwrap_or_default()),
                (None, None) => anyhow::bail!("--sub or --service is required"),
            };
            (Run::Token { who, tenant, ttl }, options)
        }
    };
    // Subcommand flags win; top-level flags fill the rest.
    let config = Config::load_layers([sub, top])?;
    let _log = switchyard::logging::init(config.log_json);
    switchyard::server::tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match run {
            Run::Token { who, tenant, ttl } => {
                let token = mint(&config, who, tenant, ttl).await?;
                out(&token)
            }
            Run::Migrate => {
                switchyard::backend(&config).await?;
                out(&format!("migrations applied ({} mode)", config.mode_name()))
            }
            Run::Serve => serve(config).await,
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(tls) = &config.tls {
        // Unusable files stop the start here, with one line, before the
        // node says it is listening.
        tls.load().map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        switchyard::shutdown::signal().await;
        tracing::info!("shutdown signal received; draining");
        trigger.cancel();
    });
    // One machine-readable line on stdout for scripts and tests.
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Written or not (a full disk, a closed pipe), the node serves.
    switchyard::logging::stdout_line(&format!("switchyard listening on {scheme}://{addr}"));
    switchyard::run(config, listener, shutdown)
        .await
        .map_err(anyhow::Error::from)
}

/// Who a minted token is for.
enum Subject {
    /// A user id.
    User(String),
    /// A service name and its topic patterns, comma separated.
    Service(String, String),
}

/// Mints a token with the secret the server uses.
async fn mint(
    config: &Config,
    who: Subject,
    tenant: String,
    ttl: Option<String>,
) -> anyhow::Result<String> {
    use switchyard::auth::{now_secs, parse_ttl, Claims, ServiceClaims};
    switchyard::event::validate_slug(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let default_ttl = match who {
        Subject::User(_) => "1h",
        Subject::Service(..) => "30d",
    };
    let ttl = parse_ttl(ttl.as_deref().unwrap_or(default_ttl))
        .context("--ttl must look like 90s, 15m, 1h or 7d")?;
    let now = now_secs();
    match who {
        Subject::User(sub) => {
            switchyard::http::access::validate_user_id(&sub, "sub")
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let keys = switchyard::client_keys(config).await?;
            Ok(keys.sign(&Claims {
                sub,
                tenant,
                exp: now + ttl,
                iat: now,
            }))
        }
        Subject::Service(service, publish) => {
            let publish = switchyard::auth::publish::split(&publish);
            let claims = ServiceClaims::new(&service, &tenant, publish, ttl, now)
                .map_err(|e| anyhow::anyhow!("--service/--publish: {e}"))?;
            let keys = switchyard::client_keys(config).await?;
            Ok(keys.sign_service(&claims))
        }
    }
}

/// `switchyard plugin …`: exits 1 when the component fits no slot, a case
/// fails, or a replay differs.
fn plugin(command: PluginCommand, top: Options) -> anyhow::Result<()> {
    use switchyard::plugins::cli;
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    // The log's writer, flushed before an exit.
    let mut log = None;
    let host = cli::host()?;
    let failed = match command {
        PluginCommand::Check { file } => {
            let (report, fits) = cli::check(&host, &read(&file)?)?;
            print!("{report}");
            !fits
        }
        PluginCommand::Test { file, cases } => {
            let cases: serde_json::Value =
                serde_json::from_slice(&read(&cases)?).context("the cases file is not JSON")?;
            let (report, failed) = cli::test(&host, &read(&file)?, &cases)?;
            print!("{report}");
            failed > 0
        }
        PluginCommand::Bench {
            file,
            cases,
            calls,
            json,
        } => {
            let cases: serde_json::Value =
                serde_json::from_slice(&read(&cases)?).context("the cases file is not JSON")?;
            let r = cli::bench(&host, &read(&file)?, &cases, calls)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {} calls ({} failed): p50 {:.2} us, p90 {:.2} us, p99 {:.2} us, mean {:.2} us",
                    r.slot, r.calls, r.failed, r.p50_us, r.p90_us, r.p99_us, r.mean_us
                );
            }
            false
        }
        PluginCommand::Replay {
            file,
            tenant,
            limit,
            config: pairs,
            shape,
            topic,
            options,
        } => {
            let bytes = read(&file)?;
            let config = key_values(&pairs, "--set")?;
            let shape: Vec<(String, String)> = key_values(&shape, "--shape")?.into_iter().collect();
            let slot = cli::slot_of(&host, &bytes)?;
            let config_all = Config::load_layers([options, top])?;
            log = Some(switchyard::logging::init(config_all.log_json));
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let backend = runtime.block_on(switchyard::backend(&config_all))?;
            let tenant = tenant.as_deref();
            let (report, differ) = match slot {
                Slot::BidValidator => {
                    let decided = runtime
                        .block_on(backend.bids.decided(tenant, limit))
                        .map_err(|e| anyhow::anyhow!("cannot read decisions: {e}"))?;
                    let recorded: Vec<cli::Recorded> = decided
                        .into_iter()
                        .filter_map(|(bid, input)| {
                            Some(cli::Recorded {
                                bid,
                                input: serde_json::from_str(&input).ok()?,
                            })
                        })
                        .collect();
                    cli::replay_bids(&host, &bytes, &recorded, config)
                }
                Slot::NotificationShaper => {
                    let recorded = runtime
                        .block_on(backend.plugins.recorded_messages(tenant, limit))
                        .map_err(|e| anyhow::anyhow!("cannot read messages: {e}"))?;
                    cli::replay_messages(&host, &bytes, &recorded, config)
                }
                Slot::EventFilter => {
                    let (events, baselines) = runtime.block_on(recorded_events(
                        &backend,
                        tenant,
                        topic.as_deref(),
                        limit,
                    ))?;
                    cli::replay_events(&host, &bytes, &events, &shape, config, &baselines)
                }
                Slot::StreamAuthorizer => {
                    let recorded = runtime
                        .block_on(backend.plugins.recorded_stream_requests(tenant, limit))
                        .map_err(|e| anyhow::anyhow!("cannot read stream requests: {e}"))?;
                    cli::replay_requests(&host, &bytes, &recorded, config)
                }
            }?;
            print!("{report}");
            differ > 0
        }
    };
    if failed {
        drop(log);
        std::process::exit(1);
    }
    Ok(())
}

/// `key=value` arguments of `flag`.
fn key_values(
    pairs: &[String],
    flag: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .with_context(|| format!("{flag} {p:?} is not KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// The latest `limit` events of each tenant (or one; of one topic if given),
/// and the event filter active for each tenant that has one (`""`: the
/// default slot), for `plugin replay` of an event filter.
async fn recorded_events(
    backend: &switchyard::backend::Backend,
    tenant: Option<&str>,
    topic: Option<&str>,
    limit: usize,
) -> anyhow::Result<(
    Vec<switchyard::event::StoredEvent>,
    std::collections::BTreeMap<String, switchyard::plugins::cli::Baseline>,
)> {
    let read = |e: switchyard::store::Error| anyhow::anyhow!("cannot read events: {e}");
    let mut events = Vec::new();
    for (t, head) in backend.store.heads().await.map_err(read)? {
        if tenant.is_some_and(|want| want != t) {
            continue;
        }
        match topic {
            Some(topic) => events.extend(
                backend
                    .store
                    .latest(&t, topic, limit)
                    .await
                    .map_err(read)?
                    .events,
            ),
            None => events.extend(
                backend
                    .store
                    .range(&t, head.saturating_sub(limit as u64), head)
                    .await
                    .map_err(read)?,
            ),
        }
    }
    let mut baselines = std::collections::BTreeMap::new();
    let slots = backend
        .plugins
        .plugin_slots()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read plugin slots: {e}"))?;
    for row in slots {
        if row.slot != Slot::EventFilter.as_str() {
            continue;
        }
        let Some(hash) = row.active else { continue };
        let bytes = backend
            .plugins
            .plugin_wasm(&hash)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read plugin {hash}: {e}"))?
            .with_context(|| format!("the active event filter {hash} is missing from the store"))?;
        baselines.insert(
            row.tenant,
            switchyard::plugins::cli::Baseline {
                tag: format!("event-filter@{}", &hash[..12.min(hash.len())]),
                bytes,
                config: row.config,
            },
        );
    }
    Ok((events, baselines))
}

/// A command's result on standard output; failing to write it (a full
/// disk, a closed pipe) is an error of the command, not a panic.
fn out(line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")
}
