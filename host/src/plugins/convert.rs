//! Between the host's types, the WIT types and JSON (recorded cases, shadow
//! reports), and the rules a plugin's output must follow before the host
//! uses it.

use serde_json::{json, Map, Value};

use super::registry::{Access, FilterOutcome};
use super::wasm::{bindings::types, GuestFailure};
use crate::bids::decision::Verdict;
use crate::bids::{Bid, Product};
use crate::event::StoredEvent;
use crate::store::Notification;

/// Most notifications one message may turn into.
const MAX_NOTIFICATIONS: usize = 16;
/// Longest notification preview, in characters.
const MAX_PREVIEW_CHARS: usize = 1_000;
/// Largest JSON `data` a plugin may return, in bytes.
const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest rejection message kept, in characters.
const MAX_MESSAGE_CHARS: usize = 500;
/// Furthest an anti-sniping extension may move the end.
const MAX_EXTENSION_MS: i64 = 7 * 24 * 3_600_000;

/// A bid as the validator sees it.
pub fn bid(b: &Bid) -> types::Bid {
    types::Bid {
        id: b.id.clone(),
        tenant: b.tenant.clone(),
        product_id: b.product_id.clone(),
        bidder_id: b.bidder_id.clone(),
        amount: b.amount,
        created_at: b.created_at,
    }
}

/// A product as the validator sees it.
pub fn product(p: &Product) -> types::Product {
    types::Product {
        id: p.id.clone(),
        tenant: p.tenant.clone(),
        seller_id: p.seller_id.clone(),
        title: p.title.clone(),
        starting_price: p.starting_price,
        min_increment: p.min_increment,
        anti_snipe_ms: p.anti_snipe_ms,
        ends_at: p.ends_at,
        status: p.status.as_str().into(),
        current_bid: p.current_bid,
        leader: p.leader.clone(),
        bid_count: p.bid_count,
        version: p.version,
        created_at: p.created_at,
    }
}

fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn cut(s: String, chars: usize) -> String {
    if s.chars().count() <= chars {
        return s;
    }
    s.chars().take(chars).collect()
}

/// A verdict the host can apply, or why not.
pub fn verdict(v: types::Verdict, now: i64) -> Result<Verdict, GuestFailure> {
    match v {
        types::Verdict::Accept(effects) => {
            if let Some(t) = effects.extend_to {
                if t < now || t > now.saturating_add(MAX_EXTENSION_MS) {
                    return Err(GuestFailure::bad_output(format!(
                        "extend-to {t} is outside [now, now + 7 days]"
                    )));
                }
            }
            Ok(Verdict::Accept {
                extend_to: effects.extend_to,
            })
        }
        types::Verdict::Reject(r) => {
            if !valid_code(&r.code) {
                return Err(GuestFailure::bad_output(
                    "a rejection code must be 1-64 characters of a-z, 0-9 and '_'",
                ));
            }
            Ok(Verdict::Reject {
                code: r.code,
                message: cut(r.message, MAX_MESSAGE_CHARS),
            })
        }
    }
}

/// A verdict in the JSON of recorded cases.
pub fn verdict_json(v: &Verdict) -> Value {
    match v {
        Verdict::Accept { extend_to } => json!({ "verdict": "accept", "extend_to": extend_to }),
        Verdict::Reject { code, message } => {
            json!({ "verdict": "reject", "code": code, "message": message })
        }
    }
}

fn valid_user(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn json_object(text: &str, what: &str) -> Result<Map<String, Value>, GuestFailure> {
    if text.len() > MAX_DATA_BYTES {
        return Err(GuestFailure::bad_output(format!(
            "{what} is {} bytes; the limit is {MAX_DATA_BYTES}",
            text.len()
        )));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GuestFailure::bad_output(format!(
            "{what} is not a JSON object"
        ))),
        Err(e) => Err(GuestFailure::bad_output(format!("{what} is not JSON: {e}"))),
    }
}

/// Notifications the host can publish, or why not.
pub fn notifications(list: Vec<types::Notification>) -> Result<Vec<Notification>, GuestFailure> {
    if list.len() > MAX_NOTIFICATIONS {
        return Err(GuestFailure::bad_output(format!(
            "{} notifications; the limit is {MAX_NOTIFICATIONS}",
            list.len()
        )));
    }
    list.into_iter()
        .map(|n| {
            if !valid_user(&n.recipient) {
                return Err(GuestFailure::bad_output(format!(
                    "recipient {:?} is not a user id",
                    cut(n.recipient, 40)
                )));
            }
            if crate::event::validate_kind(&n.kind).is_err() {
                return Err(GuestFailure::bad_output(format!(
                    "kind {:?} is not an event type",
                    cut(n.kind, 40)
                )));
            }
            if n.preview.chars().count() > MAX_PREVIEW_CHARS {
                return Err(GuestFailure::bad_output(format!(
                    "a preview is longer than {MAX_PREVIEW_CHARS} characters"
                )));
            }
            let mut data = if n.data.trim().is_empty() {
                Map::new()
            } else {
                json_object(&n.data, "notification data")?
            };
            data.insert("preview".into(), Value::String(n.preview));
            Ok(Notification {
                recipient: n.recipient,
                kind: n.kind,
                data,
            })
        })
        .collect()
}

