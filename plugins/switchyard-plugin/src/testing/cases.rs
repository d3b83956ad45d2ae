//! Runs a `CASES.json` file (the format of `switchyard plugin test`) against a
//! plugin's trait implementation, natively.

use serde_json::{json, Value};

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
        let verdict = T::validate(
            bid(field(input, "bid")),
            product(field(input, "product")),
            int(input, "now"),
        );
        verdict_json(verdict)
    })
}

/// Runs the recorded cases of a `notification-shaper` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every mismatch.
pub fn check_notification_shaper_cases<T: NotificationShaper>(
    cases: &str,
) -> Result<usize, String> {
    run(cases, "notification-shaper", |input| {
        let notifications = T::shape(message(field(input, "message")));
        Value::Array(notifications.into_iter().map(notification_json).collect())
    })
}

/// Runs the recorded cases of an `event-filter` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every mismatch.
pub fn check_event_filter_cases<T: EventFilter>(cases: &str) -> Result<usize, String> {
    run(cases, "event-filter", |input| {
        let subscription = field(input, "subscription")
            .as_object()
            .map(|params| params.iter().map(|(k, v)| (k.clone(), text(v))).collect())
            .unwrap_or_default();
        filter_json(T::filter(event(field(input, "event")), subscription))
    })
}

/// Runs the recorded cases of a `stream-authorizer` file on `T`.
///
/// `Ok` with the number of cases, or `Err` describing every mismatch.
pub fn check_stream_authorizer_cases<T: StreamAuthorizer>(cases: &str) -> Result<usize, String> {
    run(cases, "stream-authorizer", |input| {
        match T::authorize(stream_request(field(input, "request"))) {
            Authorization::Allow => json!({ "decision": "allow" }),
            Authorization::Refuse(r) => {
                json!({ "decision": "refuse", "code": r.code, "message": r.message })
            }
        }
    })
}

/// A stream request from case JSON, as the host reads one (`user` defaults
/// to the claims' `sub` unless they name a publisher, `svc`).
fn stream_request(v: &Value) -> StreamRequest {
    let claims = v.get("caller").filter(|c| c.is_object());
    let user = match v.get("user") {
        Some(u) => u.as_str().map(str::to_string),
        None => claims
            .filter(|c| c.get("svc").is_none())
            .and_then(|c| c.get("sub"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let mut topics: Vec<String> = field(v, "topics")
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    topics.sort();
    topics.dedup();
    let mut params: Vec<(String, String)> = field(v, "params")
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    params.sort();
    StreamRequest {
        caller: claims.map(Value::to_string),
        user,
        tenant: string(v, "tenant"),
        topics,
        params,
        now: int(v, "now"),
    }
}

fn run(cases: &str, slot: &str, call: impl Fn(&Value) -> Value) -> Result<usize, String> {
    let file: Value = serde_json::from_str(cases).map_err(|e| format!("cases: {e}"))?;
    if file["slot"] != slot {
        return Err(format!("cases: slot {} is not {slot:?}", file["slot"]));
    }
    let list = file["cases"]
        .as_array()
        .ok_or("cases: no \"cases\" array")?;
    let mut failures = Vec::new();
    for (i, case) in list.iter().enumerate() {
        let mut config = config_pairs(&file["config"]);
        config.extend(config_pairs(&case["config"]));
        super::set_config(config);
        let actual = call(&case["input"]);
        super::take_logs();
        if !matches(&case["expect"], &actual) {
            failures.push(format!(
                "case {i} {}:\n  expected {}\n  actual   {}",
                case["name"], case["expect"], actual
            ));
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

fn config_pairs(config: &Value) -> Vec<(String, String)> {
    config
        .as_object()
        .map(|c| c.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default()
}

fn field<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn string(value: &Value, key: &str) -> String {
    field(value, key).as_str().unwrap_or_default().to_string()
}

fn int(value: &Value, key: &str) -> i64 {
    field(value, key).as_i64().unwrap_or_default()
}

fn opt_int(value: &Value, key: &str) -> Option<i64> {
    field(value, key).as_i64()
}

fn opt_string(value: &Value, key: &str) -> Option<String> {
    field(value, key).as_str().map(str::to_string)
}

fn object_text(value: &Value, key: &str) -> String {
    match field(value, key) {
        Value::Null => "{}".to_string(),
        data => data.to_string(),
    }
}

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn bid(v: &Value) -> Bid {
    Bid {
        id: string(v, "id"),
        tenant: string(v, "tenant"),
        product_id: string(v, "product_id"),
        bidder_id: string(v, "bidder_id"),
        amount: int(v, "amount"),
        created_at: int(v, "created_at"),
    }
}

fn product(v: &Value) -> Product {
    Product {
        id: string(v, "id"),
        tenant: string(v, "tenant"),
        seller_id: string(v, "seller_id"),
        title: string(v, "title"),
        starting_price: int(v, "starting_price"),
        min_increment: int(v, "min_increment"),
        anti_snipe_ms: int(v, "anti_snipe_ms"),
        ends_at: opt_int(v, "ends_at"),
        status: string(v, "status"),
        current_bid: opt_int(v, "current_bid"),
        leader: opt_string(v, "leader"),
        bid_count: int(v, "bid_count"),
        version: int(v, "version"),
        created_at: int(v, "created_at"),
    }
}

fn message(v: &Value) -> Message {
    Message {
        id: string(v, "id"),
        tenant: string(v, "tenant"),
        kind: string(v, "kind"),
        from: string(v, "from"),
        to: string(v, "to"),
        product_id: opt_string(v, "product_id"),
        body: string(v, "body"),
        created_at: int(v, "created_at"),
    }
}

fn event(v: &Value) -> Event {
    Event {
        id: string(v, "id"),
        tenant: string(v, "tenant"),
        topic: string(v, "topic"),
        type_: string(v, "type"),
        data: object_text(v, "data"),
        ts: int(v, "ts"),
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
