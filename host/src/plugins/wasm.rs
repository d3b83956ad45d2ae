//! The sandbox: wasmtime's component model with no ambient authority.
//!
//! - One `Engine` per process, with epoch interruption (a ticker thread bumps
//!   the epoch every `TICK` while a call is in flight and sleeps otherwise,
//!   and every call gets a deadline in ticks), an
//!   optional fuel budget, and the pooling allocator (instantiation reuses
//!   pre-mapped slots).
//! - A component is compiled once and linked once into an `InstancePre` for
//!   its slot's world: the host's `log`/`config` imports, the deterministic
//!   WASI world of `wasi.rs` (clocks at the call's time, seeded random,
//!   stdout/stderr to the log, no files, sockets or HTTP), and anything else
//!   it imports defined as a function that traps.
//! - Guest code never runs on a runtime worker: the WASI host's stream calls
//!   block on the runtime (`wasmtime-wasi`'s sync bindings), and a slow
//!   plugin must not stall the other tasks of that worker. Every call goes
//!   through `off_runtime`, which on a worker moves the worker's other tasks
//!   away for the call's duration (`block_in_place`) and elsewhere (a
//!   blocking thread, the embedded store's writer, the CLI) costs a
//!   thread-local check. Code that makes many calls in a row (the hub's
//!   filter lanes, a replay page) moves once for the whole batch.
//! - Each instance lives in its own `Store` with a memory cap. A version keeps
//!   a few idle instances between calls (instantiating per call costs ten
//!   times the call); a call that fails drops its instance, so a failure
//!   poisons nothing, and no state crosses versions or configurations. A trap, a timeout, a grown-too-far memory or an output that
//!   breaks the host's rules fails that call only, with its kind.
//! - A call answers `Result<Result<Out, GuestFailure>, HostFault>`: the
//!   outer error is the host's (no instance to be had, a panic in host
//!   code), the inner the guest's. Both fail the call (closed); only the
//!   guest's count against the plugin.
//! - One call path for every slot ([`WasmHost::call`]), generic over the
//!   slot's [`World`] (`world.rs`): its bindings, input and output.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::wasi::{LogLevel, Seed, SleptPastDeadline, Wasi};
use super::world::{by_world, Canonical, World};
use super::Slot;

/// Generated bindings, one module per world; the `host` interface and the
/// shared types are generated once (in `validator`) and reused.
#[allow(missing_docs)]
pub mod bindings {
    /// The `bid-validator` world.
    pub mod validator {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "bid-validator",
        });
    }
    /// The `notification-shaper` world.
    pub mod shaper {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "notification-shaper",
            with: {
                "switchyard:plugins/host": super::validator::switchyard::plugins::host,
                "switchyard:plugins/types": super::validator::switchyard::plugins::types,
            },
        });
    }
    /// The `event-filter` world.
    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "event-filter",
            with: {
                "switchyard:plugins/host": super::validator::switchyard::plugins::host,
                "switchyard:plugins/types": super::validator::switchyard::plugins::types,
            },
        });
    }
    /// The `stream-authorizer` world.
    pub mod authorizer {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "stream-authorizer",
            with: {
                "switchyard:plugins/host": super::validator::switchyard::plugins::host,
                "switchyard:plugins/types": super::validator::switchyard::plugins::types,
            },
        });
    }
    pub use validator::switchyard::plugins::host::{Host, Level};
    pub use validator::switchyard::plugins::types;
}

/// The epoch ticker's period; deadlines are counted in these.
const TICK: Duration = Duration::from_millis(2);

/// Sandbox limits, the same for every plugin.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Per-call deadline.
    pub timeout: Duration,
    /// Largest linear memory, in bytes.
    pub memory: usize,
    /// Fuel per call (`None`: unmetered; the deadline still holds).
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(50),
            memory: 32 << 20,
            fuel: None,
        }
    }
}

