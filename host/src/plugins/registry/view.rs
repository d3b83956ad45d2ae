//! What an operator sees: `GET /admin/plugins` and the plugin metrics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::slot::SlotState;
use super::stats::CALL_BUCKETS_US;
use super::Plugins;
use crate::plugins::Slot;

impl Plugins {
    /// Everything `GET /admin/plugins` shows.
    pub fn describe(&self) -> Value {
        let slots = self.inner.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for slot in Slot::ALL {
            let mut tenants: Vec<&Arc<SlotState>> = slots
                .get(&slot)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
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
        json!({ "slots": out })
    }

    /// Prometheus text for every slot.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let slots = self.inner.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut states: Vec<&Arc<SlotState>> = slots.values().flat_map(|m| m.values()).collect();
        states.sort_by(|a, b| (a.slot, &a.tenant).cmp(&(b.slot, &b.tenant)));
        let c = &self.inner.wasm.compiles;
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_compiles_total Components compiled (not found in the code cache).\n\
             # TYPE switchyard_plugin_compiles_total counter\n\
             switchyard_plugin_compiles_total {}\n\
             # HELP switchyard_plugin_compile_seconds_total Time spent compiling components.\n\
             # TYPE switchyard_plugin_compile_seconds_total counter\n\
             switchyard_plugin_compile_seconds_total {:.6}\n\
             # HELP switchyard_plugin_cache_hits_total Components loaded from the compiled-code cache.\n\
             # TYPE switchyard_plugin_cache_hits_total counter\n\
             switchyard_plugin_cache_hits_total {}",
            c.compiled.load(Ordering::Relaxed),
            c.compile_us.load(Ordering::Relaxed) as f64 / 1e6,
            c.cache_hits.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_calls_total Calls of the active plugin version."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_calls_total counter");
        for s in &states {
            let _ = writeln!(
                out,
                "switchyard_plugin_calls_total{{{}}} {}",
                labels(s),
                s.stats.calls()
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_errors_total Failed plugin calls, by kind."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_errors_total counter");
        for s in &states {
            for (kind, n) in s.stats.errors() {
                let _ = writeln!(
                    out,
                    "switchyard_plugin_errors_total{{{},kind=\"{kind}\"}} {n}",
                    labels(s)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_swaps_total Active-version changes."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_swaps_total counter");
        for s in &states {
            let _ = writeln!(
                out,
                "switchyard_plugin_swaps_total{{{}}} {}",
                labels(s),
                s.swaps.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP switchyard_plugin_shadow_disagreements_total Shadow verdicts that differed from the active version's.");
        let _ = writeln!(
            out,
            "# TYPE switchyard_plugin_shadow_disagreements_total counter"
        );
        for s in &states {
            let _ = writeln!(
                out,
                "switchyard_plugin_shadow_disagreements_total{{{}}} {}",
                labels(s),
                s.shadow_stats.disagreed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_call_seconds Plugin call latency."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_call_seconds histogram");
        for s in &states {
            let l = labels(s);
            let mut cumulative = 0;
            for (i, b) in CALL_BUCKETS_US.iter().enumerate() {
                cumulative += s.stats.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "switchyard_plugin_call_seconds_bucket{{{l},le=\"{}\"}} {cumulative}",
                    *b as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "switchyard_plugin_call_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                s.stats.calls()
            );
            let _ = writeln!(
                out,
                "switchyard_plugin_call_seconds_sum{{{l}}} {}",
                s.stats.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "switchyard_plugin_call_seconds_count{{{l}}} {}",
                s.stats.calls()
            );
        }
    }
}

fn labels(s: &SlotState) -> String {
    format!("slot=\"{}\",tenant=\"{}\"", s.slot, s.tenant)
}

fn describe_state(s: &SlotState) -> Value {
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

fn active_is_builtin(s: &SlotState) -> bool {
    s.active.load().is_none() && s.slot != Slot::EventFilter
}
