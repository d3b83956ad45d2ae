//! One `Config`, built from flags, environment variables and an optional TOML
//! file (in that order of precedence), validated once at start.
//!
//! Flags and variables are clap's (`Options`); the layers (a subcommand's
//! flags over the top-level ones over the file) are merged by `figment`,
//! each layer contributing only the keys it sets.
//!
//! Only this module reads the environment; everything else is handed a `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

/// The topics whose members are announced when demo sign-in is on and
/// `SWITCHYARD_PRESENCE_MEMBERS` is not set: the demo's auctions (the
/// bidders present) and its tenant board (who is online, for messages).
pub const DEMO_PRESENCE_MEMBERS: [&str; 2] = ["product:*", "tenant:demo"];

/// Errors found while reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Server options as given on the command line or in the environment.
///
/// Every field is optional here so that the file and the defaults can fill in
/// what flags and variables leave open.
#[serde_with::skip_serializing_none]
#[derive(Debug, Default, Clone, Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// TOML file with any of these options (keys are the flag names with `_`).
    #[arg(long = "config", env = "SWITCHYARD_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// HTTP listen address.
    #[arg(long, env = "SWITCHYARD_LISTEN")]
    pub listen: Option<String>,
    /// PEM file with the TLS certificate chain; with `tls_key`, the server
    /// speaks TLS (ALPN `h2` and `http/1.1`). Reloaded when it changes.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the TLS private key (reloaded when it changes).
    #[arg(long, env = "SWITCHYARD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Embedded mode's SQLite file and generated secrets.
    #[arg(long, env = "SWITCHYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Watched plugins directory.
    #[arg(long, env = "SWITCHYARD_PLUGINS_DIR")]
    pub plugins_dir: Option<PathBuf>,
    /// Redis URL; together with `database_url` selects cluster mode.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Postgres URL; together with `redis_url` selects cluster mode.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Prefix of every Redis key this deployment uses.
    #[arg(long, env = "SWITCHYARD_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Shards of the cluster bus (1-1024, fixed for a deployment's life):
    /// a tenant's events go to one shard's stream, and a node reads only
    /// the shards of the tenants it has streams of.
    #[arg(long, env = "SWITCHYARD_BUS_SHARDS")]
    pub bus_shards: Option<u16>,
    /// More Postgres databases for tenants, beside `DATABASE_URL` (called
    /// `main`): `name=url,name=url` (a comma inside a URL written `%2C`).
    /// The placement of tenants is kept in `main`.
    #[arg(long, env = "SWITCHYARD_DATABASES", hide_env_values = true)]
    pub databases: Option<String>,
    /// Where new tenants go when there are several databases:
    /// `least-tenants` (default) or `hash`.
    #[arg(long, env = "SWITCHYARD_TENANT_PLACEMENT")]
    pub tenant_placement: Option<String>,
    /// HS256 secret for client tokens (generated into the data dir when unset).
    #[arg(long, env = "SWITCHYARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file with the identity provider's public key (RSA, EC or Ed25519)
    /// for client tokens.
    #[arg(long, env = "SWITCHYARD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// URL of the identity provider's JWKS (its public keys, fetched and
    /// refetched when a token names an unknown `kid`).
    #[arg(long, env = "SWITCHYARD_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Accept an `http://` JWKS URL (local development and tests only: keys
    /// fetched in the clear can be swapped on the way).
    #[arg(long, env = "SWITCHYARD_JWKS_ALLOW_HTTP")]
    pub jwks_allow_http: Option<bool>,
    /// Required `iss` of client tokens (also written by `switchyard token`).
    #[arg(long, env = "SWITCHYARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required member of `aud` of client tokens (also written by `switchyard token`).
    #[arg(long, env = "SWITCHYARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The claim holding the user id.
    #[arg(long, env = "SWITCHYARD_JWT_USER_CLAIM")]
    pub jwt_user_claim: Option<String>,
    /// The claim holding the tenant slug.
    #[arg(long, env = "SWITCHYARD_JWT_TENANT_CLAIM")]
    pub jwt_tenant_claim: Option<String>,
    /// Bearer token for `/admin/*` and `POST /api/events` (unset: admin API off).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token that opens `/metrics` only (a scraper's); the admin
    /// token opens it too.
    #[arg(long, env = "SWITCHYARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The claim of an identity provider's token that grants a console
    /// role: `operator` (the admin API) or `viewer` (its reads only).
    /// Unset: only the admin token opens the admin API.
    #[arg(long, env = "SWITCHYARD_CONSOLE_ROLE_CLAIM")]
    pub console_role_claim: Option<String>,
    /// Where the operator console's web UI is served (on when an admin
    /// token or a console role claim is set).
    #[arg(long, env = "SWITCHYARD_CONSOLE_PREFIX")]
    pub console_prefix: Option<String>,
    /// Serve `/metrics` without a token (its series name every tenant).
    #[arg(long, env = "SWITCHYARD_METRICS_PUBLIC")]
    pub metrics_public: Option<bool>,
    /// Heartbeat interval on streams, in milliseconds (clients treat a stream
    /// silent for about 2.5 intervals as dead).
    #[arg(long, env = "SWITCHYARD_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Window over which clients spread their reconnects after this node's
    /// `shutdown` event, in milliseconds (0: at once).
    #[arg(long, env = "SWITCHYARD_RECONNECT_WINDOW_MS")]
    pub reconnect_window_ms: Option<u64>,
    /// The `retry:` hint sent to clients, in milliseconds.
    #[arg(long, env = "SWITCHYARD_RETRY_MS")]
    pub retry_ms: Option<u64>,
    /// Allowed CORS origins, comma separated, or `*`.
    #[arg(long, env = "SWITCHYARD_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// Events kept per topic for replay.
    #[arg(long, env = "SWITCHYARD_RETENTION_EVENTS")]
    pub retention_events: Option<u64>,
    /// Age after which events leave the replay history, in seconds.
    #[arg(long, env = "SWITCHYARD_RETENTION_SECONDS")]
    pub retention_seconds: Option<u64>,
    /// How long a publish `Idempotency-Key` is remembered, in seconds.
    #[arg(long, env = "SWITCHYARD_IDEMPOTENCY_SECONDS")]
    pub idempotency_seconds: Option<u64>,
    /// How often retention is enforced, in milliseconds.
    #[arg(long, env = "SWITCHYARD_RETENTION_SWEEP_MS")]
    pub retention_sweep_ms: Option<u64>,
    /// Live events buffered per connection before it falls back to the log.
    #[arg(long, env = "SWITCHYARD_CLIENT_QUEUE")]
    pub client_queue: Option<usize>,
    /// A stream that accepts no bytes for this long is closed, in milliseconds.
    #[arg(long, env = "SWITCHYARD_WRITE_DEADLINE_MS")]
    pub write_deadline_ms: Option<u64>,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SWITCHYARD_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest request head (request line and headers), in bytes (431 above).
    #[arg(long, env = "SWITCHYARD_MAX_HEADER_BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Most header lines in a request (431 above).
    #[arg(long, env = "SWITCHYARD_MAX_HEADERS")]
    pub max_headers: Option<usize>,
    /// A connection whose request head is not complete this long after the
    /// server starts waiting for it is closed, in milliseconds.
    #[arg(long, env = "SWITCHYARD_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// Most concurrent connections (default: the open-file limit less a reserve).
    #[arg(long, env = "SWITCHYARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How long shutdown may take before remaining connections are cut, in ms.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_GRACE_MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// How often a node checks the store for events it has not seen, in ms.
    #[arg(long, env = "SWITCHYARD_TAIL_CHECK_MS")]
    pub tail_check_ms: Option<u64>,
    /// At most one `occupancy` event per topic per this many milliseconds.
    #[arg(long, env = "SWITCHYARD_PRESENCE_INTERVAL_MS")]
    pub presence_interval_ms: Option<u64>,
    /// How long a member whose last stream on a topic closed stays one, in ms.
    #[arg(long, env = "SWITCHYARD_PRESENCE_LINGER_MS")]
    pub presence_linger_ms: Option<u64>,
    /// How often each topic's members topic is checked against the
    /// presence store, in ms.
    #[arg(long, env = "SWITCHYARD_PRESENCE_CHECK_MS")]
    pub presence_check_ms: Option<u64>,
    /// Topic patterns whose members are announced on `T~members`
    /// (comma separated: `product:*,ticket:*`); default: none, or with demo
    /// sign-in on, the demo's `product:*,tenant:demo`.
    #[arg(long, env = "SWITCHYARD_PRESENCE_MEMBERS")]
    pub presence_members: Option<String>,
    /// Topic patterns whose occupancy is kept, comma separated (`*`, the
    /// default: every topic; `none`: no topic).
    #[arg(long, env = "SWITCHYARD_PRESENCE_OCCUPANCY")]
    pub presence_occupancy: Option<String>,
    /// Claims of a member's verified token that are its member data (comma
    /// separated); default: `name`.
    #[arg(long, env = "SWITCHYARD_PRESENCE_CLAIMS")]
    pub presence_claims: Option<String>,
    /// Most members announced per topic; past it one `members.truncated`.
    #[arg(long, env = "SWITCHYARD_PRESENCE_MAX_MEMBERS")]
    pub presence_max_members: Option<usize>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "SWITCHYARD_LOG_JSON")]
    pub log_json: Option<bool>,
    /// Most concurrent streams per user (cluster-wide in cluster mode).
    #[arg(long, env = "SWITCHYARD_MAX_STREAMS_PER_USER")]
    pub max_streams_per_user: Option<u32>,
    /// Most concurrent streams per tenant (cluster-wide in cluster mode).
    #[arg(long, env = "SWITCHYARD_MAX_STREAMS_PER_TENANT")]
    pub max_streams_per_tenant: Option<u32>,
    /// Sustained POSTs per second allowed per client token.
    #[arg(long, env = "SWITCHYARD_POST_RATE")]
    pub post_rate: Option<u32>,
    /// Burst of POSTs allowed per client token.
    #[arg(long, env = "SWITCHYARD_POST_BURST")]
    pub post_burst: Option<u32>,
    /// Accept client tokens in `?token=` (browsers' `EventSource` cannot set
    /// headers; the cookie is the better carrier, as URLs end up in logs).
    #[arg(long, env = "SWITCHYARD_QUERY_TOKENS")]
    pub query_tokens: Option<bool>,
    /// Demo sign-in (`POST /api/demo/token`: a token for any user of tenant
    /// `demo`, to anyone who asks); default: off. For the demo only.
    #[arg(long, env = "SWITCHYARD_DEMO_TOKENS")]
    pub demo_tokens: Option<bool>,
    /// Most concurrent anonymous streams per tenant (cluster-wide), a budget
    /// of their own: anonymous readers never take signed-in users' slots.
    #[arg(long, env = "SWITCHYARD_MAX_ANONYMOUS_STREAMS_PER_TENANT")]
    pub max_anonymous_streams_per_tenant: Option<u32>,
    /// Most concurrent anonymous streams from one client address
    /// (cluster-wide).
    #[arg(long, env = "SWITCHYARD_MAX_STREAMS_PER_ADDRESS")]
    pub max_streams_per_address: Option<u32>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the client
    /// (comma separated IPs or CIDR ranges); unset: the peer is the client.
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Accept the admin token only in `Authorization: Bearer` (`false`: also
    /// in the cookie and `?token=`, as before; URLs and cookies leak it).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN_HEADER_ONLY")]
    pub admin_token_header_only: Option<bool>,
    /// A request body not received in full this long after its head is
    /// answered 408 and its connection closed, in milliseconds.
    #[arg(long, env = "SWITCHYARD_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
    /// An HTTP/2 connection with no open stream this long is closed
    /// (`GOAWAY`), in milliseconds.
    #[arg(long, env = "SWITCHYARD_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Per-call deadline of a plugin, in milliseconds.
    #[arg(long, env = "SWITCHYARD_PLUGIN_TIMEOUT_MS")]
    pub plugin_timeout_ms: Option<u64>,
    /// Largest linear memory of a plugin, in MiB.
    #[arg(long, env = "SWITCHYARD_PLUGIN_MEMORY_MB")]
    pub plugin_memory_mb: Option<usize>,
    /// Fuel (roughly, instructions) per plugin call; unset: unmetered.
    #[arg(long, env = "SWITCHYARD_PLUGIN_FUEL")]
    pub plugin_fuel: Option<u64>,
    /// Earlier versions kept per slot for rollback.
    #[arg(long, env = "SWITCHYARD_PLUGIN_HISTORY")]
    pub plugin_history: Option<usize>,
    /// Stream requests recorded per tenant for `plugin replay` of a stream
    /// authorizer (0: none).
    #[arg(long, env = "SWITCHYARD_RECORDED_STREAM_REQUESTS")]
    pub recorded_stream_requests: Option<usize>,
    /// How often a cluster node checks for plugin changes made elsewhere, in ms.
    #[arg(long, env = "SWITCHYARD_PLUGIN_SYNC_MS")]
    pub plugin_sync_ms: Option<u64>,
    /// Activate the bundled example plugins in slots never configured.
    #[arg(long, env = "SWITCHYARD_EXAMPLE_PLUGINS")]
    pub example_plugins: Option<bool>,
    /// Where compiled plugin code is kept, by content hash and engine
    /// settings (default: `plugin-cache` in the data dir).
    #[arg(long, env = "SWITCHYARD_PLUGIN_CACHE_DIR")]
    pub plugin_cache_dir: Option<PathBuf>,
    /// The sources (`[[sources]]` in the file): systems whose messages this
    /// node publishes (see `sources/`).
    #[arg(skip)]
    pub sources: Option<Vec<crate::sources::SourceConfig>>,
    /// The sources as a JSON array of the same objects as `[[sources]]`
    /// (used instead of the file's when set).
    #[arg(long = "sources", env = "SWITCHYARD_SOURCES", value_name = "JSON")]
    pub sources_json: Option<String>,
    /// How long a source's idempotency keys (a stream entry's id) are kept,
    /// in seconds: an entry pending longer is dead-lettered rather than
    /// perhaps published twice.
    #[arg(long, env = "SWITCHYARD_SOURCE_KEY_SECONDS")]
    pub source_key_seconds: Option<u64>,
}

