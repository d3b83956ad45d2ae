//! The pure rules of a decision round: no I/O, so they are tested alone.

use serde_json::json;

use super::{Bid, BidStatus, Product, ProductStatus};
use crate::event::NewEvent;
use crate::store::Notification;

/// A closed auction waits this long past its end before closing, so bids
/// accepted (202) just before the end are decided first.
pub const CLOSE_GRACE_MS: i64 = 1_000;

/// What the bid-validator rule says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept, optionally moving the end to `extend_to`.
    Accept {
        /// New end time (anti-sniping).
        extend_to: Option<i64>,
    },
    /// Reject with a code and a message.
    Reject {
        /// Machine-readable reason.
        code: String,
        /// Human-readable reason.
        message: String,
    },
}

/// The bid-validator slot. The host passes the time: rules have no clock.
pub trait BidValidator: Send + Sync + 'static {
    /// Judges a bid that already passed the host's own checks.
    fn validate(&self, bid: &Bid, product: &Product, now: i64) -> Verdict;
    /// Version recorded on every decision it takes part in.
    fn version(&self) -> String;
}

/// One user's outbids on one product in one round: they led before a bid
/// of the round and do not lead at its end. The round sends one digest per
/// such user, however often they were outbid in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutbidDigest {
    /// Who was outbid.
    pub user: String,
    /// The product.
    pub product_id: String,
    /// Its title.
    pub title: String,
    /// How many times in the round they lost the lead (at least 1).
    pub times: u64,
    /// The leading bid at the end of the round, in minor units.
    pub amount: i64,
    /// The leader at the end of the round.
    pub leader: Option<String>,
    /// The accepted bid that outbid them last.
    pub bid_id: String,
}

/// Turns an outbid digest into the notifications the round publishes
/// (the notification-shaper slot, asked about `bid.outbid`).
pub trait OutbidNotifier {
    /// The notifications for `digest` (a tenant's), decided at `now`.
    fn outbid(&self, tenant: &str, digest: &OutbidDigest, now: i64) -> Vec<Notification>;
}

/// Built-in outbid notification: one `bid.outbid` to the user, with
/// `product_id`, `title`, `amount`, `bid_id`, `times` and a `preview`.
pub struct BuiltinOutbid;

impl OutbidNotifier for BuiltinOutbid {
    fn outbid(&self, _tenant: &str, d: &OutbidDigest, _now: i64) -> Vec<Notification> {
        let data = json!({
            "product_id": d.product_id, "title": d.title, "amount": d.amount,
            "bid_id": d.bid_id, "times": d.times, "preview": outbid_preview(d),
        });
        let serde_json::Value::Object(data) = data else {
            unreachable!("an object literal")
        };
        vec![Notification {
            recipient: d.user.clone(),
            kind: "bid.outbid".into(),
            data,
        }]
    }
}

/// `Outbid on “Lamp”: the bid is now 12.50` (`Outbid 3 times on …`).
fn outbid_preview(d: &OutbidDigest) -> String {
    let times = match d.times {
        1 => String::new(),
        n => format!(" {n} times"),
    };
    let sign = if d.amount < 0 { "-" } else { "" };
    let abs = d.amount.unsigned_abs();
    format!(
        "Outbid{times} on “{}”: the bid is now {sign}{}.{:02}",
        d.title,
        abs / 100,
        abs % 100
    )
}

/// Built-in validator: accepts; a bid within `anti_snipe_ms` of the end
/// extends the end to `anti_snipe_ms` after the bid.
pub struct BuiltinValidator;

impl BidValidator for BuiltinValidator {
    fn validate(&self, _bid: &Bid, p: &Product, now: i64) -> Verdict {
        let extend_to = match p.ends_at {
            Some(end) if p.anti_snipe_ms > 0 && end - now < p.anti_snipe_ms => {
                Some(now + p.anti_snipe_ms)
            }
            _ => None,
        };
        Verdict::Accept { extend_to }
    }