/// Why a guest failed a call: what counts against a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailKind {
    /// The guest trapped (a panic, `unreachable`, a WASI call, ...).
    Trap,
    /// It ran past its deadline (or out of fuel).
    Timeout,
    /// It wanted more memory than the cap.
    Memory,
    /// It answered something the host refuses (malformed JSON, too big, ...).
    BadOutput,
}

impl FailKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::Trap => "trap",
            FailKind::Timeout => "timeout",
            FailKind::Memory => "memory",
            FailKind::BadOutput => "bad_output",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [FailKind; 4] = [
        FailKind::Trap,
        FailKind::Timeout,
        FailKind::Memory,
        FailKind::BadOutput,
    ];
}

/// What a call comes to: the outer `Result` is the host's (it could not
/// run the call), the inner the guest's (it ran, and failed or answered).
pub type CallResult<T> = Result<Result<T, GuestFailure>, HostFault>;

/// A call the host could not run or finish through no doing of the guest:
/// no instance to be had (the pool exhausted), a panic in host code. It
/// fails the call as a guest failure would (closed), but is not counted
/// against the plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("host fault: {message}")]
pub struct HostFault {
    /// Details for logs.
    pub message: String,
}

/// A call the guest failed.
#[derive(Debug, Clone)]
pub struct GuestFailure {
    /// What went wrong.
    pub kind: FailKind,
    /// Details for logs and the admin API.
    pub message: String,
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl GuestFailure {
    pub(crate) fn bad_output(message: impl Into<String>) -> Self {
        GuestFailure {
            kind: FailKind::BadOutput,
            message: message.into(),
        }
    }
}

/// Store data of one instance.
pub struct Ctx {
    config: Arc<BTreeMap<String, String>>,
    /// The instance's budget: its linear memories and tables together, in
    /// bytes (a component may have several of each; the pool's per-memory
    /// size is only a backstop).
    memory_cap: usize,
    /// What its memories and tables take now, in bytes.
    memory_used: usize,
    memory_exceeded: bool,
    wasi: Wasi,
}

/// What one table element counts against the memory budget, in bytes (a
/// function reference in wasmtime's tables).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl Ctx {
    /// Grows the instance's total from `current` to `desired` bytes of one
    /// memory or table, unless that passes the budget.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self
            .memory_used
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_cap {
            self.memory_exceeded = true;
            return false;
        }
        self.memory_used = total;
        true
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

impl wasmtime::ResourceLimiter for Ctx {
    // Wasmtime asks here for every memory and table, their initial sizes
    // included (`current` is 0 then), so the sum is the instance's.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

impl bindings::Host for Ctx {
    fn log(&mut self, level: bindings::Level, message: String) {
        let level = match level {
            bindings::Level::Debug => LogLevel::Debug,
            bindings::Level::Info => LogLevel::Info,
            bindings::Level::Warn => LogLevel::Warn,
            bindings::Level::Error => LogLevel::Error,
        };
        self.wasi.log.line(level, &message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }

    fn config_all(&mut self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Whether a component fits a slot, and why not.
pub type SlotFit = (Slot, Result<(), HostError>);

/// Why the engine cannot start, or a component cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The engine (or its linker, or its deadline thread) cannot start.
    #[error("cannot start {what}: {reason}")]
    Start {
        /// What failed.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Not WebAssembly at all.
    #[error("not a WebAssembly binary")]
    NotWasm,
    /// A core module rather than a component.
    #[error("a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)")]
    CoreModule,
    /// The component does not compile.
    #[error("does not compile: {0:#}")]
    Compile(wasmtime::Error),
    /// Its imports cannot be linked.
    #[error("cannot link its imports: {0:#}")]
    Imports(wasmtime::Error),
    /// It does not fit the slot's world.
    #[error("does not fit the `{slot}` world: {reason:#}")]
    World {
        /// The slot.
        slot: Slot,
        /// Why.
        reason: wasmtime::Error,
    },
    /// Compiled code cannot be written to the cache.
    #[error("{0}")]
    Cache(String),
    /// The blocking task that compiles it failed (panicked or was cancelled).
    #[error("the compile task failed: {0}")]
    Task(String),
}

/// The SHA-256 of a component, hex: its version's name everywhere (and its
/// compiled code's, with the engine settings, in the cache).
pub fn content_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The process's plugin engine.
#[derive(Clone)]
pub struct WasmHost {
    engine: Engine,
    linker: Arc<Linker<Ctx>>,
    limits: Limits,
    ticking: Arc<Ticking>,
    /// Compiled code on disk, by content hash and engine settings.
    cache: Option<Arc<std::path::PathBuf>>,
    /// Compiles and cache hits, for metrics.
    pub compiles: Arc<CompileStats>,
}

/// How often code was compiled and how long it took, and how often the
/// disk cache spared a compile.
#[derive(Default)]
pub struct CompileStats {
    /// Components compiled.
    pub compiled: std::sync::atomic::AtomicU64,
    /// Time spent compiling, in microseconds.
    pub compile_us: std::sync::atomic::AtomicU64,
    /// Components loaded from the cache instead.
    pub cache_hits: std::sync::atomic::AtomicU64,
}

/// Calls in flight, so the epoch ticker runs only while guest code may:
/// an idle node's ticker sleeps instead of waking 500 times a second.
#[derive(Default)]
struct Ticking {
    calls: AtomicUsize,
    /// Set by the ticker (under `lock`) while it waits for a call.
    sleeping: AtomicBool,
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

impl Ticking {
    /// Marks a call in flight until the guard drops, waking the ticker if
    /// it sleeps (a lock and a wake-up only then, not on every call).
    fn enter(&self) -> InFlight<'_> {
        // Both sides write, then read the other's flag (sequentially
        // consistent): either the ticker sees this call and does not wait,
        // or this sees it asleep and wakes it. Under the lock, because the
        // ticker checks the count and starts waiting while holding it.
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 && self.sleeping.load(Ordering::SeqCst) {
            let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_one();
        }
        InFlight(self)
    }

    /// Blocks the ticker while no call is in flight (waking now and then, so
    /// that it notices the engine is gone).
    fn wait_for_calls(&self) {
        if self.calls.load(Ordering::SeqCst) == 0 {
            let held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.sleeping.store(true, Ordering::SeqCst);
            let _ = self
                .wake
                .wait_timeout_while(held, Duration::from_secs(1), |_| {
                    self.calls.load(Ordering::SeqCst) == 0
                });
            self.sleeping.store(false, Ordering::SeqCst);
        }
    }
}

struct InFlight<'a>(&'a Ticking);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A component linked for world `W`, ready to instantiate, and whether it
/// imports `wasi:random` (only then does a call pay for encoding its input
/// into a seed).
pub struct Linked<W: World> {
    pre: W::Pre,
    seeded: bool,
}

impl<W: World> Clone for Linked<W> {
    fn clone(&self) -> Self {
        Linked {
            pre: self.pre.clone(),
            seeded: self.seeded,
        }
    }
}

impl WasmHost {
    /// Builds the engine and starts its epoch ticker (which stops when the
    /// last clone of the engine is dropped).
    pub fn new(limits: Limits) -> Result<WasmHost, HostError> {
        let start = |what: &'static str| {
            move |e: &dyn std::fmt::Display| HostError::Start {
                what,
                reason: e.to_string(),
            }
        };
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(limits.fuel.is_some());
        config.wasm_component_model(true);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(512)
            .total_core_instances(2_048)
            .total_memories(1_024)
            .total_tables(1_024)
            .max_memory_size(limits.memory)
            .max_component_instance_size(1 << 20)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(32);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&config) {
            Ok(e) => e,
            Err(pooled) => {
                // A machine that cannot reserve the pool's address space still
                // gets plugins, instantiated on demand.
                tracing::warn!(error = %pooled, "pooling allocator unavailable; using on-demand instances");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(|e| start("wasmtime")(&e))?
            }
        };
        let mut linker = Linker::new(&engine);
        bindings::validator::switchyard::plugins::host::add_to_linker::<Ctx, HasSelf<Ctx>>(
            &mut linker,
            |c| c,
        )
        .map_err(|e| start("the host interface")(&e))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| start("WASI")(&e))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(|e| start("wasi:http")(&e))?;
        super::wasi::link_clocks(&mut linker, |c: &mut Ctx| c.wasi.clocks())
            .map_err(|e| start("the plugin clocks")(&e))?;
        let weak = engine.weak();
        let ticking = Arc::new(Ticking::default());
        let ticker = ticking.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || loop {
                ticker.wait_for_calls();
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| start("the plugin deadline thread")(&e))?;
        Ok(WasmHost {
            engine,
            linker: Arc::new(linker),
            limits,
            ticking,
            cache: None,
            compiles: Arc::default(),
        })
    }