/// Which deployment mode the node runs in.
#[derive(Clone, PartialEq, Eq)]
pub enum Mode {
    /// SQLite file plus an in-process bus; no outside services.
    Embedded,
    /// Redis for fan-out, Postgres as the system of record.
    Cluster {
        /// Redis URL (may hold a password: never logged).
        redis_url: String,
        /// Postgres URL (may hold a password: never logged).
        database_url: String,
        /// More databases for tenants, `(name, url)`, in the order given
        /// (URLs may hold passwords: never logged).
        databases: Vec<(String, String)>,
    },
}

/// CORS policy for browsers on other origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No cross-origin access.
    Off,
    /// Any origin.
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

/// The validated configuration of one node.
#[derive(Clone)]
pub struct Config {
    /// HTTP listen address.
    pub listen: String,
    /// TLS certificate and key files; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Embedded mode's data directory.
    pub data_dir: PathBuf,
    /// Watched plugins directory.
    pub plugins_dir: PathBuf,
    /// Sandbox limits of every plugin call.
    pub plugin_limits: crate::plugins::wasm::Limits,
    /// Earlier versions kept per slot.
    pub plugin_history: usize,
    /// Stream requests recorded per tenant (0: none).
    pub recorded_stream_requests: usize,
    /// Poll interval for plugin changes from other nodes.
    pub plugin_sync: Duration,
    /// Activate the bundled example plugins in slots never configured.
    pub example_plugins: bool,
    /// Compiled plugin code, by content hash and engine settings.
    pub plugin_cache_dir: PathBuf,
    /// Deployment mode.
    pub mode: Mode,
    /// Prefix of Redis keys.
    pub redis_prefix: String,
    /// Shards of the cluster bus.
    pub bus_shards: u16,
    /// How new tenants are placed on the databases.
    pub tenant_placement: crate::store::placed::Rule,
    /// Client token secret, if configured (else generated into the data dir).
    pub jwt_secret: Option<String>,
    /// The identity provider's public key file, if configured.
    pub jwt_public_key: Option<PathBuf>,
    /// The identity provider's JWKS URL, if configured.
    pub jwks_url: Option<String>,
    /// An `http://` JWKS URL is accepted (development only).
    pub jwks_allow_http: bool,
    /// Claim names, issuer and audience of tokens.
    pub tokens: crate::auth::TokenRules,
    /// Admin bearer token; `None` turns the admin API off.
    pub admin_token: Option<String>,
    /// Bearer token that opens `/metrics` only.
    pub metrics_token: Option<String>,
    /// The provider's claim granting `operator` or `viewer`; `None`: no
    /// operator sign-in.
    pub console_role_claim: Option<String>,
    /// The console web UI's path prefix; `None`: the UI is off (no admin
    /// token and no role claim).
    pub console_prefix: Option<String>,
    /// `/metrics` served without a token.
    pub metrics_public: bool,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Window the `shutdown` event asks clients to spread reconnects over.
    pub reconnect_window: Duration,
    /// `retry:` hint.
    pub retry: Duration,
    /// CORS policy.
    pub cors: Cors,
    /// Events kept per topic.
    pub retention_events: u64,
    /// Maximum age of kept events.
    pub retention_age: Duration,
    /// Retention sweep interval.
    pub retention_sweep: Duration,
    /// How long publish idempotency keys are remembered.
    pub idempotency_window: Duration,
    /// Per-connection live queue capacity.
    pub client_queue: usize,
    /// Write deadline for streams.
    pub write_deadline: Duration,
    /// Request body cap.
    pub max_body_bytes: usize,
    /// Bounds on request heads (size, lines, time).
    pub head: HeadLimits,
    /// Connection cap; `None` means derive it from the open-file limit.
    pub max_connections: Option<usize>,
    /// Shutdown bound.
    pub shutdown_grace: Duration,
    /// Interval of the store tail check that fills fan-out gaps.
    pub tail_check: Duration,
    /// Presence settings.
    pub presence: crate::presence::Settings,
    /// JSON logs.
    pub log_json: bool,
    /// Stream cap per user.
    pub max_streams_per_user: u32,
    /// Stream cap per tenant.
    pub max_streams_per_tenant: u32,
    /// POSTs per second per client token.
    pub post_rate: u32,
    /// POST burst per client token.
    pub post_burst: u32,
    /// Demo sign-in on.
    pub demo_tokens: bool,
    /// Anonymous stream cap per tenant.
    pub max_anonymous_streams_per_tenant: u32,
    /// Anonymous stream cap per client address.
    pub max_streams_per_address: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: crate::net::TrustedProxies,
    /// The admin token only in `Authorization: Bearer`.
    pub admin_token_header_only: bool,
    /// Deadline of a whole request body, from its head.
    pub body_timeout: Duration,
    /// Idle limit of an HTTP/2 connection with no stream.
    pub idle_timeout: Duration,
    /// Client tokens accepted in `?token=`.
    pub query_tokens: bool,
    /// The configured sources, checked.
    pub sources: Vec<crate::sources::Spec>,
    /// How long a source's idempotency keys are kept.
    pub source_key_window: Duration,
}

