//! Test harness: real `switchyard` processes on port 0, real HTTP, a real SSE
//! client, and per-test data (a temp dir; in cluster mode also a Postgres
//! schema and a Redis key prefix), so tests run in parallel.
//!
//! By concern: `env.rs` (a test's world and its settings), `node.rs` (a
//! running node and requests to it), `sse.rs` (the stream client),
//! `tls.rs` (the test CA and clients), `services.rs` (private Redis and
//! Postgres servers), `proxy.rs` (a TCP proxy that can be cut, for
//! partitions, and a small tmpfs, for full disks); here, the modes, transports and small helpers.
//!
//! Cluster tests use `SWITCHYARD_TEST_REDIS_URL` and
//! `SWITCHYARD_TEST_DATABASE_URL` (defaults: the local Redis and Postgres).

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod env;
mod node;
mod proxy;
mod services;
mod sse;
mod tls;

// Each test binary uses a part of the harness.
#[allow(unused_imports)]
pub use env::*;
#[allow(unused_imports)]
pub use node::*;
#[allow(unused_imports)]
pub use proxy::*;
#[allow(unused_imports)]
pub use services::*;
#[allow(unused_imports)]
pub use sse::*;
#[allow(unused_imports)]
pub use tls::*;

/// The admin token every test node runs with.
pub const ADMIN: &str = "test-admin-token";

/// Deployment mode under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// SQLite + in-process bus.
    Embedded,
    /// Postgres + Redis, several nodes.
    Cluster,
}

/// How tests reach the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 in clear text (streams on the server's lean writer).
    Plain,
    /// TLS with ALPN `h2`: HTTP/2, several requests on one connection.
    TlsH2,
}

tokio::task_local! {
    /// The transport of the test running in this task (`Plain` outside
    /// `both_transports!`).
    pub static TRANSPORT: Transport;
}

/// The transport of the current test.
pub fn transport() -> Transport {
    TRANSPORT.try_with(|t| *t).unwrap_or(Transport::Plain)
}

/// Runs `$body(Mode)` as four tests: `embedded` and `cluster` over plain
/// HTTP/1.1, and `embedded_h2` and `cluster_h2` over TLS and HTTP/2.
#[macro_export]
macro_rules! both_transports {
    ($name:ident, $body:ident) => {
        mod $name {
            use $crate::support::{Mode, Transport, TRANSPORT};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                TRANSPORT
                    .scope(Transport::Plain, super::$body(Mode::Embedded))
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                TRANSPORT
                    .scope(Transport::Plain, super::$body(Mode::Cluster))
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded_h2() {
                TRANSPORT
                    .scope(Transport::TlsH2, super::$body(Mode::Embedded))
                    .await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster_h2() {
                TRANSPORT
                    .scope(Transport::TlsH2, super::$body(Mode::Cluster))
                    .await
            }
        }
    };
}

/// Runs `$body(Mode)` as two tests, `embedded` and `cluster`.
#[macro_export]
macro_rules! both_modes {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$body($crate::support::Mode::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$body($crate::support::Mode::Cluster).await
            }
        }
    };
}

/// A short random hex string.
pub fn rand_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).expect("randomness");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Polls `f` until it is true; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    while !f().await {
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Seconds as a `Duration` (shorthand for timeouts).
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
