//! The deterministic WASI world every plugin gets, built on `wasmtime-wasi`
//! and `wasmtime-wasi-http`.
//!
//! Language runtimes (JavaScript's, Python's, Rust's standard library) read
//! the clock, the environment and random bytes while they start; linking
//! those imports to traps made every such component fail its first call.
//! Instead, each import answers from the call's input only:
//!
//! - wall clock and monotonic clock read the call's time (`now`), the same
//!   instant for the whole call unless the guest sleeps;
//! - a sleep (a monotonic-clock pollable: `subscribe-duration`,
//!   `subscribe-instant`, what `std::thread::sleep`, Python's `time.sleep`
//!   and `poll` with a timeout come down to) is ready at once and moves the
//!   call's clocks forward by what it asked for; a sleep that would end past
//!   the call's deadline fails the call as a timeout there and then. So a
//!   sleeping guest never holds a host thread (`wasmtime-wasi`'s own pollable
//!   would block the thread for the real duration, out of reach of the
//!   epoch deadline, which interrupts guest code only), a sleep loop is a
//!   guest loop the deadline stops, and the answer stays a function of the
//!   input;
//! - `wasi:random` (secure, insecure and the insecure seed) comes from a
//!   ChaCha20 generator seeded by the plugin version and the call's input,
//!   re-seeded at every call;
//! - environment, arguments and stdin are empty, and there are no
//!   filesystem preopens;
//! - stdout and stderr become the plugin's log lines (capped like `host.log`);
//! - sockets, name lookups and outgoing HTTP are refused with the error the
//!   guest's API defines (not a trap, never a connection).
//!
//! So the same input gives the same output, byte for byte, which shadow runs
//! and `plugin replay` rely on.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::ChaCha20Rng;
use rand::{SeedableRng, TryRng};
use sha2::{Digest, Sha256};
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpHooks};

/// Log lines one call may write (host `log` and stdout/stderr together);
/// the rest are counted and dropped.
const MAX_LOGS_PER_CALL: u32 = 32;
/// Longest log line kept.
const MAX_LOG_CHARS: usize = 1_024;
/// Host resources (streams, pollables, HTTP handles) one instance may hold
/// at once; past it, making another fails the call (`memory`). What the
/// runtimes hold is a handful; this bounds what a guest that never drops
/// its handles costs the host.
pub const MAX_HOST_RESOURCES: usize = 1_000;
/// Bytes of header fields one `wasi:http` fields resource may hold (no
/// request leaves, so plugins need none; the default is 128 KiB each).
const MAX_HTTP_FIELDS_BYTES: usize = 8 << 10;

/// Log severity of a plugin's line.
#[derive(Debug, Clone, Copy)]
pub enum LogLevel {
    /// `debug`.
    Debug,
    /// `info` (stdout).
    Info,
    /// `warn` (stderr).
    Warn,
    /// `error`.
    Error,
}

/// Where one instance's log lines go: tagged with the plugin's label,
/// capped per call, partial stdout/stderr lines held until their newline.
pub struct CallLog {
    label: Arc<str>,
    lines: AtomicU32,
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
}

impl CallLog {
    fn new(label: Arc<str>) -> CallLog {
        CallLog {
            label,
            lines: AtomicU32::new(0),
            stdout: Mutex::new(Vec::new()),
            stderr: Mutex::new(Vec::new()),
        }
    }

    /// Writes one line (cut to `MAX_LOG_CHARS`), unless the call's lines are
    /// used up.
    pub fn line(&self, level: LogLevel, message: &str) {
        if self.lines.fetch_add(1, Ordering::Relaxed) >= MAX_LOGS_PER_CALL {
            return;
        }
        let mut cut = message.len().min(MAX_LOG_CHARS);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let ellipsis = if cut < message.len() { "…" } else { "" };
        let message = &message[..cut];
        let plugin = &*self.label;
        super::logs::push(
            plugin,
            match level {
                LogLevel::Debug => "debug",
                LogLevel::Info => "info",
                LogLevel::Warn => "warn",
                LogLevel::Error => "error",
            },
            &format!("{message}{ellipsis}"),
        );
        match level {
            LogLevel::Debug => tracing::debug!(plugin, "{message}{ellipsis}"),
            LogLevel::Info => tracing::info!(plugin, "{message}{ellipsis}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}{ellipsis}"),
            LogLevel::Error => tracing::error!(plugin, "{message}{ellipsis}"),
        }
    }

