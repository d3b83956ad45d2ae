//! A bid validator that misbehaves on demand (`mode` in its configuration):
//! `loop`, `oom`, `panic`, `clock`, `random`, `env`, `bad_code`,
//! `far_extension`; anything else accepts.

use switchyard_plugin::{Bid, BidValidator, Product, Verdict};

/// The hostile validator.
pub struct Hostile;

impl BidValidator for Hostile {
    fn validate(_bid: Bid, _product: Product, now: i64) -> Verdict {
        hostile::misbehave();
        match hostile::mode().as_str() {
            "bad_code" => Verdict::reject("Not A Code!", "garbage"),
            "far_extension" => Verdict::accept_extending_to(now + 365 * 24 * 3_600_000),
            "reject" => Verdict::reject("hostile", "refused by the hostile validator"),
            _ => Verdict::accept(),
        }
    }
}

switchyard_plugin::export_bid_validator!(Hostile);
