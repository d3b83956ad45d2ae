//! How a shadow candidate compares with the active version: counts, and
//! the latest disagreements as examples.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{json, Value};

use crate::plugins::wasm::{CallResult, GuestFailure};

/// Disagreement examples kept per shadow candidate (`GET
/// /admin/plugins/{slot}/shadow`).
pub const SHADOW_EXAMPLES: usize = 50;

/// Of those, the latest shown in `GET /admin/plugins`.
const LISTED_EXAMPLES: usize = 10;

/// How a shadow candidate compares with the active version.
#[derive(Default)]
pub(super) struct ShadowStats {
    pub(super) compared: AtomicU64,
    pub(super) disagreed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) examples: Mutex<VecDeque<ShadowExample>>,
}

/// A shadow candidate in `GET /admin/plugins`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowView {
    /// Its content hash.
    pub version: String,
    /// Answers compared with the active version's.
    pub compared: u64,
    /// Of those, how many differed.
    pub disagreed: u64,
    /// Calls of the candidate that failed.
    pub failed: u64,
    /// The latest disagreements (at most 10 here, 50 in `GET
    /// /admin/plugins/{slot}/shadow`), oldest first.
    pub examples: Vec<ShadowExample>,
}

/// One disagreement: what was asked, what was applied, what the candidate
/// answered (`{"error": ...}` when it failed), and how long each took.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowExample {
    /// When, ms since the epoch.
    pub at: i64,
    /// `answer` (both answered, differently), or how the candidate failed
    /// (`trap`, `timeout`, `memory`, `bad_output`).
    #[schema(value_type = String, example = "answer")]
    pub kind: &'static str,
    /// The input, as a case of a cases file takes it (`plugin test`).
    pub input: Value,
    /// The active version's answer, as applied.
    pub active: Value,
    /// The candidate's.
    pub candidate: Value,
    /// The active version's call, in microseconds (`null`: the built-in
    /// rule answered, or it was not timed).
    #[schema(required = true)]
    pub active_us: Option<u64>,
    /// The candidate's call, in microseconds.
    pub candidate_us: u64,
}

/// The kinds of disagreement, as `ShadowExample::kind` names them.
pub const DISAGREEMENT_KINDS: [&str; 5] = ["answer", "trap", "timeout", "memory", "bad_output"];

impl ShadowStats {
    /// Forgets everything (a new candidate starts from nothing).
    pub(super) fn reset(&self) {
        self.compared.store(0, Ordering::Relaxed);
        self.disagreed.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
        self.examples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The candidate's entry in `GET /admin/plugins` (the latest few
    /// disagreements).
    pub(super) fn report(&self, version: &str) -> ShadowView {
        let mut view = self.full_report(version);
        let extra = view.examples.len().saturating_sub(LISTED_EXAMPLES);
        view.examples.drain(..extra);
        view
    }

    /// The candidate's counts and every disagreement kept.
    pub(super) fn full_report(&self, version: &str) -> ShadowView {
        let examples = self
            .examples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        ShadowView {
            version: version.to_string(),
            compared: self.compared.load(Ordering::Relaxed),
            disagreed: self.disagreed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            examples,
        }
    }
}

/// Runs the candidate (`theirs`, timed here) and records the comparison:
/// `ours` is what was applied, `ours_us` how long the active call took,
/// `input` makes the example's input (built only for a disagreement). A
/// candidate call the host could not run compares nothing: it is logged,
/// and counted with the slot's host faults.
pub(super) fn compare_call(
    st: &super::slot::SlotInfo,
    input: impl FnOnce() -> Value,
    ours: Value,
    ours_us: Option<u64>,
    theirs: impl FnOnce() -> CallResult<Value>,
) {
    let started = std::time::Instant::now();
    let theirs = theirs();
    let took = Timing {
        active_us: ours_us,
        candidate_us: micros(started.elapsed()),
    };
    match theirs {
        Ok(theirs) => compare(&st.shadow_stats, input, ours, theirs, took),
        Err(e) => {
            st.stats.host_faults.fetch_add(1, Ordering::Relaxed);
            tracing::error!(plugin = %st.label(), error = %e, "host fault in a shadow call; nothing compared");
        }
    }
}

/// A duration in whole microseconds, rounded up.
pub(super) fn micros(d: std::time::Duration) -> u64 {
    d.as_nanos().div_ceil(1_000) as u64
}

/// How long the two calls of a comparison took.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Timing {
    active_us: Option<u64>,
    candidate_us: u64,
}

