//! Runs a `CASES.json` file (the format of `switchyard plugin test`) against a
//! plugin's trait implementation, natively.

use serde_json::{json, Value};

use super::file::{self, CasesFile};
use crate::{
    Authorization, Bid, BidValidator, Event, EventFilter, FilterResult, Message, Notification,
    NotificationShaper, Product, StreamAuthorizer, StreamRequest, Verdict,
};

/// Runs the recorded cases of a `bid-validator` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every case whose output
/// did not match (or why the file could not be read).
pub fn check_bid_validator_cases<T: BidValidator>(cases: &str) -> Result<usize, String> {
    run(cases, "bid-validator", |input| {
        let i: file::BidValidatorInput = file::input(input)?;
        Ok(verdict_json(T::validate(
            bid(i.bid),
            product(i.product),
            i.now,
        )))
    })
}

/// Runs the recorded cases of a `notification-shaper` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every mismatch.
pub fn check_notification_shaper_cases<T: NotificationShaper>(
    cases: &str,
) -> Result<usize, String> {
    run(cases, "notification-shaper", |input| {
        let i: file::NotificationShaperInput = file::input(input)?;
        let notifications = T::shape(message(i.message));
        Ok(Value::Array(
            notifications.into_iter().map(notification_json).collect(),
        ))
    })
}

/// Runs the recorded cases of an `event-filter` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every mismatch.
pub fn check_event_filter_cases<T: EventFilter>(cases: &str) -> Result<usize, String> {
    run(cases, "event-filter", |input| {
        let i: file::EventFilterInput = file::input(input)?;
        let subscription = i.subscription.pairs();
        Ok(filter_json(T::filter(event(i.event), subscription)))
    })
}

/// Runs the recorded cases of a `stream-authorizer` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every mismatch.
pub fn check_stream_authorizer_cases<T: StreamAuthorizer>(cases: &str) -> Result<usize, String> {
    run(cases, "stream-authorizer", |input| {
        let i: file::StreamAuthorizerInput = file::input(input)?;
        Ok(match T::authorize(stream_request(i.request)) {
            Authorization::Allow => json!({ "decision": "allow" }),
            Authorization::Refuse(r) => {
                json!({ "decision": "refuse", "code": r.code, "message": r.message })
            }
        })
    })
}

/// A stream request as the host reads one (`user` defaults to the claims'
/// `sub` unless they name a publisher, `svc`).
fn stream_request(r: file::StreamRequestInput) -> StreamRequest {
    StreamRequest {
        caller: r.caller_text(),
        user: r.user(),
        tenant: r.tenant.clone(),
        topics: r.topics(),
        params: r.params.pairs(),
        now: r.now,
    }
}

fn run(
    cases: &str,
    slot: &str,
    call: impl Fn(&Value) -> Result<Value, String>,
) -> Result<usize, String> {
    let file: CasesFile = serde_json::from_str(cases).map_err(|e| format!("cases: {e}"))?;
    if file.slot.as_deref() != Some(slot) {
        return Err(format!(
            "cases: slot {} is not {slot:?}",
            file.slot
                .as_deref()
                .map_or("null".to_string(), |s| format!("{s:?}"))
        ));
    }
    let list = file.cases.ok_or("cases: no \"cases\" array")?;
    let mut failures = Vec::new();
    for (i, case) in list.iter().enumerate() {
        let mut config = file.config.0.clone();
        config.extend(case.config.0.clone());
        super::set_config(config);
        let actual = call(&case.input);
        super::take_logs();
        let name = case
            .name
            .as_deref()
            .map_or("null".to_string(), |n| format!("{n:?}"));
        match actual {
            Ok(actual) if matches(&case.expect, &actual) => {}
            Ok(actual) => failures.push(format!(
                "case {i} {name}:\n  expected {}\n  actual   {}",
                case.expect, actual
            )),
            Err(e) => failures.push(format!("case {i} {name}: {e}")),
        }
    }
    super::set_config(Vec::<(String, String)>::new());
    if failures.is_empty() {
        Ok(list.len())
    } else {
        Err(failures.join("\n"))
    }
}

