//! What an operator sees: `GET /admin/plugins` (typed views, each its own
//! schema in the API description) and the numbers behind the plugin
//! metrics.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;

use super::shadow::ShadowView;
use super::slot::{Compiling, LoadError, SlotState};
use super::stats::CALL_BUCKETS_US;
use super::{Held, Plugins};
use crate::metrics::{PluginSample, SlotSample};
use crate::plugins::world::{by_world, World};
use crate::plugins::Slot;

/// `GET /admin/plugins`: every slot of every world.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PluginsView {
    /// By slot, then tenant (the default slot first).
    pub slots: Vec<SlotView>,
}

/// A slot of one tenant (`tenant` null: the default of every tenant). A
/// slot nothing was ever installed in has only `slot`, `tenant`, `active`
/// and `builtin`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = PluginSlot)]
pub struct SlotView {
    /// The slot's name.
    #[schema(value_type = Slot)]
    pub slot: &'static str,
    /// The tenant; null for the default slot of every tenant.
    #[schema(required = true)]
    pub tenant: Option<String>,
    /// The active version, if a component is active.
    #[schema(required = true)]
    pub active: Option<ActiveView>,
    /// Whether the built-in rule answers (no component active, and the
    /// slot has one).
    pub builtin: bool,
    /// The rest, for a slot that was ever configured.
    #[serde(flatten)]
    #[schema(value_type = SlotDetails)]
    pub details: Option<SlotDetails>,
}

/// The active version of a slot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveView {
    /// Its content hash (the component's SHA-256).
    pub version: String,
    /// Where it came from.
    pub origin: String,
    /// When it became active, ms since the epoch.
    pub loaded_at: i64,
}

/// What a configured slot shows beyond its active version. Its fields come
/// all together or not at all (a slot nothing was ever installed in), so
/// none is required in the schema.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SlotDetails {
    /// The shadow candidate and how it compares.
    #[schema(required = false)]
    pub shadow: Option<ShadowView>,
    /// Earlier active versions, newest first.
    #[schema(required = false)]
    pub history: Vec<String>,
    /// The plugin's configuration.
    #[schema(required = false)]
    pub config: BTreeMap<String, String>,
    /// The stored row's revision.
    #[schema(required = false)]
    pub rev: i64,
    /// Calls of the active version.
    #[schema(required = false)]
    pub calls: u64,
    /// Calls the plugin failed, by kind (`trap`, `timeout`, `memory`,
    /// `bad_output`); calls the host could not run are counted apart, in
    /// `switchyard_plugin_host_faults_total`.
    #[schema(required = false)]
    pub errors: BTreeMap<&'static str, u64>,
    /// Call latency quantiles.
    #[schema(required = false)]
    pub latency_us: Latency,
    /// Active-version changes.
    #[schema(required = false)]
    pub swaps: u64,
    /// The last component refused.
    #[schema(required = false)]
    pub last_error: Option<LoadError>,
    /// An upload being compiled.
    #[schema(required = false)]
    pub compiling: Option<Compiling>,
}

/// Approximate call latency, in microseconds (bucket upper bounds).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Median.
    pub p50: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
}