    /// Keeps compiled code in `dir`, so that a restart, a rollback or a
    /// second upload of the same component does not compile it again. The
    /// directory is made private (0700) when this makes it; one that cannot
    /// be made is logged and compiling goes on without a cache.
    pub fn with_cache(mut self, dir: std::path::PathBuf) -> WasmHost {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            Ok(()) => self.cache = Some(Arc::new(dir)),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "plugin cache dir unusable; compiling every load")
            }
        }
        self
    }

    /// Whether the compiled code of `bytes` is in the disk cache, and may be
    /// loaded from it.
    pub fn is_cached(&self, bytes: &[u8]) -> bool {
        self.cache_file(bytes)
            .is_some_and(|f| f.is_file() && self.cache_trusted(&f))
    }

    /// Whether a cached file may be loaded as native code: the directory
    /// and the file belong to this process's user and nobody else may write
    /// them. Anyone who can write there could otherwise run code in this
    /// process. Refusing is logged once per process; the component is
    /// compiled instead.
    fn cache_trusted(&self, file: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        static WARNED: std::sync::Once = std::sync::Once::new();
        // SAFETY: `geteuid` reads the process's credentials; it cannot fail
        // and touches no memory.
        let me = unsafe { libc::geteuid() };
        let Some(dir) = &self.cache else {
            return false;
        };
        for path in [dir.as_path(), file] {
            let why = match std::fs::metadata(path) {
                Ok(m) if m.uid() != me => "it belongs to another user",
                Ok(m) if m.mode() & 0o022 != 0 => "its group or other users may write it",
                Ok(_) => continue,
                Err(_) => "it cannot be read",
            };
            WARNED.call_once(|| {
                tracing::warn!(path = %path.display(), reason = why, "plugin cache not trusted: compiling instead of loading cached code");
            });
            return false;
        }
        true
    }

    /// Refuses at once what cannot be a component (before any compile).
    pub fn precheck(bytes: &[u8]) -> Result<(), HostError> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(HostError::NotWasm);
        }
        if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(HostError::CoreModule);
        }
        Ok(())
    }

    /// The cache file of a component: its hash and a fingerprint of the
    /// engine's settings and version (compiled code is only valid for an
    /// engine configured the same way).
    fn cache_file(&self, bytes: &[u8]) -> Option<std::path::PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.cache.as_ref()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let hash = content_hash(bytes);
        Some(dir.join(format!("{hash}.{:016x}.cwasm", h.finish())))
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs `f` (plugin calls) where blocking is allowed: on a runtime
    /// worker, after handing the worker's other tasks to another thread;
    /// anywhere else, right away.
    pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(f)
            }
            _ => f(),
        }
    }

    /// Compiles a component (the expensive step, done once per version).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, HostError> {
        Self::precheck(bytes)?;
        let file = self.cache_file(bytes);
        if let Some(file) = &file {
            if file.is_file() && self.cache_trusted(file) {
                // SAFETY: the file is compiled code this process (or another
                // node of the same build) wrote for an engine with the same
                // settings, named by the fingerprint; the cache dir and the
                // file are this user's and nobody else may write them
                // (`cache_trusted`), so they are as trusted as the binary.
                // wasmtime checks the header's engine compatibility and
                // refuses a mismatch.
                match unsafe { Component::deserialize_file(&self.engine, file) } {
                    Ok(c) => {
                        self.compiles.cache_hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::warn!(file = %file.display(), error = %e, "cached plugin code unusable; compiling again")
                    }
                }
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(HostError::Compile)?;
        self.compiles.compiled.fetch_add(1, Ordering::Relaxed);
        self.compiles
            .compile_us
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Some(file) = &file {
            if let Err(e) = write_cache(file, &component) {
                tracing::warn!(file = %file.display(), error = %e, "cannot cache compiled plugin code");
            }
        }
        Ok(component)
    }

    /// Links a compiled component for world `W`, checking it against the
    /// world.
    pub fn link<W: World>(&self, component: &Component) -> Result<Linked<W>, HostError> {
        let mut linker = (*self.linker).clone();
        stub_unknown_imports(&mut linker, &self.engine, component).map_err(HostError::Imports)?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(HostError::Imports)?;
        let seeded = component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name.starts_with("wasi:random/"));
        let pre = W::pre(pre).map_err(|reason| HostError::World {
            slot: W::SLOT,
            reason,
        })?;
        Ok(Linked { pre, seeded })
    }

    /// Which slots a component fits, with the reason for each that it does not.
    pub fn check(&self, bytes: &[u8]) -> Result<Vec<SlotFit>, HostError> {
        let component = self.compile(bytes)?;
        Ok(Slot::ALL
            .iter()
            .map(|&slot| {
                let fit = by_world!(slot, W => self.link::<W>(&component).map(|_| ()));
                (slot, fit)
            })
            .collect())
    }

    /// Calls `linked` on `input`: the WASI clocks read the input's time
    /// (`World::now_ms`), and its random generators are seeded by the
    /// version's label and the input's canonical encoding.
    pub fn call<W: World>(
        &self,
        linked: &Linked<W>,
        call: &CallCtx<W>,
        input: W::Input<'_>,
    ) -> CallResult<W::Output> {
        let seed = linked.seeded.then(|| {
            let mut s = Seed::new(&call.label);
            input.encode(&mut s);
            s
        });
        self.run(
            call,
            CallTime {
                now_ms: W::now_ms(input),
                seed,
            },
            |s| W::instantiate(&linked.pre, s),
            |b, s| W::call(b, s, input),
        )
    }

    fn store<W: World>(&self, call: &CallCtx<W>) -> Store<Ctx> {
        // The insecure seed is fixed per version (WASI asks for a value that
        // does not change over an instance's life).
        let digest = Seed::new(&call.label).finish();
        let mut version_seed = [0u8; 16];
        version_seed.copy_from_slice(&digest[..16]);
        let mut store = Store::new(
            &self.engine,
            Ctx {
                config: call.config.clone(),
                memory_cap: self.limits.memory,
                memory_used: 0,
                memory_exceeded: false,
                wasi: Wasi::new(
                    call.label.clone(),
                    u128::from_le_bytes(version_seed),
                    self.limits.timeout,
                ),
            },
        );
        store.limiter(|c| c);
        self.rearm(&mut store);
        store
    }

    /// Takes an idle instance of this version (or makes one), sets the
    /// call's time and seed and re-arms its deadline, runs `f`, and keeps the
    /// instance for the next call if the call succeeded and it has not
    /// served `MAX_USES` calls; a failed instance is dropped with its store.
    /// Runs guest code on the calling thread, which must not be a runtime
    /// worker (see the module doc).
    #[tracing::instrument(name = "plugin.call", level = "debug", skip_all, fields(plugin = %call.label))]
    fn run<W: World, R>(
        &self,
        call: &CallCtx<W>,
        input: CallTime,
        instantiate: impl FnOnce(&mut Store<Ctx>) -> wasmtime::Result<W::Bindings>,
        f: impl FnOnce(&W::Bindings, &mut Store<Ctx>) -> wasmtime::Result<R>,
    ) -> CallResult<R> {
        let idle = &*call.idle;
        // Guest code runs from here (instantiation included): the deadline
        // needs the ticker awake.
        let _in_flight = self.ticking.enter();
        let reused = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let seed = input.seed.map(Seed::finish).unwrap_or_default();
        let (mut store, bindings, uses, held) = match reused {
            Some(i) => {
                i.store.data().wasi.input.begin(input.now_ms, seed);
                (i.store, i.bindings, i.uses, Some(i.resources))
            }
            None => {
                let mut store = self.store(call);
                // A runtime may read the clock and random bytes while it
                // starts: it sees this call's.
                store.data().wasi.input.begin(input.now_ms, seed);
                let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    Self::off_runtime(|| instantiate(&mut store))
                }));
                match made {
                    Ok(Ok(b)) => (store, b, 0, None),
                    Ok(Err(e)) => {
                        store.data().wasi.log.end_call();
                        return instantiate_error(&store, e);
                    }
                    Err(_) => {
                        store.data().wasi.log.end_call();
                        return Err(HostFault {
                            message: "the host failed while instantiating the plugin".into(),
                        });
                    }
                }
            }
        };
        self.rearm(&mut store);
        // A panic in a host function (a bug, not the guest's doing) fails the
        // call instead of the thread, as a host fault.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::off_runtime(|| f(&bindings, &mut store))
        }));
        store.data().wasi.log.end_call();
        let r = match r {
            Ok(r) => r.map_err(|e| classify(&store, e)),
            Err(_) => {
                return Err(HostFault {
                    message: "the host failed while serving the plugin".into(),
                })
            }
        };
        if r.is_ok() && uses + 1 < MAX_USES {
            // What the guest keeps after its first call (a runtime's cached
            // handles) may stay; an instance that holds more host resources
            // after a later call leaks them, and is dropped with them rather
            // than reused.
            let resources = store.data_mut().wasi.resources();
            if held.is_none_or(|held| resources <= held) {
                let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(Idle {
                        store,
                        bindings,
                        uses: uses + 1,
                        resources: held.unwrap_or(resources),
                    });
                }
            }
        }
        Ok(r)
    }

    fn rearm(&self, store: &mut Store<Ctx>) {
        let ticks = (self.limits.timeout.as_micros() / TICK.as_micros()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        if let Some(fuel) = self.limits.fuel {
            // Fuel is only on when configured; setting it cannot fail then.
            let _ = store.set_fuel(fuel);
        }
    }
}

