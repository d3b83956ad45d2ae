//! Example `event-filter` plugin: per-subscription amount floors and field
//! redaction.
//!
//! Subscription parameters (a stream's query parameters the host does not
//! own):
//!
//! - `min_amount=N`: drops events whose data has a numeric `amount` below `N`.
//!   Events without one pass. A non-numeric `N` is ignored (every event
//!   passes it) with a warning.
//! - `redact=bidder` or `redact=bidder,leader`: delivers the data without
//!   those fields, at the top level and inside a nested `product` object.
//!   Each name also removes the same name with `_id` appended (`bidder` also
//!   removes `bidder_id`). Data that is not a JSON object cannot be redacted,
//!   so such an event is dropped, with a warning.
//!
//! Without either parameter, every event passes untouched. Data is replaced
//! only when a field was removed. The plugin reads no configuration. It
//! declares the two parameters it reads (`export_event_filter!`), so streams
//! that differ only in others share its calls.

use std::collections::BTreeSet;

use switchyard_plugin::serde_json::{Map, Number, Value};
use switchyard_plugin::{log, object_field, parse_object, Event, EventFilter, FilterResult};

/// A `min_amount` floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Floor {
    /// An integer floor (amounts are integers in minor units).
    Int(i64),
    /// A fractional floor.
    Float(f64),
}

impl Floor {
    /// Parses `100` or `99.5` (surrounding whitespace allowed); `None` for
    /// anything else, including infinities and NaN.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if let Ok(n) = text.parse() {
            return Some(Floor::Int(n));
        }
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Floor::Float)
    }

    /// Whether `amount` is below the floor.
    pub fn excludes(self, amount: &Number) -> bool {
        match (self, amount.as_i64()) {
            (Floor::Int(floor), Some(a)) => a < floor,
            // Larger than any i64: not below an integer floor.
            (Floor::Int(_), None) if amount.is_u64() => false,
            (Floor::Int(floor), None) => amount.as_f64().is_some_and(|a| a < floor as f64),
            (Floor::Float(floor), _) => amount.as_f64().is_some_and(|a| a < floor),
        }
    }
}

/// What a subscription asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Floors from `min_amount` (every one must be met).
    pub floors: Vec<Floor>,
    /// Field names from `redact`, with their `_id` aliases.
    pub redact: BTreeSet<String>,
}

impl Params {
    /// Reads the parameters, logging a warning for a non-numeric
    /// `min_amount`. Other parameters are ignored.
    pub fn parse(subscription: &[(String, String)]) -> Self {
        let mut params = Params::default();
        for (name, value) in subscription {
            match name.as_str() {
                "min_amount" => match Floor::parse(value) {
                    Some(floor) => params.floors.push(floor),
                    None => log::warn(format!(
                        "min_amount={value:?} is not a number; not filtering by amount"
                    )),
                },
                "redact" => {
                    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        params.redact.insert(field.to_string());
                        params.redact.insert(format!("{field}_id"));
                    }
                }
                _ => {}
            }
        }
        params
    }

    /// Whether the parameters leave every event as it is.
    pub fn is_empty(&self) -> bool {
        self.floors.is_empty() && self.redact.is_empty()
    }
}

/// What happens to `event` on subscriptions asking for `params`.
pub fn decide(event: &Event, params: &Params) -> FilterResult {
    if params.is_empty() {
        return FilterResult::Pass;
    }
    if params.redact.is_empty() {
        // Only floors: read `amount` alone (data that is not an object has
        // no amount to compare, and passes).
        return match object_field(&event.data, "amount") {
            Some(Value::Number(amount)) if params.floors.iter().any(|f| f.excludes(&amount)) => {
                FilterResult::Drop
            }
            _ => FilterResult::Pass,
        };
    }
    let Some(mut data) = parse_object(&event.data) else {
        log::warn(format!(
            "event {}: data is not a JSON object and cannot be redacted; dropped",
            event.id
        ));
        return FilterResult::Drop;
    };
    if let Some(Value::Number(amount)) = data.get("amount") {
        if params.floors.iter().any(|floor| floor.excludes(amount)) {
            return FilterResult::Drop;
        }
    }
    if redact(&mut data, &params.redact) {
        FilterResult::replace_with(&data)
    } else {
        FilterResult::Pass
    }
}

/// Removes `fields` from `data` and from an object under `data["product"]`;
/// whether anything was removed.
pub fn redact(data: &mut Map<String, Value>, fields: &BTreeSet<String>) -> bool {
    let mut changed = remove(data, fields);
    if let Some(Value::Object(product)) = data.get_mut("product") {
        changed |= remove(product, fields);
    }
    changed
}

fn remove(object: &mut Map<String, Value>, fields: &BTreeSet<String>) -> bool {
    let before = object.len();
    object.retain(|key, _| !fields.contains(key));
    object.len() != before
}

/// The plugin: [`decide`] with the subscription's [`Params`].
pub struct Filter;

