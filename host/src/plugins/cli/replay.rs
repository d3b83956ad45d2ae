//! `plugin replay`: a candidate over what the server recorded for its slot
//! (decisions, messages, stream requests, events), and where it would have
//! answered otherwise.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use super::{error_json, run_case, settle, CliError, Failure};
use crate::plugins::convert;
use crate::plugins::registry::FilterOutcome;
use crate::plugins::wasm::{CallCtx, CallResult, HostError, WasmHost};
use crate::plugins::world::{Authorizer, Filter, FilterInput, Shaper, Validator};

/// One recorded decision a candidate is replayed against.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The bid.
    pub bid: crate::bids::Bid,
    /// What the rule saw: `{"product", "now"}`.
    pub input: Value,
}

/// `plugin replay` for the bid validator: runs `bytes` over recorded
/// decisions and reports where its verdict differs from the decision taken.
/// Returns the report and the number of differences.
pub fn replay_bids(
    host: &WasmHost,
    bytes: &[u8],
    recorded: &[Recorded],
    config: BTreeMap<String, String>,
) -> Result<(String, usize), CliError> {
    let component = host.compile(bytes)?;
    let linked = host.link::<Validator>(&component)?;
    let call = CallCtx::new(config, "bid-validator#replay");
    let mut out = String::new();
    let mut differ = Differences::default();
    for r in recorded {
        let input = json!({
            "bid": convert_bid_json(&r.bid),
            "product": r.input["product"],
            "now": r.input["now"],
        });
        let candidate = run_case(host, &linked, &call, &input);
        let taken = match r.bid.status {
            crate::bids::BidStatus::Accepted => "accept".to_string(),
            _ => format!("reject {}", r.bid.reason.as_deref().unwrap_or("?")),
        };
        let theirs = match candidate["verdict"].as_str() {
            Some("accept") => "accept".to_string(),
            Some(_) => format!("reject {}", candidate["code"].as_str().unwrap_or("?")),
            None => format!("error {}", candidate["error"].as_str().unwrap_or("?")),
        };
        if taken != theirs {
            differ.add(&mut out, || {
                format!(
                    "{}  product {}  amount {}  by {}: taken `{taken}` ({}), candidate `{theirs}`",
                    r.bid.id,
                    r.bid.product_id,
                    r.bid.amount,
                    r.bid.bidder_id,
                    r.bid.decided_by.as_deref().unwrap_or("?"),
                )
            });
        }
    }
    let differ = differ.finish(&mut out);
    let _ = writeln!(
        out,
        "{} decisions replayed, {} differ ({:.1}%)",
        recorded.len(),
        differ,
        percent(differ, recorded.len())
    );
    Ok((out, differ))
}

/// Cases a replay found different: the first `Differences::SHOWN` are
/// listed in the report, the rest only counted.
#[derive(Default)]
struct Differences(usize);

impl Differences {
    const SHOWN: usize = 50;

    /// Counts one, and lists it (`line`) while under the limit.
    fn add(&mut self, out: &mut String, line: impl FnOnce() -> String) {
        self.0 += 1;
        if self.0 <= Self::SHOWN {
            out.push_str(&line());
            out.push('\n');
        }
    }

    /// Says how many were not listed; returns the count.
    fn finish(self, out: &mut String) -> usize {
        if self.0 > Self::SHOWN {
            let _ = writeln!(out, "... and {} more", self.0 - Self::SHOWN);
        }
        self.0
    }
}