/// Notifications in the JSON of recorded cases.
pub fn notifications_json(list: &[Notification]) -> Value {
    Value::Array(
        list.iter()
            .map(|n| {
                let mut data = n.data.clone();
                let preview = data.remove("preview").unwrap_or(Value::Null);
                json!({ "recipient": n.recipient, "kind": n.kind, "preview": preview, "data": data })
            })
            .collect(),
    )
}

/// An event as the filter sees it. `None` for an event whose stored JSON is
/// unreadable (never the case for events the host wrote).
pub fn event(e: &StoredEvent) -> types::Event {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    // Events this node rendered are read without a parse (once per event
    // per subscription during a replay, so it counts).
    let data = match crate::event::data_of(&e.json) {
        Some(d) => d.to_string(),
        None => serde_json::from_str::<Parts>(&e.json)
            .map(|p| p.data.get().to_string())
            .unwrap_or_else(|_| "null".into()),
    };
    types::Event {
        id: e.seq.to_string(),
        tenant: e.tenant.to_string(),
        topic: e.topic.clone(),
        type_: e.kind.clone(),
        data,
        ts: e.ts,
    }
}

/// A filter result the host can apply, or why not.
pub fn filter_result(r: types::FilterResult) -> Result<FilterOutcome, GuestFailure> {
    Ok(match r {
        types::FilterResult::Drop => FilterOutcome::Drop,
        types::FilterResult::Pass => FilterOutcome::Pass,
        types::FilterResult::Replace(data) => {
            // Re-serialized compactly: valid JSON with no raw newlines.
            let m = json_object(&data, "replacement data")?;
            FilterOutcome::Replace(Value::Object(m).to_string())
        }
    })
}

/// A filter outcome in the JSON of recorded cases.
pub fn filter_json(o: &FilterOutcome) -> Value {
    match o {
        FilterOutcome::Pass => json!({ "result": "pass" }),
        FilterOutcome::Drop => json!({ "result": "drop" }),
        FilterOutcome::Replace(d) => json!({
            "result": "replace",
            "data": serde_json::from_str::<Value>(d).unwrap_or(Value::Null),
        }),
    }
}

/// An authorization the host can apply, or why not.
pub fn access(a: types::Authorization) -> Result<Access, GuestFailure> {
    match a {
        types::Authorization::Allow => Ok(Access::Allow),
        types::Authorization::Refuse(r) => {
            if !valid_code(&r.code) {
                return Err(GuestFailure::bad_output(
                    "a refusal code must be 1-64 characters of a-z, 0-9 and '_'",
                ));
            }
            Ok(Access::Refuse {
                code: r.code,
                message: cut(r.message, MAX_MESSAGE_CHARS),
            })
        }
    }
}

/// An authorization in the JSON of recorded cases.
pub fn access_json(a: &Access) -> Value {
    match a {
        Access::Allow => json!({ "decision": "allow" }),
        Access::Refuse { code, message } => {
            json!({ "decision": "refuse", "code": code, "message": message })
        }
    }
}

/// A stream request in the JSON of recorded cases and recorded requests:
/// `caller` is the claims object (or `null`), `params` an object of strings
/// (a repeated parameter keeps its last value).
pub fn stream_request_json(r: &types::StreamRequest) -> Value {
    let caller = r
        .caller
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .unwrap_or(Value::Null);
    let params: Map<String, Value> = r
        .params
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "caller": caller, "user": r.user, "tenant": r.tenant, "topics": r.topics,
        "params": params, "now": r.now,
    })
}

// ---- JSON inputs of recorded cases -------------------------------------
//
// Read through the cases file's types (`cli::file`, shared with the guest
// SDK), so that a case reads the same everywhere.

use super::cli::file;

/// Reads `v` as `T`; a value of the wrong shape reads as `T`'s defaults.
fn read<T: serde::de::DeserializeOwned + Default>(v: &Value) -> T {
    file::input(v).unwrap_or_default()
}

