//! Example `stream-authorizer` plugin: a product's bid stream for its
//! bidders only.
//!
//! A marketplace publishes each product's bids, with the bidders' details,
//! on the topic `bids:{product_id}` (its backend does, with a publisher
//! token), and only users who have bid on that product may read it. The
//! plugin cannot look bids up (plugins have no network and no store), so
//! the caller's token says it: the identity provider (or the marketplace's
//! backend, minting with the server's secret) puts the ids of the products
//! the user has bid on into a claim, `bid_on` by default, and renews the
//! token after a bid (`getToken` in `switchyard.js` fetches the new one).
//!
//! - A request naming any `bids:{id}` topic is allowed only when the
//!   caller's claims list `{id}` under the claim (a JSON array of strings,
//!   or one comma-separated string). Anonymous callers are refused with
//!   `login_required`, others with `not_a_bidder`. Publisher tokens (claims
//!   with `svc`) are refused too: they publish there, they need not read.
//! - Every other topic is allowed (the host's own rules have already kept
//!   `user:` topics private and tenants apart).
//!
//! Configuration: `claim` (the claim's name, default `bid_on`), `prefix`
//! (the topic prefix, default `bids:`).

use switchyard_plugin::serde_json::Value;
use switchyard_plugin::{config, Authorization, StreamAuthorizer, StreamRequest};

/// The claim listing the products a user has bid on, by default.
pub const DEFAULT_CLAIM: &str = "bid_on";
/// The prefix of bidders-only topics, by default.
pub const DEFAULT_PREFIX: &str = "bids:";

/// The product ids the claims list under `claim`.
pub fn products(
    claims: &switchyard_plugin::serde_json::Map<String, Value>,
    claim: &str,
) -> Vec<String> {
    match claims.get(claim) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(list)) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// The decision for `request`, with the claim's name and the topic prefix.
pub fn decide(request: &StreamRequest, claim: &str, prefix: &str) -> Authorization {
    let wanted: Vec<&str> = request
        .topics
        .iter()
        .filter_map(|t| t.strip_prefix(prefix))
        .collect();
    if wanted.is_empty() {
        return Authorization::Allow;
    }
    let Some(claims) = request.claims() else {
        return Authorization::refuse(
            "login_required",
            "a product's bid stream is for its bidders: sign in",
        );
    };
    if claims.contains_key("svc") {
        return Authorization::refuse(
            "not_a_bidder",
            "a publisher token cannot read a product's bid stream",
        );
    }
    let mine = products(&claims, claim);
    match wanted.iter().find(|id| !mine.iter().any(|m| m == *id)) {
        None => Authorization::Allow,
        Some(id) => Authorization::refuse(
            "not_a_bidder",
            format!("the bid stream of product {id} is for those who have bid on it"),
        ),
    }
}

/// The plugin: [`decide`] with the configured claim and prefix.
pub struct BiddersOnly;

impl StreamAuthorizer for BiddersOnly {
    fn authorize(request: StreamRequest) -> Authorization {
        let claim = config("claim").filter(|c| !c.is_empty());
        let prefix = config("prefix").filter(|p| !p.is_empty());
        decide(
            &request,
            claim.as_deref().unwrap_or(DEFAULT_CLAIM),
            prefix.as_deref().unwrap_or(DEFAULT_PREFIX),
        )
    }
}

switchyard_plugin::export_stream_authorizer!(BiddersOnly);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use switchyard_plugin::serde_json::json;
    use switchyard_plugin::testing;

    fn request(caller: Option<Value>, topics: &[&str]) -> StreamRequest {
        StreamRequest {
            caller: caller.map(|c| c.to_string()),
            user: None,
            tenant: "acme".into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            params: Vec::new(),
            now: 0,
        }
    }

    fn code(a: Authorization) -> String {
        match a {
            Authorization::Allow => "allow".into(),
            Authorization::Refuse(r) => r.code,
        }
    }

    #[test]
    fn other_topics_are_allowed_to_anyone() {
        let r = request(None, &["product:p1", "tenant:acme", "global"]);
        assert_eq!(code(BiddersOnly::authorize(r)), "allow");
    }

    #[test]
    fn bid_streams_need_the_product_in_the_claim() {
        let ann = json!({"sub": "ann", "bid_on": ["p1", "p2"]});
        let bob = json!({"sub": "bob", "bid_on": "p3, p4"});
        assert_eq!(
            code(decide(
                &request(Some(ann.clone()), &["bids:p1"]),
                "bid_on",
                "bids:"
            )),
            "allow"
        );
        assert_eq!(
            code(decide(
                &request(Some(ann.clone()), &["bids:p1", "bids:p3"]),
                "bid_on",
                "bids:"
            )),
            "not_a_bidder"
        );
        assert_eq!(
            code(decide(
                &request(Some(bob.clone()), &["bids:p4"]),
                "bid_on",
                "bids:"
            )),
            "allow"
        );
        assert_eq!(
            code(decide(&request(Some(bob), &["bids:p1"]), "bid_on", "bids:")),
            "not_a_bidder"
        );
        assert_eq!(
            code(decide(&request(None, &["bids:p1"]), "bid_on", "bids:")),
            "login_required"
        );
        let svc = json!({"svc": "feed", "bid_on": ["p1"]});
        assert_eq!(
            code(decide(&request(Some(svc), &["bids:p1"]), "bid_on", "bids:")),
            "not_a_bidder"
        );
    }

    #[test]
    fn the_claim_and_prefix_are_configurable() {
        testing::set_config([("claim", "auctions"), ("prefix", "lot-bids:")]);
        let c = json!({"sub": "ann", "auctions": ["p1"], "bid_on": ["p2"]});
        assert_eq!(
            code(BiddersOnly::authorize(request(
                Some(c.clone()),
                &["lot-bids:p1"]
            ))),
            "allow"
        );
        assert_eq!(
            code(BiddersOnly::authorize(request(Some(c), &["lot-bids:p2"]))),
            "not_a_bidder"
        );
        testing::set_config(Vec::<(String, String)>::new());
    }

    #[test]
    fn recorded_cases() {
        match testing::check_stream_authorizer_cases::<BiddersOnly>(include_str!("../cases.json")) {
            Ok(n) => assert!(n >= 8, "only {n} cases"),
            Err(mismatches) => panic!("{mismatches}"),
        }
    }
}
