//! A stand-in for the host when a plugin is tested natively (`cargo test`).
//!
//! Only on targets other than `wasm32`. Configuration and log lines are per
//! thread, so tests running in parallel do not see each other's.
//!
//! ```
//! use switchyard_plugin::{config_i64, log, testing, Level};
//!
//! testing::set_config([("max_amount", "5000")]);
//! assert_eq!(config_i64("max_amount"), Some(5000));
//!
//! log::info("hello");
//! assert_eq!(testing::take_logs(), vec![(Level::Info, "hello".to_string())]);
//! ```
//!
//! The `check_*_cases` functions run a `CASES.json` file, in the format of
//! `switchyard plugin test`, against a plugin's trait implementation, so the
//! recorded cases also run under `cargo test`:
//!
//! ```
//! # use switchyard_plugin::{testing, Event, EventFilter, FilterResult};
//! # struct PassAll;
//! # impl EventFilter for PassAll {
//! #     fn filter(_: Event, _: Vec<(String, String)>) -> FilterResult { FilterResult::Pass }
//! # }
//! let cases = r#"{ "slot": "event-filter", "cases": [
//!     { "name": "passes", "input": { "event": { "data": {} } }, "expect": { "result": "pass" } }
//! ] }"#;
//! // In a plugin's tests: include_str!("../cases.json").
//! if let Err(mismatches) = testing::check_event_filter_cases::<PassAll>(cases) {
//!     panic!("{mismatches}");
//! }
//! ```
//!
//! This mirrors the host's command for convenience; the host's
//! `switchyard plugin test` on the built component is the reference.

mod cases;
pub mod file;

pub use cases::{
    check_bid_validator_cases, check_event_filter_cases, check_notification_shaper_cases,
    check_stream_authorizer_cases,
};

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::Level;

thread_local! {
    static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

/// Replaces this thread's plugin configuration with `pairs`.
pub fn set_config<K, V>(pairs: impl IntoIterator<Item = (K, V)>)
where
    K: Into<String>,
    V: Into<String>,
{
    let map = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    CONFIG.with(|c| *c.borrow_mut() = map);
}

/// Returns and forgets the lines logged on this thread so far.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

pub(crate) fn config(key: &str) -> Option<String> {
    CONFIG.with(|c| c.borrow().get(key).cloned())
}

pub(crate) fn config_all() -> Vec<(String, String)> {
    CONFIG.with(|c| {
        c.borrow()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

pub(crate) fn record_log(level: Level, message: &str) {
    LOGS.with(|l| l.borrow_mut().push((level, message.to_string())));
}
