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
//! else the built-in rule (validator, shaper) or no filter at all.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::wasm::{bindings::types, CallCtx, CallError, FailKind, Linked, WasmHost};
use super::Slot;
use crate::store::plugins::{PluginStore, SlotChange, SlotRow};
use crate::store::Error as StoreError;

/// Upper bounds of the call-latency buckets, in microseconds.
const CALL_BUCKETS_US: [u64; 21] = [
    1, 2, 3, 4, 5, 6, 8, 10, 15, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000,
    50_000, 100_000,
];
/// Disagreement examples kept per shadow candidate.
const SHADOW_EXAMPLES: usize = 10;

/// Calls, errors and latency of one slot's active version.
#[derive(Default)]
pub struct CallStats {
    calls: AtomicU64,
    errors: [AtomicU64; FailKind::ALL.len()],
    buckets: [AtomicU64; CALL_BUCKETS_US.len()],
    sum_us: AtomicU64,
}

impl CallStats {
    fn record(&self, took: Duration, result: Result<(), FailKind>) {
        // Rounded up, so a call lands in the bucket whose bound it is under.
        let us = took.as_nanos().div_ceil(1_000) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = CALL_BUCKETS_US.iter().position(|b| us <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Err(kind) = result {
            let i = FailKind::ALL
                .iter()
                .position(|k| *k == kind)
                .expect("every kind is listed");
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Errors so far, by kind.
    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        FailKind::ALL
            .iter()
            .zip(&self.errors)
            .map(|(k, n)| (k.as_str(), n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Approximate latency quantile in microseconds (bucket upper bound).
    fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.calls();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Some(CALL_BUCKETS_US[i]);
            }
        }
        Some(u64::MAX)
    }
}

/// How a shadow candidate compares with the active version.
#[derive(Default)]
struct ShadowStats {
    compared: AtomicU64,
    disagreed: AtomicU64,
    failed: AtomicU64,
    examples: Mutex<VecDeque<Value>>,
}

/// One loaded version of a plugin.
pub struct Version {
    /// Content hash (SHA-256, hex).
    pub hash: String,
    /// Where it came from.
    pub origin: String,
    /// When it became active (or was loaded), ms since the epoch.
    pub since: i64,
    linked: Linked,
    call: CallCtx,
}

impl Version {
    /// The short form recorded on decisions: `{slot}@{first 12 hex digits}`.
    pub fn tag(&self) -> String {
        format!("{}@{}", self.linked.slot(), &self.hash[..12])
    }
}

/// Why a component was refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadError {
    /// When, ms since the epoch.
    pub at: i64,
    /// What was loaded (`file:…`, `admin`, ...).
    pub origin: String,
    /// Content hash of the refused bytes.
    pub hash: String,
    /// Why.
    pub message: String,
}

/// One slot of one tenant (`""`: the default of every tenant).
pub struct SlotState {
    tenant: String,
    slot: Slot,
    active: ArcSwapOption<Version>,
    shadow: ArcSwapOption<Version>,
    stats: CallStats,
    shadow_stats: ShadowStats,
    row: Mutex<SlotRow>,
    last_error: Mutex<Option<LoadError>>,
    /// An upload being compiled in the background.
    compiling: Mutex<Option<Compiling>>,
    swaps: AtomicU64,
}

/// An upload whose component is being compiled off the serving path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compiling {
    /// Its content hash.
    pub version: String,
    /// `active` or `shadow`.
    pub mode: &'static str,
    /// When the compile started, ms since the epoch.
    pub since: i64,
}

impl SlotState {
    fn new(tenant: &str, slot: Slot) -> SlotState {
        SlotState {
            tenant: tenant.into(),
            slot,
            active: ArcSwapOption::empty(),
            shadow: ArcSwapOption::empty(),
            stats: CallStats::default(),
            shadow_stats: ShadowStats::default(),
            row: Mutex::new(SlotRow {
                tenant: tenant.into(),
                slot: slot.as_str().into(),
                ..SlotRow::default()
            }),
            last_error: Mutex::new(None),
            compiling: Mutex::new(None),
            swaps: AtomicU64::new(0),
        }
    }

    fn label(&self) -> String {
        if self.tenant.is_empty() {
            self.slot.as_str().to_string()
        } else {
            format!("{}@{}", self.slot, self.tenant)
        }
    }
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The component was refused (does not compile, wrong world, ...).
    #[error("{0}")]
    Refused(String),
    /// The operation does not apply (no earlier version, no candidate, ...).
    #[error("{0}")]
    Conflict(String),
    /// The system of record failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for PluginError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => PluginError::Conflict(m),
            e => PluginError::Store(e),
        }
    }
}

