//! Host types, WIT types and JSON (`plugins::convert`): what a plugin
//! returns is checked against the host's output rules whatever it holds
//! (no panic; what passes keeps them), and the JSON of recorded cases reads
//! back as what was recorded: bids, products, events and stream requests
//! (`plugin test` and `plugin replay` run the plugin on what the JSON
//! says, so a lossy round trip would replay another input).
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard::event::{event_json, validate_kind, StoredEvent};
use switchyard::fuzzing::convert::{self as c, types};
use switchyard_fuzz::{json, name, object, text, NAME_CHARS};

fn opt<T>(
    u: &mut Unstructured,
    f: impl FnOnce(&mut Unstructured) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.arbitrary()? { Some(f(u)?) } else { None })
}

/// A name that is often valid (codes, user ids, event types).
fn word(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 => text(u)?,
        1 => name(u, b"abcxyz019_", 66)?,
        _ => name(u, NAME_CHARS, 130)?,
    })
}

/// A JSON-object text as plugins return it: often an object, sometimes
/// not JSON, not an object, blank or pretty-printed.
fn data_text(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=5)? {
        0 => text(u)?,
        1 => json(u, 2)?.to_string(),
        2 => " \n\t".into(),
        3 => serde_json::to_string_pretty(&Value::Object(object(u, 2)?)).expect("json"),
        _ => Value::Object(object(u, 2)?).to_string(),
    })
}

#[derive(Debug)]
enum Case {
    Bid(c::Bid),
    Product(c::Product),
    Verdict(types::Verdict, i64),
    Notifications(Vec<types::Notification>),
    Filter(types::FilterResult),
    Access(types::Authorization),
    /// The event, and whether its JSON is the host's rendering.
    Event(StoredEvent, bool),
    Request(types::StreamRequest),
    Pairs(Value),
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0..=8)? {
            0 => Case::Bid(c::Bid {
                id: text(u)?,
                tenant: text(u)?,
                product_id: text(u)?,
                bidder_id: text(u)?,
                amount: u.arbitrary()?,
                idempotency_key: opt(u, text)?,
                status: *u.choose(&[
                    c::BidStatus::Queued,
                    c::BidStatus::Accepted,
                    c::BidStatus::Rejected,
                ])?,
                reason: opt(u, text)?,
                decided_by: opt(u, text)?,
                created_at: u.arbitrary()?,
                decided_at: u.arbitrary()?,
            }),
            1 => Case::Product(c::Product {
                id: text(u)?,
                tenant: text(u)?,
                seller_id: text(u)?,
                title: text(u)?,
                starting_price: u.arbitrary()?,
                min_increment: u.arbitrary()?,
                anti_snipe_ms: u.arbitrary()?,
                ends_at: u.arbitrary()?,
                status: *u.choose(&[c::ProductStatus::Open, c::ProductStatus::Closed])?,
                current_bid: u.arbitrary()?,
                leader: opt(u, text)?,
                bid_count: u.arbitrary()?,
                version: u.arbitrary()?,
                created_at: u.arbitrary()?,
            }),
            2 => {
                let now: i64 = u.arbitrary()?;
                let v = if u.arbitrary()? {
                    let extend_to = match u.int_in_range(0..=2)? {
                        0 => None,
                        1 => Some(now.saturating_add(u.int_in_range(-10..=700_000_000)?)),
                        _ => Some(u.arbitrary()?),
                    };
                    types::Verdict::Accept(types::Effects { extend_to })
                } else {
                    types::Verdict::Reject(types::Rejection {
                        code: word(u)?,
                        message: text(u)?,
                    })
                };
                Case::Verdict(v, now)
            }
            3 => {
                let n = u.int_in_range(0..=18)?;
                let list = (0..n)
                    .map(|_| {
                        Ok(types::Notification {
                            recipient: word(u)?,
                            kind: word(u)?,
                            preview: text(u)?,
                            data: data_text(u)?,
                        })
                    })
                    .collect::<Result<_>>()?;
                Case::Notifications(list)
            }
            4 => Case::Filter(match u.int_in_range(0..=2)? {
                0 => types::FilterResult::Drop,
                1 => types::FilterResult::Pass,
                _ => types::FilterResult::Replace(data_text(u)?),
            }),
            5 => Case::Access(if u.arbitrary()? {
                types::Authorization::Allow
            } else {
                types::Authorization::Refuse(types::Rejection {
                    code: word(u)?,
                    message: text(u)?,
                })
            }),
            6 => {
                let seq = u.arbitrary()?;
                let tenant = text(u)?;
                let topic = text(u)?;
                let kind = word(u)?;
                let ts = u.arbitrary()?;
                // As stored (the host's rendering), or any text.
                let rendered = u.ratio(7, 8)?;
                let json = if rendered {
                    event_json(seq, &tenant, &topic, &kind, &json(u, 3)?.to_string(), ts)
                } else {
                    text(u)?
                };
                Case::Event(
                    StoredEvent {
                        seq,
                        tenant: tenant.into(),
                        topic,
                        kind,
                        json,
                        ts,
                    },
                    rendered,
                )
            }
            7 => {
                let caller = match u.int_in_range(0..=3)? {
                    0 => None,
                    1 => Some(text(u)?),
                    2 => Some(json(u, 2)?.to_string()),
                    _ => Some(Value::Object(object(u, 2)?).to_string()),
                };
                let topics = (0..u.int_in_range(0..=4)?)
                    .map(|_| text(u))
                    .collect::<Result<_>>()?;
                let params = (0..u.int_in_range(0..=4)?)
                    .map(|_| Ok((word(u)?, text(u)?)))
                    .collect::<Result<_>>()?;
                Case::Request(types::StreamRequest {
                    caller,
                    user: opt(u, text)?,
                    tenant: text(u)?,
                    topics,
                    params,
                    now: u.arbitrary()?,
                })
            }
            _ => Case::Pairs(json(u, 3)?),
        })
    }
}

fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The WIT types have no `PartialEq`; their `Debug` shows every field.
fn same<T: std::fmt::Debug>(a: &T, b: &T) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// What a recorded value reads back as: stored as text, then parsed.
fn stored(v: &Value) -> Value {
    serde_json::from_str(&v.to_string()).expect("JSON the host wrote parses")
}

fuzz_target!(|case: Case| match case {
    Case::Bid(b) => {
        let recorded = stored(&serde_json::to_value(&b).expect("a bid serializes"));
        same(&c::bid_from_json(&recorded), &c::bid(&b));
    }
    Case::Product(p) => {
        let recorded = stored(&serde_json::to_value(&p).expect("a product serializes"));
        same(&c::product_from_json(&recorded), &c::product(&p));
    }
    Case::Verdict(v, now) => {
        let input = v.clone();
        let Ok(verdict) = c::verdict(v, now) else {
            return;
        };
        let j = c::verdict_json(&verdict);
        match (input, verdict) {
            (types::Verdict::Accept(e), c::Verdict::Accept { extend_to }) => {
                assert_eq!(e.extend_to, extend_to);
                if let Some(t) = extend_to {
                    assert!(t >= now && (t as i128) <= now as i128 + 7 * 24 * 3_600_000);
                }
                assert_eq!(j["verdict"], "accept");
            }
            (types::Verdict::Reject(r), c::Verdict::Reject { code, message }) => {
                assert!(valid_code(&code));
                assert_eq!(code, r.code);
                assert!(message.chars().count() <= 500);
                assert!(r.message.starts_with(&message));
                assert_eq!(j["code"], code.as_str());
            }
            (input, out) => panic!("{input:?} became {out:?}"),
        }
    }
    Case::Notifications(list) => {
        let input = list.clone();
        let Ok(out) = c::notifications(list) else {
            return;
        };
        assert!(out.len() <= 16 && out.len() == input.len());
        let j = c::notifications_json(&out);
        for ((n, i), j) in out.iter().zip(&input).zip(j.as_array().expect("a list")) {
            assert!(switchyard::auth::valid_user_id(&n.recipient));
            assert!(validate_kind(&n.kind).is_ok());
            assert_eq!((&n.recipient, &n.kind), (&i.recipient, &i.kind));
            assert_eq!(
                n.data.get("preview"),
                Some(&Value::String(i.preview.clone()))
            );
            assert!(i.preview.chars().count() <= 1000);
            // The published event's data: one line of JSON.
            assert!(!Value::Object(n.data.clone()).to_string().contains('\n'));
            assert_eq!(j["recipient"], n.recipient.as_str());
            assert_eq!(j["preview"], i.preview.as_str());
        }
    }
    Case::Filter(r) => {
        let input = r.clone();
        let Ok(out) = c::filter_result(r) else { return };
        let j = c::filter_json(&out);
        match (input, &out) {
            (types::FilterResult::Drop, c::FilterOutcome::Drop) => assert_eq!(j["result"], "drop"),
            (types::FilterResult::Pass, c::FilterOutcome::Pass) => assert_eq!(j["result"], "pass"),
            (types::FilterResult::Replace(given), c::FilterOutcome::Replace(data)) => {
                // Delivered on an SSE `data:` line: compact, one line.
                assert!(!data.contains(['\n', '\r']), "{data:?}");
                let given: Value = serde_json::from_str(&given).expect("accepted data is JSON");
                let data: Value = serde_json::from_str(data).expect("replacement is JSON");
                assert!(data.is_object());
                assert_eq!(data, given);
                assert_eq!(j["data"], data);
            }
            (input, out) => panic!("{input:?} became {out:?}"),
        }
    }
    Case::Access(a) => {
        let input = a.clone();
        let Ok(out) = c::access(a) else { return };
        let j = c::access_json(&out);
        match (input, out) {
            (types::Authorization::Allow, c::Access::Allow) => assert_eq!(j["decision"], "allow"),
            (types::Authorization::Refuse(r), c::Access::Refuse { code, message }) => {
                assert!(valid_code(&code));
                assert_eq!(code, r.code);
                assert!(message.chars().count() <= 500 && r.message.starts_with(&message));
                assert_eq!(j["decision"], "refuse");
            }
            (input, out) => panic!("{input:?} became {out:?}"),
        }
    }
    Case::Event(e, rendered) => {
        let seen = c::event(&e);
        assert_eq!(seen.id, e.seq.to_string());
        assert_eq!(
            (seen.topic.as_str(), seen.type_.as_str()),
            (e.topic.as_str(), e.kind.as_str())
        );
        let data: Value = serde_json::from_str(&seen.data).expect("an event's data is JSON");
        if let Ok(recorded) = serde_json::from_str::<Value>(&e.json) {
            if recorded.get("data").is_some() {
                assert_eq!(data, recorded["data"]);
            }
            if rendered {
                // A recorded case of this event runs the plugin on the same input.
                same(&c::event_from_json(&recorded), &seen);
            }
        }
    }
    Case::Request(r) => {
        let recorded = stored(&c::stream_request_json(&r));
        let back = c::stream_request_from_json(&recorded);
        let caller = r
            .caller
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .filter(Value::is_object);
        let mut topics = r.topics.clone();
        topics.sort();
        topics.dedup();
        // A repeated parameter keeps its last value.
        let params: BTreeMap<_, _> = r.params.iter().cloned().collect();
        let back_caller = back
            .caller
            .map(|t| serde_json::from_str::<Value>(&t).expect("json"));
        assert!(
            match (&back_caller, &caller) {
                (Some(a), Some(b)) => same_json(a, b),
                (a, b) => a == b,
            },
            "{back_caller:?} != {caller:?}"
        );
        assert_eq!(back.user, r.user);
        assert_eq!(back.tenant, r.tenant);
        assert_eq!(back.topics, topics);
        assert_eq!(back.params, params.into_iter().collect::<Vec<_>>());
        assert_eq!(back.now, r.now);
    }
    Case::Pairs(v) => {
        let pairs = c::subscription_from_json(&v);
        assert!(pairs.windows(2).all(|w| w[0] <= w[1]));
        let n = v.as_object().map_or(0, |m| m.len());
        assert_eq!(pairs.len(), n);
        for (k, s) in &pairs {
            match &v[k] {
                Value::String(x) => assert_eq!(x, s),
                other => assert_eq!(&other.to_string(), s),
            }
        }
    }
});

/// Equal JSON, numbers within a relative 1e-12: serde_json reads a float's
/// shortest text back exactly only with its `float_roundtrip` feature, so a
/// subnormal can move by an ulp between two readings of claims.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(f64::MIN_POSITIVE)
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
