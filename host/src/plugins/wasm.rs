//! The sandbox: wasmtime's component model with no ambient authority.
//!
//! - One `Engine` per process, with epoch interruption (a ticker thread bumps
//!   the epoch every `TICK` while a call is in flight and sleeps otherwise,
//!   and every call gets a deadline in ticks), an
//!   optional fuel budget, and the pooling allocator (instantiation reuses
//!   pre-mapped slots).
//! - A component is compiled once and linked once into an `InstancePre` for
//!   its slot's world: the host's `log`/`config` imports, and every other
//!   import (a Rust guest's WASI) defined as a function that traps.
//! - Each instance lives in its own `Store` with a memory cap. A version keeps
//!   a few idle instances between calls (instantiating per call costs ten
//!   times the call); a call that fails drops its instance, so a failure
//!   poisons nothing, and no state crosses versions or configurations. A trap, a timeout, a grown-too-far memory or an output that
//!   breaks the host's rules fails that call only, with its kind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

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
    pub use validator::switchyard::plugins::host::{Host, Level};
    pub use validator::switchyard::plugins::types;
}

use bindings::types;

/// The epoch ticker's period; deadlines are counted in these.
const TICK: Duration = Duration::from_millis(2);
/// Log lines one call may write; the rest are counted and dropped.
const MAX_LOGS_PER_CALL: u32 = 32;
/// Longest log line kept.
const MAX_LOG_CHARS: usize = 1_024;

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

/// Why a call failed.
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
    /// The host could not instantiate it (pool exhausted, ...).
    Instantiate,
}

impl FailKind {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::Trap => "trap",
            FailKind::Timeout => "timeout",
            FailKind::Memory => "memory",
            FailKind::BadOutput => "bad_output",
            FailKind::Instantiate => "instantiate",
        }
    }

    /// Every kind, for metrics.
    pub const ALL: [FailKind; 5] = [
        FailKind::Trap,
        FailKind::Timeout,
        FailKind::Memory,
        FailKind::BadOutput,
        FailKind::Instantiate,
    ];
}

/// A failed call.
#[derive(Debug, Clone)]
pub struct CallError {
    /// What went wrong.
    pub kind: FailKind,
    /// Details for logs and the admin API.
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl CallError {
    pub(crate) fn bad_output(message: impl Into<String>) -> Self {
        CallError {
            kind: FailKind::BadOutput,
            message: message.into(),
        }
    }
}

/// Store data of one call.
pub struct Ctx {
    config: Arc<BTreeMap<String, String>>,
    label: Arc<str>,
    memory_cap: usize,
    memory_exceeded: bool,
    logs: u32,
}

impl wasmtime::ResourceLimiter for Ctx {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl bindings::Host for Ctx {
    fn log(&mut self, level: bindings::Level, message: String) {
        self.logs += 1;
        if self.logs > MAX_LOGS_PER_CALL {
            return;
        }
        let mut message = message;
        if message.len() > MAX_LOG_CHARS {
            let mut cut = MAX_LOG_CHARS;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.label;
        match level {
            bindings::Level::Debug => tracing::debug!(plugin, "{message}"),
            bindings::Level::Info => tracing::info!(plugin, "{message}"),
            bindings::Level::Warn => tracing::warn!(plugin, "{message}"),
            bindings::Level::Error => tracing::error!(plugin, "{message}"),
        }
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
pub type SlotFit = (Slot, Result<(), String>);

/// The process's plugin engine.
#[derive(Clone)]
pub struct WasmHost {
    engine: Engine,
    linker: Arc<Linker<Ctx>>,
    limits: Limits,
    ticking: Arc<Ticking>,
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

/// A component linked for its slot, ready to instantiate.
#[derive(Clone)]
pub enum Linked {
    /// `bid-validator`.
    Validator(bindings::validator::BidValidatorPre<Ctx>),
    /// `notification-shaper`.
    Shaper(bindings::shaper::NotificationShaperPre<Ctx>),
    /// `event-filter`.
    Filter(bindings::filter::EventFilterPre<Ctx>),
}

impl Linked {
    /// The slot it fits.
    pub fn slot(&self) -> Slot {
        match self {
            Linked::Validator(_) => Slot::BidValidator,
            Linked::Shaper(_) => Slot::NotificationShaper,
            Linked::Filter(_) => Slot::EventFilter,
        }
    }
}

impl WasmHost {
    /// Builds the engine and starts its epoch ticker (which stops when the
    /// last clone of the engine is dropped).
    pub fn new(limits: Limits) -> Result<WasmHost, String> {
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
            .max_core_instances_per_component(32)
            .max_memories_per_component(8)
            .max_tables_per_component(16);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&config) {
            Ok(e) => e,
            Err(pooled) => {
                // A machine that cannot reserve the pool's address space still
                // gets plugins, instantiated on demand.
                tracing::warn!(error = %pooled, "pooling allocator unavailable; using on-demand instances");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e}"))?
            }
        };
        let mut linker = Linker::new(&engine);
        bindings::validator::switchyard::plugins::host::add_to_linker::<Ctx, HasSelf<Ctx>>(
            &mut linker,
            |c| c,
        )
        .map_err(|e| format!("cannot link the host interface: {e}"))?;
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
            .map_err(|e| format!("cannot start the plugin deadline thread: {e}"))?;
        Ok(WasmHost {
            engine,
            linker: Arc::new(linker),
            limits,
            ticking,
        })
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compiles a component (the expensive step, done once per version).
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err("not a WebAssembly binary".into());
        }
        if bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(
                "a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
                    .into(),
            );
        }
        Component::new(&self.engine, bytes).map_err(|e| format!("does not compile: {e:#}"))
    }