/// Records a shadow comparison of answers the candidate gave or failed.
pub(super) fn compare(
    ss: &ShadowStats,
    input: impl FnOnce() -> Value,
    ours: Value,
    theirs: Result<Value, GuestFailure>,
    took: Timing,
) {
    ss.compared.fetch_add(1, Ordering::Relaxed);
    let (theirs, kind) = match theirs {
        Ok(v) => (v, "answer"),
        Err(e) => {
            ss.failed.fetch_add(1, Ordering::Relaxed);
            (json!({ "error": e.to_string() }), e.kind.as_str())
        }
    };
    if theirs != ours {
        ss.disagreed.fetch_add(1, Ordering::Relaxed);
        let mut ex = ss.examples.lock().unwrap_or_else(|p| p.into_inner());
        if ex.len() == SHADOW_EXAMPLES {
            ex.pop_front();
        }
        ex.push_back(ShadowExample {
            at: crate::event::now_ms(),
            kind,
            input: input(),
            active: ours,
            candidate: theirs,
            active_us: took.active_us,
            candidate_us: took.candidate_us,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::wasm::FailKind;

    #[test]
    fn agreement_is_counted_and_not_kept() {
        let ss = ShadowStats::default();
        compare(
            &ss,
            || json!("never built"),
            json!("pass"),
            Ok(json!("pass")),
            Timing::default(),
        );
        let r = ss.report("abc");
        assert_eq!((r.compared, r.disagreed), (1, 0));
        assert!(r.examples.is_empty());
    }

    #[test]
    fn a_disagreement_keeps_its_input_and_both_answers() {
        let ss = ShadowStats::default();
        let took = Timing {
            active_us: Some(3),
            candidate_us: 40,
        };
        compare(
            &ss,
            || json!({"id": 7}),
            json!("pass"),
            Ok(json!("drop")),
            took,
        );
        let r = ss.report("abc");
        assert_eq!((r.compared, r.disagreed), (1, 1));
        let mut got = serde_json::to_value(&r.examples).expect("serializable");
        assert!(got[0]["at"].as_i64().is_some_and(|at| at > 0));
        got[0]["at"] = json!(0);
        assert_eq!(
            got,
            json!([{ "at": 0, "kind": "answer", "input": {"id": 7}, "active": "pass",
                     "candidate": "drop", "active_us": 3, "candidate_us": 40 }])
        );
    }

    #[test]
    fn a_failed_candidate_call_is_a_failure_and_a_disagreement() {
        let ss = ShadowStats::default();
        let err = GuestFailure {
            kind: FailKind::Trap,
            message: "boom".into(),
        };
        compare(&ss, || json!(1), json!("pass"), Err(err), Timing::default());
        let r = ss.report("abc");
        assert_eq!((r.failed, r.disagreed), (1, 1));
        assert_eq!(r.examples[0].kind, "trap");
        assert!(r.examples[0].candidate["error"]
            .as_str()
            .is_some_and(|e| e.contains("boom")));
    }

    #[test]
    fn only_the_latest_examples_are_kept_and_reset_forgets_them() {
        let ss = ShadowStats::default();
        for i in 0..(SHADOW_EXAMPLES as i64 + 5) {
            compare(&ss, || json!(i), json!(0), Ok(json!(1)), Timing::default());
        }
        let r = ss.full_report("abc");
        assert_eq!(r.disagreed, SHADOW_EXAMPLES as u64 + 5);
        let kept: Vec<i64> = r.examples.iter().filter_map(|e| e.input.as_i64()).collect();
        assert_eq!(kept, (5..SHADOW_EXAMPLES as i64 + 5).collect::<Vec<_>>());
        // The listing shows the latest few.
        let listed: Vec<i64> = ss
            .report("abc")
            .examples
            .iter()
            .filter_map(|e| e.input.as_i64())
            .collect();
        let end = SHADOW_EXAMPLES as i64 + 5;
        assert_eq!(
            listed,
            (end - LISTED_EXAMPLES as i64..end).collect::<Vec<_>>()
        );
        ss.reset();
        let r = ss.report("abc");
        assert_eq!((r.compared, r.examples.len()), (0, 0));
    }
}
