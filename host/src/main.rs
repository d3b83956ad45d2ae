//! The `switchyard` command line: `serve` (the default), `migrate`.

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (command, options) = match cli.command {
        None => ("serve", cli.options),
        Some(Command::Serve { options }) => ("serve", merge(options, cli.options)),
        Some(Command::Migrate { options }) => ("migrate", merge(options, cli.options)),
    };
    let config = Config::load(options)?;
    init_logging(config.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match command {
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