    fn write(&self, stream: &Mutex<Vec<u8>>, level: LogLevel, bytes: &[u8]) {
        let mut buf = stream.lock().unwrap_or_else(|p| p.into_inner());
        // Bytes past the longest line are not kept (a guest printing
        // megabytes without a newline costs no memory).
        let room = (MAX_LOG_CHARS * 4).saturating_sub(buf.len());
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            buf.push(b'\n');
        }
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..end]);
            let text = text.trim_end_matches('\r');
            if !text.is_empty() {
                self.line(level, text);
            }
        }
    }

    /// Ends a call: writes what is left of unfinished lines and resets the
    /// line budget.
    pub fn end_call(&self) {
        for (stream, level) in [
            (&self.stdout, LogLevel::Info),
            (&self.stderr, LogLevel::Warn),
        ] {
            let rest = std::mem::take(&mut *stream.lock().unwrap_or_else(|p| p.into_inner()));
            if !rest.is_empty() {
                self.line(level, String::from_utf8_lossy(&rest).trim_end());
            }
        }
        self.lines.store(0, Ordering::Relaxed);
    }
}

/// The input of the call in progress, shared by the clocks and generators of
/// one instance's WASI context.
pub struct CallInput {
    /// The call's time, ms since the Unix epoch.
    now_ms: AtomicI64,
    /// How far the guest's sleeps moved its clocks in this call, in ns.
    slept_ns: AtomicU64,
    /// The call's deadline: sleeps may add up to this much, in ns.
    budget_ns: u64,
    secure: Mutex<ChaCha20Rng>,
    insecure: Mutex<ChaCha20Rng>,
}

impl CallInput {
    fn new(budget: Duration) -> CallInput {
        CallInput {
            now_ms: AtomicI64::new(0),
            slept_ns: AtomicU64::new(0),
            budget_ns: u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX),
            secure: Mutex::new(ChaCha20Rng::from_seed([0; 32])),
            insecure: Mutex::new(ChaCha20Rng::from_seed([0; 32])),
        }
    }

    /// Sets the time and the generators for the next call.
    pub fn begin(&self, now_ms: i64, seed: [u8; 32]) {
        self.now_ms.store(now_ms, Ordering::Relaxed);
        self.slept_ns.store(0, Ordering::Relaxed);
        *self.secure.lock().unwrap_or_else(|p| p.into_inner()) = ChaCha20Rng::from_seed(seed);
        let mut insecure = ChaCha20Rng::from_seed(seed);
        insecure.set_stream(1);
        *self.insecure.lock().unwrap_or_else(|p| p.into_inner()) = insecure;
    }

    /// The call's clock, ns since the Unix epoch: its time plus what the
    /// guest slept.
    fn now_ns(&self) -> u64 {
        (self.now_ms.load(Ordering::Relaxed).max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add(self.slept_ns.load(Ordering::Relaxed))
    }

    /// A sleep of `ns`: the clocks move on, unless the call's sleeps would
    /// then pass its deadline.
    fn sleep(&self, ns: u64) -> Result<(), SleptPastDeadline> {
        let slept = self.slept_ns.load(Ordering::Relaxed).saturating_add(ns);
        if slept > self.budget_ns {
            return Err(SleptPastDeadline);
        }
        self.slept_ns.store(slept, Ordering::Relaxed);
        Ok(())
    }
}

/// A guest asked to sleep past its call's deadline: the call fails as a
/// timeout (`wasm.rs` classifies it so).
#[derive(Debug, Clone, Copy)]
pub struct SleptPastDeadline;

impl std::fmt::Display for SleptPastDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin slept past its call's deadline")
    }
}

impl std::error::Error for SleptPastDeadline {}

/// The seed of a call: SHA-256 over the plugin version and the input's
/// canonical encoding (`world::Canonical`: every field, strings and lists
/// length-prefixed, so that no two inputs collide by concatenation).
pub struct Seed(Sha256);

impl Seed {
    /// Starts a seed for one version of a plugin.
    pub fn new(version: &str) -> Seed {
        let mut s = Seed(Sha256::new());
        s.str(version);
        s
    }

    /// Adds a string field.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.update((s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
        self
    }

    /// Adds a number field.
    pub fn int(&mut self, n: i64) -> &mut Self {
        self.0.update(n.to_le_bytes());
        self
    }

    /// The 32 seed bytes.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

struct CallClock(Arc<CallInput>);

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.now_ns())
    }
}

impl HostMonotonicClock for CallClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        self.0.now_ns()
    }
}