    /// Links a compiled component for `slot`, checking it against the slot's
    /// world.
    pub fn link(&self, component: &Component, slot: Slot) -> Result<Linked, String> {
        let mut linker = (*self.linker).clone();
        linker
            .define_unknown_imports_as_traps(component)
            .map_err(|e| format!("cannot link its imports: {e:#}"))?;
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| format!("cannot link its imports: {e:#}"))?;
        let fit = |e: wasmtime::Error| format!("does not fit the `{}` world: {e:#}", slot.as_str());
        Ok(match slot {
            Slot::BidValidator => {
                Linked::Validator(bindings::validator::BidValidatorPre::new(pre).map_err(fit)?)
            }
            Slot::NotificationShaper => {
                Linked::Shaper(bindings::shaper::NotificationShaperPre::new(pre).map_err(fit)?)
            }
            Slot::EventFilter => {
                Linked::Filter(bindings::filter::EventFilterPre::new(pre).map_err(fit)?)
            }
        })
    }

    /// Which slots a component fits, with the reason for each that it does not.
    pub fn check(&self, bytes: &[u8]) -> Result<Vec<SlotFit>, String> {
        let component = self.compile(bytes)?;
        Ok(Slot::ALL
            .iter()
            .map(|&slot| (slot, self.link(&component, slot).map(|_| ())))
            .collect())
    }

    fn store(&self, config: &Arc<BTreeMap<String, String>>, label: &Arc<str>) -> Store<Ctx> {
        let mut store = Store::new(
            &self.engine,
            Ctx {
                config: config.clone(),
                label: label.clone(),
                memory_cap: self.limits.memory,
                memory_exceeded: false,
                logs: 0,
            },
        );
        store.limiter(|c| c);
        let ticks = (self.limits.timeout.as_micros() / TICK.as_micros()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        if let Some(fuel) = self.limits.fuel {
            // Fuel is only on when configured; setting it cannot fail then.
            let _ = store.set_fuel(fuel);
        }
        store
    }

    /// Takes an idle instance of this version (or makes one), re-arms its
    /// deadline, runs `f`, and keeps the instance for the next call if the
    /// call succeeded and it has not served `MAX_USES` calls; a failed
    /// instance is dropped with its store.
    fn run<B, R>(
        &self,
        call: &CallCtx,
        idle: &std::sync::Mutex<Vec<Idle<B>>>,
        instantiate: impl FnOnce(&mut Store<Ctx>) -> wasmtime::Result<B>,
        f: impl FnOnce(&B, &mut Store<Ctx>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        // Guest code runs from here (instantiation included): the deadline
        // needs the ticker awake.
        let _in_flight = self.ticking.enter();
        let reused = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (mut store, bindings, uses) = match reused {
            Some(i) => (i.store, i.bindings, i.uses),
            None => {
                let mut store = self.store(&call.config, &call.label);
                match instantiate(&mut store) {
                    Ok(b) => (store, b, 0),
                    Err(e) => return Err(instantiate_error(&store, e)),
                }
            }
        };
        self.rearm(&mut store);
        let r = f(&bindings, &mut store).map_err(|e| classify(&store, e));
        if r.is_ok() && uses + 1 < MAX_USES {
            let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    store,
                    bindings,
                    uses: uses + 1,
                });
            }
        }
        r
    }

