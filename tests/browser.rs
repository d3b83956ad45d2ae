//! Browser tests: the demo page in Debian's headless Chromium, driven by
//! playwright-core (`tests/browser/*.mjs`). Each script starts its own nodes;
//! screenshots go to `test-artifacts/` (not committed).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Env, Mode};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Installs playwright-core once (under a file lock: tests run as separate
/// processes) and checks that Chromium is there.
fn prepare() {
    let dir = browser_dir();
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "browser tests need Debian's Chromium: apt-get install chromium"
    );
    let lock =
        std::fs::File::create(std::env::temp_dir().join("switchyard-npm.lock")).expect("lock file");
    // SAFETY: flock on a file we own; released when the file is closed.
    unsafe {
        libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX);
    }
    if !dir.join("node_modules/playwright-core").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm is installed");
        assert!(status.success(), "npm ci failed in tests/browser");
    }
}

/// A JavaScript component of `scripts/build-plugins`, built first if it is
/// missing (the script locks and skips what is up to date).
fn js_component(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join(format!("target/plugins-lang/js/{name}.wasm"));
    if !file.exists() {
        let status = Command::new("bash")
            .args(["scripts/build-plugins", "js"])
            .current_dir(&root)
            .status()
            .expect("bash runs scripts/build-plugins");
        assert!(
            status.success(),
            "scripts/build-plugins js failed (did 'scripts/setup --tests' install the npm tools?)"
        );
    }
    file
}

fn run(script: &str, extra: &[(&str, String)]) {
    prepare();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../test-artifacts");
    let out = Command::new("node")
        .arg(script)
        .current_dir(browser_dir())
        .env("SWITCHYARD_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .env("SWITCHYARD_ARTIFACTS", artifacts)
        // A built example component, for scripts that upload one.
        .env(
            "SY_PLUGIN_WASM",
            concat!(env!("SWITCHYARD_PLUGIN_ARTIFACTS"), "/event_filter.wasm"),
        )
        // A JavaScript filter that passes every event: a shadow that
        // disagrees with it.
        .env("SY_SHADOW_WASM", js_component("hostile_filter"))
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("node is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    assert!(text.contains(": ok"), "{script} did not finish:\n{text}");
}

/// Two users: bids, outbid toast, message badge, read, board.
#[test]
fn two_users_bid_and_message() {
    run("two_users.mjs", &[]);
}

/// SSE blocked → polling banner → back to SSE; server down → red → resumes.
#[test]
fn polling_fallback_and_restart() {
    run("fallback.mjs", &[]);
}

/// Runs `script` against cluster nodes it starts on this test's Postgres
/// schema and Redis prefix.
async fn run_cluster(script: &'static str) {
    let env = Env::new(Mode::Cluster).await;
    let vars = [
        ("SY_REDIS_URL", env.redis_url.clone().expect("redis")),
        (
            "SY_DATABASE_URL",
            env.database_url.clone().expect("postgres"),
        ),
        ("SY_PREFIX", env.prefix.clone()),
    ];
    tokio::task::spawn_blocking(move || run(script, &vars))
        .await
        .expect("browser run");
    env.cleanup().await;
}

/// SIGTERM on one of two cluster nodes: the page moves and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_sigterm() {
    run_cluster("failover.mjs").await;
}

/// Eight tabs of one origin share one stream; the leader paused, then tabs
/// closed one by one while publishing: every tab has its events once, in
/// order, and the server holds at most two streams.
#[test]
fn tabs_share_one_stream() {
    run("tabs.mjs", &[]);
}

/// SIGSTOP on the node a page streams from: amber, then live on the other
/// node within a few heartbeats, no gap, no duplicate; SIGCONT changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_node_is_left() {
    run_cluster("stall.mjs").await;
}

/// Three-second tokens renewed through `getToken` on a private stream for
/// several lifetimes: every message once, never down.
#[test]
fn tokens_renewed_in_the_browser() {
    run("tokens.mjs", &[]);
}

/// SIGTERM on a node with forty clients: they come back over the announced
/// window, not all at once, each with every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_spread_over_the_window() {
    run_cluster("spread.mjs").await;
}

/// The page over https: HTTP/2 (the protocol the page used), live events,
/// and a resume after the server restarts with no gap and no duplicate.
#[test]
fn https_and_http2_in_the_browser() {
    let dir = std::env::temp_dir().join(format!("switchyard-browser-tls-{}", support::rand_id()));
    let leaf = support::test_ca().issue(&dir, "localhost");
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    run(
        "tls.mjs",
        &[
            ("SY_TLS_CERT", path(&leaf.cert)),
            ("SY_TLS_KEY", path(&leaf.key)),
            // The scripts' own requests (Node's fetch) trust the test CA.
            ("NODE_EXTRA_CA_CERTS", path(&support::test_ca().pem_path())),
        ],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A page using the documented constructor without `eventTypes` gets a
/// published event of a type it never named (own stream, shared stream);
/// `eventTypes` narrows. Embedded.
#[test]
fn every_type_to_on_event() {
    run("all_types.mjs", &[]);
}

/// The same against a cluster node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_to_on_event_cluster() {
    run_cluster("all_types.mjs").await;
}

/// One user in three tabs counts once in occupancy and once in members;
/// all three closed, the user leaves once, after the linger. Embedded.
#[test]
fn presence_of_three_tabs() {
    run("presence_tabs.mjs", &[]);
}

/// The same with the counts in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_three_tabs_cluster() {
    run_cluster("presence_tabs.mjs").await;
}

/// The demo auction shows "N watching" and the bidders present, changing
/// as a second browser opens it and leaves; the messages page says whether
/// the other user is online. Embedded.
#[test]
fn demo_shows_presence() {
    run("demo_presence.mjs", &[]);
}

/// The same against a cluster node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_shows_presence_cluster() {
    run_cluster("demo_presence.mjs").await;
}

/// The operator console: the admin token signs in; the overview shows the
/// node with live charts; an upload through the API is the slot's shadow
/// on the plugins page, promoted and rolled back by its buttons, and all
/// three are in the audit log; a viewer's token (an
/// identity provider's) sees no button that changes anything. Screenshots
/// of every page under `test-artifacts/console/`. Embedded.
#[test]
fn console_signs_in_and_shows_every_page() {
    run("console.mjs", &[]);
}

/// The same against two cluster nodes: the viewer, on the second, sees
/// both nodes and the upload made on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_signs_in_and_shows_every_page_cluster() {
    run_cluster("console.mjs").await;
}

/// An operator ends a user's streams: the client (both instances sharing
/// the stream) hears `switchyard.disconnected`, stops with status
/// `disconnected` and `onDisconnected`, and does not reconnect. Embedded.
#[test]
fn client_stops_when_an_operator_disconnects_it() {
    run("disconnected.mjs", &[]);
}