impl From<file::BidInput> for types::Bid {
    fn from(b: file::BidInput) -> Self {
        let file::BidInput {
            id,
            tenant,
            product_id,
            bidder_id,
            amount,
            created_at,
        } = b;
        types::Bid {
            id,
            tenant,
            product_id,
            bidder_id,
            amount,
            created_at,
        }
    }
}

impl From<file::ProductInput> for types::Product {
    fn from(p: file::ProductInput) -> Self {
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
        types::Product {
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
}

impl From<file::MessageInput> for types::Message {
    fn from(m: file::MessageInput) -> Self {
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
        types::Message {
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
}

impl From<file::EventInput> for types::Event {
    fn from(e: file::EventInput) -> Self {
        let data = e.data_text();
        let file::EventInput {
            id,
            tenant,
            topic,
            type_,
            data: _,
            ts,
        } = e;
        types::Event {
            id,
            tenant,
            topic,
            type_,
            data,
            ts,
        }
    }
}

impl From<file::StreamRequestInput> for types::StreamRequest {
    fn from(r: file::StreamRequestInput) -> Self {
        types::StreamRequest {
            caller: r.caller_text(),
            user: r.user(),
            tenant: r.tenant.clone(),
            topics: r.topics(),
            params: r.params.pairs(),
            now: r.now,
        }
    }
}

/// A bid from case JSON (missing fields take defaults).
pub fn bid_from_json(v: &Value) -> types::Bid {
    read::<file::BidInput>(v).into()
}

/// A product from case JSON (missing fields take defaults; `status` is
/// `open`).
pub fn product_from_json(v: &Value) -> types::Product {
    read::<file::ProductInput>(v).into()
}

/// A message from case JSON (`kind` is `message` unless given).
pub fn message_from_json(v: &Value) -> types::Message {
    read::<file::MessageInput>(v).into()
}

/// An event from case JSON (`id` a string or a number, `data` an object).
pub fn event_from_json(v: &Value) -> types::Event {
    read::<file::EventInput>(v).into()
}

/// The members of a JSON object as strings (a string as is, anything else
/// as its JSON text), sorted by name; nothing for a value that is not an
/// object.
pub fn string_pairs(v: &Value) -> Vec<(String, String)> {
    read::<file::Params>(v).pairs()
}

/// A subscription shape from case JSON (an object of strings), sorted.
pub fn subscription_from_json(v: &Value) -> Vec<(String, String)> {
    string_pairs(v)
}

/// A stream request from case JSON: `caller` an object of claims (or
/// `null`/absent: anonymous); `user` defaults to the claims' `sub`, unless
/// they name a publisher (`svc`); `topics` a list, sorted here; `params` an
/// object of strings.
pub fn stream_request_from_json(v: &Value) -> types::StreamRequest {
    read::<file::StreamRequestInput>(v).into()
}

// ---- inputs as a case of a cases file takes them ----------------------
//
// What a shadow comparison keeps of each disagreement, so that it can be
// downloaded as a `plugin test` case (and read back by the functions above).

/// A bid validator's input as a case's `input`.
pub fn bid_case_json(bid: &Bid, product: &Product, now: i64) -> Value {
    let (b, p) = (self::bid(bid), self::product(product));
    json!({
        "bid": {
            "id": b.id, "tenant": b.tenant, "product_id": b.product_id,
            "bidder_id": b.bidder_id, "amount": b.amount, "created_at": b.created_at,
        },
        "product": {
            "id": p.id, "tenant": p.tenant, "seller_id": p.seller_id, "title": p.title,
            "starting_price": p.starting_price, "min_increment": p.min_increment,
            "anti_snipe_ms": p.anti_snipe_ms, "ends_at": p.ends_at, "status": p.status,
            "current_bid": p.current_bid, "leader": p.leader, "bid_count": p.bid_count,
            "version": p.version, "created_at": p.created_at,
        },
        "now": now,
    })
}

/// A notification shaper's input as a case's `input`.
pub fn message_case_json(m: &types::Message) -> Value {
    json!({
        "message": {
            "id": m.id, "tenant": m.tenant, "kind": m.kind, "from": m.from, "to": m.to,
            "product_id": m.product_id, "body": m.body, "created_at": m.created_at,
        }
    })
}

/// An event filter's input as a case's `input`: the event (its `data` as
/// JSON) and the subscription's parameters.
pub fn event_case_json(e: &types::Event, shape: &[(String, String)]) -> Value {
    let data: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
    let subscription: Map<String, Value> = shape
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "event": {
            "id": e.id, "tenant": e.tenant, "topic": e.topic, "type": e.type_,
            "data": data, "ts": e.ts,
        },
        "subscription": subscription,
    })
}
