//! A notification shaper that misbehaves on demand (`mode`): the shared
//! modes, plus `huge` (a 2 MB preview), `garbage` (data that is not JSON),
//! `many` (10,000 notifications); anything else sends one plain notification.

use switchyard_plugin::{Message, Notification, NotificationShaper};

/// The hostile shaper.
pub struct Hostile;

impl NotificationShaper for Hostile {
    fn shape(message: Message) -> Vec<Notification> {
        hostile::misbehave();
        match hostile::mode().as_str() {
            "huge" => vec![note(message.to, "x".repeat(2 << 20), "{}")],
            "garbage" => vec![note(message.to, "hi".into(), "{not json")],
            "many" => (0..10_000)
                .map(|_| note(message.to.clone(), "hi".into(), "{}"))
                .collect(),
            _ => vec![note(message.to, "plain".into(), "{}")],
        }
    }
}

fn note(to: String, preview: String, data: &str) -> Notification {
    Notification {
        recipient: to,
        kind: "message".into(),
        preview,
        data: data.into(),
    }
}

switchyard_plugin::export_notification_shaper!(Hostile);
