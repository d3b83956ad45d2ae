//! Business rules as WebAssembly components, one slot per rule.
//!
//! - `wasm`: the sandbox (wasmtime component model, deadlines, memory cap, no
//!   ambient authority) and the generated bindings of `wit/`; one call path
//!   for every slot, host faults kept apart from the guest's failures.
//! - `world`: the four worlds as types (bindings, input, output), and the
//!   canonical encoding of an input its random seed is derived from.
//! - `registry`: which version answers for each slot and tenant; swaps,
//!   shadow runs, rollback, per-slot statistics.
//! - `convert`: host types <-> WIT types <-> JSON, and the output rules.
//! - `filtered`: what a subscription gets of an event once the event filter
//!   answered (live, replay and snapshots alike).
//! - `watch`: the plugins directory, read at start and watched.
//! - `logs`: the plugins' log lines kept for the console (a bounded ring
//!   per version, secrets redacted).
//! - `manifest`: what a component declares in custom sections (an event
//!   filter's shape parameters), read without compiling it.
//! - `builtin`: the rules that answer while no component is active;
//!   `bundled`: the example plugins compiled into the binary.

pub mod builtin;
pub mod cli;
pub mod convert;
mod filtered;
pub mod logs;
pub mod manifest;
pub mod registry;
pub mod wasi;
pub mod wasm;
pub mod watch;
pub mod world;

pub use filtered::{EventFilters, NoFilters, ShapeFilter};
pub use registry::{Access, FilterOutcome, Mode, PluginError, Plugins, TenantFilter};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::plugins::PluginStore;
use crate::store::{NewMessage, Notification};

/// The example plugins from `plugins/examples`, built by `build.rs`.
pub mod bundled {
    use super::Slot;

    /// `plugins/examples/bid-validator`.
    pub const BID_VALIDATOR: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/bid_validator.wasm"));
    /// `plugins/examples/notification-shaper`.
    pub const NOTIFICATION_SHAPER: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/notification_shaper.wasm"));
    /// `plugins/examples/event-filter`.
    pub const EVENT_FILTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/event_filter.wasm"));

    /// Each slot's example.
    pub const ALL: [(Slot, &[u8]); 3] = [
        (Slot::BidValidator, BID_VALIDATOR),
        (Slot::NotificationShaper, NOTIFICATION_SHAPER),
        (Slot::EventFilter, EVENT_FILTER),
    ];
}

/// Why the plugin registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine cannot start.
    #[error(transparent)]
    Engine(#[from] wasm::HostError),
    /// The stored slots cannot be read.
    #[error("cannot read plugin slots: {0}")]
    Load(#[source] crate::store::Error),
}

/// Starts the registry: stored slots, then the plugins directory, then the
/// bundled examples in slots never configured; then watches the directory
/// and, when `shared` (cluster mode), polls for changes made on other nodes.
pub async fn start(
    config: &Config,
    db: std::sync::Arc<dyn PluginStore>,
    shared: bool,
    stop: CancellationToken,
) -> Result<Plugins, StartError> {
    let wasm = wasm::WasmHost::new(config.plugin_limits.clone())?
        .with_cache(config.plugin_cache_dir.clone());
    let plugins = Plugins::new(wasm, db, config.plugin_history);
    plugins.load().await.map_err(StartError::Load)?;
    plugins.record_stream_requests(config.recorded_stream_requests, stop.clone());
    watch::scan(&plugins, &config.plugins_dir).await;
    if config.example_plugins {
        for (slot, bytes) in bundled::ALL {
            if plugins.row("", slot).rev == 0 {
                if let Err(e) = plugins.install_default(slot, bytes).await {
                    tracing::error!(%slot, error = %e, "cannot activate the bundled example plugin");
                }
            }
        }
    }
    if let Err(e) = watch::spawn(plugins.clone(), config.plugins_dir.clone(), stop.clone()) {
        tracing::error!(error = %e, "plugins dir not watched; use the admin API to change plugins");
    }
    if shared {
        let p = plugins.clone();
        let every = config.plugin_sync;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = p.sync().await {
                            tracing::debug!(error = %e, "plugin sync failed; retrying");
                        }
                    }
                }
            }
        });
    }
    Ok(plugins)
}

impl utoipa::PartialSchema for Slot {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Slot::ALL.map(Slot::as_str)))
            .into()
    }
}

impl utoipa::ToSchema for Slot {
    fn name() -> std::borrow::Cow<'static, str> {
        "SlotName".into()
    }
}

/// A subscription shape: the stream's query parameters the host does not
/// own, sorted; what the event filter sees of a subscription.
pub type Shape = std::sync::Arc<Vec<(String, String)>>;

/// A plugin slot: one rule, one WIT world. Its schema (`SlotName`) is the
/// list of its names, so the API description names exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// `bid-validator`.
    BidValidator,
    /// `notification-shaper`.
    NotificationShaper,
    /// `event-filter`.
    EventFilter,
    /// `stream-authorizer`.
    StreamAuthorizer,
}

impl Slot {
    /// Every slot.
    pub const ALL: [Slot; 4] = [
        Slot::BidValidator,
        Slot::NotificationShaper,
        Slot::EventFilter,
        Slot::StreamAuthorizer,
    ];

    /// The slot's name: its world, its file name (`{name}.wasm`) and its path
    /// in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::BidValidator => "bid-validator",
            Slot::NotificationShaper => "notification-shaper",
            Slot::EventFilter => "event-filter",
            Slot::StreamAuthorizer => "stream-authorizer",
        }
    }

    /// Parses a slot name.
    pub fn parse(s: &str) -> Option<Slot> {
        Slot::ALL.into_iter().find(|slot| slot.as_str() == s)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The notification-shaper slot: what a message turns into for its recipients.
pub trait NotificationShaper: Send + Sync + 'static {
    /// Notifications for a message about to be stored.
    fn shape(&self, msg: &NewMessage) -> Vec<Notification>;
}