    fn version(&self) -> String {
        "builtin".into()
    }
}

/// One bid's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The bid.
    pub bid_id: String,
    /// Accepted or rejected.
    pub status: BidStatus,
    /// Reason code when rejected.
    pub reason: Option<String>,
    /// What the validator rule was asked (`{"product", "now"}`, JSON), when
    /// the bid reached it: kept with the decision so a candidate rule can be
    /// replayed against it.
    pub input: Option<String>,
}

/// The result of a round.
#[derive(Debug, Clone)]
pub struct Round {
    /// The product after the round.
    pub product: Product,
    /// One outcome per bid, in order.
    pub outcomes: Vec<Outcome>,
    /// Events to append in the same transaction.
    pub events: Vec<NewEvent>,
    /// The validator version.
    pub decided_by: String,
}

/// The event data every product event carries: the state after it.
fn state_json(p: &Product) -> serde_json::Value {
    serde_json::to_value(p).expect("products serialize")
}

fn event(
    p: &Product,
    topic: String,
    kind: &str,
    data: serde_json::Value,
    retain: bool,
) -> NewEvent {
    NewEvent {
        tenant: p.tenant.clone(),
        topic,
        kind: kind.into(),
        data: data.to_string(),
        retain,
    }
}

/// The retained event announcing a new product (its first snapshot).
pub fn created_event(p: &Product) -> NewEvent {
    event(
        p,
        format!("product:{}", p.id),
        "product.created",
        json!({ "product": state_json(p) }),
        true,
    )
}

