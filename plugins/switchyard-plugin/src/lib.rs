//! The guest side of Switchyard plugins.
//!
//! Switchyard runs four business rules as WebAssembly components, one per
//! slot (see `wit/switchyard.wit` in the repository). This crate hides the
//! component-model bindings: implement the slot's trait on a type and name the
//! type in the slot's export macro.
//!
//! | slot | trait | macro |
//! | --- | --- | --- |
//! | `bid-validator` | [`BidValidator`] | [`export_bid_validator!`] |
//! | `notification-shaper` | [`NotificationShaper`] | [`export_notification_shaper!`] |
//! | `event-filter` | [`EventFilter`] | [`export_event_filter!`] |
//! | `stream-authorizer` | [`StreamAuthorizer`] | [`export_stream_authorizer!`] |
//!
//! What the host offers is here too: [`log`], [`config`], [`config_all`] and
//! typed readers such as [`config_i64`]. [`serde_json`] is re-exported for the
//! JSON-typed `data` fields, with [`parse_object`] to read one and
//! [`object_field`] to read one field of one cheaply.
//!
//! # Rules
//!
//! A plugin is a deterministic function of its inputs. It gets no WASI: every
//! WASI function a component imports traps when it is called. In Rust, that
//! means no `std::time` (the host passes `now`), no `std::env`, no files, no
//! printing, and no `HashMap::new()` or `HashSet::new()` (their random seed
//! traps): use `BTreeMap` and `BTreeSet`. A panic aborts the call, which the
//! host reports as a failed call.
//!
//! # Example
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! switchyard-plugin = { path = "../switchyard-plugin" }
//! ```
//!
//! `src/lib.rs`, a validator that refuses bids over a per-tenant maximum:
//!
//! ```
//! use switchyard_plugin::{config_i64, format_amount, log, Bid, BidValidator, Product, Verdict};
//!
//! /// Refuses bids over the configured `max_amount`.
//! pub struct MaxAmount;
//!
//! impl BidValidator for MaxAmount {
//!     fn validate(bid: Bid, product: Product, _now: i64) -> Verdict {
//!         match config_i64("max_amount") {
//!             Some(max) if bid.amount > max => {
//!                 log::info(format!("bid {} on {} is over the limit", bid.id, product.id));
//!                 Verdict::reject(
//!                     "over_limit",
//!                     format!(
//!                         "Bids are limited to {}; {} is over the limit.",
//!                         format_amount(max),
//!                         format_amount(bid.amount)
//!                     ),
//!                 )
//!             }
//!             _ => Verdict::accept(),
//!         }
//!     }
//! }
//!
//! switchyard_plugin::export_bid_validator!(MaxAmount);
//! # fn main() {
//! #     use switchyard_plugin::testing;
//! #     testing::set_config([("max_amount", "1000")]);
//! #     let bid = Bid {
//! #         id: "b1".into(), tenant: "t".into(), product_id: "p1".into(),
//! #         bidder_id: "u1".into(), amount: 1500, created_at: 0,
//! #     };
//! #     let product = Product {
//! #         id: "p1".into(), tenant: "t".into(), seller_id: "s".into(), title: "Lamp".into(),
//! #         starting_price: 100, min_increment: 10, anti_snipe_ms: 0, ends_at: None,
//! #         status: "open".into(), current_bid: None, leader: None, bid_count: 0,
//! #         version: 1, created_at: 0,
//! #     };
//! #     assert_eq!(
//! #         <MaxAmount as BidValidator>::validate(bid, product, 0),
//! #         Verdict::reject("over_limit", "Bids are limited to 10.00; 15.00 is over the limit."),
//! #     );
//! #     assert_eq!(testing::take_logs().len(), 1);
//! # }
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the component
//! is `target/wasm32-wasip2/release/NAME.wasm`. Check and test it with
//! `switchyard plugin check NAME.wasm` and
//! `switchyard plugin test NAME.wasm CASES.json`.
//!
//! # Testing natively
//!
//! On targets other than `wasm32`, there is no host: [`config`] reads a
//! per-thread map set with [`testing::set_config`], and [`log`] records lines
//! that [`testing::take_logs`] returns. So `cargo test` can call a plugin's
//! trait implementation directly (give the plugin crate
//! `crate-type = ["cdylib", "rlib"]`).

