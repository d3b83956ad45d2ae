//! Structured logging through the host.
//!
//! Each call writes one line tagged with the plugin's slot, tenant and
//! version. The host cuts long messages and caps the lines of one call, so log
//! what helps an operator, not every step.
//!
//! ```
//! use switchyard_plugin::log;
//!
//! log::warn("min_amount is not a number; passing every event");
//! log::debug(format!("{} tiers", 3));
//! ```

use crate::Level;

/// Writes `message` at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    crate::host::log(level, message.as_ref());
}

/// Writes `message` at level `debug`.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes `message` at level `info`.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes `message` at level `warn`.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes `message` at level `error`.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
