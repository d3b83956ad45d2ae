//! `switchyard plugin check|test|replay`: a plugin author's and an
//! operator's tools, with no server running.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use serde_json::{json, Value};

use super::convert;
use super::registry::{content_hash, FilterOutcome};
use super::wasm::{CallCtx, CallError, HostError, Limits, Linked, WasmHost};
use super::Slot;

/// Why a `switchyard plugin` command cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The engine cannot start, or the component cannot be used.
    #[error(transparent)]
    Component(#[from] HostError),
    /// The cases file lacks what the command needs.
    #[error("the cases file needs {0}")]
    Cases(&'static str),
    /// The cases file names a slot there is not.
    #[error("unknown slot {0:?}")]
    UnknownSlot(String),
    /// The component fits no slot (why not, slot by slot).
    #[error("the component fits no slot ({0})")]
    NoSlot(String),
    /// A tenant's active component, the replay's baseline, cannot be used.
    #[error("the active {tag}: {source}")]
    Baseline {
        /// The baseline's `tenant/slot@hash` tag.
        tag: String,
        /// Why.
        source: HostError,
    },
}

/// `plugin check`: which slot a component fits and why not the others.
/// Returns the report and whether it fits any slot.
pub fn check(bytes: &[u8]) -> Result<(String, bool), CliError> {
    let host = WasmHost::new(Limits::default())?;
    let results = host.check(bytes)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "component {} ({} bytes)",
        &content_hash(bytes)[..12],
        bytes.len()
    );
    let mut fits = false;
    for (slot, r) in results {
        match r {
            Ok(()) => {
                fits = true;
                let _ = writeln!(out, "  fits {slot}");
            }
            Err(e) => {
                let _ = writeln!(out, "  not {slot}: {e}");
            }
        }
    }
    if !fits {
        let _ = writeln!(out, "it fits no slot");
    }
    Ok((out, fits))
}

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

fn error_json(e: &CallError) -> Value {
    json!({ "error": e.kind.as_str(), "message": e.message })
}

fn config_of(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
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
    let slot_name = cases["slot"]
        .as_str()
        .ok_or(CliError::Cases("a \"slot\""))?;
    let slot =
        Slot::parse(slot_name).ok_or_else(|| CliError::UnknownSlot(slot_name.to_string()))?;
    let list = cases["cases"]
        .as_array()
        .ok_or(CliError::Cases("a \"cases\" array"))?;
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

/// Per-call latency of a component over recorded cases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// The slot the cases are for.
    pub slot: String,
    /// Timed calls (after `warmup` untimed ones).
    pub calls: usize,
    /// Calls that failed (they are timed too).
    pub failed: usize,
    /// Median, in microseconds.
    pub p50_us: f64,
    /// 90th percentile, in microseconds.
    pub p90_us: f64,
    /// 99th percentile, in microseconds.
    pub p99_us: f64,
    /// Mean, in microseconds.
    pub mean_us: f64,
}

