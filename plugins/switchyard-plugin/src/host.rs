//! The host's imports, with a stand-in on targets other than `wasm32`.

use crate::Level;

#[cfg(target_arch = "wasm32")]
use crate::bindings::bid_validator::switchyard::plugins::host as imports;

/// Writes one log line through the host (or the test recorder off `wasm32`).
pub(crate) fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    imports::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// One value of the plugin's configuration, `None` when it is not set.
///
/// The configuration is read-only and per tenant: `{slot}.json` beside the
/// plugin, or set with the admin API. Off `wasm32`, it is what
/// [`testing::set_config`](crate::testing::set_config) set.
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return imports::config(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::config(key);
}

/// All of the plugin's configuration as `(key, value)` pairs, sorted by key.
pub fn config_all() -> Vec<(String, String)> {
    #[cfg(target_arch = "wasm32")]
    return imports::config_all();
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::config_all();
}

/// A configuration value read as an integer (surrounding whitespace allowed).
///
/// `None` when the key is not set, or when its value is not an integer; the
/// latter also logs a warning naming the key.
pub fn config_i64(key: &str) -> Option<i64> {
    let value = config(key)?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            log(
                Level::Warn,
                &format!("config {key:?}: {value:?} is not an integer; ignored"),
            );
            None
        }
    }
}

/// A configuration value read as a flag: `true`, `yes`, `on`, `1` or `false`,
/// `no`, `off`, `0` (any case, surrounding whitespace allowed).
///
/// `None` when the key is not set, or when its value is none of those; the
/// latter also logs a warning naming the key.
pub fn config_bool(key: &str) -> Option<bool> {
    let value = config(key)?;
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => {
            log(
                Level::Warn,
                &format!("config {key:?}: {value:?} is not a flag; ignored"),
            );
            None
        }
    }
}