/// Whether every field `expect` names equals `actual`'s (objects recursively;
/// arrays element for element, of the same length).
fn matches(expect: &Value, actual: &Value) -> bool {
    match (expect, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches(ev, av))
        }
        _ => expect == actual,
    }
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn bid(b: file::BidInput) -> Bid {
    let file::BidInput {
        id,
        tenant,
        product_id,
        bidder_id,
        amount,
        created_at,
    } = b;
    Bid {
        id,
        tenant,
        product_id,
        bidder_id,
        amount,
        created_at,
    }
}

fn product(p: file::ProductInput) -> Product {
    let file::ProductInput {
        id,
        tenant,
        seller_id,
        title,
        starting_price,
        min_increment,
        anti_snipe_ms,
        ends_at,
        status,
        current_bid,
        leader,
        bid_count,
        version,
        created_at,
    } = p;
    Product {
        id,
        tenant,
        seller_id,
        title,
        starting_price,
        min_increment,
        anti_snipe_ms,
        ends_at,
        status,
        current_bid,
        leader,
        bid_count,
        version,
        created_at,
    }
}

fn message(m: file::MessageInput) -> Message {
    let file::MessageInput {
        id,
        tenant,
        kind,
        from,
        to,
        product_id,
        body,
        created_at,
    } = m;
    Message {
        id,
        tenant,
        kind,
        from,
        to,
        product_id,
        body,
        created_at,
    }
}

fn event(e: file::EventInput) -> Event {
    Event {
        data: e.data_text(),
        id: e.id,
        tenant: e.tenant,
        topic: e.topic,
        type_: e.type_,
        ts: e.ts,
    }
}

fn verdict_json(verdict: Verdict) -> Value {
    match verdict {
        Verdict::Accept(effects) => json!({ "verdict": "accept", "extend_to": effects.extend_to }),
        Verdict::Reject(r) => json!({ "verdict": "reject", "code": r.code, "message": r.message }),
    }
}

fn notification_json(n: Notification) -> Value {
    json!({
        "recipient": n.recipient,
        "kind": n.kind,
        "preview": n.preview,
        "data": parsed(&n.data),
    })
}

fn filter_json(result: FilterResult) -> Value {
    match result {
        FilterResult::Drop => json!({ "result": "drop" }),
        FilterResult::Pass => json!({ "result": "pass" }),
        FilterResult::Replace(data) => json!({ "result": "replace", "data": parsed(&data) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_names_fields_and_whole_arrays() {
        let actual = json!([{ "a": 1, "b": { "c": 2, "d": 3 } }]);
        assert!(matches(&json!([{ "b": { "c": 2 } }]), &actual));
        assert!(!matches(&json!([{ "b": { "c": 3 } }]), &actual));
        assert!(!matches(&json!([]), &actual));
        assert!(!matches(&json!({ "x": null }), &json!({})));
        assert!(matches(&json!({ "x": null }), &json!({ "x": null })));
    }

    struct Echo;

    impl EventFilter for Echo {
        fn filter(event: Event, subscription: Vec<(String, String)>) -> FilterResult {
            match subscription.first() {
                Some((k, v)) if k == "drop" && v == "1" => FilterResult::Drop,
                _ if crate::config("replace").is_some() => FilterResult::Replace(event.data),
                _ => FilterResult::Pass,
            }
        }
    }

    #[test]
    fn runs_cases() {
        let cases = r#"{
            "slot": "event-filter",
            "config": { "replace": "yes" },
            "cases": [
                { "name": "a", "input": { "event": { "data": { "x": 1 } } },
                  "expect": { "result": "replace", "data": { "x": 1 } } },
                { "name": "b", "input": { "subscription": { "drop": 1 } },
                  "expect": { "result": "drop" } },
                { "name": "c", "input": {}, "expect": { "result": "pass" } }
            ]
        }"#;
        let err = check_event_filter_cases::<Echo>(cases).expect_err("case c fails");
        assert!(err.starts_with("case 2 \"c\""), "{err}");
        assert!(check_event_filter_cases::<Echo>(
            &cases.replace("\"slot\": \"event-filter\"", "\"slot\": \"x\"")
        )
        .is_err());
    }
}
