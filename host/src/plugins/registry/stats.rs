//! Calls, errors by kind and latency of a slot's active version, and the
//! host faults of its calls (counted apart: they are not the plugin's).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::plugins::wasm::{CallResult, FailKind};

/// Upper bounds of the call-latency buckets, in microseconds.
pub(super) const CALL_BUCKETS_US: [u64; 21] = [
    1, 2, 3, 4, 5, 6, 8, 10, 15, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000,
    50_000, 100_000,
];

/// Calls, errors and latency of one slot's active version.
#[derive(Default)]
pub struct CallStats {
    pub(super) calls: AtomicU64,
    pub(super) errors: [AtomicU64; FailKind::ALL.len()],
    pub(super) buckets: [AtomicU64; CALL_BUCKETS_US.len()],
    pub(super) sum_us: AtomicU64,
    /// Calls the host could not run (not counted as calls or errors).
    pub(super) host_faults: AtomicU64,
}

impl CallStats {
    pub(super) fn record(&self, took: Duration, result: Result<(), FailKind>) {
        // Rounded up, so a call lands in the bucket whose bound it is under.
        let us = took.as_nanos().div_ceil(1_000) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = CALL_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Err(kind) = result {
            let i = FailKind::ALL
                .iter()
                .position(|k| *k == kind)
                .expect("every kind is listed");
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Host faults so far.
    pub fn host_faults(&self) -> u64 {
        self.host_faults.load(Ordering::Relaxed)
    }

    /// Errors so far, by kind.
    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        FailKind::ALL
            .iter()
            .zip(&self.errors)
            .map(|(k, n)| (k.as_str(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Approximate latency quantile in microseconds (bucket upper bound).
    pub(super) fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.calls();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Some(CALL_BUCKETS_US[i]);
            }
        }
        Some(u64::MAX)
    }
}

/// Runs a call of the active version and records it: its latency and,
/// when the guest failed, the kind; a host fault only in its own count.
/// Answers the result and how long the call took in microseconds (for a
/// shadow comparison's example).
pub(super) fn timed_us<T>(
    stats: &CallStats,
    f: impl FnOnce() -> CallResult<T>,
) -> (CallResult<T>, u64) {
    let started = Instant::now();
    let r = f();
    let took = started.elapsed();
    match &r {
        Ok(answer) => stats.record(took, answer.as_ref().map(|_| ()).map_err(|e| e.kind)),
        Err(_) => {
            stats.host_faults.fetch_add(1, Ordering::Relaxed);
        }
    }
    (r, super::shadow::micros(took))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_errors_and_quantiles() {
        let s = CallStats::default();
        assert_eq!(s.quantile_us(0.5), None);
        for _ in 0..98 {
            s.record(Duration::from_micros(3), Ok(()));
        }
        s.record(Duration::from_micros(900), Err(FailKind::Timeout));
        s.record(Duration::from_nanos(4_001), Err(FailKind::Trap));
        assert_eq!(s.calls(), 100);
        let errors = s.errors();
        assert_eq!(errors["timeout"], 1);
        assert_eq!(errors["trap"], 1);
        assert_eq!(errors["memory"], 0);
        assert_eq!(errors.len(), FailKind::ALL.len());
        // 98 calls of 3 µs: the median is in the 3 µs bucket; the 99th
        // percentile is the 4.001 µs call, rounded up into the 5 µs bucket.
        assert_eq!(s.quantile_us(0.5), Some(3));
        assert_eq!(s.quantile_us(0.99), Some(5));
        assert_eq!(s.quantile_us(1.0), Some(1_000));
    }

    #[test]
    fn a_call_past_the_last_bucket_counts_but_has_no_bucket() {
        let s = CallStats::default();
        s.record(Duration::from_secs(1), Ok(()));
        assert_eq!(s.calls(), 1);
        assert_eq!(s.quantile_us(0.5), Some(u64::MAX));
    }

    #[test]
    fn timed_records_the_outcome_kind() {
        use crate::plugins::wasm::{GuestFailure, HostFault};
        let s = CallStats::default();
        let (ok, _) = timed_us(&s, || Ok(Ok(1u8)));
        assert!(matches!(ok, Ok(Ok(1))));
        let _ = timed_us::<u8>(&s, || {
            Ok(Err(GuestFailure {
                kind: FailKind::BadOutput,
                message: "no".into(),
            }))
        });
        assert_eq!(s.calls(), 2);
        assert_eq!(s.errors()["bad_output"], 1);
        // A host fault is not the plugin's: no call, no error, its own count.
        let _ = timed_us::<u8>(&s, || {
            Err(HostFault {
                message: "pool exhausted".into(),
            })
        });
        assert_eq!(s.calls(), 2);
        assert_eq!(s.errors().values().sum::<u64>(), 1);
        assert_eq!(s.host_faults(), 1);
    }
}
