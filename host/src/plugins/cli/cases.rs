//! `plugin test`: every case of a cases file through the component, each
//! checked against the fields it expects.

use std::fmt::Write;

use serde_json::Value;

use super::{case_config, error_json, file, read_cases, settle, CliError, Failure};
use crate::plugins::convert;
use crate::plugins::wasm::{bindings::types, CallCtx, GuestFailure, Linked, WasmHost};
use crate::plugins::world::{
    by_world, Authorizer, Filter, FilterInput, Shaper, ValidateInput, Validator, World,
};

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

/// A world as the CLI runs it: a case's input read from its JSON, and the
/// answer, once the host's output rules passed, as JSON.
pub trait Case: World {
    /// The input, owned.
    type Owned;
    /// Reads a case's `input` (an error says which field is wrong).
    fn input(input: &Value) -> Result<Self::Owned, String>;
    /// The input as a call takes it.
    fn borrow(owned: &Self::Owned) -> Self::Input<'_>;
    /// An answer that passed the host's output rules.
    type Answer;
    /// Applies the host's output rules to an answer.
    fn answer(owned: &Self::Owned, output: Self::Output) -> Result<Self::Answer, GuestFailure>;
    /// An answer as a case's JSON.
    fn json(answer: &Self::Answer) -> Value;
}

impl Case for Validator {
    type Owned = (types::Bid, types::Product, i64);
    fn input(input: &Value) -> Result<Self::Owned, String> {
        let i: file::BidValidatorInput = file::input(input)?;
        Ok((i.bid.into(), i.product.into(), i.now))
    }
    fn borrow((bid, product, now): &Self::Owned) -> ValidateInput<'_> {
        ValidateInput {
            bid,
            product,
            now: *now,
        }
    }
    type Answer = crate::bids::decision::Verdict;
    fn answer(owned: &Self::Owned, output: types::Verdict) -> Result<Self::Answer, GuestFailure> {
        convert::verdict(output, owned.2)
    }
    fn json(answer: &Self::Answer) -> Value {
        convert::verdict_json(answer)
    }
}

impl Case for Shaper {
    type Owned = types::Message;
    fn input(input: &Value) -> Result<Self::Owned, String> {
        let i: file::NotificationShaperInput = file::input(input)?;
        Ok(i.message.into())
    }
    fn borrow(owned: &Self::Owned) -> &types::Message {
        owned
    }
    type Answer = Vec<crate::store::Notification>;
    fn answer(
        _: &Self::Owned,
        output: Vec<types::Notification>,
    ) -> Result<Self::Answer, GuestFailure> {
        convert::notifications(output)
    }
    fn json(answer: &Self::Answer) -> Value {
        convert::notifications_json(answer)
    }
}

impl Case for Filter {
    type Owned = (types::Event, Vec<(String, String)>);
    fn input(input: &Value) -> Result<Self::Owned, String> {
        let i: file::EventFilterInput = file::input(input)?;
        Ok((i.event.into(), i.subscription.pairs()))
    }
    fn borrow((event, subscription): &Self::Owned) -> FilterInput<'_> {
        FilterInput {
            event,
            subscription,
        }
    }
    type Answer = crate::plugins::FilterOutcome;
    fn answer(_: &Self::Owned, output: types::FilterResult) -> Result<Self::Answer, GuestFailure> {
        convert::filter_result(output)
    }
    fn json(answer: &Self::Answer) -> Value {
        convert::filter_json(answer)
    }
}

impl Case for Authorizer {
    type Owned = types::StreamRequest;
    fn input(input: &Value) -> Result<Self::Owned, String> {
        let i: file::StreamAuthorizerInput = file::input(input)?;
        Ok(i.request.into())
    }
    fn borrow(owned: &Self::Owned) -> &types::StreamRequest {
        owned
    }
    type Answer = crate::plugins::Access;
    fn answer(_: &Self::Owned, output: types::Authorization) -> Result<Self::Answer, GuestFailure> {
        convert::access(output)
    }
    fn json(answer: &Self::Answer) -> Value {
        convert::access_json(answer)
    }
}

/// Runs a case's owned input through a linked component, applying the
/// host's output rules.
pub(super) fn call_case<W: Case>(
    host: &WasmHost,
    linked: &Linked<W>,
    call: &CallCtx<W>,
    input: &W::Owned,
) -> Result<W::Answer, Failure> {
    let out = settle(host.call(linked, call, W::borrow(input)))?;
    W::answer(input, out).map_err(Failure::Guest)
}

/// Runs one case input through a linked component, applying the host's
/// output rules; a failed call is `{"error": kind, "message"}`, an input
/// not in the format `{"error": "bad_input", "message"}`.
pub fn run_case<W: Case>(
    host: &WasmHost,
    linked: &Linked<W>,
    call: &CallCtx<W>,
    input: &Value,
) -> Value {
    let input = match W::input(input) {
        Ok(i) => i,
        Err(message) => return serde_json::json!({ "error": "bad_input", "message": message }),
    };
    match call_case(host, linked, call, &input) {
        Ok(a) => W::json(&a),
        Err(e) => error_json(&e),
    }
}

/// `plugin test`: runs every case of `cases` (see `docs/plugins.md`).
/// Returns the report and the number of failed cases.
pub fn test(host: &WasmHost, bytes: &[u8], cases: &Value) -> Result<(String, usize), CliError> {
    let cases = read_cases(cases)?;
    by_world!(cases.slot, W => test_in::<W>(host, bytes, &cases))
}

fn test_in<W: Case>(
    host: &WasmHost,
    bytes: &[u8],
    cases: &super::Cases,
) -> Result<(String, usize), CliError> {
    let slot = W::SLOT;
    let mut out = String::new();
    let (component, note) = super::compile_noted(host, bytes)?;
    let _ = writeln!(out, "{note}");
    let linked = host.link::<W>(&component)?;
    let list = &cases.list;
    let mut failed = 0;
    for (i, case) in list.iter().enumerate() {
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let config = case_config(&cases.config, &case.config);
        let call = CallCtx::new(config, format!("{slot}#test"));
        let actual = run_case(host, &linked, &call, &case.input);
        let expect = &case.expect;
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
