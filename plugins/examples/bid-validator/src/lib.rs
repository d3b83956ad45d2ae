//! Example `bid-validator` plugin: increment tiers, a per-tenant maximum and
//! anti-sniping.
//!
//! Rules, in order:
//!
//! 1. **Maximum.** With `max_amount` set, a bid over it is rejected with
//!    `over_limit`.
//! 2. **First bid.** With no current bid, a bid under the starting price is
//!    rejected with `too_low` (the host checks this too).
//! 3. **Increments.** Otherwise a bid must beat the current bid by the
//!    increment of the tier the current bid is in, and by at least the
//!    product's own `min_increment` (and by at least 1); if not, it is
//!    rejected with `increment_too_small`.
//! 4. **Anti-sniping.** An accepted bid at most the snipe window before
//!    `ends_at` moves the end to `now + extend_ms`, when that is later than the
//!    current end.
//!
//! Configuration (all optional; a value that does not parse is ignored with a
//! warning):
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `tiers` | `from:increment` pairs, e.g. `0:100,10000:500,100000:1000` ([`DEFAULT_TIERS`], also used when the value does not parse): from a current bid of `from` on, bids rise by at least `increment` (minor units) | none: the product's `min_increment` |
//! | `max_amount` | the largest bid accepted (minor units) | no maximum |
//! | `snipe_window_ms` | how close to the end a bid extends it; `0`: never | the product's `anti_snipe_ms` |
//! | `extend_ms` | how far past `now` the end moves (at most 7 days) | the snipe window |

use switchyard_plugin::{
    config, config_i64, format_amount, log, Bid, BidValidator, Product, Verdict,
};

/// Suggested tiers, used when `tiers` is set but does not parse.
pub const DEFAULT_TIERS: &str = "0:100,10000:500,100000:1000";

/// The furthest past `now` an extension may move the end: the host refuses
/// an `extend_to` beyond 7 days, so a longer `extend_ms` is capped.
pub const MAX_EXTENSION_MS: i64 = 7 * 24 * 3_600_000;

/// One increment tier: from a current bid of `from` on, bids must rise by at
/// least `increment`. Both in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    /// The lowest current bid the tier applies to.
    pub from: i64,
    /// The smallest raise in this tier.
    pub increment: i64,
}

/// The validator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Increment tiers, sorted by `from`.
    pub tiers: Vec<Tier>,
    /// The largest bid accepted, if any.
    pub max_amount: Option<i64>,
    /// Overrides the product's `anti_snipe_ms` when set.
    pub snipe_window_ms: Option<i64>,
    /// How far past `now` an extended auction ends; the window when unset.
    pub extend_ms: Option<i64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tiers: default_tiers(),
            max_amount: None,
            snipe_window_ms: None,
            extend_ms: None,
        }
    }
}

impl Settings {
    /// Reads the settings from the plugin configuration, logging a warning for
    /// each value that does not parse (and using the default instead).
    pub fn load() -> Self {
        // Unset: no tiers, only the product's own `min_increment`.
        let tiers = match config("tiers") {
            None => Vec::new(),
            Some(text) => parse_tiers(&text).unwrap_or_else(|err| {
                log::warn(format!(
                    "config \"tiers\": {err}; using the suggested {DEFAULT_TIERS}"
                ));
                default_tiers()
            }),
        };
        Settings {
            tiers,
            max_amount: config_i64("max_amount"),
            snipe_window_ms: config_i64("snipe_window_ms"),
            extend_ms: config_i64("extend_ms"),
        }
    }
}

/// [`DEFAULT_TIERS`], parsed.
pub fn default_tiers() -> Vec<Tier> {
    vec![
        Tier {
            from: 0,
            increment: 100,
        },
        Tier {
            from: 10_000,
            increment: 500,
        },
        Tier {
            from: 100_000,
            increment: 1_000,
        },
    ]
}

