//! `Plugins`: which version of which plugin answers for each slot and tenant.
//!
//! A slot's state (active version, shadow candidate, history, configuration)
//! lives in the system of record; every node applies it from there, so a
//! change made anywhere is active everywhere (cluster nodes poll the rows'
//! `rev`). Locally a version is an `Arc` swapped atomically: a call takes the
//! current `Arc` once and finishes on it, so a swap never interrupts a call
//! and every bid round is decided under exactly one version.
//!
//! Resolution: the tenant's own slot, else the default slot (`tenant = ""`),
//! else the built-in rule (validator, shaper, authorizer) or no filter at all.
//!
//! One job per file:
//! - `slot`: what one slot of one tenant holds (`SlotState`, `Version`);
//! - `stats`: call counts, errors by kind and latency of the active version;
//! - `shadow`: how a shadow candidate compares with the active version;
//! - `admin`: changes (install, rollback, promote, configure) and applying
//!   stored rows;
//! - `recorder`: stream requests recorded for `plugin replay`;
//! - `view`: what `GET /admin/plugins` and `/metrics` show;
//! - `validator`, `shaper`, `filter`, `authorizer`: the calls of each slot;
//! - `shapes`: subscription shapes (the parameters a filter declares, a cap
//!   per tenant) and replayed answers shared by streams of one shape.

mod admin;
mod authorizer;
mod filter;
mod recorder;
mod shadow;
mod shaper;
mod shapes;
mod slot;
mod stats;
mod validator;
mod view;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use super::manifest::Manifest;
use super::wasm::{Linked, WasmHost};
use super::world::{self, World};
use crate::store::plugins::PluginStore;

pub use admin::{origin_kind, By, Mode, PluginError};
pub use authorizer::{Access, StreamAuthorizer};
pub use filter::{FilterOutcome, TenantFilter};
pub use shadow::{ShadowExample, ShadowView, DISAGREEMENT_KINDS, SHADOW_EXAMPLES};
pub use shaper::outbid_input;
pub use shapes::{TooManyShapes, MAX_SHAPES_PER_TENANT, SHAPE_PARAMS_KEY};
pub use slot::{Compiling, LoadError, SlotState, Version};
pub use stats::CallStats;
pub use validator::RoundValidator;
pub use view::{ActiveView, Latency, PluginsView, SlotDetails, SlotView};

/// A slot state and the version of it that answers.
type Serving<W> = (Arc<SlotState<W>>, Arc<Version<W>>);

/// A linked component and what it declares.
type LinkedVersion<W> = (Linked<W>, Arc<Manifest>);

/// What the registry holds for one world: the slot of each tenant, and
/// the components linked for the world.
struct PerWorld<W: World> {
    /// tenant -> state.
    states: RwLock<HashMap<String, Arc<SlotState<W>>>>,
    /// Linked components by hash, with what each declares: a version is
    /// compiled once.
    linked: Mutex<HashMap<String, LinkedVersion<W>>>,
}

impl<W: World> Default for PerWorld<W> {
    fn default() -> Self {
        PerWorld {
            states: RwLock::default(),
            linked: Mutex::default(),
        }
    }
}

/// A world the registry holds: where its slots are.
trait Held: World {
    fn of(worlds: &Worlds) -> &PerWorld<Self>;
}

/// Every world's slots, each typed by its world.
#[derive(Default)]
struct Worlds {
    validator: PerWorld<world::Validator>,
    shaper: PerWorld<world::Shaper>,
    filter: PerWorld<world::Filter>,
    authorizer: PerWorld<world::Authorizer>,
}

impl Held for world::Validator {
    fn of(worlds: &Worlds) -> &PerWorld<Self> {
        &worlds.validator
    }
}
impl Held for world::Shaper {
    fn of(worlds: &Worlds) -> &PerWorld<Self> {
        &worlds.shaper
    }
}
impl Held for world::Filter {
    fn of(worlds: &Worlds) -> &PerWorld<Self> {
        &worlds.filter
    }
}
impl Held for world::Authorizer {
    fn of(worlds: &Worlds) -> &PerWorld<Self> {
        &worlds.authorizer
    }
}

struct Inner {
    wasm: WasmHost,
    db: Arc<dyn PluginStore>,
    worlds: Worlds,
    history: usize,
    /// Some event filter is active (checked per event before any lookup).
    filters: std::sync::atomic::AtomicBool,
    /// One compile at a time: a burst of uploads takes one core, not all.
    compile_gate: tokio::sync::Semaphore,
    /// Where stream requests go to be recorded, once started.
    recorder: std::sync::OnceLock<recorder::Recorder>,
    /// Subscription shapes of open streams, per tenant.
    shapes: shapes::Shapes,
    /// The event filter's answers for replayed events, per tenant.
    replay_answers: shapes::ReplayAnswers,
}

/// The plugin registry; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

pub use crate::plugins::wasm::content_hash;

impl Plugins {
    /// A registry over `db`, keeping `history` earlier versions per slot.
    pub fn new(wasm: WasmHost, db: Arc<dyn PluginStore>, history: usize) -> Plugins {
        Plugins {
            inner: Arc::new(Inner {
                wasm,
                db,
                worlds: Worlds::default(),
                history: history.max(1),
                filters: std::sync::atomic::AtomicBool::new(false),
                compile_gate: tokio::sync::Semaphore::new(1),
                recorder: std::sync::OnceLock::new(),
                shapes: Default::default(),
                replay_answers: Default::default(),
            }),
        }
    }

    /// The sandbox.
    pub fn wasm(&self) -> &WasmHost {
        &self.inner.wasm
    }

    fn slots<W: Held>(&self) -> &PerWorld<W> {
        W::of(&self.inner.worlds)
    }

    fn state<W: Held>(&self, tenant: &str) -> Arc<SlotState<W>> {
        let states = &self.slots::<W>().states;
        if let Some(s) = states.read().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            return s.clone();
        }
        states
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(SlotState::new(tenant)))
            .clone()
    }

    /// The slot state that answers for `tenant`, with its active version.
    fn resolve<W: Held>(&self, tenant: &str) -> Option<Serving<W>> {
        let states = self
            .slots::<W>()
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for key in [tenant, ""] {
            if let Some(s) = states.get(key) {
                if let Some(v) = s.active.load_full() {
                    return Some((s.clone(), v));
                }
            }
        }
        None
    }

    /// The slot state whose shadow candidate applies to `tenant`, if any:
    /// the same slot state that would answer (tenant's own, else default).
    fn shadow_of<W: Held>(&self, tenant: &str) -> Option<Serving<W>> {
        let states = self
            .slots::<W>()
            .states
            .read()
            .unwrap_or_else(|p| p.into_inner());
        for key in [tenant, ""] {
            if let Some(s) = states.get(key) {
                if let Some(v) = s.shadow.load_full() {
                    return Some((s.clone(), v));
                }
                if s.active.load().is_some() {
                    return None;
                }
            }
        }
        None
    }

    /// Whether any event filter is installed at all (a cheap check for the
    /// fan-out's hot path).
    pub fn has_filters(&self) -> bool {
        self.inner.filters.load(Ordering::Relaxed)
    }
}