// Secrets and URLs with passwords stay out of logs, so Debug is hand-written.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("data_dir", &self.data_dir)
            .field("plugins_dir", &self.plugins_dir)
            .field("mode", &self.mode_name())
            .field("redis_prefix", &self.redis_prefix)
            .field("bus_shards", &self.bus_shards)
            .field("databases", &self.database_names())
            .field("tenant_placement", &self.tenant_placement)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwks_url", &self.jwks_url)
            .field("tokens", &self.tokens)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("console_role_claim", &self.console_role_claim)
            .field("console_prefix", &self.console_prefix)
            .field("metrics_public", &self.metrics_public)
            .field("heartbeat", &self.heartbeat)
            .field("reconnect_window", &self.reconnect_window)
            .field("cors", &self.cors)
            .field("retention_events", &self.retention_events)
            .field("retention_age", &self.retention_age)
            .field("client_queue", &self.client_queue)
            .field("write_deadline", &self.write_deadline)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("head", &self.head)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Builds the configuration: flags and environment over the file over defaults.
    pub fn load(options: Options) -> Result<Config, Error> {
        Config::load_layers([options])
    }

    /// Builds the configuration from layers of flags and environment, the
    /// first winning (a subcommand's, then the top level's), over the file
    /// the first layer that names one names, over the defaults.
    pub fn load_layers<const N: usize>(layers: [Options; N]) -> Result<Config, Error> {
        Config::from_options(layered(layers)?)
    }

    /// Applies defaults and validates.
    pub fn from_options(o: Options) -> Result<Config, Error> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
        let source_configs = match o.sources_json.as_deref().map(str::trim) {
            Some(j) if !j.is_empty() => crate::sources::parse_json(j).map_err(Error::Invalid)?,
            _ => o.sources.clone().unwrap_or_default(),
        };
        let sources =
            crate::sources::check(&source_configs, non_empty(o.redis_url.clone()).as_deref())
                .map_err(Error::Invalid)?;
        let databases = parse_databases(o.databases.as_deref().unwrap_or(""))?;
        let mode = match (non_empty(o.redis_url), non_empty(o.database_url)) {
            (Some(redis_url), Some(database_url)) => Mode::Cluster {
                redis_url,
                database_url,
                databases,
            },
            _ if !databases.is_empty() => {
                return Err(Error::Invalid(
                    "SWITCHYARD_DATABASES is set but DATABASE_URL and REDIS_URL are not: \
                     more databases are for cluster mode"
                        .into(),
                ))
            }
            (None, None) => Mode::Embedded,
            (Some(_), None) => {
                return Err(Error::Invalid(
                    "REDIS_URL is set but DATABASE_URL is not: cluster mode needs both".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Invalid(
                    "DATABASE_URL is set but REDIS_URL is not: cluster mode needs both".into(),
                ))
            }
        };
        let listen = o.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        if listen.parse::<SocketAddr>().is_err() && !listen.contains(':') {
            return Err(Error::Invalid(format!(
                "SWITCHYARD_LISTEN must be host:port, got {listen:?}"
            )));
        }
        let path = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        let tls = match (path(o.tls_cert), path(o.tls_key)) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Invalid(
                    "SWITCHYARD_TLS_CERT is set but SWITCHYARD_TLS_KEY is not: TLS needs both"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Invalid(
                    "SWITCHYARD_TLS_KEY is set but SWITCHYARD_TLS_CERT is not: TLS needs both"
                        .into(),
                ))
            }
        };
        let cors = match o.cors_origins.as_deref().map(str::trim) {
            None | Some("") => Cors::Off,
            Some("*") => Cors::Any,
            Some(list) => Cors::List(
                list.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            ),
        };
        let redis_prefix = o.redis_prefix.unwrap_or_else(|| "switchyard".into());
        // Braces would make the prefix a Redis Cluster hash tag, putting
        // every key of the deployment in one slot.
        if redis_prefix.is_empty()
            || redis_prefix.contains(char::is_whitespace)
            || redis_prefix.contains(['{', '}'])
        {
            return Err(Error::Invalid(
                "SWITCHYARD_REDIS_PREFIX must be non-empty without spaces or braces".into(),
            ));
        }
        let bus_shards = o.bus_shards.unwrap_or(1);
        if !(1..=1024).contains(&bus_shards) {
            return Err(Error::Invalid(format!(
                "SWITCHYARD_BUS_SHARDS must be 1 to 1024, got {bus_shards}"
            )));
        }
        let tenant_placement = match non_empty(o.tenant_placement) {
            Some(r) => r.parse().map_err(Error::Invalid)?,
            None => crate::store::placed::Rule::default(),
        };
        let admin_token = non_empty(o.admin_token);
        if let Some(t) = &admin_token {
            if t.len() < 8 {
                return Err(Error::Invalid(
                    "SWITCHYARD_ADMIN_TOKEN must be at least 8 characters".into(),
                ));
            }
        }
        let metrics_token = non_empty(o.metrics_token);
        if let Some(t) = &metrics_token {
            if t.len() < 8 {
                return Err(Error::Invalid(
                    "SWITCHYARD_METRICS_TOKEN must be at least 8 characters".into(),
                ));
            }
        }
        let jwt_secret = non_empty(o.jwt_secret);
        if jwt_secret
            .as_ref()
            .is_some_and(|s| s.len() < crate::auth::MIN_SECRET_BYTES)
        {
            return Err(Error::Invalid(format!(
                "SWITCHYARD_JWT_SECRET must be at least {} bytes: a shorter HS256 secret can be \
                 guessed offline from any token it signed (make one with `openssl rand -base64 32`)",
                crate::auth::MIN_SECRET_BYTES
            )));
        }
        let ms = |v: Option<u64>, default: u64, name: &str| -> Result<Duration, Error> {
            let v = v.unwrap_or(default);
            if v == 0 {
                return Err(Error::Invalid(format!("{name} must be greater than 0")));
            }
            Ok(Duration::from_millis(v))
        };
        let client_queue = o.client_queue.unwrap_or(256);
        if client_queue < 2 {
            return Err(Error::Invalid(
                "SWITCHYARD_CLIENT_QUEUE must be at least 2".into(),
            ));
        }
        let retention_events = o.retention_events.unwrap_or(100_000);
        if retention_events == 0 {
            return Err(Error::Invalid(
                "SWITCHYARD_RETENTION_EVENTS must be at least 1".into(),
            ));
        }
        let reconnect_window = Duration::from_millis(o.reconnect_window_ms.unwrap_or(5_000));
        if reconnect_window > Duration::from_secs(600) {
            return Err(Error::Invalid(
                "SWITCHYARD_RECONNECT_WINDOW_MS must be at most 600000 (10 minutes)".into(),
            ));
        }
        let max_header_bytes = o.max_header_bytes.unwrap_or(16 * 1024);
        if !(1024..=1024 * 1024).contains(&max_header_bytes) {
            return Err(Error::Invalid(
                "SWITCHYARD_MAX_HEADER_BYTES must be between 1024 and 1048576".into(),
            ));
        }
        let max_headers = o.max_headers.unwrap_or(100);
        if !(8..=1000).contains(&max_headers) {
            return Err(Error::Invalid(
                "SWITCHYARD_MAX_HEADERS must be between 8 and 1000".into(),
            ));
        }
        let jwt_public_key = o.jwt_public_key.filter(|p| !p.as_os_str().is_empty());
        let jwks_url = non_empty(o.jwks_url.clone());
        if jwt_public_key.is_some() && jwks_url.is_some() {
            return Err(Error::Invalid(
                "set SWITCHYARD_JWT_PUBLIC_KEY or SWITCHYARD_JWKS_URL, not both".into(),
            ));
        }
        let jwks_allow_http = o.jwks_allow_http.unwrap_or(false);
        if let Some(url) = &jwks_url {
            let https = url.starts_with("https://");
            if url.starts_with("http://") && !jwks_allow_http {
                return Err(Error::Invalid(
                    "SWITCHYARD_JWKS_URL must be an https:// URL: keys fetched over plain \
                     http:// can be swapped by anyone on the way (for local development only, \
                     SWITCHYARD_JWKS_ALLOW_HTTP=true accepts one)"
                        .into(),
                ));
            }
            if !https && !url.starts_with("http://") {
                return Err(Error::Invalid(
                    "SWITCHYARD_JWKS_URL must be an https:// URL".into(),
                ));
            }
        }
        let claim = |v: Option<String>, default: &str, name: &str| -> Result<String, Error> {
            match non_empty(v) {
                None => Ok(default.to_string()),
                Some(c)
                    if ["exp", "iat", "nbf", "iss", "aud", "svc", "publish"]
                        .contains(&c.as_str()) =>
                {
                    Err(Error::Invalid(format!(
                        "{name} cannot be the reserved claim {c:?}"
                    )))
                }
                Some(c) => Ok(c),
            }
        };
        let tokens = crate::auth::TokenRules {
            issuer: non_empty(o.jwt_issuer.clone()),
            audience: non_empty(o.jwt_audience.clone()),
            user_claim: claim(o.jwt_user_claim.clone(), "sub", "SWITCHYARD_JWT_USER_CLAIM")?,
            tenant_claim: claim(
                o.jwt_tenant_claim.clone(),
                "tenant",
                "SWITCHYARD_JWT_TENANT_CLAIM",
            )?,
        };
        if tokens.user_claim == tokens.tenant_claim {
            return Err(Error::Invalid(
                "SWITCHYARD_JWT_USER_CLAIM and SWITCHYARD_JWT_TENANT_CLAIM must differ".into(),
            ));
        }
        let console_role_claim = non_empty(o.console_role_claim.clone());
        if let Some(c) = &console_role_claim {
            if jwt_public_key.is_none() && jwks_url.is_none() {
                return Err(Error::Invalid(
                    "SWITCHYARD_CONSOLE_ROLE_CLAIM needs the identity provider's keys \
                     (SWITCHYARD_JWT_PUBLIC_KEY or SWITCHYARD_JWKS_URL): only its tokens grant roles"
                        .into(),
                ));
            }
            if ["exp", "iat", "nbf", "iss", "aud", "svc", "publish"].contains(&c.as_str())
                || *c == tokens.user_claim
                || *c == tokens.tenant_claim
            {
                return Err(Error::Invalid(format!(
                    "SWITCHYARD_CONSOLE_ROLE_CLAIM cannot be the reserved, user or tenant claim {c:?}"
                )));
            }
        }
        let console_prefix = console_prefix(
            non_empty(o.console_prefix.clone()),
            admin_token.is_some() || console_role_claim.is_some(),
        )?;
        let data_dir = o.data_dir.unwrap_or_else(|| PathBuf::from("./data"));
        Ok(Config {
            listen,
            tls,
            data_dir: data_dir.clone(),
            plugins_dir: o
                .plugins_dir
                .unwrap_or_else(|| PathBuf::from("./plugins.d")),
            mode,
            redis_prefix,
            bus_shards,
            tenant_placement,
            jwt_secret,
            jwt_public_key,
            jwks_url,
            jwks_allow_http,
            tokens,
            admin_token,
            metrics_token,
            console_role_claim,
            console_prefix,
            metrics_public: o.metrics_public.unwrap_or(false),
            heartbeat: ms(o.heartbeat_ms, 15_000, "SWITCHYARD_HEARTBEAT_MS")?,
            reconnect_window,
            retry: ms(o.retry_ms, 3_000, "SWITCHYARD_RETRY_MS")?,
            cors,
            retention_events,
            retention_age: Duration::from_secs(o.retention_seconds.unwrap_or(7 * 24 * 3600)),
            retention_sweep: ms(o.retention_sweep_ms, 5_000, "SWITCHYARD_RETENTION_SWEEP_MS")?,
            idempotency_window: match o.idempotency_seconds.unwrap_or(24 * 3600) {
                0 => {
                    return Err(Error::Invalid(
                        "SWITCHYARD_IDEMPOTENCY_SECONDS must be at least 1".into(),
                    ))
                }
                s => Duration::from_secs(s),
            },
            sources,
            source_key_window: match o.source_key_seconds.unwrap_or(7 * 24 * 3600) {
                s if s < o.idempotency_seconds.unwrap_or(24 * 3600) => return Err(Error::Invalid(
                    "SWITCHYARD_SOURCE_KEY_SECONDS must be at least SWITCHYARD_IDEMPOTENCY_SECONDS"
                        .into(),
                )),
                s => Duration::from_secs(s),
            },
            client_queue,
            write_deadline: ms(o.write_deadline_ms, 30_000, "SWITCHYARD_WRITE_DEADLINE_MS")?,
            max_body_bytes: o.max_body_bytes.unwrap_or(1024 * 1024),
            head: HeadLimits {
                max_bytes: max_header_bytes,
                max_headers,
                timeout: ms(o.header_timeout_ms, 10_000, "SWITCHYARD_HEADER_TIMEOUT_MS")?,
            },
            max_connections: o.max_connections,
            shutdown_grace: ms(o.shutdown_grace_ms, 10_000, "SWITCHYARD_SHUTDOWN_GRACE_MS")?,
            tail_check: ms(o.tail_check_ms, 1_000, "SWITCHYARD_TAIL_CHECK_MS")?,
            presence: crate::presence::Settings {
                interval: ms(
                    o.presence_interval_ms,
                    1_000,
                    "SWITCHYARD_PRESENCE_INTERVAL_MS",
                )?,
                linger: Duration::from_millis(o.presence_linger_ms.unwrap_or(5_000)),
                check: ms(o.presence_check_ms, 15_000, "SWITCHYARD_PRESENCE_CHECK_MS")?,
                occupancy: match o.presence_occupancy.as_deref().map(str::trim) {
                    None | Some("*") => None,
                    Some("" | "none") => Some(Vec::new()),
                    Some(list) => {
                        let p = crate::auth::publish::split(list);
                        crate::auth::publish::validate(&p).map_err(|e| {
                            Error::Invalid(format!("SWITCHYARD_PRESENCE_OCCUPANCY: {e}"))
                        })?;
                        Some(p)
                    }
                },
                members: match o
                    .presence_members
                    .as_deref()
                    .map(crate::auth::publish::split)
                {
                    // The demo shows the bidders on an auction and whether
                    // a user one writes to is online (on the demo tenant's
                    // board, which every signed-in page reads).
                    None if o.demo_tokens == Some(true) => DEMO_PRESENCE_MEMBERS
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                    None => Vec::new(),
                    Some(p) if p.is_empty() => p,
                    Some(p) => {
                        crate::auth::publish::validate(&p).map_err(|e| {
                            Error::Invalid(format!("SWITCHYARD_PRESENCE_MEMBERS: {e}"))
                        })?;
                        p
                    }
                },
                claims: o
                    .presence_claims
                    .as_deref()
                    .map(crate::auth::publish::split)
                    .unwrap_or_else(|| vec!["name".into()]),
                max_members: o.presence_max_members.unwrap_or(1_000),
            },
            log_json: o.log_json.unwrap_or(false),
            max_streams_per_user: o.max_streams_per_user.unwrap_or(8),
            max_streams_per_tenant: o.max_streams_per_tenant.unwrap_or(50_000),
            post_rate: o.post_rate.unwrap_or(20).max(1),
            post_burst: o.post_burst.unwrap_or(40).max(1),
            demo_tokens: o.demo_tokens.unwrap_or(false),
            max_anonymous_streams_per_tenant: o.max_anonymous_streams_per_tenant.unwrap_or(50_000),
            max_streams_per_address: o.max_streams_per_address.unwrap_or(64),
            trusted_proxies: match o.trusted_proxies.as_deref().map(str::trim) {
                None | Some("") => crate::net::TrustedProxies::default(),
                Some(list) => crate::net::TrustedProxies::parse(list)
                    .map_err(|e| Error::Invalid(format!("SWITCHYARD_TRUSTED_PROXIES: {e}")))?,
            },
            admin_token_header_only: o.admin_token_header_only.unwrap_or(true),
            body_timeout: ms(o.body_timeout_ms, 30_000, "SWITCHYARD_BODY_TIMEOUT_MS")?,
            idle_timeout: ms(o.idle_timeout_ms, 60_000, "SWITCHYARD_IDLE_TIMEOUT_MS")?,
            query_tokens: o.query_tokens.unwrap_or(true),
            plugin_limits: crate::plugins::wasm::Limits {
                timeout: ms(o.plugin_timeout_ms, 50, "SWITCHYARD_PLUGIN_TIMEOUT_MS")?,
                memory: match o.plugin_memory_mb.unwrap_or(32) {
                    0 => {
                        return Err(Error::Invalid(
                            "SWITCHYARD_PLUGIN_MEMORY_MB must be at least 1".into(),
                        ))
                    }
                    mb => mb.min(4096) << 20,
                },
                fuel: o.plugin_fuel.filter(|f| *f > 0),
            },
            plugin_history: o.plugin_history.unwrap_or(5).max(1),
            recorded_stream_requests: o.recorded_stream_requests.unwrap_or(1_000),
            plugin_sync: ms(o.plugin_sync_ms, 250, "SWITCHYARD_PLUGIN_SYNC_MS")?,
            example_plugins: o.example_plugins.unwrap_or(true),
            plugin_cache_dir: o
                .plugin_cache_dir
                .unwrap_or_else(|| data_dir.join("plugin-cache")),
        })
    }

    /// The names of the databases tenants are placed on (`main` first; none
    /// in embedded mode): for logs, without the URLs.
    pub fn database_names(&self) -> Vec<&str> {
        match &self.mode {
            Mode::Embedded => Vec::new(),
            Mode::Cluster { databases, .. } => std::iter::once(crate::store::placed::HOME)
                .chain(databases.iter().map(|(n, _)| n.as_str()))
                .collect(),
        }
    }

    /// `embedded` or `cluster`, for logs and `/ready`.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Embedded => "embedded",
            Mode::Cluster { .. } => "cluster",
        }
    }
}