fn percent(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

/// Shortens a JSON text for a report line.
fn brief(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 200 {
        return text;
    }
    let mut out: String = text.chars().take(199).collect();
    out.push('…');
    out
}

/// `plugin replay` for the notification shaper: runs `bytes` over recorded
/// messages and reports where what it would send differs from what was sent
/// (the notifications still in the log). Returns the report and the number
/// of messages that differ.
pub fn replay_messages(
    host: &WasmHost,
    bytes: &[u8],
    recorded: &[crate::store::plugins::RecordedMessage],
    config: BTreeMap<String, String>,
) -> Result<(String, usize), CliError> {
    let linked = host.link::<Shaper>(&host.compile(bytes)?)?;
    let call = CallCtx::new(config, "notification-shaper#replay");
    let mut out = String::new();
    let mut differ = Differences::default();
    let mut failed = 0;
    for r in recorded {
        let m = &r.message;
        let input = crate::plugins::wasm::bindings::types::Message {
            id: m.id.to_string(),
            tenant: r.tenant.clone(),
            kind: "message".into(),
            from: m.from.clone(),
            to: m.to.clone(),
            product_id: m.product_id.clone(),
            body: m.body.clone(),
            created_at: m.created_at,
        };
        let candidate = match settle(host.call(&linked, &call, &input))
            .and_then(|n| convert::notifications(n).map_err(Failure::Guest))
        {
            Ok(n) => convert::notifications_json(&n),
            Err(e) => {
                failed += 1;
                error_json(&e)
            }
        };
        let sent = Value::Array(
            r.sent
                .iter()
                .map(|(recipient, kind, data)| {
                    let mut data = data.clone();
                    let preview = data.remove("preview").unwrap_or(Value::Null);
                    json!({ "recipient": recipient, "kind": kind, "preview": preview, "data": data })
                })
                .collect(),
        );
        if candidate != sent {
            differ.add(&mut out, || {
                format!(
                    "message {} ({}, {} -> {}): sent {}, candidate {}",
                    m.id,
                    r.tenant,
                    m.from,
                    m.to,
                    brief(&sent),
                    brief(&candidate)
                )
            });
        }
    }
    let differ = differ.finish(&mut out);
    let _ = writeln!(
        out,
        "{} messages replayed, {} differ ({:.1}%), {} candidate calls failed",
        recorded.len(),
        differ,
        percent(differ, recorded.len()),
        failed
    );
    Ok((out, differ))
}

/// `plugin replay` for the stream authorizer: runs `bytes` over recorded
/// stream requests and reports each one whose decision (allow, or the
/// refusal's code) would differ from the one taken. Returns the report and
/// the number of requests that differ.
pub fn replay_requests(
    host: &WasmHost,
    bytes: &[u8],
    recorded: &[crate::store::plugins::RecordedRequest],
    config: BTreeMap<String, String>,
) -> Result<(String, usize), CliError> {
    let linked = host.link::<Authorizer>(&host.compile(bytes)?)?;
    let call = CallCtx::new(config, "stream-authorizer#replay");
    let decision = |v: &Value| match (v["decision"].as_str(), v["error"].as_str()) {
        (Some("allow"), _) => "allow".to_string(),
        (Some(_), _) => format!("refuse {}", v["code"].as_str().unwrap_or("?")),
        (None, Some(kind)) => format!("failed ({kind}): refuse plugin_error"),
        (None, None) => "?".to_string(),
    };
    let mut out = String::new();
    let mut differ = Differences::default();
    let (mut allowed, mut refused, mut failed) = (0, 0, 0);
    for r in recorded {
        let request: Value = serde_json::from_str(&r.request).unwrap_or(Value::Null);
        let taken: Value = serde_json::from_str(&r.decision).unwrap_or(Value::Null);
        let candidate = run_case(host, &linked, &call, &json!({ "request": request }));
        match candidate["decision"].as_str() {
            Some("allow") => allowed += 1,
            Some(_) => refused += 1,
            None => failed += 1,
        }
        let (taken, theirs) = (decision(&taken), decision(&candidate));
        if taken != theirs {
            differ.add(&mut out, || {
                format!(
                    "{}  user {}  topics {}: taken `{taken}` ({}), candidate `{theirs}`",
                    r.tenant,
                    request["user"].as_str().unwrap_or("-"),
                    brief(&request["topics"]),
                    r.decided_by,
                )
            });
        }
    }
    let differ = differ.finish(&mut out);
    let _ = writeln!(
        out,
        "{} stream requests replayed, {} differ ({:.1}%); candidate: allow {allowed}, refuse {refused}, failed {failed} (refused: authorizers fail closed)",
        recorded.len(),
        differ,
        percent(differ, recorded.len()),
    );
    Ok((out, differ))
}

/// An event filter version to compare a candidate with.
#[derive(Clone)]
pub struct Baseline {
    /// What the report calls it (`event-filter@{hash}`).
    pub tag: String,
    /// The component.
    pub bytes: Vec<u8>,
    /// Its configuration.
    pub config: BTreeMap<String, String>,
}

#[derive(Default)]
struct Tally {
    pass: usize,
    drop: usize,
    replace: usize,
    failed: usize,
}

impl Tally {
    fn add(&mut self, r: &Result<FilterOutcome, Failure>) {
        match r {
            Ok(FilterOutcome::Pass) => self.pass += 1,
            Ok(FilterOutcome::Drop) => self.drop += 1,
            Ok(FilterOutcome::Replace(_)) => self.replace += 1,
            Err(_) => self.failed += 1,
        }
    }

    fn line(&self) -> String {
        format!(
            "pass {}, drop {}, replace {}, failed {} (dropped: filters fail closed)",
            self.pass, self.drop, self.replace, self.failed
        )
    }
}

fn outcome_text(r: &Result<FilterOutcome, Failure>) -> String {
    match r {
        Ok(FilterOutcome::Pass) => "pass".into(),
        Ok(FilterOutcome::Drop) => "drop".into(),
        Ok(FilterOutcome::Replace(d)) => {
            let v = serde_json::from_str::<Value>(d).unwrap_or(Value::Null);
            format!("replace {}", brief(&v))
        }
        Err(e) => format!("failed ({}): drop", e.kind()),
    }
}

/// `plugin replay` for the event filter: runs `bytes` over recorded events
/// for one subscription `shape` and compares its outcomes with the version
/// active for each event's tenant (`baselines` by tenant, `""` the default
/// slot) or, where none is, the built-in (no filter: every event passes).
/// Returns the report and the number of events whose outcome differs.
pub fn replay_events(
    host: &WasmHost,
    bytes: &[u8],
    events: &[crate::event::StoredEvent],
    shape: &[(String, String)],
    config: BTreeMap<String, String>,
    baselines: &BTreeMap<String, Baseline>,
) -> Result<(String, usize), CliError> {
    let link =
        |bytes: &[u8]| -> Result<_, HostError> { host.link::<Filter>(&host.compile(bytes)?) };
    let candidate = link(bytes)?;
    let call = CallCtx::new(config, "event-filter#replay");
    let mut linked_baselines = BTreeMap::new();
    for (tenant, b) in baselines {
        let pre = link(&b.bytes).map_err(|source| CliError::Baseline {
            tag: b.tag.clone(),
            source,
        })?;
        let call = CallCtx::new(b.config.clone(), format!("{}#replay", b.tag));
        linked_baselines.insert(tenant.clone(), (b.tag.clone(), pre, call));
    }
    let shape: Vec<(String, String)> = {
        let mut s = shape.to_vec();
        s.sort();
        s
    };
    let mut out = String::new();
    let (mut ours, mut theirs) = (Tally::default(), Tally::default());
    let mut against: BTreeMap<String, usize> = BTreeMap::new();
    let mut differ = Differences::default();
    for e in events {
        let event = convert::event(e);
        let input = FilterInput {
            event: &event,
            subscription: &shape,
        };
        let cand = outcome(host.call(&candidate, &call, input));
        let base = linked_baselines
            .get(&*e.tenant)
            .or_else(|| linked_baselines.get(""));
        let (tag, active) = match base {
            Some((tag, pre, call)) => (tag.as_str(), outcome(host.call(pre, call, input))),
            None => ("builtin", Ok(FilterOutcome::Pass)),
        };
        *against.entry(tag.to_string()).or_default() += 1;
        ours.add(&cand);
        theirs.add(&active);
        let same = match (&cand, &active) {
            (Ok(a), Ok(b)) => convert::filter_json(a) == convert::filter_json(b),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            differ.add(&mut out, || {
                format!(
                    "event {} ({}, {} {}): {tag} `{}`, candidate `{}`",
                    e.seq,
                    e.tenant,
                    e.topic,
                    e.kind,
                    outcome_text(&active),
                    outcome_text(&cand)
                )
            });
        }
    }
    let differ = differ.finish(&mut out);
    let shape_text: Vec<String> = shape.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(
        out,
        "subscription shape: {}",
        if shape_text.is_empty() {
            "(none)".to_string()
        } else {
            shape_text.join("&")
        }
    );
    let against: Vec<String> = against
        .iter()
        .map(|(tag, n)| format!("{tag} ({n} events)"))
        .collect();
    let _ = writeln!(
        out,
        "compared with: {}",
        if against.is_empty() {
            "-".to_string()
        } else {
            against.join(", ")
        }
    );
    let _ = writeln!(out, "active:    {}", theirs.line());
    let _ = writeln!(out, "candidate: {}", ours.line());
    let _ = writeln!(
        out,
        "{} events replayed, {} differ ({:.1}%)",
        events.len(),
        differ,
        percent(differ, events.len())
    );
    Ok((out, differ))
}

/// A filter call's outcome once the host's output rules passed.
fn outcome(
    r: CallResult<crate::plugins::wasm::bindings::types::FilterResult>,
) -> Result<FilterOutcome, Failure> {
    settle(r).and_then(|o| convert::filter_result(o).map_err(Failure::Guest))
}

fn convert_bid_json(b: &crate::bids::Bid) -> Value {
    json!({
        "id": b.id, "tenant": b.tenant, "product_id": b.product_id,
        "bidder_id": b.bidder_id, "amount": b.amount, "created_at": b.created_at,
    })
}