/// Parses `from:increment` pairs separated by commas (whitespace allowed),
/// e.g. `0:100,10000:500`. `from` must be at least 0, `increment` at least 1,
/// and no `from` may repeat. The result is sorted by `from`.
pub fn parse_tiers(text: &str) -> Result<Vec<Tier>, String> {
    let mut tiers = Vec::new();
    for entry in text.split(',') {
        let entry = entry.trim();
        let (from, increment) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?} is not from:increment"))?;
        let from: i64 = from
            .trim()
            .parse()
            .map_err(|_| format!("{entry:?}: {from:?} is not an integer"))?;
        let increment: i64 = increment
            .trim()
            .parse()
            .map_err(|_| format!("{entry:?}: {increment:?} is not an integer"))?;
        if from < 0 || increment < 1 {
            return Err(format!(
                "{entry:?}: from must be at least 0 and increment at least 1"
            ));
        }
        tiers.push(Tier { from, increment });
    }
    tiers.sort_by_key(|t| t.from);
    if tiers.windows(2).any(|w| w[0].from == w[1].from) {
        return Err("a tier's start repeats".to_string());
    }
    Ok(tiers)
}

/// The smallest raise over `current`: the increment of the last tier starting
/// at or below `current`, but at least `floor` (the product's own minimum
/// increment) and at least 1.
pub fn min_increment(tiers: &[Tier], current: i64, floor: i64) -> i64 {
    let tier = tiers
        .iter()
        .take_while(|t| t.from <= current)
        .last()
        .map_or(0, |t| t.increment);
    tier.max(floor).max(1)
}

/// The verdict on `bid` for `product` (as it stands before the bid) at `now`.
pub fn decide(settings: &Settings, bid: &Bid, product: &Product, now: i64) -> Verdict {
    let amount = bid.amount;
    let title = &product.title;
    if let Some(max) = settings.max_amount {
        if amount > max {
            return Verdict::reject(
                "over_limit",
                format!(
                    "Bids are limited to {}; {} is over the limit.",
                    format_amount(max),
                    format_amount(amount)
                ),
            );
        }
    }
    match product.current_bid {
        None if amount < product.starting_price => {
            return Verdict::reject(
                "too_low",
                format!(
                    "The first bid on “{title}” must be at least the starting price of {}; {} is too low.",
                    format_amount(product.starting_price),
                    format_amount(amount)
                ),
            );
        }
        None => {}
        Some(current) => {
            let increment = min_increment(&settings.tiers, current, product.min_increment);
            let required = current.saturating_add(increment);
            if amount < required {
                return Verdict::reject(
                    "increment_too_small",
                    format!(
                        "Bids on “{title}” must rise by at least {} over the current {}, to {} or more; {} is too small.",
                        format_amount(increment),
                        format_amount(current),
                        format_amount(required),
                        format_amount(amount)
                    ),
                );
            }
        }
    }
    match extension(settings, product, now) {
        Some(extend_to) => Verdict::accept_extending_to(extend_to),
        None => Verdict::accept(),
    }
}

/// Where an accepted bid at `now` moves the auction's end, if anywhere.
///
/// The window is `snipe_window_ms` or else the product's `anti_snipe_ms`;
/// `0` (or less) turns anti-sniping off. A bid at most the window before
/// `ends_at` (and not after it) moves the end to `now + extend_ms` (the
/// window when `extend_ms` is unset or not positive; at most
/// [`MAX_EXTENSION_MS`]), but never earlier.
pub fn extension(settings: &Settings, product: &Product, now: i64) -> Option<i64> {
    let window = settings.snipe_window_ms.unwrap_or(product.anti_snipe_ms);
    let ends_at = product.ends_at?;
    if window <= 0 || now > ends_at || ends_at - now > window {
        return None;
    }
    let extend = settings
        .extend_ms
        .filter(|ms| *ms > 0)
        .unwrap_or(window)
        .min(MAX_EXTENSION_MS);
    let extend_to = now.saturating_add(extend);
    (extend_to > ends_at).then_some(extend_to)
}