/// Whether an upload replaces the active version or runs beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Becomes active.
    Active,
    /// Runs in shadow: verdicts recorded, not applied.
    Shadow,
}

struct Inner {
    wasm: WasmHost,
    db: Arc<dyn PluginStore>,
    /// slot -> tenant -> state.
    slots: RwLock<HashMap<Slot, HashMap<String, Arc<SlotState>>>>,
    /// Linked components by (hash, slot): a version is compiled once.
    linked: Mutex<HashMap<(String, Slot), Linked>>,
    history: usize,
    /// Some event filter is active (checked per event before any lookup).
    filters: std::sync::atomic::AtomicBool,
    /// One compile at a time: a burst of uploads takes one core, not all.
    compile_gate: tokio::sync::Semaphore,
}

/// The plugin registry; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    inner: Arc<Inner>,
}

/// The SHA-256 of a component, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plugins {
    /// A registry over `db`, keeping `history` earlier versions per slot.
    pub fn new(wasm: WasmHost, db: Arc<dyn PluginStore>, history: usize) -> Plugins {
        Plugins {
            inner: Arc::new(Inner {
                wasm,
                db,
                slots: RwLock::new(HashMap::new()),
                linked: Mutex::new(HashMap::new()),
                history: history.max(1),
                filters: std::sync::atomic::AtomicBool::new(false),
                compile_gate: tokio::sync::Semaphore::new(1),
            }),
        }
    }

    /// The sandbox.
    pub fn wasm(&self) -> &WasmHost {
        &self.inner.wasm
    }

    fn state(&self, tenant: &str, slot: Slot) -> Arc<SlotState> {
        if let Some(s) = self
            .inner
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .and_then(|m| m.get(tenant))
        {
            return s.clone();
        }
        self.inner
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(slot)
            .or_default()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(SlotState::new(tenant, slot)))
            .clone()
    }

    /// The slot state that answers for `tenant`, with its active version.
    fn resolve(&self, tenant: &str, slot: Slot) -> Option<(Arc<SlotState>, Arc<Version>)> {
        let slots = self.inner.slots.read().unwrap_or_else(|p| p.into_inner());
        let by_tenant = slots.get(&slot)?;
        for key in [tenant, ""] {
            if let Some(s) = by_tenant.get(key) {
                if let Some(v) = s.active.load_full() {
                    return Some((s.clone(), v));
                }
            }
        }
        None
    }

    /// The slot state whose shadow candidate applies to `tenant`, if any:
    /// the same slot state that would answer (tenant's own, else default).
    fn shadow_of(&self, tenant: &str, slot: Slot) -> Option<(Arc<SlotState>, Arc<Version>)> {
        let slots = self.inner.slots.read().unwrap_or_else(|p| p.into_inner());
        let by_tenant = slots.get(&slot)?;
        for key in [tenant, ""] {
            if let Some(s) = by_tenant.get(key) {
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

    /// Compiles and links `bytes` for `slot` (on a blocking thread: compiling
    /// takes milliseconds to seconds), reusing an earlier compile of the same hash.
    async fn link(&self, hash: &str, bytes: Vec<u8>, slot: Slot) -> Result<Linked, String> {
        if let Some(l) = self
            .inner
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(hash.to_string(), slot))
        {
            return Ok(l.clone());
        }
        let _gate = self.inner.compile_gate.acquire().await;
        let wasm = self.inner.wasm.clone();
        let linked = tokio::task::spawn_blocking(move || {
            let component = wasm.compile(&bytes)?;
            wasm.link(&component, slot)
        })
        .await
        .map_err(|e| format!("compile task failed: {e}"))??;
        self.inner
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((hash.to_string(), slot), linked.clone());
        Ok(linked)
    }

    async fn version_for(
        &self,
        st: &SlotState,
        hash: &str,
        origin: &str,
        since: i64,
        config: &BTreeMap<String, String>,
    ) -> Result<Arc<Version>, String> {
        let cached = self
            .inner
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(hash.to_string(), st.slot))
            .cloned();
        let linked = match cached {
            Some(l) => l,
            None => {
                let bytes = self
                    .inner
                    .db
                    .plugin_wasm(hash)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("version {hash} is missing from the store"))?;
                self.link(hash, bytes, st.slot).await?
            }
        };
        Ok(Arc::new(Version {
            hash: hash.to_string(),
            origin: origin.to_string(),
            since,
            linked,
            call: CallCtx {
                config: Arc::new(config.clone()),
                label: Arc::from(format!("{}#{}", st.label(), &hash[..12])),
                idle: Default::default(),
            },
        }))
    }

    /// Makes the local state match a stored row.
    async fn apply(&self, row: SlotRow) {
        let Some(slot) = Slot::parse(&row.slot) else {
            return;
        };
        let st = self.state(&row.tenant, slot);
        let before = st.row.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if row.rev != 0 && row.rev <= before.rev {
            return;
        }
        let config_changed = row.config != before.config;
        let active = match &row.active {
            None => None,
            Some(h)
                if Some(h) == before.active.as_ref()
                    && !config_changed
                    && st.active.load().is_some() =>
            {
                st.active.load_full()
            }
            Some(h) => {
                let origin = row.origin.clone().unwrap_or_default();
                let since = row.active_at.unwrap_or_else(crate::event::now_ms);
                match self.version_for(&st, h, &origin, since, &row.config).await {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::error!(plugin = %st.label(), version = %h, error = %e, "cannot load the stored plugin version; keeping the current one");
                        *st.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(LoadError {
                                at: crate::event::now_ms(),
                                origin: origin.clone(),
                                hash: h.clone(),
                                message: e,
                            });
                        return;
                    }
                }
            }
        };
        let shadow = match &row.shadow {
            None => None,
            Some(h) => match self
                .version_for(&st, h, "shadow", crate::event::now_ms(), &row.config)
                .await
            {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(plugin = %st.label(), version = %h, error = %e, "cannot load the shadow candidate");
                    None
                }
            },
        };
        let swapped = row.active != before.active;
        if row.shadow != before.shadow {
            st.shadow_stats.compared.store(0, Ordering::Relaxed);
            st.shadow_stats.disagreed.store(0, Ordering::Relaxed);
            st.shadow_stats.failed.store(0, Ordering::Relaxed);
            st.shadow_stats
                .examples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        st.active.store(active);
        st.shadow.store(shadow);
        if slot == Slot::EventFilter {
            let any = self
                .inner
                .slots
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&Slot::EventFilter)
                .is_some_and(|m| m.values().any(|s| s.active.load().is_some()));
            self.inner.filters.store(any, Ordering::Relaxed);
        }
        if swapped {
            st.swaps.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                plugin = %st.label(),
                version = row.active.as_deref().map(|h| &h[..12]).unwrap_or("builtin"),
                origin = row.origin.as_deref().unwrap_or(""),
                "plugin version active"
            );
        }
        *st.row.lock().unwrap_or_else(|p| p.into_inner()) = row;
    }

    /// Loads every stored slot (at start).
    pub async fn load(&self) -> Result<(), StoreError> {
        for row in self.inner.db.plugin_slots().await? {
            self.apply(row).await;
        }
        Ok(())
    }

    /// Applies rows other nodes changed; returns how many.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let revs = self.inner.db.plugin_revs().await?;
        let stale = revs.iter().any(|(tenant, slot, rev)| {
            Slot::parse(slot).is_some_and(|s| {
                self.state(tenant, s)
                    .row
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .rev
                    < *rev
            })
        });
        if !stale {
            return Ok(0);
        }
        let mut n = 0;
        for row in self.inner.db.plugin_slots().await? {
            let Some(s) = Slot::parse(&row.slot) else {
                continue;
            };
            let known = self
                .state(&row.tenant, s)
                .row
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rev;
            if row.rev > known {
                self.apply(row).await;
                n += 1;
            }
        }
        Ok(n)
    }

    fn refuse(
        &self,
        tenant: &str,
        slot: Slot,
        origin: &str,
        hash: &str,
        message: String,
    ) -> PluginError {
        let st = self.state(tenant, slot);
        tracing::error!(plugin = %st.label(), %origin, version = &hash[..12.min(hash.len())], error = %message, "plugin refused; the current version stays active");
        *st.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(LoadError {
            at: crate::event::now_ms(),
            origin: origin.to_string(),
            hash: hash.to_string(),
            message: message.clone(),
        });
        PluginError::Refused(message)
    }

    async fn update(
        &self,
        tenant: &str,
        slot: Slot,
        wasm: Option<(&str, &[u8])>,
        change: SlotChange,
    ) -> Result<SlotRow, PluginError> {
        let row = self
            .inner
            .db
            .plugin_update(tenant, slot.as_str(), wasm, change)
            .await?;
        self.apply(row.clone()).await;
        Ok(row)
    }

    /// Compiles, checks and activates (or shadows) a component. A component
    /// that does not compile or fit the slot's world is refused, recorded as
    /// the slot's last error, and changes nothing.
    pub async fn install(
        &self,
        tenant: &str,
        slot: Slot,
        bytes: Vec<u8>,
        origin: &str,
        mode: Mode,
    ) -> Result<SlotRow, PluginError> {
        let hash = content_hash(&bytes);
        if let Err(e) = self.link(&hash, bytes.clone(), slot).await {
            return Err(self.refuse(tenant, slot, origin, &hash, e));
        }
        let keep = self.inner.history;
        let (h, o) = (hash.clone(), origin.to_string());
        let change: SlotChange = Box::new(move |mut row: SlotRow| {
            match mode {
                Mode::Active => {
                    if row.active.as_deref() == Some(h.as_str()) {
                        return Ok(row);
                    }
                    if let Some(old) = row.active.take() {
                        push_history(&mut row.history, old, keep);
                    }
                    row.history.retain(|x| *x != h);
                    row.active = Some(h);
                    row.origin = Some(o);
                    row.active_at = Some(crate::event::now_ms());
                    if row.shadow == row.active {
                        row.shadow = None;
                    }
                }
                Mode::Shadow => row.shadow = Some(h),
            }
            Ok(row)
        });
        let row = self
            .update(tenant, slot, Some((&hash, &bytes)), change)
            .await?;
        *self
            .state(tenant, slot)
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        Ok(row)
    }

    /// Whether `install` of these bytes would answer at once: their compiled
    /// code is in memory or in the disk cache.
    pub fn ready(&self, bytes: &[u8], slot: Slot) -> bool {
        let hash = content_hash(bytes);
        let linked = self
            .inner
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&(hash, slot));
        linked || self.inner.wasm.is_cached(bytes)
    }

    /// Starts `install` in the background and returns the version's hash at
    /// once: the slot shows the upload under `compiling` until it is active
    /// (or refused, with the reason as its `last_error`); the old version
    /// serves meanwhile. A second upload of a version already compiling for
    /// the slot joins it.
    pub fn install_in_background(
        &self,
        tenant: &str,
        slot: Slot,
        bytes: Vec<u8>,
        origin: &str,
        mode: Mode,
    ) -> Compiling {
        let hash = content_hash(&bytes);
        let st = self.state(tenant, slot);
        let job = Compiling {
            version: hash.clone(),
            mode: match mode {
                Mode::Active => "active",
                Mode::Shadow => "shadow",
            },
            since: crate::event::now_ms(),
        };
        {
            let mut compiling = st.compiling.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = compiling.as_ref().filter(|c| c.version == hash) {
                return c.clone();
            }
            *compiling = Some(job.clone());
        }
        let (me, tenant, origin) = (self.clone(), tenant.to_string(), origin.to_string());
        tokio::spawn(async move {
            if let Err(e) = me.install(&tenant, slot, bytes, &origin, mode).await {
                tracing::debug!(%slot, %tenant, error = %e, "background plugin install ended without a change");
            }
            let mut compiling = st.compiling.lock().unwrap_or_else(|p| p.into_inner());
            if compiling.as_ref().is_some_and(|c| c.version == hash) {
                *compiling = None;
            }
        });
        job
    }

    /// Installs `bytes` as the default version of `slot` unless the slot was
    /// ever configured (the bundled example plugins).
    pub async fn install_default(&self, slot: Slot, bytes: &[u8]) -> Result<(), PluginError> {
        let hash = content_hash(bytes);
        if let Err(e) = self.link(&hash, bytes.to_vec(), slot).await {
            return Err(self.refuse("", slot, "bundled", &hash, e));
        }
        let h = hash.clone();
        let change: SlotChange = Box::new(move |mut row: SlotRow| {
            if row.rev == 0 {
                row.active = Some(h);
                row.origin = Some("bundled".into());
                row.active_at = Some(crate::event::now_ms());
            }
            Ok(row)
        });
        self.update("", slot, Some((&hash, bytes)), change).await?;
        Ok(())
    }

    /// Returns to the previous version.
    pub async fn rollback(&self, tenant: &str, slot: Slot) -> Result<SlotRow, PluginError> {
        let change: SlotChange = Box::new(|mut row: SlotRow| {
            if row.history.is_empty() {
                return Err("there is no earlier version to roll back to".into());
            }
            let prev = row.history.remove(0);
            row.active = Some(prev);
            row.origin = Some("rollback".into());
            row.active_at = Some(crate::event::now_ms());
            Ok(row)
        });
        self.update(tenant, slot, None, change).await
    }

    /// Makes the shadow candidate active.
    pub async fn promote(&self, tenant: &str, slot: Slot) -> Result<SlotRow, PluginError> {
        let keep = self.inner.history;
        let change: SlotChange = Box::new(move |mut row: SlotRow| {
            let Some(candidate) = row.shadow.take() else {
                return Err("no candidate is running in shadow".into());
            };
            if let Some(old) = row.active.take() {
                push_history(&mut row.history, old, keep);
            }
            row.history.retain(|x| *x != candidate);
            row.active = Some(candidate);
            row.origin = Some("promoted".into());
            row.active_at = Some(crate::event::now_ms());
            Ok(row)
        });
        self.update(tenant, slot, None, change).await
    }

    /// Stops the shadow candidate.
    pub async fn drop_shadow(&self, tenant: &str, slot: Slot) -> Result<SlotRow, PluginError> {
        let change: SlotChange = Box::new(|mut row: SlotRow| {
            if row.shadow.take().is_none() {
                return Err("no candidate is running in shadow".into());
            }
            Ok(row)
        });
        self.update(tenant, slot, None, change).await
    }

    /// Deactivates the slot's component: the built-in rule (or, for a
    /// tenant, the default slot) answers again. The version stays in history.
    pub async fn deactivate(&self, tenant: &str, slot: Slot) -> Result<SlotRow, PluginError> {
        let keep = self.inner.history;
        let change: SlotChange = Box::new(move |mut row: SlotRow| {
            let Some(old) = row.active.take() else {
                return Err("no component is active in this slot".into());
            };
            push_history(&mut row.history, old, keep);
            row.origin = Some("deactivated".into());
            row.active_at = Some(crate::event::now_ms());
            Ok(row)
        });
        self.update(tenant, slot, None, change).await
    }

    /// Replaces the plugin's configuration.
    pub async fn configure(
        &self,
        tenant: &str,
        slot: Slot,
        config: BTreeMap<String, String>,
    ) -> Result<SlotRow, PluginError> {
        let change: SlotChange = Box::new(move |mut row: SlotRow| {
            row.config = config;
            Ok(row)
        });
        self.update(tenant, slot, None, change).await
    }

    /// The stored row of a slot as this node last applied it.
    pub fn row(&self, tenant: &str, slot: Slot) -> SlotRow {
        self.state(tenant, slot)
            .row
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything `GET /admin/plugins` shows.
    pub fn describe(&self) -> Value {
        let slots = self.inner.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for slot in Slot::ALL {
            let mut tenants: Vec<&Arc<SlotState>> = slots
                .get(&slot)
                .map(|m| m.values().collect())
                .unwrap_or_default();
            tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
            if !tenants.iter().any(|s| s.tenant.is_empty()) {
                out.push(json!({
                    "slot": slot.as_str(), "tenant": null, "active": null,
                    "builtin": slot != Slot::EventFilter,
                }));
            }
            for s in tenants {
                out.push(describe_state(s));
            }
        }
        json!({ "slots": out })
    }

    /// Prometheus text for every slot.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let slots = self.inner.slots.read().unwrap_or_else(|p| p.into_inner());
        let mut states: Vec<&Arc<SlotState>> = slots.values().flat_map(|m| m.values()).collect();
        states.sort_by(|a, b| (a.slot, &a.tenant).cmp(&(b.slot, &b.tenant)));
        let c = &self.inner.wasm.compiles;
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_compiles_total Components compiled (not found in the code cache).\n\
             # TYPE switchyard_plugin_compiles_total counter\n\
             switchyard_plugin_compiles_total {}\n\
             # HELP switchyard_plugin_compile_seconds_total Time spent compiling components.\n\
             # TYPE switchyard_plugin_compile_seconds_total counter\n\
             switchyard_plugin_compile_seconds_total {:.6}\n\
             # HELP switchyard_plugin_cache_hits_total Components loaded from the compiled-code cache.\n\
             # TYPE switchyard_plugin_cache_hits_total counter\n\
             switchyard_plugin_cache_hits_total {}",
            c.compiled.load(Ordering::Relaxed),
            c.compile_us.load(Ordering::Relaxed) as f64 / 1e6,
            c.cache_hits.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_calls_total Calls of the active plugin version."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_calls_total counter");
        for s in &states {
            let _ = writeln!(
                out,
                "switchyard_plugin_calls_total{{{}}} {}",
                labels(s),
                s.stats.calls()
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_errors_total Failed plugin calls, by kind."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_errors_total counter");
        for s in &states {
            for (kind, n) in s.stats.errors() {
                let _ = writeln!(
                    out,
                    "switchyard_plugin_errors_total{{{},kind=\"{kind}\"}} {n}",
                    labels(s)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_swaps_total Active-version changes."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_swaps_total counter");
        for s in &states {
            let _ = writeln!(
                out,
                "switchyard_plugin_swaps_total{{{}}} {}",
                labels(s),
                s.swaps.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP switchyard_plugin_shadow_disagreements_total Shadow verdicts that differed from the active version's.");
        let _ = writeln!(
            out,
            "# TYPE switchyard_plugin_shadow_disagreements_total counter"
        );
        for s in &states {
            let _ = writeln!(
                out,
                "switchyard_plugin_shadow_disagreements_total{{{}}} {}",
                labels(s),
                s.shadow_stats.disagreed.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP switchyard_plugin_call_seconds Plugin call latency."
        );
        let _ = writeln!(out, "# TYPE switchyard_plugin_call_seconds histogram");
        for s in &states {
            let l = labels(s);
            let mut cumulative = 0;
            for (i, b) in CALL_BUCKETS_US.iter().enumerate() {
                cumulative += s.stats.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "switchyard_plugin_call_seconds_bucket{{{l},le=\"{}\"}} {cumulative}",
                    *b as f64 / 1e6
                );
            }
            let _ = writeln!(
                out,
                "switchyard_plugin_call_seconds_bucket{{{l},le=\"+Inf\"}} {}",
                s.stats.calls()
            );
            let _ = writeln!(
                out,
                "switchyard_plugin_call_seconds_sum{{{l}}} {}",
                s.stats.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "switchyard_plugin_call_seconds_count{{{l}}} {}",
                s.stats.calls()
            );
        }
    }

    // ---- calls ----------------------------------------------------------

    /// The bid validator for one decision round of `tenant`: resolved once,
    /// so every bid of the round is decided by the same version.
    pub fn validator(&self, tenant: &str) -> RoundValidator {
        RoundValidator {
            plugins: self.clone(),
            active: self.resolve(tenant, Slot::BidValidator),
            shadow: self.shadow_of(tenant, Slot::BidValidator),
        }
    }

    /// Shapes a message with the tenant's shaper; a failed call falls back to
    /// the built-in notification.
    pub fn shape(&self, msg: &crate::store::NewMessage) -> Vec<crate::store::Notification> {
        self.shape_input(
            &msg.tenant,
            || message_input(msg),
            || super::NotificationShaper::shape(&super::builtin::BuiltinShaper, msg),
            || json!({ "message_to": msg.to, "body_chars": msg.body.chars().count() }),
        )
    }

    /// Runs the tenant's shaper (and its shadow candidate) on `input`; with
    /// no shaper, or when the call fails, `builtin` answers.
    fn shape_input(
        &self,
        tenant: &str,
        input: impl FnOnce() -> types::Message,
        builtin: impl Fn() -> Vec<crate::store::Notification>,
        example: impl FnOnce() -> Value,
    ) -> Vec<crate::store::Notification> {
        let active = self.resolve(tenant, Slot::NotificationShaper);
        let shadow = self.shadow_of(tenant, Slot::NotificationShaper);
        if active.is_none() && shadow.is_none() {
            return builtin();
        }
        let input = input();
        let run = |v: &Version| -> Result<Vec<crate::store::Notification>, CallError> {
            let Linked::Shaper(pre) = &v.linked else {
                unreachable!("a shaper slot holds shapers")
            };
            let out = self.inner.wasm.shape(pre, &v.call, &input)?;
            super::convert::notifications(out)
        };
        let result = match &active {
            Some((st, v)) => match timed(&st.stats, || run(v)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(plugin = %v.call.label, kind = %input.kind, error = %e, "notification shaper failed; sending the built-in notification");
                    builtin()
                }
            },
            None => builtin(),
        };
        if let Some((st, cand)) = shadow {
            let theirs = run(&cand);
            compare(
                &st,
                example,
                super::convert::notifications_json(&result),
                theirs.map(|n| super::convert::notifications_json(&n)),
            );
        }
        result
    }

    /// The event filter for `tenant`, if a component is active for it.
    pub fn filter(&self, tenant: &str) -> Option<TenantFilter> {
        let active = self.resolve(tenant, Slot::EventFilter)?;
        Some(TenantFilter {
            plugins: self.clone(),
            active,
            shadow: self.shadow_of(tenant, Slot::EventFilter),
        })
    }

    /// Whether any event filter is installed at all (a cheap check for the
    /// fan-out's hot path).
    pub fn has_filters(&self) -> bool {
        self.inner.filters.load(Ordering::Relaxed)
    }
}

fn push_history(history: &mut Vec<String>, hash: String, keep: usize) {
    history.retain(|x| *x != hash);
    history.insert(0, hash);
    history.truncate(keep);
}

fn labels(s: &SlotState) -> String {
    format!("slot=\"{}\",tenant=\"{}\"", s.slot, s.tenant)
}

fn describe_state(s: &SlotState) -> Value {
    let row = s.row.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let active = s
        .active
        .load_full()
        .map(|v| json!({ "version": v.hash, "origin": v.origin, "loaded_at": v.since }));
    let shadow = s.shadow.load_full().map(|v| {
        let examples: Vec<Value> = s
            .shadow_stats
            .examples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        json!({
            "version": v.hash,
            "compared": s.shadow_stats.compared.load(Ordering::Relaxed),
            "disagreed": s.shadow_stats.disagreed.load(Ordering::Relaxed),
            "failed": s.shadow_stats.failed.load(Ordering::Relaxed),
            "examples": examples,
        })
    });
    json!({
        "slot": s.slot.as_str(),
        "tenant": if s.tenant.is_empty() { Value::Null } else { Value::String(s.tenant.clone()) },
        "active": active,
        "builtin": active_is_builtin(s),
        "shadow": shadow,
        "history": row.history,
        "config": row.config,
        "rev": row.rev,
        "calls": s.stats.calls(),
        "errors": s.stats.errors(),
        "latency_us": { "p50": s.stats.quantile_us(0.5), "p99": s.stats.quantile_us(0.99) },
        "swaps": s.swaps.load(Ordering::Relaxed),
        "last_error": s.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        "compiling": s.compiling.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    })
}

fn active_is_builtin(s: &SlotState) -> bool {
    s.active.load().is_none() && s.slot != Slot::EventFilter
}

fn timed<T>(stats: &CallStats, f: impl FnOnce() -> Result<T, CallError>) -> Result<T, CallError> {
    let started = Instant::now();
    let r = f();
    stats.record(
        started.elapsed(),
        r.as_ref().map(|_| ()).map_err(|e| e.kind),
    );
    r
}

/// Records a shadow comparison: `ours` is what was applied.
fn compare(
    st: &SlotState,
    input: impl FnOnce() -> Value,
    ours: Value,
    theirs: Result<Value, CallError>,
) {
    let ss = &st.shadow_stats;
    ss.compared.fetch_add(1, Ordering::Relaxed);
    let theirs = match theirs {
        Ok(v) => v,
        Err(e) => {
            ss.failed.fetch_add(1, Ordering::Relaxed);
            json!({ "error": e.to_string() })
        }
    };
    if theirs != ours {
        ss.disagreed.fetch_add(1, Ordering::Relaxed);
        let mut ex = ss.examples.lock().unwrap_or_else(|p| p.into_inner());
        if ex.len() == SHADOW_EXAMPLES {
            ex.pop_front();
        }
        ex.push_back(json!({ "input": input(), "active": ours, "candidate": theirs }));
    }
}

fn message_input(msg: &crate::store::NewMessage) -> types::Message {
    types::Message {
        id: String::new(),
        tenant: msg.tenant.clone(),
        kind: "message".into(),
        from: msg.from.clone(),
        to: msg.to.clone(),
        product_id: msg.product_id.clone(),
        body: msg.body.clone(),
        created_at: crate::event::now_ms(),
    }
}

/// What the shaper is asked about an outbid digest: a message of kind
/// `outbid` to the user, whose body is the digest as JSON
/// (`{"product_id", "title", "times", "amount", "leader"}`).
pub fn outbid_input(
    tenant: &str,
    d: &crate::bids::decision::OutbidDigest,
    now: i64,
) -> types::Message {
    types::Message {
        id: d.bid_id.clone(),
        tenant: tenant.to_string(),
        kind: "outbid".into(),
        from: String::new(),
        to: d.user.clone(),
        product_id: Some(d.product_id.clone()),
        body: json!({
            "product_id": d.product_id, "title": d.title, "times": d.times,
            "amount": d.amount, "leader": d.leader,
        })
        .to_string(),
        created_at: now,
    }
}

/// Outbid notifications of a decision round go through the tenant's
/// notification shaper (a failed call: the built-in `bid.outbid`).
impl crate::bids::decision::OutbidNotifier for Plugins {
    fn outbid(
        &self,
        tenant: &str,
        digest: &crate::bids::decision::OutbidDigest,
        now: i64,
    ) -> Vec<crate::store::Notification> {
        use crate::bids::decision::BuiltinOutbid;
        self.shape_input(
            tenant,
            || outbid_input(tenant, digest, now),
            || BuiltinOutbid.outbid(tenant, digest, now),
            || json!({ "outbid": digest.user, "product_id": digest.product_id, "times": digest.times }),
        )
    }
}

/// The validator of one decision round.
pub struct RoundValidator {
    plugins: Plugins,
    active: Option<(Arc<SlotState>, Arc<Version>)>,
    shadow: Option<(Arc<SlotState>, Arc<Version>)>,
}

impl RoundValidator {
    fn run(
        &self,
        v: &Version,
        bid: &crate::bids::Bid,
        product: &crate::bids::Product,
        now: i64,
    ) -> Result<crate::bids::decision::Verdict, CallError> {
        let Linked::Validator(pre) = &v.linked else {
            unreachable!("a validator slot holds validators")
        };
        let out = self.plugins.inner.wasm.validate(
            pre,
            &v.call,
            &super::convert::bid(bid),
            &super::convert::product(product),
            now,
        )?;
        super::convert::verdict(out, now)
    }
}

impl crate::bids::decision::BidValidator for RoundValidator {
    fn validate(
        &self,
        bid: &crate::bids::Bid,
        product: &crate::bids::Product,
        now: i64,
    ) -> crate::bids::decision::Verdict {
        use crate::bids::decision::{BuiltinValidator, Verdict};
        let verdict = match &self.active {
            None => BuiltinValidator.validate(bid, product, now),
            Some((st, v)) => match timed(&st.stats, || self.run(v, bid, product, now)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(plugin = %v.call.label, bid = %bid.id, error = %e, "bid validator failed; rejecting the bid");
                    Verdict::Reject {
                        code: "plugin_error".into(),
                        message: "the bid could not be validated; please try again".into(),
                    }
                }
            },
        };
        if let Some((st, cand)) = &self.shadow {
            let theirs = self.run(cand, bid, product, now);
            compare(
                st,
                || json!({ "bid": bid, "product": product, "now": now }),
                super::convert::verdict_json(&verdict),
                theirs.map(|v| super::convert::verdict_json(&v)),
            );
        }
        verdict
    }

    fn version(&self) -> String {
        match &self.active {
            Some((_, v)) => v.tag(),
            None => "builtin".into(),
        }
    }
}

/// What the filter decided for one event and one subscription shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterOutcome {
    /// Deliver as is.
    Pass,
    /// Do not deliver (also what a failed call means: filters fail closed).
    Drop,
    /// Deliver with this data (JSON text).
    Replace(String),
}

