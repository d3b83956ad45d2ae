//! The `switchyard` command line: `serve` (the default), `migrate`, `token`,
//! `plugin check|test|replay`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::config::{Config, Options};
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
    /// Mint a client token (JWT, HS256) with the configured secret.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// The tenant slug.
        #[arg(long)]
        tenant: String,
        /// Lifetime: `90s`, `15m`, `1h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
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
    /// Run a bid-validator candidate over recorded decisions from the
    /// system of record and report where it would have decided otherwise.
    Replay {
        /// The candidate component (`.wasm`).
        file: std::path::PathBuf,
        /// Only this tenant's decisions.
        #[arg(long)]
        tenant: Option<String>,
        /// How many of the latest decisions.
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
        /// Plugin configuration, `key=value` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        config: Vec<String>,
        #[command(flatten)]
        options: Options,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Plugin { command }) = cli.command {
        return plugin(command, cli.options);
    }
    let mut token_args = None;
    let (command, options) = match cli.command {
        None => ("serve", cli.options),
        Some(Command::Serve { options }) => ("serve", merge(options, cli.options)),
        Some(Command::Migrate { options }) => ("migrate", merge(options, cli.options)),
        Some(Command::Token {
            sub,
            tenant,
            ttl,
            options,
        }) => {
            token_args = Some((sub, tenant, ttl));
            ("token", merge(options, cli.options))
        }
        Some(Command::Plugin { .. }) => unreachable!("handled above"),
    };
    let config = Config::load(options)?;
    init_logging(config.log_json);
    switchyard::server::tune_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
            "token" => {
                let (sub, tenant, ttl) = token_args.context("token arguments")?;
                println!("{}", mint(&config, sub, tenant, &ttl).await?);
                Ok(())
            }
            "migrate" => {
                switchyard::backend(&config)
                    .await
                    .map_err(anyhow::Error::msg)?;
                println!("migrations applied ({} mode)", config.mode_name());
                Ok(())
            }
            _ => serve(config).await,
        }
    })
}

async fn serve(config: Config) -> anyhow::Result<()> {
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
    println!("switchyard listening on http://{addr}");
    switchyard::run(config, listener, shutdown)
        .await
        .map_err(anyhow::Error::msg)
}

/// Mints a client token with the secret the server uses.
async fn mint(config: &Config, sub: String, tenant: String, ttl: &str) -> anyhow::Result<String> {
    use switchyard::auth::{now_secs, parse_ttl, Claims};
    switchyard::http::access::validate_user_id(&sub, "sub")
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    switchyard::event::validate_slug(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    let ttl = parse_ttl(ttl).context("--ttl must look like 90s, 15m, 1h or 7d")?;
    let keys = switchyard::client_keys(config)
        .await
        .map_err(anyhow::Error::msg)?;
    let now = now_secs();
    Ok(keys.sign(&Claims {
        sub,
        tenant,
        exp: now + ttl,
        iat: now,
    }))
}

/// `switchyard plugin …`: exits 1 when the component fits no slot, a case
/// fails, or a replay differs.
fn plugin(command: PluginCommand, top: Options) -> anyhow::Result<()> {
    use switchyard::plugins::cli;
    let read = |p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
    };
    let failed = match command {
        PluginCommand::Check { file } => {
            let (report, fits) = cli::check(&read(&file)?).map_err(anyhow::Error::msg)?;
            print!("{report}");
            !fits
        }
        PluginCommand::Test { file, cases } => {
            let cases: serde_json::Value =
                serde_json::from_slice(&read(&cases)?).context("the cases file is not JSON")?;
            let (report, failed) = cli::test(&read(&file)?, &cases).map_err(anyhow::Error::msg)?;
            print!("{report}");
            failed > 0
        }
        PluginCommand::Replay {
            file,
            tenant,
            limit,
            config: pairs,
            options,
        } => {
            let bytes = read(&file)?;
            let mut config = std::collections::BTreeMap::new();
            for p in pairs {
                let (k, v) = p
                    .split_once('=')
                    .with_context(|| format!("--set {p:?} is not KEY=VALUE"))?;
                config.insert(k.to_string(), v.to_string());
            }
            let config_all = Config::load(merge(options, top))?;
            init_logging(config_all.log_json);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let decided = runtime.block_on(async {
                let backend = switchyard::backend(&config_all)
                    .await
                    .map_err(anyhow::Error::msg)?;
                backend
                    .bids
                    .decided(tenant.as_deref(), limit)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read decisions: {e}"))
            })?;
            let recorded: Vec<cli::Recorded> = decided
                .into_iter()
                .filter_map(|(bid, input)| {
                    Some(cli::Recorded {
                        bid,
                        input: serde_json::from_str(&input).ok()?,
                    })
                })
                .collect();
            let (report, differ) =
                cli::replay_bids(&bytes, &recorded, config).map_err(anyhow::Error::msg)?;
            print!("{report}");
            differ > 0
        }
    };
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Subcommand flags win; top-level flags fill the rest.
fn merge(sub: Options, top: Options) -> Options {
    sub.or(top)
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