impl Plugins {
    /// Everything `GET /admin/plugins` shows.
    pub fn describe(&self) -> PluginsView {
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            by_world!(slot, W => self.describe_world::<W>(&mut slots));
        }
        PluginsView { slots }
    }

    /// One slot of `tenant` (`""`: the default, shown even when never
    /// configured); none for a tenant's slot never configured.
    pub fn describe_slot(&self, tenant: &str, slot: Slot) -> Option<SlotView> {
        by_world!(slot, W => {
            let states = self
                .slots::<W>()
                .states
                .read()
                .unwrap_or_else(|p| p.into_inner());
            match states.get(tenant) {
                Some(s) => Some(describe_state(s)),
                None if tenant.is_empty() => Some(unconfigured(slot)),
                None => None,
            }
        })
    }

    /// A slot's shadow candidate with every disagreement kept (none: no
    /// candidate, or a tenant's slot never configured).
    pub fn shadow_report(&self, tenant: &str, slot: Slot) -> Option<ShadowView> {
        by_world!(slot, W => {
            let states = self
                .slots::<W>()
                .states
                .read()
                .unwrap_or_else(|p| p.into_inner());
            let s = states.get(tenant)?;
            let v = s.shadow.load_full()?;
            Some(s.shadow_stats.full_report(&v.hash))
        })
    }

    /// The slots of world `W`, by tenant (the default slot first, shown
    /// even when never configured).
    fn describe_world<W: Held>(&self, out: &mut Vec<SlotView>) {
        let states = self
            .slots::<W>()
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut tenants: Vec<&Arc<SlotState<W>>> = states.values().collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        if !tenants.iter().any(|s| s.tenant.is_empty()) {
            out.push(unconfigured(W::SLOT));
        }
        out.extend(tenants.into_iter().map(|s| describe_state(s)));
    }

    /// The numbers behind the plugin metrics (their names are in
    /// `metrics.rs`), read at each scrape.
    pub fn sample(&self) -> PluginSample {
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            by_world!(slot, W => self.sample_world::<W>(&mut slots));
        }
        let c = &self.inner.wasm.compiles;
        PluginSample {
            compiled: c.compiled.load(Ordering::Relaxed),
            compile_seconds: c.compile_us.load(Ordering::Relaxed) as f64 / 1e6,
            cache_hits: c.cache_hits.load(Ordering::Relaxed),
            stream_records_dropped: self.stream_records_dropped(),
            slots,
        }
    }

    fn sample_world<W: Held>(&self, out: &mut Vec<SlotSample>) {
        let states = self
            .slots::<W>()
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut states: Vec<&Arc<SlotState<W>>> = states.values().collect();
        states.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out.extend(states.iter().map(|s| {
            let mut cumulative = 0;
            SlotSample {
                slot: s.slot.as_str(),
                tenant: s.tenant.clone(),
                calls: s.stats.calls(),
                errors: s.stats.errors().into_iter().collect(),
                host_faults: s.stats.host_faults(),
                swaps: s.swaps.load(Ordering::Relaxed),
                shadow_disagreements: s.shadow_stats.disagreed.load(Ordering::Relaxed),
                buckets: CALL_BUCKETS_US
                    .iter()
                    .zip(&s.stats.buckets)
                    .map(|(le, n)| {
                        cumulative += n.load(Ordering::Relaxed);
                        (*le as f64 / 1e6, cumulative)
                    })
                    .collect(),
                seconds: s.stats.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            }
        }));
    }
}

/// The default slot of a world never configured: the built-in rule (or,
/// for the event filter, no filter).
fn unconfigured(slot: Slot) -> SlotView {
    SlotView {
        slot: slot.as_str(),
        tenant: None,
        active: None,
        builtin: slot != Slot::EventFilter,
        details: None,
    }
}

fn describe_state<W: World>(s: &SlotState<W>) -> SlotView {
    let row = s.row.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let active = s.active.load_full().map(|v| ActiveView {
        version: v.hash.clone(),
        origin: v.origin.clone(),
        loaded_at: v.since,
    });
    let shadow = s.shadow.load_full().map(|v| s.shadow_stats.report(&v.hash));
    SlotView {
        slot: s.slot.as_str(),
        tenant: (!s.tenant.is_empty()).then(|| s.tenant.clone()),
        active,
        builtin: active_is_builtin(s),
        details: Some(SlotDetails {
            shadow,
            history: row.history,
            config: row.config,
            rev: row.rev,
            calls: s.stats.calls(),
            errors: s.stats.errors(),
            latency_us: Latency {
                p50: s.stats.quantile_us(0.5),
                p99: s.stats.quantile_us(0.99),
            },
            swaps: s.swaps.load(Ordering::Relaxed),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            compiling: s
                .compiling
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }),
    }
}

fn active_is_builtin<W: World>(s: &SlotState<W>) -> bool {
    s.active.load().is_none() && s.slot != Slot::EventFilter
}