/// Decides `bids` (queued, in order) against `product` at `now`. Closes the
/// auction when it is past its end (plus grace) and no earlier bid may still
/// be waiting (`more_queued` is false).
pub fn decide(
    product: Product,
    bids: &[Bid],
    now: i64,
    more_queued: bool,
    rule: &dyn BidValidator,
    notify: &dyn OutbidNotifier,
) -> Round {
    let mut p = product;
    let mut outcomes = Vec::with_capacity(bids.len());
    let mut events = Vec::new();
    // (user, times, last bid that outbid them), in the order first outbid.
    let mut outbid: Vec<(String, u64, String)> = Vec::new();
    let topic = format!("product:{}", p.id);
    for bid in bids {
        // A bid is judged at the time it was accepted for processing.
        let at = bid.created_at;
        let closed = p.status != ProductStatus::Open || p.ends_at.is_some_and(|end| at >= end);
        let required = p
            .current_bid
            // Saturating: amounts are any positive i64, and a wrapped sum
            // would let a lower bid win.
            .map(|c| c.saturating_add(p.min_increment))
            .unwrap_or(p.starting_price);
        let mut input = None;
        let verdict = if closed {
            Verdict::Reject {
                code: "auction_closed".into(),
                message: "the auction has ended".into(),
            }
        } else if bid.bidder_id == p.seller_id {
            Verdict::Reject {
                code: "self_bid".into(),
                message: "sellers cannot bid on their own products".into(),
            }
        } else if bid.amount < required {
            Verdict::Reject {
                code: "too_low".into(),
                message: format!("the lowest acceptable bid is {required}"),
            }
        } else {
            input = Some(json!({ "product": state_json(&p), "now": at }).to_string());
            rule.validate(bid, &p, at)
        };
        match verdict {
            Verdict::Accept { extend_to } => {
                let previous = p.leader.clone();
                p.current_bid = Some(bid.amount);
                p.leader = Some(bid.bidder_id.clone());
                p.bid_count += 1;
                p.version += 1;
                if let (Some(new_end), Some(end)) = (extend_to, p.ends_at) {
                    p.ends_at = Some(end.max(new_end));
                }
                events.push(event(
                    &p,
                    topic.clone(),
                    "bid.accepted",
                    json!({
                        "bid_id": bid.id, "amount": bid.amount, "bidder": bid.bidder_id,
                        "bid_count": p.bid_count, "ends_at": p.ends_at, "product": state_json(&p),
                    }),
                    true,
                ));
                if let Some(prev) = previous.filter(|l| *l != bid.bidder_id) {
                    match outbid.iter_mut().find(|(u, _, _)| *u == prev) {
                        Some((_, times, last)) => {
                            *times += 1;
                            *last = bid.id.clone();
                        }
                        None => outbid.push((prev, 1, bid.id.clone())),
                    }
                }
                outcomes.push(Outcome {
                    bid_id: bid.id.clone(),
                    status: BidStatus::Accepted,
                    reason: None,
                    input,
                });
            }
            Verdict::Reject { code, message } => {
                events.push(event(
                    &p,
                    format!("user:{}", bid.bidder_id),
                    "bid.rejected",
                    json!({ "bid_id": bid.id, "product_id": p.id, "amount": bid.amount, "reason": code, "message": message }),
                    false,
                ));
                outcomes.push(Outcome {
                    bid_id: bid.id.clone(),
                    status: BidStatus::Rejected,
                    reason: Some(code),
                    input,
                });
            }
        }
    }
    for (user, times, bid_id) in outbid {
        if p.leader.as_deref() == Some(user.as_str()) {
            continue; // Outbid, then back in the lead: nothing to tell.
        }
        let digest = OutbidDigest {
            user,
            product_id: p.id.clone(),
            title: p.title.clone(),
            times,
            amount: p.current_bid.unwrap_or_default(),
            leader: p.leader.clone(),
            bid_id,
        };
        for n in notify.outbid(&p.tenant, &digest, now) {
            events.push(event(
                &p,
                format!("user:{}", n.recipient),
                &n.kind,
                serde_json::Value::Object(n.data),
                false,
            ));
        }
    }
    if !more_queued
        && p.status == ProductStatus::Open
        && p.ends_at
            .is_some_and(|end| now >= end.saturating_add(CLOSE_GRACE_MS))
    {
        p.status = ProductStatus::Closed;
        p.version += 1;
        events.push(event(
            &p,
            topic,
            "auction.closed",
            json!({ "winner": p.leader, "amount": p.current_bid, "product": state_json(&p) }),
            true,
        ));
    }
    Round {
        product: p,
        outcomes,
        events,
        decided_by: rule.version(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product() -> Product {
        Product {
            id: "p1".into(),
            tenant: "t".into(),
            seller_id: "seller".into(),
            title: "Lamp".into(),
            starting_price: 100,
            min_increment: 10,
            anti_snipe_ms: 0,
            ends_at: Some(10_000),
            status: ProductStatus::Open,
            current_bid: None,
            leader: None,
            bid_count: 0,
            version: 1,
            created_at: 0,
        }
    }

    fn bid(id: &str, who: &str, amount: i64, at: i64) -> Bid {
        Bid {
            id: id.into(),
            tenant: "t".into(),
            product_id: "p1".into(),
            bidder_id: who.into(),
            amount,
            idempotency_key: None,
            status: BidStatus::Queued,
            reason: None,
            decided_by: None,
            created_at: at,
            decided_at: None,
        }
    }

    fn statuses(r: &Round) -> Vec<(&str, Option<&str>)> {
        r.outcomes
            .iter()
            .map(|o| (o.status.as_str(), o.reason.as_deref()))
            .collect()
    }

    #[test]
    fn equal_bids_only_the_first_wins() {
        let r = decide(
            product(),
            &[bid("a", "u1", 150, 1), bid("b", "u2", 150, 1)],
            2,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        assert_eq!(
            statuses(&r),
            vec![("accepted", None), ("rejected", Some("too_low"))]
        );
        assert_eq!(r.product.current_bid, Some(150));
        assert_eq!(r.product.leader.as_deref(), Some("u1"));
    }

    #[test]
    fn increments_self_bids_and_outbid_notices() {
        let r = decide(
            product(),
            &[
                bid("a", "u1", 99, 1),
                bid("b", "u1", 100, 2),
                bid("c", "seller", 500, 3),
                bid("d", "u2", 109, 4),
                bid("e", "u2", 110, 5),
            ],
            6,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        assert_eq!(
            statuses(&r),
            vec![
                ("rejected", Some("too_low")),
                ("accepted", None),
                ("rejected", Some("self_bid")),
                ("rejected", Some("too_low")),
                ("accepted", None)
            ]
        );
        assert!(r
            .events
            .iter()
            .any(|e| e.kind == "bid.outbid" && e.topic == "user:u1"));
        assert_eq!(r.product.bid_count, 2);
        assert_eq!(r.product.version, 3);
    }

    #[test]
    fn one_outbid_digest_per_user_per_round() {
        let r = decide(
            product(),
            &[
                bid("a", "u1", 150, 1),
                bid("b", "u2", 160, 2),
                bid("c", "u3", 170, 3),
                bid("d", "u1", 180, 4),
                bid("e", "u2", 190, 5),
            ],
            6,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        let outbid: Vec<(String, serde_json::Value)> = r
            .events
            .iter()
            .filter(|e| e.kind == "bid.outbid")
            .map(|e| {
                (
                    e.topic.clone(),
                    serde_json::from_str(&e.data).expect("json"),
                )
            })
            .collect();
        // u2 was outbid too, but leads at the end of the round.
        assert_eq!(outbid.len(), 2, "{outbid:?}");
        assert_eq!(outbid[0].0, "user:u1");
        assert_eq!(
            outbid[0].1,
            json!({
                "product_id": "p1", "title": "Lamp", "amount": 190, "bid_id": "e", "times": 2,
                "preview": "Outbid 2 times on “Lamp”: the bid is now 1.90",
            })
        );
        assert_eq!(outbid[1].0, "user:u3");
        assert_eq!(outbid[1].1["times"], 1);
        assert_eq!(outbid[1].1["bid_id"], "d");
        assert_eq!(
            outbid[1].1["preview"],
            "Outbid on “Lamp”: the bid is now 1.90"
        );
    }

    #[test]
    fn amounts_and_ends_at_the_top_of_the_range_do_not_wrap() {
        let mut p = product();
        p.current_bid = Some(i64::MAX - 1);
        p.leader = Some("u1".into());
        p.ends_at = Some(i64::MAX);
        let r = decide(
            p,
            &[bid("a", "u2", 5, 1), bid("b", "u2", i64::MAX, 2)],
            3,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        // The next bid must be at least i64::MAX: 5 is too low, i64::MAX wins.
        assert_eq!(
            statuses(&r),
            vec![("rejected", Some("too_low")), ("accepted", None)]
        );
        assert_eq!(
            r.product.status,
            ProductStatus::Open,
            "an end far away is not past"
        );
    }

    #[test]
    fn late_bids_are_refused_and_the_auction_closes_once() {
        let r = decide(
            product(),
            &[bid("a", "u1", 150, 10_000)],
            11_000,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        assert_eq!(statuses(&r), vec![("rejected", Some("auction_closed"))]);
        assert_eq!(r.product.status, ProductStatus::Closed);
        let again = decide(
            r.product.clone(),
            &[],
            20_000,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        assert!(again.events.is_empty(), "closing is announced once");
    }

    #[test]
    fn anti_sniping_extends_the_end() {
        let mut p = product();
        p.anti_snipe_ms = 2_000;
        let r = decide(
            p,
            &[bid("a", "u1", 150, 9_500), bid("b", "u2", 160, 10_500)],
            10_600,
            false,
            &BuiltinValidator,
            &BuiltinOutbid,
        );
        assert_eq!(statuses(&r), vec![("accepted", None), ("accepted", None)]);
        assert_eq!(r.product.ends_at, Some(12_500));
        assert_eq!(r.product.status, ProductStatus::Open);
    }
}