/// The plugin: [`decide`] with the [`Settings`] of the configuration.
pub struct TieredValidator;

impl BidValidator for TieredValidator {
    fn validate(bid: Bid, product: Product, now: i64) -> Verdict {
        decide(&Settings::load(), &bid, &product, now)
    }
}

switchyard_plugin::export_bid_validator!(TieredValidator);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use switchyard_plugin::{testing, Effects, Level, Rejection};

    const NOW: i64 = 1_700_000_000_000;

    fn bid(amount: i64) -> Bid {
        Bid {
            id: "b1".into(),
            tenant: "acme".into(),
            product_id: "p1".into(),
            bidder_id: "u2".into(),
            amount,
            created_at: NOW,
        }
    }

    fn product(current_bid: Option<i64>) -> Product {
        Product {
            id: "p1".into(),
            tenant: "acme".into(),
            seller_id: "u1".into(),
            title: "Lamp".into(),
            starting_price: 1_000,
            min_increment: 50,
            anti_snipe_ms: 0,
            ends_at: Some(NOW + 3_600_000),
            status: "open".into(),
            current_bid,
            leader: current_bid.map(|_| "u3".into()),
            bid_count: i64::from(current_bid.is_some()),
            version: 1,
            created_at: NOW - 86_400_000,
        }
    }

    fn code(verdict: &Verdict) -> Option<&str> {
        match verdict {
            Verdict::Reject(Rejection { code, .. }) => Some(code),
            Verdict::Accept(_) => None,
        }
    }

    #[test]
    fn parses_tiers() {
        assert_eq!(parse_tiers(DEFAULT_TIERS), Ok(default_tiers()));
        assert_eq!(
            parse_tiers(" 500 : 20 , 0:10 "),
            Ok(vec![
                Tier {
                    from: 0,
                    increment: 10
                },
                Tier {
                    from: 500,
                    increment: 20
                },
            ])
        );
        for bad in ["", "0", "0:x", "a:1", "0:0", "-1:5", "0:1,0:2", "0:1,,5:2"] {
            assert!(parse_tiers(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn picks_the_tier_of_the_current_bid() {
        let tiers = default_tiers();
        assert_eq!(min_increment(&tiers, 0, 0), 100);
        assert_eq!(min_increment(&tiers, 9_999, 0), 100);
        assert_eq!(min_increment(&tiers, 10_000, 0), 500);
        assert_eq!(min_increment(&tiers, 250_000, 0), 1_000);
        // The product's own increment is a floor.
        assert_eq!(min_increment(&tiers, 0, 300), 300);
        // Below the first tier, only the floor (and 1) count.
        let high = parse_tiers("1000:200").expect("valid tiers");
        assert_eq!(min_increment(&high, 999, 0), 1);
        assert_eq!(min_increment(&high, 999, 7), 7);
    }

    #[test]
    fn rejects_small_increments_with_amounts_in_the_message() {
        let s = Settings::default();
        // Current 120.00 is in the 100.00 tier: +5.00 needed.
        let verdict = decide(&s, &bid(12_400), &product(Some(12_000)), NOW);
        let Verdict::Reject(r) = verdict else {
            panic!("accepted")
        };
        assert_eq!(r.code, "increment_too_small");
        assert_eq!(
            r.message,
            "Bids on “Lamp” must rise by at least 5.00 over the current 120.00, \
             to 125.00 or more; 124.00 is too small."
        );
        assert_eq!(
            decide(&s, &bid(12_500), &product(Some(12_000)), NOW),
            Verdict::accept()
        );
    }

    #[test]
    fn first_bid_needs_the_starting_price() {
        let s = Settings::default();
        assert_eq!(
            code(&decide(&s, &bid(999), &product(None), NOW)),
            Some("too_low")
        );
        assert_eq!(
            decide(&s, &bid(1_000), &product(None), NOW),
            Verdict::accept()
        );
    }

    #[test]
    fn refuses_bids_over_the_maximum() {
        let s = Settings {
            max_amount: Some(50_000),
            ..Settings::default()
        };
        let verdict = decide(&s, &bid(50_001), &product(None), NOW);
        assert_eq!(
            verdict,
            Verdict::reject(
                "over_limit",
                "Bids are limited to 500.00; 500.01 is over the limit."
            )
        );
        assert_eq!(
            decide(&s, &bid(50_000), &product(None), NOW),
            Verdict::accept()
        );
    }

    #[test]
    fn extends_late_bids() {
        let mut p = product(Some(1_000));
        p.anti_snipe_ms = 60_000;
        p.ends_at = Some(NOW + 30_000);
        let s = Settings::default();
        assert_eq!(
            decide(&s, &bid(1_100), &p, NOW),
            Verdict::Accept(Effects {
                extend_to: Some(NOW + 60_000)
            })
        );
        // Exactly at the window's edge still extends; before it does not.
        p.ends_at = Some(NOW + 60_000);
        assert_eq!(extension(&s, &p, NOW), None); // now + 60s is not later
        p.ends_at = Some(NOW + 60_001);
        assert_eq!(extension(&s, &p, NOW), None);
        // A longer extension than the window.
        let s = Settings {
            extend_ms: Some(120_000),
            ..Settings::default()
        };
        p.ends_at = Some(NOW + 60_000);
        assert_eq!(extension(&s, &p, NOW), Some(NOW + 120_000));
        // The host refuses extensions past 7 days: capped.
        let s = Settings {
            extend_ms: Some(30 * 24 * 3_600_000),
            ..Settings::default()
        };
        assert_eq!(extension(&s, &p, NOW), Some(NOW + MAX_EXTENSION_MS));
        // After the end: nothing (the host closes the auction).
        p.ends_at = Some(NOW - 1);
        assert_eq!(extension(&s, &p, NOW), None);
        // No end: nothing.
        p.ends_at = None;
        assert_eq!(extension(&s, &p, NOW), None);
    }

    #[test]
    fn config_window_overrides_the_product() {
        let mut p = product(None);
        p.anti_snipe_ms = 60_000;
        p.ends_at = Some(NOW + 10_000);
        let off = Settings {
            snipe_window_ms: Some(0),
            ..Settings::default()
        };
        assert_eq!(extension(&off, &p, NOW), None);
        p.anti_snipe_ms = 0;
        let on = Settings {
            snipe_window_ms: Some(30_000),
            ..Settings::default()
        };
        assert_eq!(extension(&on, &p, NOW), Some(NOW + 30_000));
        assert_eq!(extension(&Settings::default(), &p, NOW), None);
    }

    #[test]
    fn loads_config_and_warns_about_bad_values() {
        testing::set_config([
            ("tiers", "0:1;5:2"),
            ("max_amount", "lots"),
            ("snipe_window_ms", "5000"),
        ]);
        let s = Settings::load();
        assert_eq!(s.tiers, default_tiers());
        assert_eq!(s.max_amount, None);
        assert_eq!(s.snipe_window_ms, Some(5_000));
        let logs = testing::take_logs();
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert!(logs.iter().all(|(level, _)| *level == Level::Warn));
    }

    #[test]
    fn the_exported_plugin_reads_its_config() {
        testing::set_config([("tiers", "0:1000"), ("max_amount", "100000")]);
        let verdict = TieredValidator::validate(bid(1_500), product(Some(1_000)), NOW);
        assert_eq!(code(&verdict), Some("increment_too_small"));
        let verdict = TieredValidator::validate(bid(100_001), product(Some(1_000)), NOW);
        assert_eq!(code(&verdict), Some("over_limit"));
        assert!(testing::take_logs().is_empty());
    }

    #[test]
    fn recorded_cases() {
        match testing::check_bid_validator_cases::<TieredValidator>(include_str!("../cases.json")) {
            Ok(n) => assert!(n >= 8, "only {n} cases"),
            Err(mismatches) => panic!("{mismatches}"),
        }
    }
}