/// A tenant's event filter, resolved for a batch of events.
pub struct TenantFilter {
    plugins: Plugins,
    active: (Arc<SlotState>, Arc<Version>),
    shadow: Option<(Arc<SlotState>, Arc<Version>)>,
}

impl TenantFilter {
    fn run(
        &self,
        v: &Version,
        event: &types::Event,
        shape: &Vec<(String, String)>,
    ) -> Result<FilterOutcome, CallError> {
        let Linked::Filter(pre) = &v.linked else {
            unreachable!("a filter slot holds filters")
        };
        let out = self.plugins.inner.wasm.filter(pre, &v.call, event, shape)?;
        super::convert::filter_result(out)
    }

    /// Filters one event for one shape. `event` is built once per event by
    /// the caller (`convert::event`).
    pub fn apply(&self, event: &types::Event, shape: &Vec<(String, String)>) -> FilterOutcome {
        let (st, v) = &self.active;
        let outcome = match timed(&st.stats, || self.run(v, event, shape)) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(plugin = %v.call.label, event = %event.id, error = %e, "event filter failed; not delivering the event to this subscription");
                FilterOutcome::Drop
            }
        };
        if let Some((sst, cand)) = &self.shadow {
            let theirs = self.run(cand, event, shape);
            compare(
                sst,
                || json!({ "event": event.id, "topic": event.topic, "subscription": shape }),
                super::convert::filter_json(&outcome),
                theirs.map(|o| super::convert::filter_json(&o)),
            );
        }
        outcome
    }

    /// The active version's tag.
    pub fn version(&self) -> String {
        self.active.1.tag()
    }
}
