//! Business rules behind plugin interfaces. Until a WebAssembly component is
//! loaded for a slot, the built-in rule in `builtin` answers for it.

pub mod builtin;

use crate::store::{NewMessage, Notification};

/// The notification-shaper slot: what a message turns into for its recipients.
pub trait NotificationShaper: Send + Sync + 'static {
    /// Notifications for a message about to be stored.
    fn shape(&self, msg: &NewMessage) -> Vec<Notification>;
}
