//! What an operator sees: `GET /admin/plugins` and the numbers behind the
//! plugin metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::slot::SlotState;
use super::stats::CALL_BUCKETS_US;
use super::{Held, Plugins};
use crate::metrics::{PluginSample, SlotSample};
use crate::plugins::world::{by_world, World};
use crate::plugins::Slot;

impl Plugins {
    /// Everything `GET /admin/plugins` shows.
    pub fn describe(&self) -> Value {
        let mut out = Vec::new();
        for slot in Slot::ALL {
            by_world!(slot, W => self.describe_world::<W>(&mut out));
        }
        json!({ "slots": out })
    }

    /// The slots of world `W`, by tenant (the default slot first, shown
    /// even when never configured).
    fn describe_world<W: Held>(&self, out: &mut Vec<Value>) {
        let states = self
            .slots::<W>()
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut tenants: Vec<&Arc<SlotState<W>>> = states.values().collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let slot = W::SLOT;
        if !tenants.iter().any(|s| s.tenant.is_empty()) {
            out.push(json!({
                "slot": slot.as_str(), "tenant": null, "active": null,
                "builtin": slot != Slot::EventFilter,
            }));
        }
        for s in tenants {
            out.push(describe_state(s));
        }
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

fn describe_state<W: World>(s: &SlotState<W>) -> Value {
    let row = s.row.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let active = s
        .active
        .load_full()
        .map(|v| json!({ "version": v.hash, "origin": v.origin, "loaded_at": v.since }));
    let shadow = s.shadow.load_full().map(|v| s.shadow_stats.report(&v.hash));
    json!({
        "slot": s.slot.as_str(),
        "tenant": if s.tenant.is_empty() { Value::Null } else { Value::String(s.tenant.clone()) },
        "active": active,
        "builtin": active_is_builtin(s),
        "shadow": shadow,
        "history": row.history,
        "config": row.config,
        "rev": row.rev,
        "calls": s.stats.calls(),
        "errors": s.stats.errors(),
        "latency_us": { "p50": s.stats.quantile_us(0.5), "p99": s.stats.quantile_us(0.99) },
        "swaps": s.swaps.load(Ordering::Relaxed),
        "last_error": s.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "compiling": s.compiling.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    })
}

fn active_is_builtin<W: World>(s: &SlotState<W>) -> bool {
    s.active.load().is_none() && s.slot != Slot::EventFilter
}
