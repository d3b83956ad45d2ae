//! Example `notification-shaper` plugin: privacy-preserving previews and
//! outbid digests.
//!
//! - `message` (a user's message): one notification of kind `message` to
//!   `to`, whose preview is the body with whitespace collapsed, e-mail
//!   addresses, card numbers and phone numbers replaced by `[email]`, `[card]`
//!   and `[phone]`, cut to 140 chars; data `{"from", "to", "product_id"}`.
//! - `outbid` (the host's digest of one user's outbids in one decision round;
//!   the body is JSON `{"product_id", "title", "times", "amount", "leader"}`):
//!   one notification of kind `bid.outbid` to `to`, previewed as
//!   `Outbid 3 times on “Lamp”: the bid is now 12.50`; data
//!   `{"product_id", "amount", "times"}`. A body that is not such a digest
//!   gives a `bid.outbid` notification previewing the body as a message
//!   would, with data `{"product_id"}` (from the message), and a warning.
//! - any other kind: one notification of that kind, shaped like `message`.
//!
//! A message without a recipient (`to` empty) gives no notification. The
//! plugin reads no configuration.

pub mod redact;

use switchyard_plugin::serde_json::{json, Value};
use switchyard_plugin::{format_amount, log, Message, Notification, NotificationShaper};

pub use redact::preview;

/// The longest preview, in chars.
pub const PREVIEW_CHARS: usize = 140;

/// The notifications for `message`.
pub fn shape(message: &Message) -> Vec<Notification> {
    if message.to.is_empty() {
        log::debug(format!("message {}: no recipient", message.id));
        return Vec::new();
    }
    let notification = match message.kind.as_str() {
        "outbid" => outbid(message),
        kind => plain(message, kind),
    };
    vec![notification]
}

/// A notification of `kind` previewing the message's body.
fn plain(message: &Message, kind: &str) -> Notification {
    Notification::new(
        &message.to,
        kind,
        preview(&message.body, PREVIEW_CHARS),
        &json!({
            "from": message.from,
            "to": message.to,
            "product_id": message.product_id,
        }),
    )
}

/// The notification for an outbid digest.
fn outbid(message: &Message) -> Notification {
    match OutbidDigest::parse(&message.body) {
        Some(digest) => Notification::new(
            &message.to,
            "bid.outbid",
            digest.preview(),
            &json!({
                "product_id": digest.product_id.as_ref().or(message.product_id.as_ref()),
                "amount": digest.amount,
                "times": digest.times,
            }),
        ),
        None => {
            log::warn(format!(
                "message {}: the outbid digest is malformed; sending its text",
                message.id
            ));
            Notification::new(
                &message.to,
                "bid.outbid",
                preview(&message.body, PREVIEW_CHARS),
                &json!({ "product_id": message.product_id }),
            )
        }
    }
}

/// The body of an `outbid` message: one user's outbids on one product in one
/// decision round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutbidDigest {
    /// The product (`null` or missing: the message's `product_id`).
    pub product_id: Option<String>,
    /// The product's title.
    pub title: String,
    /// How many times the user was outbid (at least 1).
    pub times: u64,
    /// The leading bid now, in minor units.
    pub amount: i64,
    /// The leader now, if named.
    pub leader: Option<String>,
}

impl OutbidDigest {
    /// Parses a digest; `None` unless `body` is a JSON object with a string
    /// `title`, an integer `times` of at least 1 and an integer `amount`
    /// (`product_id` and `leader`, if present, are strings or `null`).
    pub fn parse(body: &str) -> Option<Self> {
        let object = switchyard_plugin::parse_object(body)?;
        let optional_string = |key: &str| match object.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(_) => None,
        };
        Some(OutbidDigest {
            product_id: optional_string("product_id")?,
            title: object.get("title")?.as_str()?.to_string(),
            times: object.get("times")?.as_u64().filter(|t| *t >= 1)?,
            amount: object.get("amount")?.as_i64()?,
            leader: optional_string("leader")?,
        })
    }

    /// `Outbid 3 times on “Lamp”: the bid is now 12.50` (`Outbid on …` for
    /// once; without `on “…”` for an empty title), at most
    /// [`PREVIEW_CHARS`] chars.
    pub fn preview(&self) -> String {
        let times = match self.times {
            1 => String::new(),
            n => format!(" {n} times"),
        };
        let title = redact::collapse(&self.title);
        let on = if title.is_empty() {
            String::new()
        } else {
            format!(" on “{title}”")
        };
        let text = format!(
            "Outbid{times}{on}: the bid is now {}",
            format_amount(self.amount)
        );
        redact::cut(&text, PREVIEW_CHARS)
    }
}

