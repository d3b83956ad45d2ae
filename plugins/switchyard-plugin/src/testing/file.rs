//! The cases file of `switchyard plugin test` (`CASES.json`) as serde types:
//! the one description of the format, read by the host's `plugin test`,
//! `plugin bench` and `plugin replay` and by this crate's `check_*_cases`.
//!
//! The host builds this file from the same source (it depends on `serde`
//! and `serde_json` only, and on nothing of either crate), so the two read
//! a case alike. `docs/plugins.md` describes the format for authors.
//!
//! Inputs are lenient where the format always was: every field may be left
//! out (strings empty, numbers zero, options none; a product's `status`
//! `open`, a message's `kind` `message`), an event's `id` may be a number,
//! and configuration and parameter values may be any JSON (a string as
//! is, anything else as its JSON text).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A cases file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CasesFile {
    /// The slot the cases are for (`bid-validator`, ...).
    #[serde(default)]
    pub slot: Option<String>,
    /// The plugin configuration of every case.
    #[serde(default)]
    pub config: Params,
    /// The cases.
    #[serde(default)]
    pub cases: Option<Vec<Case>>,
}

/// One case: a configuration on top of the file's, an input, and the
/// fields its output must have.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Case {
    /// What the case shows.
    #[serde(default)]
    pub name: Option<String>,
    /// Configuration on top of the file's.
    #[serde(default)]
    pub config: Params,
    /// The input, as its slot reads it ([`BidValidatorInput`], ...).
    #[serde(default)]
    pub input: Value,
    /// The fields the output must have (objects recursively; arrays element
    /// for element, with the same length).
    #[serde(default)]
    pub expect: Value,
}

/// Name-value pairs (configuration, subscription and request parameters):
/// a JSON object whose values are taken as text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(#[serde(deserialize_with = "params")] pub BTreeMap<String, String>);

impl Params {
    /// The pairs, sorted by name.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A JSON object's members as text; anything but an object is no pairs.
fn params<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => m.into_iter().map(|(k, v)| (k, text(v))).collect(),
        _ => BTreeMap::new(),
    })
}

/// A string as is, anything else as its JSON text.
fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// `bid-validator`: `{ "bid", "product", "now" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BidValidatorInput {
    /// The bid being decided.
    pub bid: BidInput,
    /// Its product before the bid.
    pub product: ProductInput,
    /// The decision's time.
    pub now: i64,
}

/// A bid.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct BidInput {
    pub id: String,
    pub tenant: String,
    pub product_id: String,
    pub bidder_id: String,
    pub amount: i64,
    pub created_at: i64,
}

/// A product (`status` `open` unless given).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct ProductInput {
    pub id: String,
    pub tenant: String,
    pub seller_id: String,
    pub title: String,
    pub starting_price: i64,
    pub min_increment: i64,
    pub anti_snipe_ms: i64,
    pub ends_at: Option<i64>,
    pub status: String,
    pub current_bid: Option<i64>,
    pub leader: Option<String>,
    pub bid_count: i64,
    pub version: i64,
    pub created_at: i64,
}

impl Default for ProductInput {
    fn default() -> Self {
        ProductInput {
            id: String::new(),
            tenant: String::new(),
            seller_id: String::new(),
            title: String::new(),
            starting_price: 0,
            min_increment: 0,
            anti_snipe_ms: 0,
            ends_at: None,
            status: "open".into(),
            current_bid: None,
            leader: None,
            bid_count: 0,
            version: 0,
            created_at: 0,
        }
    }
}

/// `notification-shaper`: `{ "message" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationShaperInput {
    /// The message to shape.
    pub message: MessageInput,
}

/// A message (`kind` `message` unless given).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct MessageInput {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub from: String,
    pub to: String,
    pub product_id: Option<String>,
    pub body: String,
    pub created_at: i64,
}

impl Default for MessageInput {
    fn default() -> Self {
        MessageInput {
            id: String::new(),
            tenant: String::new(),
            kind: "message".into(),
            from: String::new(),
            to: String::new(),
            product_id: None,
            body: String::new(),
            created_at: 0,
        }
    }
}

/// `event-filter`: `{ "event", "subscription" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventFilterInput {
    /// The event about to be delivered.
    pub event: EventInput,
    /// The subscription's parameters.
    pub subscription: Params,
}