/// `plugin bench`: calls the component `calls` times, going round the cases'
/// inputs, and reports the per-call latency. A call is timed as the server
/// times it: from taking an instance to the output having passed the host's
/// rules, with the inputs already in their WIT form and instances reused
/// between calls.
pub fn bench(bytes: &[u8], cases: &Value, calls: usize) -> Result<BenchReport, CliError> {
    let slot_name = cases["slot"]
        .as_str()
        .ok_or(CliError::Cases("a \"slot\""))?;
    let slot =
        Slot::parse(slot_name).ok_or_else(|| CliError::UnknownSlot(slot_name.to_string()))?;
    let list = cases["cases"]
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or(CliError::Cases("a non-empty \"cases\" array"))?;
    let host = WasmHost::new(Limits::default())?;
    let linked = host.link(&host.compile(bytes)?, slot)?;
    let base = config_of(cases.get("config"));
    type Call<'a> = Box<dyn Fn() -> Result<(), CallError> + 'a>;
    let mut runs: Vec<Call> = Vec::new();
    for case in list {
        let mut config = base.clone();
        config.extend(config_of(case.get("config")));
        let call = CallCtx {
            config: Arc::new(config),
            label: Arc::from(format!("{slot}#bench")),
            idle: Default::default(),
        };
        let input = &case["input"];
        let host = &host;
        runs.push(match &linked {
            Linked::Validator(pre) => {
                let now = input["now"].as_i64().unwrap_or_default();
                let bid = convert::bid_from_json(&input["bid"]);
                let product = convert::product_from_json(&input["product"]);
                Box::new(move || {
                    host.validate(pre, &call, &bid, &product, now)
                        .and_then(|v| convert::verdict(v, now))
                        .map(drop)
                })
            }
            Linked::Shaper(pre) => {
                let message = convert::message_from_json(&input["message"]);
                Box::new(move || {
                    host.shape(pre, &call, &message)
                        .and_then(convert::notifications)
                        .map(drop)
                })
            }
            Linked::Filter(pre) => {
                let event = convert::event_from_json(&input["event"]);
                let shape = convert::subscription_from_json(&input["subscription"]);
                Box::new(move || {
                    host.filter(pre, &call, &event, &shape)
                        .and_then(convert::filter_result)
                        .map(drop)
                })
            }
            Linked::Authorizer(pre) => {
                let request = convert::stream_request_from_json(&input["request"]);
                Box::new(move || {
                    host.authorize(pre, &call, &request)
                        .and_then(convert::access)
                        .map(drop)
                })
            }
        });
    }
    let warmup = runs.len().max((calls / 10).min(1_000));
    for i in 0..warmup {
        let _ = runs[i % runs.len()]();
    }
    let mut took = Vec::with_capacity(calls);
    let mut failed = 0;
    for i in 0..calls.max(1) {
        let started = std::time::Instant::now();
        let r = runs[i % runs.len()]();
        took.push(started.elapsed().as_nanos() as f64 / 1_000.0);
        failed += usize::from(r.is_err());
    }
    let mean_us = took.iter().sum::<f64>() / took.len() as f64;
    took.sort_by(f64::total_cmp);
    let q = |q: f64| took[((took.len() as f64 * q).ceil() as usize).clamp(1, took.len()) - 1];
    Ok(BenchReport {
        slot: slot.as_str().into(),
        calls: took.len(),
        failed,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        mean_us,
    })
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
    bytes: &[u8],
    recorded: &[Recorded],
    config: BTreeMap<String, String>,
) -> Result<(String, usize), CliError> {
    let host = WasmHost::new(Limits::default())?;
    let component = host.compile(bytes)?;
    let linked = host.link(&component, Slot::BidValidator)?;
    let call = CallCtx {
        config: Arc::new(config),
        label: Arc::from("bid-validator#replay"),
        idle: Default::default(),
    };
    let mut out = String::new();
    let mut differ = Differences::default();
    for r in recorded {
        let input = json!({
            "bid": convert_bid_json(&r.bid),
            "product": r.input["product"],
            "now": r.input["now"],
        });
        let candidate = run_case(&host, &linked, &call, &input);
        let taken = match r.bid.status.as_str() {
            "accepted" => "accept".to_string(),
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

/// The slot a component fits (the first, if several), or why none.
pub fn slot_of(bytes: &[u8]) -> Result<Slot, CliError> {
    let host = WasmHost::new(Limits::default())?;
    let fits = host.check(bytes)?;
    fits.iter()
        .find(|(_, r)| r.is_ok())
        .map(|(slot, _)| *slot)
        .ok_or_else(|| {
            let why: Vec<String> = fits
                .iter()
                .filter_map(|(slot, r)| r.as_ref().err().map(|e| format!("not {slot}: {e}")))
                .collect();
            CliError::NoSlot(why.join("; "))
        })
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
    bytes: &[u8],
    recorded: &[crate::store::plugins::RecordedMessage],
    config: BTreeMap<String, String>,
) -> Result<(String, usize), CliError> {
    let host = WasmHost::new(Limits::default())?;
    let linked = host.link(&host.compile(bytes)?, Slot::NotificationShaper)?;
    let Linked::Shaper(pre) = &linked else {
        unreachable!("linked for the shaper slot")
    };
    let call = CallCtx {
        config: Arc::new(config),
        label: Arc::from("notification-shaper#replay"),
        idle: Default::default(),
    };
    let mut out = String::new();
    let mut differ = Differences::default();
    let mut failed = 0;
    for r in recorded {
        let m = &r.message;
        let input = super::wasm::bindings::types::Message {
            id: m.id.to_string(),
            tenant: r.tenant.clone(),
            kind: "message".into(),
            from: m.from.clone(),
            to: m.to.clone(),
            product_id: m.product_id.clone(),
            body: m.body.clone(),
            created_at: m.created_at,
        };
        let candidate = match host
            .shape(pre, &call, &input)
            .and_then(convert::notifications)
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
    bytes: &[u8],
    recorded: &[crate::store::plugins::RecordedRequest],
    config: BTreeMap<String, String>,
) -> Result<(String, usize), CliError> {
    let host = WasmHost::new(Limits::default())?;
    let linked = host.link(&host.compile(bytes)?, Slot::StreamAuthorizer)?;
    let call = CallCtx {
        config: Arc::new(config),
        label: Arc::from("stream-authorizer#replay"),
        idle: Default::default(),
    };
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
        let candidate = run_case(&host, &linked, &call, &json!({ "request": request }));
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
    fn add(&mut self, r: &Result<FilterOutcome, CallError>) {
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

fn outcome_text(r: &Result<FilterOutcome, CallError>) -> String {
    match r {
        Ok(FilterOutcome::Pass) => "pass".into(),
        Ok(FilterOutcome::Drop) => "drop".into(),
        Ok(FilterOutcome::Replace(d)) => {
            let v = serde_json::from_str::<Value>(d).unwrap_or(Value::Null);
            format!("replace {}", brief(&v))
        }
        Err(e) => format!("failed ({}): drop", e.kind.as_str()),
    }
}

/// `plugin replay` for the event filter: runs `bytes` over recorded events
/// for one subscription `shape` and compares its outcomes with the version
/// active for each event's tenant (`baselines` by tenant, `""` the default
/// slot) or, where none is, the built-in (no filter: every event passes).
/// Returns the report and the number of events whose outcome differs.
pub fn replay_events(
    bytes: &[u8],
    events: &[crate::event::StoredEvent],
    shape: &[(String, String)],
    config: BTreeMap<String, String>,
    baselines: &BTreeMap<String, Baseline>,
) -> Result<(String, usize), CliError> {
    let host = WasmHost::new(Limits::default())?;
    let link = |bytes: &[u8]| -> Result<_, HostError> {
        match host.link(&host.compile(bytes)?, Slot::EventFilter)? {
            Linked::Filter(pre) => Ok(pre),
            _ => unreachable!("linked for the filter slot"),
        }
    };
    let candidate = link(bytes)?;
    let call = CallCtx {
        config: Arc::new(config),
        label: Arc::from("event-filter#replay"),
        idle: Default::default(),
    };
    let mut linked_baselines = BTreeMap::new();
    for (tenant, b) in baselines {
        let pre = link(&b.bytes).map_err(|source| CliError::Baseline {
            tag: b.tag.clone(),
            source,
        })?;
        let call = CallCtx {
            config: Arc::new(b.config.clone()),
            label: Arc::from(format!("{}#replay", b.tag)),
            idle: Default::default(),
        };
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
        let input = convert::event(e);
        let cand = host
            .filter(&candidate, &call, &input, &shape)
            .and_then(convert::filter_result);
        let base = linked_baselines
            .get(&*e.tenant)
            .or_else(|| linked_baselines.get(""));
        let (tag, active) = match base {
            Some((tag, pre, call)) => (
                tag.as_str(),
                host.filter(pre, call, &input, &shape)
                    .and_then(convert::filter_result),
            ),
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

fn convert_bid_json(b: &crate::bids::Bid) -> Value {
    json!({
        "id": b.id, "tenant": b.tenant, "product_id": b.product_id,
        "bidder_id": b.bidder_id, "amount": b.amount, "created_at": b.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