/// The plugin: [`shape`].
pub struct Shaper;

impl NotificationShaper for Shaper {
    fn shape(message: Message) -> Vec<Notification> {
        shape(&message)
    }
}

switchyard_plugin::export_notification_shaper!(Shaper);

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use switchyard_plugin::{serde_json, testing, Level};

    /// Reads a notification's `data` back.
    fn data(n: &Notification) -> Value {
        serde_json::from_str(&n.data).expect("data is JSON")
    }

    fn message(kind: &str, body: &str) -> Message {
        Message {
            id: "m1".into(),
            tenant: "acme".into(),
            kind: kind.into(),
            from: "u1".into(),
            to: "u2".into(),
            product_id: Some("p1".into()),
            body: body.into(),
            created_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn shapes_a_message() {
        let out = shape(&message(
            "message",
            "Hi!\n\nMail me at ann@example.com or call +1 555 123 4567.",
        ));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].recipient, "u2");
        assert_eq!(out[0].kind, "message");
        assert_eq!(out[0].preview, "Hi! Mail me at [email] or call [phone].");
        assert_eq!(
            data(&out[0]),
            json!({"from": "u1", "to": "u2", "product_id": "p1"})
        );
    }

    #[test]
    fn product_id_is_null_when_none() {
        let mut m = message("message", "hello");
        m.product_id = None;
        assert_eq!(data(&shape(&m)[0])["product_id"], Value::Null);
    }

    #[test]
    fn cuts_long_multibyte_previews() {
        let body = "Grüße aus Köln! ".repeat(20);
        let p = &shape(&message("message", &body))[0].preview;
        assert_eq!(p.chars().count(), PREVIEW_CHARS);
        assert!(p.ends_with('…'));
        assert!(p.len() > PREVIEW_CHARS, "counted in chars, not bytes");
    }

    #[test]
    fn shapes_digests() {
        let body = r#"{"product_id":"p9","title":"Lamp","times":3,"amount":1250,"leader":"u7"}"#;
        let out = shape(&message("outbid", body));
        assert_eq!(out[0].kind, "bid.outbid");
        assert_eq!(out[0].recipient, "u2");
        assert_eq!(
            out[0].preview,
            "Outbid 3 times on “Lamp”: the bid is now 12.50"
        );
        assert_eq!(
            data(&out[0]),
            json!({"product_id": "p9", "amount": 1250, "times": 3})
        );
        let once = r#"{"product_id":null,"title":"Old  Lamp","times":1,"amount":99000}"#;
        let out = shape(&message("outbid", once));
        assert_eq!(
            out[0].preview,
            "Outbid on “Old Lamp”: the bid is now 990.00"
        );
        assert_eq!(data(&out[0])["product_id"], "p1");
    }

    #[test]
    fn falls_back_on_malformed_digests() {
        for body in [
            "not json",
            "[1]",
            r#"{"title":"Lamp","times":0,"amount":1}"#,
            r#"{"title":"Lamp","times":2,"amount":"12.50"}"#,
            r#"{"title":7,"times":2,"amount":1}"#,
        ] {
            let out = shape(&message("outbid", body));
            assert_eq!(out[0].kind, "bid.outbid");
            assert_eq!(out[0].preview, preview(body, PREVIEW_CHARS));
            assert_eq!(data(&out[0]), json!({"product_id": "p1"}));
            let logs = testing::take_logs();
            assert_eq!(logs.len(), 1);
            assert_eq!(logs[0].0, Level::Warn);
        }
    }

    #[test]
    fn other_kinds_are_shaped_like_messages() {
        let out = shape(&message("offer", "Would you take 40?"));
        assert_eq!(out[0].kind, "offer");
        assert_eq!(out[0].preview, "Would you take 40?");
    }

    #[test]
    fn no_recipient_no_notification() {
        let mut m = message("message", "hello");
        m.to.clear();
        assert!(shape(&m).is_empty());
        assert!(Shaper::shape(message("message", "hi")).len() == 1);
    }

    #[test]
    fn recorded_cases() {
        match testing::check_notification_shaper_cases::<Shaper>(include_str!("../cases.json")) {
            Ok(n) => assert!(n >= 8, "only {n} cases"),
            Err(mismatches) => panic!("{mismatches}"),
        }
    }
}