extern crate self as switchyard_plugin;

#[doc(hidden)]
pub mod bindings;
mod host;
pub mod log;
#[cfg(any(not(target_arch = "wasm32"), doc))]
pub mod testing;

pub use host::{config, config_all, config_bool, config_i64};
pub use serde_json;

pub use bindings::bid_validator::switchyard::plugins::host::Level;
pub use bindings::bid_validator::switchyard::plugins::types::{
    Authorization, Bid, Effects, Event, FilterResult, Message, Notification, Product, Rejection,
    StreamRequest, Subscription, Verdict,
};

/// What the export macros need; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    /// `text` as an array of its bytes (for a custom section's static).
    pub const fn bytes<const N: usize>(text: &str) -> [u8; N] {
        let b = text.as_bytes();
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = b[i];
            i += 1;
        }
        out
    }
}

/// The `bid-validator` slot: decides whether a bid that passed the host's own
/// checks (auction open, bidder is not the seller, amount at least the
/// minimum) is accepted.
///
/// Export an implementation with [`export_bid_validator!`].
pub trait BidValidator {
    /// Accepts (possibly extending the auction) or rejects `bid` on `product`
    /// as the product stands before the bid. `now` is the host's time in
    /// milliseconds since the Unix epoch.
    fn validate(bid: Bid, product: Product, now: i64) -> Verdict;
}

/// The `notification-shaper` slot: turns a message into the notifications its
/// recipients get.
///
/// Export an implementation with [`export_notification_shaper!`].
pub trait NotificationShaper {
    /// The notifications for `message` (none, one or several).
    fn shape(message: Message) -> Vec<Notification>;
}

/// The `event-filter` slot: passes, drops or rewrites an event for one
/// subscription shape.
///
/// Export an implementation with [`export_event_filter!`].
pub trait EventFilter {
    /// What happens to `event` on subscriptions with the query parameters
    /// `subscription` (the ones the host does not own, sorted by name).
    fn filter(event: Event, subscription: Vec<(String, String)>) -> FilterResult;
}

/// The `stream-authorizer` slot: allows or refuses a stream (or a topic's
/// REST history) that the host's own rules allowed.
///
/// Export an implementation with [`export_stream_authorizer!`].
pub trait StreamAuthorizer {
    /// Allows `request`, or refuses it with a code and a message (the
    /// caller gets `403` with them).
    fn authorize(request: StreamRequest) -> Authorization;
}

impl<T: StreamAuthorizer> bindings::stream_authorizer::Guest for T {
    fn authorize(request: StreamRequest) -> Authorization {
        <T as StreamAuthorizer>::authorize(request)
    }
}

impl<T: BidValidator> bindings::bid_validator::Guest for T {
    fn validate(bid: Bid, product: Product, now: i64) -> Verdict {
        <T as BidValidator>::validate(bid, product, now)
    }
}

impl<T: NotificationShaper> bindings::notification_shaper::Guest for T {
    fn shape(message: Message) -> Vec<Notification> {
        <T as NotificationShaper>::shape(message)
    }
}

impl<T: EventFilter> bindings::event_filter::Guest for T {
    fn filter(event: Event, subscription: Subscription) -> FilterResult {
        <T as EventFilter>::filter(event, subscription)
    }
}

/// Exports a [`BidValidator`] as the component's `validate` function.
///
/// Use it once, in the plugin's crate, on a type name:
/// `switchyard_plugin::export_bid_validator!(MyValidator);`
#[macro_export]
macro_rules! export_bid_validator {
    ($ty:ident) => {
        $crate::bindings::bid_validator::export!($ty with_types_in $crate::bindings::bid_validator);
    };
}