/// An event (`id` a string or a number; `data` any JSON value, `{}` when
/// absent; an explicit `null` stays `null`, as a published event's would).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct EventInput {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    pub tenant: String,
    pub topic: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(
        deserialize_with = "present_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Value>,
    pub ts: i64,
}

impl EventInput {
    /// `data` as the JSON text a plugin is given.
    pub fn data_text(&self) -> String {
        match &self.data {
            None => "{}".to_string(),
            Some(data) => data.to_string(),
        }
    }
}

/// A field that is there, whatever its value (`null` included); `None`
/// only when it is absent (the field's `default`).
fn present_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    })
}

/// `stream-authorizer`: `{ "request" }`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamAuthorizerInput {
    /// The request to decide.
    pub request: StreamRequestInput,
}

/// A stream request: `caller` the token's claims (an object; anything else
/// is anonymous); `user` defaults to the claims' `sub` unless they name a
/// publisher (`svc`); `topics` sorted and without duplicates when read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct StreamRequestInput {
    pub caller: Value,
    /// Absent: from the claims; `null`: none.
    #[serde(deserialize_with = "present")]
    pub user: Option<Option<String>>,
    pub tenant: String,
    pub topics: Vec<String>,
    pub params: Params,
    pub now: i64,
}

impl StreamRequestInput {
    /// The verified claims, as the JSON text a plugin is given.
    pub fn caller_text(&self) -> Option<String> {
        self.caller.is_object().then(|| self.caller.to_string())
    }

    /// The user id: as given, else the claims' `sub` unless they are a
    /// publisher's.
    pub fn user(&self) -> Option<String> {
        match &self.user {
            Some(user) => user.clone(),
            None => self
                .caller
                .as_object()
                .filter(|c| !c.contains_key("svc"))
                .and_then(|c| c.get("sub"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// The topics, sorted, without duplicates.
    pub fn topics(&self) -> Vec<String> {
        let mut topics = self.topics.clone();
        topics.sort();
        topics.dedup();
        topics
    }
}

/// A field that is present (`Some`, its value possibly `null`) or not.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Ok(Some(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    }))
}

/// Reads a case's input for its slot; an input of the wrong shape (a
/// string where a number goes, ...) is an error naming the field.
pub fn input<T: serde::de::DeserializeOwned>(input: &Value) -> Result<T, String> {
    let input = match input {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    serde_json::from_value(input).map_err(|e| format!("input: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_take_the_formats_defaults() {
        let i: BidValidatorInput = input(&json!({ "bid": { "amount": 5 } })).expect("input");
        assert_eq!((i.bid.amount, i.product.status.as_str()), (5, "open"));
        let i: NotificationShaperInput = input(&Value::Null).expect("input");
        assert_eq!(i.message.kind, "message");
        let i: EventFilterInput = input(&json!({
            "event": { "id": 7, "type": "bid.placed" },
            "subscription": { "min": 100, "lang": "fr" },
        }))
        .expect("input");
        assert_eq!(
            (i.event.id.as_str(), i.event.data_text()),
            ("7", "{}".into())
        );
        assert_eq!(
            i.subscription.pairs(),
            [("lang".into(), "fr".into()), ("min".into(), "100".into())]
        );
        assert!(input::<BidValidatorInput>(&json!({ "now": "soon" })).is_err());
    }

    #[test]
    fn a_requests_user_comes_from_its_claims_unless_given() {
        let r = |v: Value| input::<StreamAuthorizerInput>(&json!({ "request": v })).expect("input");
        let claims = json!({ "sub": "u1" });
        assert_eq!(
            r(json!({ "caller": claims })).request.user(),
            Some("u1".into())
        );
        assert_eq!(
            r(json!({ "caller": claims, "user": null })).request.user(),
            None
        );
        assert_eq!(
            r(json!({ "caller": { "sub": "s", "svc": true } }))
                .request
                .user(),
            None
        );
        assert_eq!(r(json!({ "caller": "text" })).request.caller_text(), None);
        assert_eq!(
            r(json!({ "topics": ["b", "a", "b"] })).request.topics(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_file_reads_its_config_as_text() {
        let f: CasesFile = serde_json::from_value(json!({
            "slot": "bid-validator",
            "config": { "max": 500, "name": "x" },
            "cases": [{ "input": {}, "expect": {} }],
        }))
        .expect("file");
        assert_eq!(
            f.config.pairs(),
            [("max".into(), "500".into()), ("name".into(), "x".into())]
        );
        assert_eq!(f.cases.map(|c| c.len()), Some(1));
    }
}
