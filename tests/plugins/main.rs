//! WebAssembly plugins end to end, one module per concern:
//!
//! - `kit`: the author's kit (`plugin test`, `plugin check`) on the examples;
//! - `examples`: the example plugins through the server, outbid digests
//!   through the shaper;
//! - `sandbox`: hostile components (each fails its call only) and the
//!   deterministic WASI world;
//! - `uploads`: compiling off the serving path, refused uploads;
//! - `swap`: hot swap under load and cluster propagation;
//! - `shadow`: shadow runs, then promote;
//! - `filter_economy`: the event filter's one call per shape;
//! - `replay`: `plugin replay` of each slot;
//! - `authorizer`: the stream authorizer, from the built-in rule to replay.

#[path = "../support/mod.rs"]
mod support;

mod authorizer;
mod examples;
mod filter_economy;
mod kit;
mod replay;
mod sandbox;
mod shadow;
mod swap;
mod uploads;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
pub(crate) use support::{bid, decided};
use support::{secs, wait_for, Env, Mode, Node, ADMIN};

/// A component built from `plugins/` (examples and the hostile test plugins).
pub(crate) fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path of a component built from `plugins/`, as text for the CLI.
pub(crate) fn artifact(name: &str) -> String {
    PathBuf::from(env!("SWITCHYARD_PLUGIN_ARTIFACTS"))
        .join(format!("{name}.wasm"))
        .to_str()
        .expect("utf-8")
        .to_string()
}

pub(crate) fn cases(example: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/examples")
        .join(example)
        .join("cases.json")
}

/// The same component with a custom section appended: identical behaviour,
/// a different content hash (a new version).
pub(crate) fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"switchyard-test";
    let payload = n.to_le_bytes();
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&payload);
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(body.len() as u8); // size (< 128: one LEB128 byte)
    out.extend_from_slice(&body);
    out
}

pub(crate) fn sha(bytes: &[u8]) -> String {
    switchyard::plugins::registry::content_hash(bytes)
}

/// Uploads a component and waits for its compile (`wait=true`): the answer
/// is the slot's state once the upload is active, or the refusal.
pub(crate) async fn put_plugin(
    node: &Node,
    slot: &str,
    query: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let sep = if query.is_empty() { "?" } else { "&" };
    node.put_plugin(slot, &format!("{query}{sep}wait=true"), bytes)
        .await
}

pub(crate) async fn configure(node: &Node, slot: &str, query: &str, config: Value) {
    node.configure_plugin(slot, query, config).await
}

pub(crate) async fn slot_info(node: &Node, slot: &str, tenant: Option<&str>) -> Value {
    node.plugin_slot(slot, tenant).await
}

pub(crate) async fn active_hash(node: &Node, slot: &str, tenant: Option<&str>) -> Option<String> {
    slot_info(node, slot, tenant).await["active"]["version"]
        .as_str()
        .map(str::to_string)
}

pub(crate) async fn product(node: &Node, tenant: &str) -> String {
    support::product_at(node, tenant, 100).await
}

/// `switchyard ARGS` with the tests' compiled-code cache (not the user's).
pub(crate) fn run_cli(args: &[&str]) -> std::process::Output {
    run_cli_cached(
        args,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-cache-tests"),
    )
}

/// `switchyard ARGS` with `cache` as its compiled-code cache.
pub(crate) fn run_cli_cached(args: &[&str], cache: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("SWITCHYARD_PLUGIN_CACHE_DIR", cache)
        .output()
        .expect("run switchyard")
}