impl EventFilter for Filter {
    fn filter(event: Event, subscription: Vec<(String, String)>) -> FilterResult {
        decide(&event, &Params::parse(&subscription))
    }
}

switchyard_plugin::export_event_filter!(Filter, params = ["min_amount", "redact"]);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use switchyard_plugin::serde_json::{self, json};
    use switchyard_plugin::testing;

    fn event(data: Value) -> Event {
        Event {
            id: "e1".into(),
            tenant: "acme".into(),
            topic: "product:p1".into(),
            type_: "bid.placed".into(),
            data: data.to_string(),
            ts: 1_700_000_000_000,
        }
    }

    fn sub(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(data: Value, pairs: &[(&str, &str)]) -> FilterResult {
        Filter::filter(event(data), sub(pairs))
    }

    fn replaced(result: FilterResult) -> Value {
        match result {
            FilterResult::Replace(text) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("not replaced: {other:?}"),
        }
    }

    #[test]
    fn parses_floors() {
        assert_eq!(Floor::parse(" 100 "), Some(Floor::Int(100)));
        assert_eq!(Floor::parse("99.5"), Some(Floor::Float(99.5)));
        for bad in ["", "ten", "1e999", "NaN", "inf"] {
            assert_eq!(Floor::parse(bad), None, "{bad}");
        }
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert!(Floor::Int(100).excludes(&n(json!(99))));
        assert!(!Floor::Int(100).excludes(&n(json!(100))));
        assert!(Floor::Int(100).excludes(&n(json!(99.9))));
        assert!(!Floor::Int(100).excludes(&n(json!(u64::MAX))));
        assert!(Floor::Float(99.5).excludes(&n(json!(99))));
        assert!(!Floor::Float(99.5).excludes(&n(json!(100))));
    }

    #[test]
    fn min_amount_drops_small_amounts() {
        let p = [("min_amount", "1000")];
        assert_eq!(run(json!({"amount": 999}), &p), FilterResult::Drop);
        assert_eq!(run(json!({"amount": 1000}), &p), FilterResult::Pass);
        // No amount, or a non-numeric one: passes.
        assert_eq!(run(json!({"status": "closed"}), &p), FilterResult::Pass);
        assert_eq!(run(json!({"amount": "5"}), &p), FilterResult::Pass);
        assert!(testing::take_logs().is_empty());
    }

    #[test]
    fn bad_min_amount_passes_everything_and_warns() {
        assert_eq!(
            run(json!({"amount": 1}), &[("min_amount", "lots")]),
            FilterResult::Pass
        );
        assert_eq!(testing::take_logs().len(), 1);
    }

    #[test]
    fn redacts_top_level_and_product_fields() {
        let data = json!({
            "amount": 1500,
            "bidder": "Ann",
            "bidder_id": "u2",
            "product": {"id": "p1", "leader": "u2", "leader_id": "u2", "bidder": "x"},
        });
        let out = replaced(run(data, &[("redact", "bidder, leader")]));
        assert_eq!(out, json!({"amount": 1500, "product": {"id": "p1"}}));
    }

    #[test]
    fn replaces_only_when_something_changed() {
        let p = [("redact", "bidder")];
        assert_eq!(run(json!({"amount": 5}), &p), FilterResult::Pass);
        // `product` that is not an object is left alone.
        assert_eq!(run(json!({"product": "bidder"}), &p), FilterResult::Pass);
    }

    #[test]
    fn floors_apply_before_redaction() {
        let p = [("min_amount", "100"), ("redact", "bidder")];
        assert_eq!(
            run(json!({"amount": 5, "bidder": "x"}), &p),
            FilterResult::Drop
        );
        assert_eq!(
            replaced(run(json!({"amount": 500, "bidder": "x"}), &p)),
            json!({"amount": 500})
        );
    }

    #[test]
    fn no_params_pass_everything() {
        assert_eq!(
            run(json!({"amount": 1, "bidder": "x"}), &[]),
            FilterResult::Pass
        );
        assert_eq!(
            run(
                json!({"bidder": "x"}),
                &[("limit", "10"), ("redact", " , ")]
            ),
            FilterResult::Pass
        );
    }

    #[test]
    fn unreadable_data_is_dropped_only_when_redacting() {
        let mut e = event(json!({}));
        e.data = "not json".into();
        assert_eq!(
            Filter::filter(e.clone(), sub(&[("min_amount", "5")])),
            FilterResult::Pass
        );
        assert_eq!(
            Filter::filter(e, sub(&[("redact", "bidder")])),
            FilterResult::Drop
        );
        assert_eq!(testing::take_logs().len(), 1);
    }

    #[test]
    fn recorded_cases() {
        match testing::check_event_filter_cases::<Filter>(include_str!("../cases.json")) {
            Ok(n) => assert!(n >= 8, "only {n} cases"),
            Err(mismatches) => panic!("{mismatches}"),
        }
    }
}