/// Exports a [`NotificationShaper`] as the component's `shape` function.
///
/// Use it once, in the plugin's crate, on a type name:
/// `switchyard_plugin::export_notification_shaper!(MyShaper);`
#[macro_export]
macro_rules! export_notification_shaper {
    ($ty:ident) => {
        $crate::bindings::notification_shaper::export!(
            $ty with_types_in $crate::bindings::notification_shaper
        );
    };
}

/// Exports an [`EventFilter`] as the component's `filter` function.
///
/// Use it once, in the plugin's crate, on a type name:
/// `switchyard_plugin::export_event_filter!(MyFilter);`
///
/// Name the subscription parameters the filter reads, and streams that
/// differ only in other parameters share one call per event (the host
/// groups streams by the parameters a filter reads; without a declaration
/// every parameter counts, and a tenant's streams may hold at most 64
/// distinct sets of them):
/// `switchyard_plugin::export_event_filter!(MyFilter, params = ["min_amount", "redact"]);`
/// The names go into the component's `switchyard-shape-params` custom
/// section; a `shape_params` key in the slot's configuration overrides them.
#[macro_export]
macro_rules! export_event_filter {
    ($ty:ident) => {
        $crate::bindings::event_filter::export!($ty with_types_in $crate::bindings::event_filter);
    };
    ($ty:ident, params = [$($param:literal),* $(,)?]) => {
        $crate::export_event_filter!($ty);
        #[cfg(target_arch = "wasm32")]
        #[used]
        #[link_section = "switchyard-shape-params"]
        static __SWITCHYARD_SHAPE_PARAMS: [u8; { concat!($($param, ","),*).len() }] =
            $crate::__private::bytes(concat!($($param, ","),*));
    };
}

/// Exports a [`StreamAuthorizer`] as the component's `authorize` function.
///
/// Use it once, in the plugin's crate, on a type name:
/// `switchyard_plugin::export_stream_authorizer!(MyAuthorizer);`
#[macro_export]
macro_rules! export_stream_authorizer {
    ($ty:ident) => {
        $crate::bindings::stream_authorizer::export!(
            $ty with_types_in $crate::bindings::stream_authorizer
        );
    };
}

impl Authorization {
    /// Refuses the request with a machine-readable `code` (1 to 64 of
    /// `a-z`, `0-9`, `_`) and a `message` for the caller.
    pub fn refuse(code: impl Into<String>, message: impl Into<String>) -> Self {
        Authorization::Refuse(Rejection {
            code: code.into(),
            message: message.into(),
        })
    }
}

impl StreamRequest {
    /// The caller's verified claims as a JSON object; `None` when
    /// anonymous (or, never from the host, when they are not an object).
    pub fn claims(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.caller.as_deref().and_then(parse_object)
    }

    /// The value of query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Verdict {
    /// Accepts the bid without other effects.
    pub fn accept() -> Self {
        Verdict::Accept(Effects { extend_to: None })
    }

    /// Accepts the bid and moves the auction's end to `extend_to` (ms since
    /// the Unix epoch).
    pub fn accept_extending_to(extend_to: i64) -> Self {
        Verdict::Accept(Effects {
            extend_to: Some(extend_to),
        })
    }

    /// Rejects the bid with a machine-readable `code` (e.g. `over_limit`) and
    /// a `message` for the bidder.
    pub fn reject(code: impl Into<String>, message: impl Into<String>) -> Self {
        Verdict::Reject(Rejection {
            code: code.into(),
            message: message.into(),
        })
    }
}

impl Notification {
    /// A notification of type `kind` for `recipient`. `data` should be a JSON
    /// object (`serde_json::json!({})` for none).
    pub fn new(
        recipient: impl Into<String>,
        kind: impl Into<String>,
        preview: impl Into<String>,
        data: &serde_json::Value,
    ) -> Self {
        Notification {
            recipient: recipient.into(),
            kind: kind.into(),
            preview: preview.into(),
            data: data.to_string(),
        }
    }
}

impl FilterResult {
    /// Delivers the event with `data` (a JSON object) as its data.
    pub fn replace_with(data: &serde_json::Map<String, serde_json::Value>) -> Self {
        FilterResult::Replace(serde_json::Value::Object(data.clone()).to_string())
    }
}