/// The monotonic clock of `wasi:clocks`, in place of `wasmtime-wasi`'s:
/// the same readings (the call's clock), and pollables that are ready at
/// once (see the module doc).
pub struct Clocks<'a> {
    input: &'a CallInput,
    table: &'a mut ResourceTable,
}

/// A sleep that is over: always ready.
struct Slept;

#[wasmtime_wasi::async_trait]
impl Pollable for Slept {
    async fn ready(&mut self) {}
}

impl Clocks<'_> {
    fn slept(&mut self, ns: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.input.sleep(ns)?;
        let slept = self.table.push(Slept)?;
        wasmtime_wasi::p2::subscribe(self.table, slept)
    }
}

impl monotonic_clock::Host for Clocks<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.input.now_ns())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1)
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let ns = when.saturating_sub(self.input.now_ns());
        self.slept(ns)
    }

    fn subscribe_duration(&mut self, ns: u64) -> wasmtime::Result<Resource<DynPollable>> {
        self.slept(ns)
    }
}

struct HasClocks;

impl wasmtime::component::HasData for HasClocks {
    type Data<'a> = Clocks<'a>;
}

/// Links the monotonic clock of [`Clocks`] over the one `wasmtime-wasi`
/// linked (`get` finds an instance's, from [`Wasi::clocks`]).
pub fn link_clocks<T: 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> Clocks<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = monotonic_clock::add_to_linker::<T, HasClocks>(linker, get);
    linker.allow_shadowing(false);
    linked
}

/// One of the call's generators.
struct CallRandom {
    input: Arc<CallInput>,
    secure: bool,
}

impl CallRandom {
    fn with<R>(&mut self, f: impl FnOnce(&mut ChaCha20Rng) -> R) -> R {
        let cell = if self.secure {
            &self.input.secure
        } else {
            &self.input.insecure
        };
        f(&mut cell.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl TryRng for CallRandom {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.with(|r| r.try_next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        self.with(|r| r.try_next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.with(|r| r.try_fill_bytes(dst))
    }
}

/// stdout or stderr of an instance, into its log.
#[derive(Clone)]
struct LogStream {
    log: Arc<CallLog>,
    stderr: bool,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl LogStream {
    fn take(&self, bytes: &[u8]) {
        if self.stderr {
            self.log.write(&self.log.stderr, LogLevel::Warn, bytes);
        } else {
            self.log.write(&self.log.stdout, LogLevel::Info, bytes);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.take(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.take(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Outgoing HTTP: every request is refused with `HTTP-request-denied`.
#[derive(Default)]
pub struct NoHttp;

impl WasiHttpHooks for NoHttp {
    fn send_request(
        &mut self,
        _request: axum::http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = wasmtime_wasi_http::Result<(
                    axum::http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// One instance's WASI state.
pub struct Wasi {
    /// The WASI context (clocks, random, stdio, sockets refused).
    pub ctx: WasiCtx,
    /// Resources the guest holds (streams, pollables, HTTP handles).
    pub table: ResourceTable,
    /// `wasi:http` state.
    pub http: WasiHttpCtx,
    /// Refuses outgoing requests.
    pub hooks: NoHttp,
    /// The call in progress.
    pub input: Arc<CallInput>,
    /// The instance's log lines.
    pub log: Arc<CallLog>,
}

impl Wasi {
    /// A fresh context for one instance of the plugin labelled `label`,
    /// whose calls have `deadline` each.
    pub fn new(label: Arc<str>, version_seed: u128, deadline: Duration) -> Wasi {
        let input = Arc::new(CallInput::new(deadline));
        let log = Arc::new(CallLog::new(label));
        let mut b = WasiCtxBuilder::new();
        b.wall_clock(CallClock(input.clone()))
            .monotonic_clock(CallClock(input.clone()))
            .secure_random(CallRandom {
                input: input.clone(),
                secure: true,
            })
            .insecure_random(CallRandom {
                input: input.clone(),
                secure: false,
            })
            .insecure_random_seed(version_seed)
            .stdout(LogStream {
                log: log.clone(),
                stderr: false,
            })
            .stderr(LogStream {
                log: log.clone(),
                stderr: true,
            })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        Wasi {
            ctx: b.build(),
            table,
            http,
            hooks: NoHttp,
            input,
            log,
        }
    }

    /// The monotonic clock's view of this instance.
    pub fn clocks(&mut self) -> Clocks<'_> {
        Clocks {
            input: &self.input,
            table: &mut self.table,
        }
    }

    /// Host resources the guest holds (streams, pollables, HTTP handles).
    pub fn resources(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}
