//! What an operator sees: `GET /admin/plugins` (typed views, serialized
//! as the API documents them in `http/openapi.json`) and the numbers behind
//! the plugin metrics.

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
#[derive(Debug, Clone, Serialize)]
pub struct PluginsView {
    /// By slot, then tenant (the default slot first).
    pub slots: Vec<SlotView>,
}

/// One slot of one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct SlotView {
    /// The slot's name.
    pub slot: &'static str,
    /// The tenant; none for the default slot of every tenant.
    pub tenant: Option<String>,
    /// The active version, if a component is active.
    pub active: Option<ActiveView>,
    /// Whether the built-in rule answers (no component active, and the
    /// slot has one).
    pub builtin: bool,
    /// The rest, for a slot that was ever configured.
    #[serde(flatten)]
    pub details: Option<SlotDetails>,
}

/// The active version of a slot.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveView {
    /// Its content hash.
    pub version: String,
    /// Where it came from.
    pub origin: String,
    /// When it became active, ms since the epoch.
    pub loaded_at: i64,
}

/// What a configured slot shows beyond its active version.
#[derive(Debug, Clone, Serialize)]
pub struct SlotDetails {
    /// The shadow candidate and how it compares.
    pub shadow: Option<ShadowView>,
    /// Earlier active versions, newest first.
    pub history: Vec<String>,
    /// The plugin's configuration.
    pub config: BTreeMap<String, String>,
    /// The stored row's revision.
    pub rev: i64,
    /// Calls of the active version.
    pub calls: u64,
    /// Calls the plugin failed, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Call latency quantiles.
    pub latency_us: Latency,
    /// Active-version changes.
    pub swaps: u64,
    /// The last component refused.
    pub last_error: Option<LoadError>,
    /// An upload being compiled.
    pub compiling: Option<Compiling>,
}

/// Approximate call latency, in microseconds (bucket upper bounds).
#[derive(Debug, Clone, Serialize)]
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
