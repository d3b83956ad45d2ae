//! What one slot of one tenant holds: its versions as swapped `Arc`s, its
//! statistics, the stored row as last applied, its last refusal.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::shadow::ShadowStats;
use super::stats::CallStats;
use crate::plugins::wasm::{CallCtx, Linked};
use crate::plugins::world::World;
use crate::plugins::Slot;
use crate::store::plugins::SlotRow;

/// One loaded version of a plugin of world `W`.
pub struct Version<W: World> {
    /// Content hash (SHA-256, hex).
    pub hash: String,
    /// Where it came from.
    pub origin: String,
    /// When it became active (or was loaded), ms since the epoch.
    pub since: i64,
    pub(super) linked: Linked<W>,
    pub(super) call: CallCtx<W>,
}

impl<W: World> Version<W> {
    /// The short form recorded on decisions: `{slot}@{first 12 hex digits}`.
    pub fn tag(&self) -> String {
        format!("{}@{}", W::SLOT, &self.hash[..12])
    }
}

/// Why a component was refused (the last refused component).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadError {
    /// When: milliseconds since the Unix epoch.
    pub at: i64,
    /// What was loaded (`file:…`, `admin`, ...).
    pub origin: String,
    /// Content hash of the refused bytes.
    pub hash: String,
    /// Why.
    pub message: String,
}

/// One slot of one tenant (`""`: the default of every tenant), its
/// versions typed by the slot's world.
pub struct SlotState<W: World> {
    pub(super) info: Arc<SlotInfo>,
    pub(super) active: ArcSwapOption<Version<W>>,
    pub(super) shadow: ArcSwapOption<Version<W>>,
}

impl<W: World> std::ops::Deref for SlotState<W> {
    type Target = SlotInfo;
    fn deref(&self) -> &SlotInfo {
        &self.info
    }
}

/// What a slot holds whatever its world: statistics, the stored row as
/// last applied, its last refusal, an upload being compiled.
pub struct SlotInfo {
    pub(super) tenant: String,
    pub(super) slot: Slot,
    pub(super) stats: CallStats,
    pub(super) shadow_stats: ShadowStats,
    pub(super) row: Mutex<SlotRow>,
    pub(super) last_error: Mutex<Option<LoadError>>,
    /// An upload being compiled in the background.
    pub(super) compiling: Mutex<Option<Compiling>>,
    pub(super) swaps: AtomicU64,
}

/// An upload whose component is being compiled off the serving path.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Compiling {
    /// Its content hash.
    pub version: String,
    /// `active` or `shadow`.
    #[schema(value_type = super::Mode)]
    pub mode: &'static str,
    /// When the compile started: milliseconds since the Unix epoch.
    pub since: i64,
}

impl<W: World> SlotState<W> {
    pub(super) fn new(tenant: &str) -> SlotState<W> {
        let slot = W::SLOT;
        SlotState {
            info: Arc::new(SlotInfo {
                tenant: tenant.into(),
                slot,
                stats: CallStats::default(),
                shadow_stats: ShadowStats::default(),
                row: Mutex::new(SlotRow {
                    tenant: tenant.into(),
                    slot: slot.as_str().into(),
                    ..SlotRow::default()
                }),
                last_error: Mutex::new(None),
                compiling: Mutex::new(None),
                swaps: AtomicU64::new(0),
            }),
            active: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
        }
    }
}

impl SlotInfo {
    pub(super) fn label(&self) -> String {
        if self.tenant.is_empty() {
            self.slot.as_str().to_string()
        } else {
            format!("{}@{}", self.slot, self.tenant)
        }
    }
}
