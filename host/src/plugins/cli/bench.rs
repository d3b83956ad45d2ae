//! `plugin bench`: a component's per-call latency over recorded cases.

use serde_json::Value;

use super::cases::{call_case, Case};
use super::{case_config, read_cases, Cases, CliError};
use crate::plugins::wasm::{CallCtx, WasmHost};
use crate::plugins::world::by_world;

/// Per-call latency of a component over recorded cases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The slot the cases are for.
    pub slot: String,
    /// Timed calls (after `warmup` untimed ones).
    pub calls: usize,
    /// Calls that failed (they are timed too).
    pub failed: usize,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 90th percentile, in microseconds.
    pub p90_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Mean, in microseconds.
    pub mean_us: f64,
}

/// `plugin bench`: calls the component `calls` times, going round the cases'
/// inputs, and reports the per-call latency. A call is timed as the server
/// times it: from taking an instance to the output having passed the host's
/// rules, with the inputs already in their WIT form and instances reused
/// between calls.
pub fn bench(
    host: &WasmHost,
    bytes: &[u8],
    cases: &Value,
    calls: usize,
) -> Result<BenchReport, CliError> {
    let cases = read_cases(cases)?;
    if cases.list.is_empty() {
        return Err(CliError::Cases("a non-empty \"cases\" array"));
    }
    by_world!(cases.slot, W => bench_in::<W>(host, bytes, &cases, calls))
}

fn bench_in<W: Case>(
    host: &WasmHost,
    bytes: &[u8],
    cases: &Cases,
    calls: usize,
) -> Result<BenchReport, CliError> {
    let slot = W::SLOT;
    let linked = host.link::<W>(&host.compile(bytes)?)?;
    let mut runs: Vec<(CallCtx<W>, W::Owned)> = Vec::new();
    for (i, case) in cases.list.iter().enumerate() {
        let call = CallCtx::new(
            case_config(&cases.config, &case.config),
            format!("{slot}#bench"),
        );
        let input = W::input(&case.input)
            .map_err(|e| CliError::CasesFile(format!("case {}: {e}", i + 1)))?;
        runs.push((call, input));
    }
    let run = |i: usize| {
        let (call, input) = &runs[i % runs.len()];
        call_case(host, &linked, call, input).map(drop)
    };
    let warmup = runs.len().max((calls / 10).min(1_000));
    for i in 0..warmup {
        let _ = run(i);
    }
    let mut took = Vec::with_capacity(calls);
    let mut failed = 0;
    for i in 0..calls.max(1) {
        let started = std::time::Instant::now();
        let r = run(i);
        took.push(started.elapsed().as_nanos() as f64 / 1_000.0);
        failed += usize::from(r.is_err());
    }
    let mean_us = took.iter().sum::<f64>() / took.len() as f64;
    took.sort_by(f64::total_cmp);
    let q = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    Ok(BenchReport {
        slot: slot.as_str().into(),
        calls: took.len(),
        failed,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        mean_us,
    })
}
