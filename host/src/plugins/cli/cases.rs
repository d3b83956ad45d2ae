//! `plugin test`: every case of a cases file through the component, each
//! checked against the fields it expects.

use std::fmt::Write;
use std::sync::Arc;

use serde_json::Value;

use super::{config_of, error_json, slot_and_cases, CliError};
use crate::plugins::convert;
use crate::plugins::wasm::{CallCtx, Limits, Linked, WasmHost};

/// True when every field `expect` names equals `actual`'s (objects
/// recursively, arrays element for element with equal length).
pub fn matches(expect: &Value, actual: &Value) -> bool {
    match (expect, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| matches(ev, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches(ev, av))
        }
        (e, a) => e == a,
    }
}

/// Runs one case input through a linked component, applying the host's
/// output rules; a failed call is `{"error": kind, "message"}`.
pub fn run_case(host: &WasmHost, linked: &Linked, call: &CallCtx, input: &Value) -> Value {
    match linked {
        Linked::Validator(pre) => {
            let now = input["now"].as_i64().unwrap_or_default();
            let r = host
                .validate(
                    pre,
                    call,
                    &convert::bid_from_json(&input["bid"]),
                    &convert::product_from_json(&input["product"]),
                    now,
                )
                .and_then(|v| convert::verdict(v, now));
            match r {
                Ok(v) => convert::verdict_json(&v),
                Err(e) => error_json(&e),
            }
        }
        Linked::Shaper(pre) => {
            let r = host
                .shape(pre, call, &convert::message_from_json(&input["message"]))
                .and_then(convert::notifications);
            match r {
                Ok(n) => convert::notifications_json(&n),
                Err(e) => error_json(&e),
            }
        }
        Linked::Filter(pre) => {
            let r = host
                .filter(
                    pre,
                    call,
                    &convert::event_from_json(&input["event"]),
                    &convert::subscription_from_json(&input["subscription"]),
                )
                .and_then(convert::filter_result);
            match r {
                Ok(o) => convert::filter_json(&o),
                Err(e) => error_json(&e),
            }
        }
        Linked::Authorizer(pre) => {
            let r = host
                .authorize(
                    pre,
                    call,
                    &convert::stream_request_from_json(&input["request"]),
                )
                .and_then(convert::access);
            match r {
                Ok(a) => convert::access_json(&a),
                Err(e) => error_json(&e),
            }
        }
    }
}

/// `plugin test`: runs every case of `cases` (see `docs/plugins.md`).
/// Returns the report and the number of failed cases.
pub fn test(bytes: &[u8], cases: &Value) -> Result<(String, usize), CliError> {
    let (slot, list) = slot_and_cases(cases)?;
    let host = WasmHost::new(Limits::default())?;
    let component = host.compile(bytes)?;
    let linked = host.link(&component, slot)?;
    let base = config_of(cases.get("config"));
    let mut out = String::new();
    let mut failed = 0;
    for (i, case) in list.iter().enumerate() {
        let name = case["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("case {}", i + 1));
        let mut config = base.clone();
        config.extend(config_of(case.get("config")));
        let call = CallCtx {
            config: Arc::new(config),
            label: Arc::from(format!("{slot}#test")),
            idle: Default::default(),
        };
        let actual = run_case(&host, &linked, &call, &case["input"]);
        let expect = &case["expect"];
        if matches(expect, &actual) {
            let _ = writeln!(out, "ok    {name}");
        } else {
            failed += 1;
            let _ = writeln!(out, "FAIL  {name}");
            let _ = writeln!(out, "      expected: {}", expect);
            let _ = writeln!(out, "      actual:   {}", actual);
            for line in diff(expect, &actual, "") {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    let _ = writeln!(
        out,
        "{} cases, {} passed, {} failed",
        list.len(),
        list.len() - failed,
        failed
    );
    Ok((out, failed))
}

/// Lines naming each field where `actual` differs from `expect`.
fn diff(expect: &Value, actual: &Value, path: &str) -> Vec<String> {
    match (expect, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .flat_map(|(k, ev)| {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    None => vec![format!("- {p}: {ev} (missing)")],
                    Some(av) => diff(ev, av, &p),
                }
            })
            .collect(),
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .flat_map(|(i, (ev, av))| diff(ev, av, &format!("{path}[{i}]")))
            .collect(),
        (e, a) if e == a => vec![],
        (e, a) => vec![
            format!("- {}: {e}", if path.is_empty() { "." } else { path }),
            format!("+ {}: {a}", if path.is_empty() { "." } else { path }),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expectations_match_the_fields_they_name() {
        let actual = json!({ "verdict": "reject", "code": "too_low", "message": "min 5" });
        assert!(matches(
            &json!({ "verdict": "reject", "code": "too_low" }),
            &actual
        ));
        assert!(!matches(&json!({ "verdict": "accept" }), &actual));
        assert!(!matches(&json!({ "extra": 1 }), &actual));
        assert!(matches(
            &json!([{ "kind": "message" }]),
            &json!([{ "kind": "message", "preview": "x" }])
        ));
        assert!(!matches(&json!([]), &json!([{ "kind": "message" }])));
        let d = diff(&json!({ "code": "a" }), &json!({ "code": "b" }), "");
        assert_eq!(
            d,
            vec!["- .code: \"a\"".to_string(), "+ .code: \"b\"".to_string()]
        );
    }
}