/// `SWITCHYARD_DATABASES`: `name=url` items separated by commas (a name is
/// 1-32 of `a-z 0-9 _ -`, starting with a letter; not `main`, which is
/// `DATABASE_URL`; each once).
fn parse_databases(list: &str) -> Result<Vec<(String, String)>, Error> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, url)) = item.split_once('=') else {
            return Err(Error::Invalid(
                "SWITCHYARD_DATABASES must be name=url items separated by commas".into(),
            ));
        };
        let (name, url) = (name.trim(), url.trim());
        let valid = name.len() <= 32
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !valid {
            return Err(Error::Invalid(format!(
                "SWITCHYARD_DATABASES: database name {name:?} must be 1-32 of a-z 0-9 _ -, \
                 starting with a letter"
            )));
        }
        if name == crate::store::placed::HOME || out.iter().any(|(n, _)| n == name) {
            return Err(Error::Invalid(format!(
                "SWITCHYARD_DATABASES: database name {name:?} is used twice (main is DATABASE_URL)"
            )));
        }
        if url.is_empty() {
            return Err(Error::Invalid(format!(
                "SWITCHYARD_DATABASES: database {name:?} has no URL"
            )));
        }
        out.push((name.to_string(), url.to_string()));
    }
    Ok(out)
}

/// Merges `layers` (the first wins) over the file the first of them that
/// names one names: each layer contributes only the keys it sets.
fn layered<const N: usize>(layers: [Options; N]) -> Result<Options, Error> {
    use figment::providers::{Format, Serialized, Toml};
    let mut figment = figment::Figment::new();
    let path = layers.iter().find_map(|o| o.config_file.clone());
    if let Some(path) = &path {
        // Read here, so that a missing file is an error (figment's own
        // file provider treats it as empty).
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        figment = figment.merge(Toml::string(&text));
    }
    for layer in layers.iter().rev() {
        figment = figment.merge(Serialized::defaults(layer));
    }
    let mut merged: Options = figment.extract().map_err(|e| Error::Parse {
        path: path.clone().unwrap_or_default(),
        message: e
            .into_iter()
            .map(|e| {
                e.to_string()
                    .replace(" in TOML source string", "")
                    .replace("for key \"default.", "for key \"")
            })
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    merged.config_file = path;
    Ok(merged)
}

/// First segments the API itself uses: a console there would hide routes.
const RESERVED_PREFIXES: &[&str] = &[
    "admin",
    "api",
    "events",
    "topics",
    "products",
    "messages",
    "health",
    "ready",
    "metrics",
    "openapi.json",
    "app.js",
    "switchyard.js",
    "style.css",
    "demo",
];

/// `SWITCHYARD_CONSOLE_PREFIX` checked: `/console` by default, and `None`
/// when nothing could sign in to the console. One to three segments of
/// lowercase letters, digits and `-`, none of them the API's own.
fn console_prefix(set: Option<String>, enabled: bool) -> Result<Option<String>, Error> {
    let prefix = set.unwrap_or_else(|| "/console".into());
    let bad = |why: &str| {
        Error::Invalid(format!(
            "SWITCHYARD_CONSOLE_PREFIX {prefix:?} {why} (for example /console or /ops/console)"
        ))
    };
    let Some(rest) = prefix.strip_prefix('/') else {
        return Err(bad("must start with /"));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > 3
        || segments.iter().any(|s| {
            s.is_empty()
                || s.len() > 32
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    {
        return Err(bad(
            "must be one to three segments of lowercase letters, digits and -, with no trailing /",
        ));
    }
    if RESERVED_PREFIXES.contains(&segments[0]) {
        return Err(bad("would hide the API's own routes"));
    }
    Ok(enabled.then_some(prefix))
}

/// The certificate and key files of TLS (loaded and watched by `server/tls.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file with the certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Bounds on a request head, on the server's own path and hyper's alike.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head (request line and headers), in bytes; larger: 431.
    pub max_bytes: usize,
    /// Most header lines; more: 431.
    pub max_headers: usize,
    /// A head not complete this long after the server starts waiting for
    /// it closes the connection (on a keep-alive connection, the wait
    /// starts when the previous answer is sent).
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_embedded_on_localhost() {
        let c = Config::from_options(Options::default()).expect("defaults are valid");
        assert!(c.mode == Mode::Embedded);
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.heartbeat, Duration::from_secs(15));
        assert_eq!(c.reconnect_window, Duration::from_secs(5));
        assert_eq!(c.cors, Cors::Off);
    }

    /// Demo sign-in announces the demo's members unless the setting says
    /// otherwise (an empty one: none); without it, no topic's members.
    #[test]
    fn demo_sign_in_announces_the_demo_members_by_default() {
        let c = Config::from_options(Options::default()).expect("valid");
        assert!(c.presence.members.is_empty());
        let demo = |members: Option<&str>| Options {
            demo_tokens: Some(true),
            presence_members: members.map(str::to_string),
            ..Default::default()
        };
        let c = Config::from_options(demo(None)).expect("valid");
        assert!(c.presence.members_of("product:p_1"));
        assert!(c.presence.members_of("tenant:demo"));
        assert!(!c.presence.members_of("tenant:other"));
        let c = Config::from_options(demo(Some(""))).expect("valid");
        assert!(c.presence.members.is_empty());
        let c = Config::from_options(demo(Some("room:*"))).expect("valid");
        assert!(c.presence.members_of("room:1") && !c.presence.members_of("product:p_1"));
    }

    #[test]
    fn cluster_needs_both_urls() {
        let o = Options {
            redis_url: Some("redis://127.0.0.1".into()),
            ..Default::default()
        };
        let err = Config::from_options(o).expect_err("must fail");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn flags_win_over_file_and_secrets_stay_out_of_debug() {
        let flags = Options {
            heartbeat_ms: Some(500),
            ..Default::default()
        };
        let c = Config::from_options(layered_over_file(
            flags,
            "heartbeat_ms = 9000\nadmin_token = \"file-secret-123\"\n",
        ))
        .expect("valid");
        assert_eq!(c.heartbeat, Duration::from_millis(500));
        assert_eq!(c.admin_token.as_deref(), Some("file-secret-123"));
        assert!(!format!("{c:?}").contains("file-secret-123"));
    }

    #[test]
    fn reconnect_window_from_file_zero_allowed_and_bounded() {
        let file: Options = toml::from_str("reconnect_window_ms = 0\n").expect("toml");
        let c = Config::from_options(file).expect("valid");
        assert_eq!(c.reconnect_window, Duration::ZERO);
        let o = Options {
            reconnect_window_ms: Some(600_001),
            ..Default::default()
        };
        let err = Config::from_options(o).expect_err("too long");
        assert!(err.to_string().contains("RECONNECT_WINDOW"), "{err}");
    }

    #[test]
    fn head_limits_default_and_bounds() {
        let c = Config::from_options(Options::default()).expect("defaults");
        assert_eq!(c.head.max_bytes, 16 * 1024);
        assert_eq!(c.head.max_headers, 100);
        assert_eq!(c.head.timeout, Duration::from_secs(10));
        let file: Options =
            toml::from_str("max_header_bytes = 4096\nheader_timeout_ms = 500\n").expect("toml");
        let c = Config::from_options(file).expect("valid");
        assert_eq!(c.head.max_bytes, 4096);
        assert_eq!(c.head.timeout, Duration::from_millis(500));
        let o = Options {
            max_header_bytes: Some(100),
            ..Default::default()
        };
        let err = Config::from_options(o).expect_err("too small");
        assert!(err.to_string().contains("MAX_HEADER_BYTES"), "{err}");
    }

    #[test]
    fn tls_needs_both_files() {
        let file: Options =
            toml::from_str("tls_cert = \"/etc/sy/cert.pem\"\ntls_key = \"/etc/sy/key.pem\"\n")
                .expect("toml");
        let c = Config::from_options(file).expect("valid");
        let tls = c.tls.expect("tls on");
        assert_eq!(tls.cert, PathBuf::from("/etc/sy/cert.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/sy/key.pem"));
        assert!(Config::from_options(Options::default())
            .expect("defaults")
            .tls
            .is_none());
        let o = Options {
            tls_cert: Some("/etc/sy/cert.pem".into()),
            ..Default::default()
        };
        let err = Config::from_options(o).expect_err("half");
        assert!(err.to_string().contains("SWITCHYARD_TLS_KEY"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(toml::from_str::<Options>("heartbeat = 5").is_err());
        let dir = std::env::temp_dir().join(format!("switchyard-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "heartbeat = 5\n").expect("write");
        let err = Config::load(Options {
            config_file: Some(file.clone()),
            ..Default::default()
        })
        .expect_err("unknown key");
        assert!(err.to_string().contains("heartbeat"), "{err}");
        let err = Config::load(Options {
            config_file: Some(dir.join("missing.toml")),
            ..Default::default()
        })
        .expect_err("missing file");
        assert!(matches!(err, Error::Read { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `flags` over a file holding `toml`.
    fn layered_over_file(flags: Options, toml: &str) -> Options {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-config-{}-{}",
            std::process::id(),
            toml.len()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(&file, toml).expect("write");
        let o = layered([Options {
            config_file: Some(file),
            ..flags
        }])
        .expect("layered");
        let _ = std::fs::remove_dir_all(&dir);
        o
    }

    /// A subcommand's flags win over the top level's, which win over the
    /// file, which wins over the defaults; a layer leaves alone what it
    /// does not set.
    #[test]
    fn layers_win_in_order_and_leave_alone_what_they_do_not_set() {
        let dir = std::env::temp_dir().join(format!("switchyard-layers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "heartbeat_ms = 9000\nretry_ms = 7000\nclient_queue = 99\n",
        )
        .expect("write");
        let sub = Options {
            heartbeat_ms: Some(500),
            ..Default::default()
        };
        let top = Options {
            config_file: Some(file),
            heartbeat_ms: Some(600),
            retry_ms: Some(800),
            ..Default::default()
        };
        let c = Config::load_layers([sub, top]).expect("valid");
        assert_eq!(c.heartbeat, Duration::from_millis(500));
        assert_eq!(c.retry, Duration::from_millis(800));
        assert_eq!(c.client_queue, 99);
        assert_eq!(c.write_deadline, Duration::from_secs(30), "a default");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_console_role_claim_needs_the_providers_keys_and_a_claim_of_its_own() {
        let role = |claim: &str, jwks: Option<&str>| Options {
            console_role_claim: Some(claim.into()),
            jwks_url: jwks.map(str::to_string),
            ..Default::default()
        };
        let err = Config::from_options(role("roles", None)).expect_err("no provider");
        assert!(err.to_string().contains("SWITCHYARD_JWKS_URL"), "{err}");
        for taken in ["sub", "tenant", "exp", "svc"] {
            let err = Config::from_options(role(taken, Some("https://idp.example/jwks")))
                .expect_err("a claim in use");
            assert!(err.to_string().contains(taken), "{err}");
        }
        let c =
            Config::from_options(role("roles", Some("https://idp.example/jwks"))).expect("valid");
        assert_eq!(c.console_role_claim.as_deref(), Some("roles"));
        let c = Config::from_options(Options::default()).expect("valid");
        assert_eq!(c.console_role_claim, None);
    }

    #[test]
    fn the_console_prefix_is_checked_and_the_console_off_without_sign_in() {
        let with = |prefix: Option<&str>| Options {
            admin_token: Some("admin-token-1".into()),
            console_prefix: prefix.map(str::to_string),
            ..Default::default()
        };
        let c = Config::from_options(with(None)).expect("valid");
        assert_eq!(c.console_prefix.as_deref(), Some("/console"));
        let c = Config::from_options(with(Some("/ops/console-2"))).expect("valid");
        assert_eq!(c.console_prefix.as_deref(), Some("/ops/console-2"));
        for bad in [
            "console",
            "/",
            "/console/",
            "/a//b",
            "/Console",
            "/admin",
            "/events/x",
            "/a/b/c/d",
            "/c?x",
        ] {
            let err = Config::from_options(with(Some(bad))).expect_err(bad);
            assert!(
                err.to_string().contains("SWITCHYARD_CONSOLE_PREFIX"),
                "{err}"
            );
        }
        let c = Config::from_options(Options::default()).expect("valid");
        assert_eq!(c.console_prefix, None);
    }

    #[test]
    fn short_jwt_secret_and_plain_http_jwks_are_refused() {
        let o = Options {
            jwt_secret: Some("x".repeat(31)),
            ..Default::default()
        };
        let err = Config::from_options(o).expect_err("short");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains(&"x".repeat(31)), "{err}");
        let o = Options {
            jwt_secret: Some("x".repeat(32)),
            ..Default::default()
        };
        assert!(Config::from_options(o).is_ok());
        let jwks = |url: &str, allow: Option<bool>| Options {
            jwks_url: Some(url.into()),
            jwks_allow_http: allow,
            ..Default::default()
        };
        let err = Config::from_options(jwks("http://idp.test/jwks", None)).expect_err("http");
        assert!(
            err.to_string().contains("SWITCHYARD_JWKS_ALLOW_HTTP"),
            "{err}"
        );
        assert!(Config::from_options(jwks("http://idp.test/jwks", Some(true))).is_ok());
        assert!(Config::from_options(jwks("https://idp.test/jwks", None)).is_ok());
        assert!(Config::from_options(jwks("ftp://idp.test/jwks", Some(true))).is_err());
    }

    #[test]
    fn metrics_are_closed_by_default() {
        let c = Config::from_options(Options::default()).expect("defaults");
        assert!(!c.metrics_public);
        assert!(c.metrics_token.is_none());
        let file: Options =
            toml::from_str("metrics_token = \"scrape-secret-1\"\nmetrics_public = true\n")
                .expect("toml");
        let c = Config::from_options(file).expect("valid");
        assert!(c.metrics_public);
        assert!(!format!("{c:?}").contains("scrape-secret-1"));
    }

    #[test]
    fn sources_come_from_the_file_or_the_json_variable() {
        let file = r#"
redis_url = "redis://127.0.0.1:6379"
database_url = "postgres://localhost/x"

[[sources]]
name = "bids"
kind = "redis-list-bids"
key = "bids:pending"
tenant = "shop"

[[sources]]
name = "users"
kind = "redis-pubsub"
pattern = "sse:user:*"
preset = "json"
tenant = "shop"
topic = "user:{1}"
mode = "shadow"
"#;
        let c = Config::from_options(layered_over_file(Options::default(), file)).expect("valid");
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[0].processing_key, "bids:pending:processing");
        assert_eq!(
            c.sources[1].redis_url, "redis://127.0.0.1:6379",
            "the node's Redis"
        );
        assert_eq!(c.sources[1].mode, crate::sources::SourceMode::Shadow);
        let json = Options {
            sources_json: Some(
                r#"[{"name":"m","kind":"redis-stream","key":"k","redis_url":"redis://r",
                     "tenant":"shop","topic":"match:{/payload/matchId}","preset":"event-payload"}]"#
                    .into(),
            ),
            ..Default::default()
        };
        let c = Config::from_options(layered_over_file(json, file)).expect("valid");
        assert_eq!(c.sources.len(), 1, "the variable replaces the file's");
        let err = Config::from_options(layered_over_file(
            Options::default(),
            "[[sources]]\nname = \"x\"\nkind = \"redis-pubsub\"\npattern = \"a:*\"\ntenant = \"t\"\ntopic = \"a:{1}\"\n",
        ))
        .expect_err("no type, embedded without redis_url");
        assert!(err.to_string().contains("source \"x\""), "{err}");
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }

    #[test]
    fn cors_list_is_split() {
        let o = Options {
            cors_origins: Some("http://a.test, http://b.test".into()),
            ..Default::default()
        };
        let c = Config::from_options(o).expect("valid");
        assert_eq!(
            c.cors,
            Cors::List(vec!["http://a.test".into(), "http://b.test".into()])
        );
    }
}
