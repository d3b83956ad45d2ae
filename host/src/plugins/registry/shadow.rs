//! How a shadow candidate compares with the active version: counts, and
//! the latest disagreements as examples.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::{json, Value};

use crate::plugins::wasm::{CallResult, GuestFailure};

/// Disagreement examples kept per shadow candidate.
const SHADOW_EXAMPLES: usize = 10;

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
    /// The latest disagreements, oldest first.
    pub examples: Vec<ShadowExample>,
}

/// One disagreement: what was asked, what was applied, what the candidate
/// answered (`{"error": ...}` when it failed).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowExample {
    /// The input, in brief.
    pub input: Value,
    /// The active version's answer, as applied.
    pub active: Value,
    /// The candidate's.
    pub candidate: Value,
}

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

    /// The candidate's entry in `GET /admin/plugins`.
    pub(super) fn report(&self, version: &str) -> ShadowView {
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

/// Records a shadow comparison: `ours` is what was applied, `input` makes
/// the example's input (built only for a disagreement). A candidate call
/// the host could not run compares nothing: it is logged, and counted with
/// the slot's host faults.
pub(super) fn compare_call(
    st: &super::slot::SlotInfo,
    input: impl FnOnce() -> Value,
    ours: Value,
    theirs: CallResult<Value>,
) {
    match theirs {
        Ok(theirs) => compare(&st.shadow_stats, input, ours, theirs),
        Err(e) => {
            st.stats.host_faults.fetch_add(1, Ordering::Relaxed);
            tracing::error!(plugin = %st.label(), error = %e, "host fault in a shadow call; nothing compared");
        }
    }
}

/// Records a shadow comparison of answers the candidate gave or failed.
pub(super) fn compare(
    ss: &ShadowStats,
    input: impl FnOnce() -> Value,
    ours: Value,
    theirs: Result<Value, GuestFailure>,
) {
    ss.compared.fetch_add(1, Ordering::Relaxed);
    let theirs = match theirs {
        Ok(v) => v,
        Err(e) => {
            ss.failed.fetch_add(1, Ordering::Relaxed);
            json!({ "error": e.to_string() })
        }
    };
    if theirs != ours {
        ss.disagreed.fetch_add(1, Ordering::Relaxed);
        let mut ex = ss.examples.lock().unwrap_or_else(|p| p.into_inner());
        if ex.len() == SHADOW_EXAMPLES {
            ex.pop_front();
        }
        ex.push_back(ShadowExample {
            input: input(),
            active: ours,
            candidate: theirs,
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
        );
        let r = ss.report("abc");
        assert_eq!((r.compared, r.disagreed), (1, 0));
        assert!(r.examples.is_empty());
    }

    #[test]
    fn a_disagreement_keeps_its_input_and_both_answers() {
        let ss = ShadowStats::default();
        compare(&ss, || json!({"id": 7}), json!("pass"), Ok(json!("drop")));
        let r = ss.report("abc");
        assert_eq!((r.compared, r.disagreed), (1, 1));
        assert_eq!(
            serde_json::to_value(&r.examples).expect("serializable"),
            json!([{ "input": {"id": 7}, "active": "pass", "candidate": "drop" }])
        );
    }

    #[test]
    fn a_failed_candidate_call_is_a_failure_and_a_disagreement() {
        let ss = ShadowStats::default();
        let err = GuestFailure {
            kind: FailKind::Trap,
            message: "boom".into(),
        };
        compare(&ss, || json!(1), json!("pass"), Err(err));
        let r = ss.report("abc");
        assert_eq!((r.failed, r.disagreed), (1, 1));
        assert!(r.examples[0].candidate["error"]
            .as_str()
            .is_some_and(|e| e.contains("boom")));
    }

    #[test]
    fn only_the_latest_examples_are_kept_and_reset_forgets_them() {
        let ss = ShadowStats::default();
        for i in 0..(SHADOW_EXAMPLES as i64 + 5) {
            compare(&ss, || json!(i), json!(0), Ok(json!(1)));
        }
        let r = ss.report("abc");
        assert_eq!(r.disagreed, SHADOW_EXAMPLES as u64 + 5);
        let kept: Vec<i64> = r.examples.iter().filter_map(|e| e.input.as_i64()).collect();
        assert_eq!(kept, (5..SHADOW_EXAMPLES as i64 + 5).collect::<Vec<_>>());
        ss.reset();
        let r = ss.report("abc");
        assert_eq!((r.compared, r.examples.len()), (0, 0));
    }
}