    fn rearm(&self, store: &mut Store<Ctx>) {
        let ticks = (self.limits.timeout.as_micros() / TICK.as_micros()).max(1) as u64 + 1;
        store.set_epoch_deadline(ticks);
        if let Some(fuel) = self.limits.fuel {
            let _ = store.set_fuel(fuel);
        }
        store.data_mut().logs = 0;
    }

    /// Runs `validate`.
    pub fn validate(
        &self,
        pre: &bindings::validator::BidValidatorPre<Ctx>,
        call: &CallCtx,
        bid: &types::Bid,
        product: &types::Product,
        now: i64,
    ) -> Result<types::Verdict, CallError> {
        self.run(
            call,
            &call.idle.validators,
            |s| pre.instantiate(s),
            |b, s| b.call_validate(s, bid, product, now),
        )
    }

    /// Runs `shape`.
    pub fn shape(
        &self,
        pre: &bindings::shaper::NotificationShaperPre<Ctx>,
        call: &CallCtx,
        message: &types::Message,
    ) -> Result<Vec<types::Notification>, CallError> {
        self.run(
            call,
            &call.idle.shapers,
            |s| pre.instantiate(s),
            |b, s| b.call_shape(s, message),
        )
    }

    /// Runs `filter`.
    pub fn filter(
        &self,
        pre: &bindings::filter::EventFilterPre<Ctx>,
        call: &CallCtx,
        event: &types::Event,
        subscription: &Vec<(String, String)>,
    ) -> Result<types::FilterResult, CallError> {
        self.run(
            call,
            &call.idle.filters,
            |s| pre.instantiate(s),
            |b, s| b.call_filter(s, event, subscription),
        )
    }
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
}

/// Idle instances of one version, by world. Instances are reused while
/// they behave: a plugin's globals may persist from one call to the next
/// (never from one version or configuration to another), and a call that
/// fails drops its instance.
#[derive(Default)]
pub struct IdleInstances {
    validators: std::sync::Mutex<Vec<Idle<bindings::validator::BidValidator>>>,
    shapers: std::sync::Mutex<Vec<Idle<bindings::shaper::NotificationShaper>>>,
    filters: std::sync::Mutex<Vec<Idle<bindings::filter::EventFilter>>>,
}

/// What a call needs beyond the component: its configuration and a label for
/// its log lines.
#[derive(Clone)]
pub struct CallCtx {
    /// Read-only configuration.
    pub config: Arc<BTreeMap<String, String>>,
    /// `slot[@tenant]#version`, on every log line the plugin writes.
    pub label: Arc<str>,
    /// Instances kept between calls.
    pub idle: Arc<IdleInstances>,
}

fn instantiate_error(store: &Store<Ctx>, e: wasmtime::Error) -> CallError {
    // A start function can trap or loop too.
    if e.downcast_ref::<Trap>().is_some() || store.data().memory_exceeded {
        return classify(store, e);
    }
    CallError {
        kind: FailKind::Instantiate,
        message: format!("{e:#}"),
    }
}

fn classify(store: &Store<Ctx>, e: wasmtime::Error) -> CallError {
    let kind = if store.data().memory_exceeded {
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
    CallError { kind, message }
}