/// Writes compiled code beside its final name and renames it into place, so
/// a reader (another node sharing the dir) never sees half a file.
fn write_cache(file: &std::path::Path, component: &Component) -> Result<(), HostError> {
    let cache = |e: &dyn std::fmt::Display| HostError::Cache(e.to_string());
    let bytes = component.serialize().map_err(|e| cache(&e))?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let written = {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes))
    };
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(cache(&e));
    }
    std::fs::rename(&tmp, file).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cache(&e)
    })
}

/// The WASI 0.2 interfaces the linker provides (`wasmtime-wasi`'s p2 world
/// and `wasi:http`), at any 0.2 version: the linker matches versions by
/// semver, so a component built against a later 0.2 release links too.
const PROVIDED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// Defines every import the linker does not provide (another WASI proposal,
/// a world of some other host) as functions that trap when called, so such a
/// component still loads and fails only the calls that use them. Wasmtime's
/// own `define_unknown_imports_as_traps` matches names exactly and would
/// shadow a provided interface imported at a later 0.2 version with
/// stand-ins of the wrong resource types.
fn stub_unknown_imports(
    linker: &mut Linker<Ctx>,
    engine: &Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    use wasmtime::component::types::ComponentItem;
    use wasmtime::component::ResourceType;
    let provided = |name: &str| {
        name.strip_prefix("switchyard:plugins/").is_some()
            || name
                .split_once("@0.2.")
                .is_some_and(|(iface, _)| PROVIDED.contains(&iface))
    };
    for (name, item) in component.component_type().imports(engine) {
        if provided(name) {
            continue;
        }
        match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut inst = linker.instance(name)?;
                for (export, item) in instance.exports(engine) {
                    match item.ty {
                        ComponentItem::ComponentFunc(_) => {
                            let what = format!("{name}#{export}");
                            inst.func_new(export, move |_, _, _, _| {
                                wasmtime::bail!("`{what}` is not available to plugins")
                            })?;
                        }
                        ComponentItem::Resource(_) => {
                            inst.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?;
                        }
                        _ => {}
                    }
                }
            }
            ComponentItem::ComponentFunc(_) => {
                let what = name.to_string();
                linker.root().func_new(name, move |_, _, _, _| {
                    wasmtime::bail!("`{what}` is not available to plugins")
                })?;
            }
            ComponentItem::Resource(_) => {
                linker
                    .root()
                    .resource(name, ResourceType::host::<()>(), |_, _| Ok(()))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the WASI world of one call reads: its time, and the seed of its
/// generators (`None`: the component does not import `wasi:random`).
struct CallTime {
    now_ms: i64,
    seed: Option<Seed>,
}

/// Calls one instance serves before it is replaced by a fresh one.
const MAX_USES: u32 = 10_000;
/// Idle instances kept per version.
const MAX_IDLE: usize = 8;

/// An instance between calls.
pub struct Idle<B> {
    store: Store<Ctx>,
    bindings: B,
    uses: u32,
    /// The host resources it held after its first call.
    resources: usize,
}

/// What a call needs beyond the component: its configuration, a label for
/// its log lines, and the version's idle instances. Instances are reused
/// while they behave: a plugin's globals may persist from one call to the
/// next (never from one version or configuration to another), and a call
/// that fails drops its instance.
pub struct CallCtx<W: World> {
    /// Read-only configuration.
    pub config: Arc<BTreeMap<String, String>>,
    /// `slot[@tenant]#version`, on every log line the plugin writes.
    pub label: Arc<str>,
    /// Instances kept between calls.
    pub idle: Arc<std::sync::Mutex<Vec<Idle<W::Bindings>>>>,
}

impl<W: World> CallCtx<W> {
    /// A context with no idle instance yet.
    pub fn new(config: BTreeMap<String, String>, label: impl Into<Arc<str>>) -> Self {
        CallCtx {
            config: Arc::new(config),
            label: label.into(),
            idle: Arc::default(),
        }
    }
}

impl<W: World> Clone for CallCtx<W> {
    fn clone(&self) -> Self {
        CallCtx {
            config: self.config.clone(),
            label: self.label.clone(),
            idle: self.idle.clone(),
        }
    }
}

/// Why an instance could not be made: the guest's doing when its start
/// trapped, looped or grew past the budget, else the host's (an exhausted
/// pool, ...).
fn instantiate_error<R>(store: &Store<Ctx>, e: wasmtime::Error) -> CallResult<R> {
    if e.downcast_ref::<Trap>().is_some() || store.data().memory_exceeded {
        return Ok(Err(classify(store, e)));
    }
    Err(HostFault {
        message: format!("cannot instantiate the plugin: {e:#}"),
    })
}

fn classify(store: &Store<Ctx>, e: wasmtime::Error) -> GuestFailure {
    let kind = if store.data().memory_exceeded {
        FailKind::Memory
    } else if e.downcast_ref::<SleptPastDeadline>().is_some() {
        FailKind::Timeout
    } else if matches!(
        e.downcast_ref::<wasmtime::component::ResourceTableError>(),
        Some(wasmtime::component::ResourceTableError::Full)
    ) {
        // More host resources held at once than `MAX_HOST_RESOURCES`.
        FailKind::Memory
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) | Some(Trap::OutOfFuel) => FailKind::Timeout,
            _ => FailKind::Trap,
        }
    };
    let mut message = format!("{e:#}");
    // Backtraces are long; the first lines say what happened.
    if let Some(cut) = message.match_indices('\n').nth(3).map(|(i, _)| i) {
        message.truncate(cut);
    }
    GuestFailure { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(cap: usize) -> Ctx {
        Ctx {
            config: Arc::default(),
            memory_cap: cap,
            memory_used: 0,
            memory_exceeded: false,
            wasi: Wasi::new("test".into(), 0, Duration::from_millis(50)),
        }
    }

    /// An instance the host cannot make is the host's fault, not counted
    /// against the plugin; a start that traps is the guest's.
    #[test]
    fn instantiate_errors_are_the_hosts_unless_the_guest_trapped() {
        let host = WasmHost::new(Limits::default()).expect("engine");
        let call = CallCtx::<crate::plugins::world::Filter>::new(BTreeMap::new(), "test");
        let store = host.store(&call);
        let pool = wasmtime::Error::msg("maximum concurrent instance limit reached");
        assert!(matches!(
            instantiate_error::<()>(&store, pool),
            Err(HostFault { .. })
        ));
        let trap = wasmtime::Error::from(Trap::UnreachableCodeReached);
        assert!(matches!(
            instantiate_error::<()>(&store, trap),
            Ok(Err(GuestFailure {
                kind: FailKind::Trap,
                ..
            }))
        ));
    }

    /// One budget over every memory and table of an instance: two memories
    /// each under the cap, together over it, are refused.
    #[test]
    fn the_memory_budget_sums_memories_and_tables() {
        use wasmtime::ResourceLimiter;
        let mb = 1 << 20;
        let mut c = ctx(16 * mb);
        assert!(c.memory_growing(0, 10 * mb, None).expect("limiter"));
        assert!(!c.memory_growing(0, 10 * mb, None).expect("limiter"));
        assert!(c.memory_exceeded);
        let mut c = ctx(16 * mb);
        assert!(c.memory_growing(0, 8 * mb, None).expect("limiter"));
        assert!(c.memory_growing(0, 7 * mb, None).expect("limiter"));
        // Growing the first memory counts only what it adds.
        assert!(c
            .memory_growing(8 * mb, 8 * mb + mb / 2, None)
            .expect("limiter"));
        // A table of a million elements is 8 MB more.
        assert!(!c.table_growing(0, mb, None).expect("limiter"));
        assert!(c.table_growing(0, 1_000, None).expect("limiter"));
    }

    /// A core module with one memory of `pages` 64 KiB pages, in the
    /// binary format: the header and a memory section.
    fn module_with_memory(pages: u8) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // Section 5 (memory), 4 bytes: one memory, no maximum, `pages`
        // (a two-byte LEB128 for 128..=255).
        assert!(pages >= 128);
        m.extend_from_slice(&[5, 4, 1, 0, (pages & 0x7f) | 0x80, 1]);
        m
    }

    /// The budget holds on the host's real engine and store: instances in
    /// one store (a component's core instances, each with its memory) are
    /// held to it together, though each memory alone fits.
    #[test]
    fn one_store_holds_its_memories_to_one_budget() {
        let mb = 1 << 20;
        let host = WasmHost::new(Limits {
            memory: 16 * mb,
            ..Limits::default()
        })
        .expect("engine");
        let call = CallCtx::<crate::plugins::world::Filter>::new(BTreeMap::new(), "test");
        // 160 pages: 10 MiB.
        let module = wasmtime::Module::new(&host.engine, module_with_memory(160)).expect("module");
        let linker = wasmtime::Linker::<Ctx>::new(&host.engine);
        let mut store = host.store(&call);
        linker
            .instantiate(&mut store, &module)
            .expect("the first 10 MiB memory fits the 16 MiB budget");
        assert!(linker.instantiate(&mut store, &module).is_err());
        assert!(store.data().memory_exceeded, "refused by the budget");
        // In a fresh store the same memory fits again.
        let mut store = host.store(&call);
        linker.instantiate(&mut store, &module).expect("fits alone");
    }
}
