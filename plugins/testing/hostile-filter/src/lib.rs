//! An event filter that misbehaves on demand: with the subscription
//! parameter `hang=1` it loops forever, with `crash=1` it panics, and with
//! `garbage=1` it replaces data with text that is not JSON; with `spin=N` it
//! spends N loop iterations before passing (a slow filter, for the
//! isolation benchmark); otherwise passes.

use switchyard_plugin::{Event, EventFilter, FilterResult};

/// The hostile filter.
pub struct Hostile;

impl EventFilter for Hostile {
    fn filter(_event: Event, subscription: Vec<(String, String)>) -> FilterResult {
        hostile::misbehave();
        let has = |k: &str| subscription.iter().any(|(n, v)| n == k && v == "1");
        if has("hang") {
            let mut n: u64 = 0;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        if has("crash") {
            panic!("hostile filter panics on purpose");
        }
        if let Some(n) = subscription
            .iter()
            .find(|(k, _)| k == "spin")
            .and_then(|(_, v)| v.parse::<u64>().ok())
        {
            let mut x: u64 = 0;
            for i in 0..n {
                x = core::hint::black_box(x.wrapping_add(i));
            }
            core::hint::black_box(x);
        }
        if has("garbage") {
            return FilterResult::Replace("{not json".into());
        }
        FilterResult::Pass
    }
}

switchyard_plugin::export_event_filter!(Hostile);