/// Parses JSON text that should hold one object, such as an event's `data`.
/// `None` when it is not valid JSON or not an object.
pub fn parse_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// One top-level field of the JSON object in `text`, read without building
/// the object: the other fields' values are skipped, not stored, which is
/// several times cheaper than [`parse_object`] when a plugin needs one field
/// of an event's `data`. `None` when `text` is not a valid JSON object or has
/// no such field; a duplicated key gives its last value, as [`parse_object`]
/// does.
pub fn object_field(text: &str, key: &str) -> Option<serde_json::Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = field::Field(key).deserialize(&mut de).ok()?;
    de.end().ok()?;
    value
}

mod field {
    use core::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

    /// Finds the value of the key `.0` in a map, skipping the others.
    pub struct Field<'k>(pub &'k str);

    impl<'de> DeserializeSeed<'de> for Field<'_> {
        type Value = Option<serde_json::Value>;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Field<'_> {
        type Value = Option<serde_json::Value>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(wanted) = map.next_key_seed(KeyIs(self.0))? {
                if wanted {
                    found = Some(map.next_value()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    /// Whether a map key equals `.0`, without keeping it.
    struct KeyIs<'k>(&'k str);

    impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
        type Value = bool;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeyIs<'_> {
        type Value = bool;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }

        fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
            Ok(key == self.0)
        }
    }
}

/// Formats an amount in minor units as major units with two decimals:
/// `1250` → `"12.50"`, `-5` → `"-0.05"`.
pub fn format_amount(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn formats_amounts() {
        assert_eq!(format_amount(0), "0.00");
        assert_eq!(format_amount(5), "0.05");
        assert_eq!(format_amount(1250), "12.50");
        assert_eq!(format_amount(10_000_000), "100000.00");
        assert_eq!(format_amount(-5), "-0.05");
        assert_eq!(format_amount(i64::MIN), "-92233720368547758.08");
    }

    #[test]
    fn parses_objects_only() {
        assert_eq!(parse_object(r#"{"a":1}"#).map(|m| m.len()), Some(1));
        assert!(parse_object("[1]").is_none());
        assert!(parse_object("{").is_none());
    }

    #[test]
    fn reads_one_field() {
        let text = r#"{"a":{"b":[1,"x\"y"]},"amount":1500,"c":"d"}"#;
        assert_eq!(object_field(text, "amount"), Some(serde_json::json!(1500)));
        assert_eq!(
            object_field(text, "a"),
            Some(serde_json::json!({"b": [1, "x\"y"]}))
        );
        assert_eq!(object_field(text, "missing"), None);
        // Escaped keys, duplicates (the last counts), and what is not an object.
        assert_eq!(
            object_field(r#"{"am\u006funt":5}"#, "amount"),
            Some(5.into())
        );
        assert_eq!(
            object_field(r#"{"amount":1,"amount":2}"#, "amount"),
            Some(2.into())
        );
        for bad in ["[1]", "{", r#"{"amount":1"#, r#"{"amount":1} x"#, "null"] {
            assert_eq!(object_field(bad, "amount"), None, "{bad}");
        }
    }

    #[test]
    fn reads_typed_config() {
        testing::set_config([("n", " 42 "), ("bad", "4x"), ("yes", "on")]);
        assert_eq!(config_i64("n"), Some(42));
        assert_eq!(config_i64("missing"), None);
        assert_eq!(config_i64("bad"), None);
        assert_eq!(config_bool("yes"), Some(true));
        assert_eq!(config_all().len(), 3);
        let logs = testing::take_logs();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].0, Level::Warn);
        assert!(logs[0].1.contains("bad"), "{logs:?}");
    }

    #[test]
    fn builds_results() {
        let data = serde_json::json!({"a": 1});
        let n = Notification::new("u1", "message", "hi", &data);
        assert_eq!(n.data, r#"{"a":1}"#);
        let mut map = serde_json::Map::new();
        map.insert("b".into(), 2.into());
        assert_eq!(
            FilterResult::replace_with(&map),
            FilterResult::Replace(r#"{"b":2}"#.into())
        );
    }
}
