//! `switchyard plugin check|test|bench|replay`: a plugin author's and an
//! operator's tools, with no server running.
//!
//! Here: `check` and the slot a component fits; `cases.rs`: `plugin test`
//! (recorded cases and what they expect); `bench.rs`: `plugin bench`;
//! `replay.rs`: `plugin replay` of each slot over what the server recorded.

mod bench;
mod cases;
/// The cases file's types, one source with the guest SDK's
/// (`switchyard_plugin::testing::file`).
#[path = "../../../../plugins/switchyard-plugin/src/testing/file.rs"]
pub mod file;
mod replay;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

pub use bench::{bench, BenchReport};
pub use cases::{matches, run_case, test};
pub use replay::{
    replay_bids, replay_events, replay_messages, replay_requests, Baseline, Recorded,
};

use super::registry::content_hash;
use super::wasm::{CallResult, GuestFailure, HostError, HostFault, Limits, WasmHost};
use super::Slot;

/// Why a `switchyard plugin` command cannot run.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The engine cannot start, or the component cannot be used.
    #[error(transparent)]
    Component(#[from] HostError),
    /// The cases file lacks what the command needs.
    #[error("the cases file needs {0}")]
    Cases(&'static str),
    /// The cases file is not in the format (a field of the wrong type, ...).
    #[error("the cases file cannot be read: {0}")]
    CasesFile(String),
    /// The cases file names a slot there is not.
    #[error("unknown slot {0:?}")]
    UnknownSlot(String),
    /// The component fits no slot (why not, slot by slot).
    #[error("the component fits no slot ({0})")]
    NoSlot(String),
    /// A tenant's active component, the replay's baseline, cannot be used.
    #[error("the active {tag}: {source}")]
    Baseline {
        /// The baseline's `tenant/slot@hash` tag.
        tag: String,
        /// Why.
        source: HostError,
    },
}

/// The engine of the `plugin` commands, with the default limits and a
/// compiled-code cache of the user's own (`SWITCHYARD_PLUGIN_CACHE_DIR`,
/// else `$XDG_CACHE_HOME/switchyard/plugin-cache`, else
/// `~/.cache/switchyard/plugin-cache`; an empty setting turns it off): a
/// second `plugin test` of the same component loads its code instead of
/// compiling it again (a JavaScript component takes seconds to compile).
/// The cache is trusted as the server's is: made private, and refused when
/// another user could write it.
pub fn host() -> Result<WasmHost, CliError> {
    let host = WasmHost::new(Limits::default())?;
    Ok(match cache_dir() {
        Some(dir) => host.with_cache(dir),
        None => host,
    })
}

fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |name: &str| std::env::var_os(name);
    if let Some(dir) = var("SWITCHYARD_PLUGIN_CACHE_DIR") {
        return (!dir.is_empty()).then(|| dir.into());
    }
    let base = var("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            var("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| std::path::Path::new(&h).join(".cache"))
        })?;
    Some(base.join("switchyard/plugin-cache"))
}

/// Compiles `bytes`, or loads its code from the cache, and says which (the
/// first line of a `plugin test` report).
fn compile_noted(
    host: &WasmHost,
    bytes: &[u8],
) -> Result<(wasmtime::component::Component, String), CliError> {
    use std::sync::atomic::Ordering;
    let hits = || host.compiles.cache_hits.load(Ordering::Relaxed);
    let before = hits();
    let started = std::time::Instant::now();
    let component = host.compile(bytes)?;
    let id = &content_hash(bytes)[..12];
    let note = if hits() > before {
        format!("component {id}: compiled code loaded from the cache")
    } else {
        format!(
            "component {id}: compiled in {:.1} s",
            started.elapsed().as_secs_f64()
        )
    };
    Ok((component, note))
}

/// `plugin check`: which slot a component fits and why not the others.
/// Returns the report and whether it fits any slot.
pub fn check(host: &WasmHost, bytes: &[u8]) -> Result<(String, bool), CliError> {
    let results = host.check(bytes)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "component {} ({} bytes)",
        &content_hash(bytes)[..12],
        bytes.len()
    );
    let mut fits = false;
    for (slot, r) in results {
        match r {
            Ok(()) => {
                fits = true;
                let _ = writeln!(out, "  fits {slot}");
            }
            Err(e) => {
                let _ = writeln!(out, "  not {slot}: {e}");
            }
        }
    }
    if !fits {
        let _ = writeln!(out, "it fits no slot");
    }
    Ok((out, fits))
}

/// The slot a component fits (the first, if several), or why none.
pub fn slot_of(host: &WasmHost, bytes: &[u8]) -> Result<Slot, CliError> {
    let fits = host.check(bytes)?;
    fits.iter()
        .find(|(_, r)| r.is_ok())
        .map(|(slot, _)| *slot)
        .ok_or_else(|| {
            let why: Vec<String> = fits
                .iter()
                .filter_map(|(slot, r)| r.as_ref().err().map(|e| format!("not {slot}: {e}")))
                .collect();
            CliError::NoSlot(why.join("; "))
        })
}

/// A cases file read: its slot, the configuration of every case, and the
/// cases.
pub(super) struct Cases {
    pub(super) slot: Slot,
    pub(super) config: file::Params,
    pub(super) list: Vec<file::Case>,
}

/// Reads a cases file.
pub(super) fn read_cases(cases: &Value) -> Result<Cases, CliError> {
    let f: file::CasesFile =
        serde_json::from_value(cases.clone()).map_err(|e| CliError::CasesFile(e.to_string()))?;
    let name = f.slot.ok_or(CliError::Cases("a \"slot\""))?;
    let slot = Slot::parse(&name).ok_or(CliError::UnknownSlot(name))?;
    let list = f.cases.ok_or(CliError::Cases("a \"cases\" array"))?;
    Ok(Cases {
        slot,
        config: f.config,
        list,
    })
}

/// A case's configuration: the file's, with the case's on top.
pub(super) fn case_config(base: &file::Params, case: &file::Params) -> BTreeMap<String, String> {
    let mut config = base.0.clone();
    config.extend(case.0.clone());
    config
}

/// Why a call gave no answer, for reports that show a guest's failures and
/// the host's faults side by side.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The guest failed.
    Guest(GuestFailure),
    /// The host could not run the call.
    Host(HostFault),
}

impl Failure {
    /// The failure's kind (`trap`, ..., or `host_fault`).
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Guest(e) => e.kind.as_str(),
            Failure::Host(_) => "host_fault",
        }
    }

    /// Details.
    pub fn message(&self) -> &str {
        match self {
            Failure::Guest(e) => &e.message,
            Failure::Host(e) => &e.message,
        }
    }
}

/// A call's outcome with both kinds of failure side by side.
pub(super) fn settle<T>(r: CallResult<T>) -> Result<T, Failure> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Guest(e)),
        Err(e) => Err(Failure::Host(e)),
    }
}

pub(super) fn error_json(e: &Failure) -> Value {
    json!({ "error": e.kind(), "message": e.message() })
}
