//! Changes to a slot (install, rollback, promote, drop the candidate,
//! deactivate, configure), each one transaction on the stored row, and
//! applying stored rows to this node (at start, after a change, on sync).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::slot::{Compiling, LoadError, SlotInfo, SlotState, Version};
use super::{content_hash, Held, LinkedVersion, Plugins};
use crate::plugins::wasm::{CallCtx, HostError};
use crate::plugins::world::{by_world, Filter};
use crate::plugins::Slot;
use crate::store::plugins::{Refusal, SlotChange, SlotRow, UploadRow};
use crate::store::Error as StoreError;

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
            StoreError::Conflict(reason) => PluginError::Conflict(reason.to_string()),
            e => PluginError::Store(e),
        }
    }
}

/// Why a stored version cannot be loaded on this node.
#[derive(Debug, thiserror::Error)]
enum VersionError {
    /// The system of record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No row holds the version's bytes.
    #[error("version {0} is missing from the store")]
    Missing(String),
    /// It does not compile or link here.
    #[error(transparent)]
    Component(#[from] HostError),
}

/// Whether an upload replaces the active version or runs beside it
/// (`active` or `shadow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(as = PluginMode, rename_all = "lowercase")]
pub enum Mode {
    /// Becomes active.
    Active,
    /// Runs in shadow: verdicts recorded, not applied.
    Shadow,
}

impl Plugins {
    /// What a slot holds whatever its world.
    fn info(&self, tenant: &str, slot: Slot) -> Arc<SlotInfo> {
        by_world!(slot, W => self.state::<W>(tenant).info.clone())
    }

    /// Compiles and links `bytes` for world `W` (on a blocking thread:
    /// compiling takes milliseconds to seconds), reusing an earlier compile
    /// of the same hash.
    async fn link<W: Held>(
        &self,
        hash: &str,
        bytes: Vec<u8>,
    ) -> Result<LinkedVersion<W>, HostError> {
        if let Some(l) = self
            .slots::<W>()
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
        {
            return Ok(l.clone());
        }
        let _gate = self.inner.compile_gate.acquire().await;
        let wasm = self.inner.wasm.clone();
        let linked = tokio::task::spawn_blocking(move || {
            let manifest = Arc::new(crate::plugins::manifest::read(&bytes));
            let component = wasm.compile(&bytes)?;
            Ok::<_, HostError>((wasm.link::<W>(&component)?, manifest))
        })
        .await
        .map_err(|e| HostError::Task(e.to_string()))??;
        self.slots::<W>()
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(hash.to_string(), linked.clone());
        Ok(linked)
    }

    /// Whether `bytes` compile and fit `slot`'s world (linked once, kept
    /// for the version that will use them).
    async fn link_for(&self, slot: Slot, hash: &str, bytes: Vec<u8>) -> Result<(), HostError> {
        by_world!(slot, W => self.link::<W>(hash, bytes).await.map(drop))
    }

    async fn version_for<W: Held>(
        &self,
        st: &SlotState<W>,
        hash: &str,
        origin: &str,
        since: i64,
        config: &BTreeMap<String, String>,
    ) -> Result<Arc<Version<W>>, VersionError> {
        let cached = self
            .slots::<W>()
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned();
        let (linked, manifest) = match cached {
            Some(l) => l,
            None => {
                let bytes = self
                    .inner
                    .db
                    .plugin_wasm(hash)
                    .await?
                    .ok_or_else(|| VersionError::Missing(hash.to_string()))?;
                self.link::<W>(hash, bytes).await?
            }
        };
        // What the component declares applies unless the slot's
        // configuration says otherwise.
        let mut config = config.clone();
        if let Some(names) = &manifest.shape_params {
            config
                .entry(super::shapes::SHAPE_PARAMS_KEY.to_string())
                .or_insert_with(|| names.clone());
        }
        let label = format!("{}#{}", st.label(), &hash[..12]);
        crate::plugins::logs::secrets(&label, config.values().cloned());
        Ok(Arc::new(Version {
            hash: hash.to_string(),
            origin: origin.to_string(),
            since,
            linked,
            call: CallCtx::new(config, label),
        }))
    }

    /// Makes the local state match a stored row.
    async fn apply(&self, row: SlotRow) {
        let Some(slot) = Slot::parse(&row.slot) else {
            return;
        };
        by_world!(slot, W => self.apply_to::<W>(row).await)
    }

    /// Makes the local state of a slot of world `W` match a stored row.
    async fn apply_to<W: Held>(&self, row: SlotRow) {
        let st = self.state::<W>(&row.tenant);
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
                                message: e.to_string(),
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
            st.shadow_stats.reset();
        }
        st.active.store(active);
        st.shadow.store(shadow);
        if W::SLOT == Slot::EventFilter {
            let any = self
                .slots::<Filter>()
                .states
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|s| s.active.load().is_some());
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
                self.info(tenant, s)
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
                .info(&row.tenant, s)
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
        error: HostError,
    ) -> PluginError {
        let message = error.to_string();
        let st = self.info(tenant, slot);
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
        self.install_as(tenant, slot, bytes, origin, mode, &By::default())
            .await
    }

    /// [`Plugins::install`] on behalf of `by`; either way the slot's upload
    /// history records it (installed, or refused with the error).
    pub async fn install_as(
        &self,
        tenant: &str,
        slot: Slot,
        bytes: Vec<u8>,
        origin: &str,
        mode: Mode,
        by: &By,
    ) -> Result<SlotRow, PluginError> {
        let hash = content_hash(&bytes);
        let r = self
            .install_checked(tenant, slot, bytes, origin, mode)
            .await;
        let error = match &r {
            Ok(_) => None,
            Err(PluginError::Store(_)) => return r,
            Err(e) => Some(e.to_string()),
        };
        let row = UploadRow {
            id: 0,
            at: crate::event::now_ms(),
            tenant: tenant.to_string(),
            slot: slot.as_str().to_string(),
            hash,
            origin: origin_kind(origin).to_string(),
            actor: by.actor.clone(),
            message: by.message.clone(),
            mode: match mode {
                Mode::Active => "active",
                Mode::Shadow => "shadow",
            }
            .to_string(),
            outcome: if error.is_some() {
                "refused"
            } else {
                "installed"
            }
            .to_string(),
            error,
        };
        if let Err(e) = self.inner.db.record_upload(row).await {
            tracing::error!(%slot, %tenant, error = %e, "cannot record the upload in the slot's history");
        }
        r
    }

    async fn install_checked(
        &self,
        tenant: &str,
        slot: Slot,
        bytes: Vec<u8>,
        origin: &str,
        mode: Mode,
    ) -> Result<SlotRow, PluginError> {
        let hash = content_hash(&bytes);
        if let Err(e) = self.link_for(slot, &hash, bytes.clone()).await {
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
            .info(tenant, slot)
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        Ok(row)
    }

    /// Whether `install` of these bytes would answer at once: their compiled
    /// code is in memory or in the disk cache.
    pub fn ready(&self, bytes: &[u8], slot: Slot) -> bool {
        let hash = content_hash(bytes);
        let linked = by_world!(slot, W => self
            .slots::<W>()
            .linked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&hash));
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
        by: By,
    ) -> Compiling {
        let hash = content_hash(&bytes);
        let st = self.info(tenant, slot);
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
            if let Err(e) = me
                .install_as(&tenant, slot, bytes, &origin, mode, &by)
                .await
            {
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
        if let Err(e) = self.link_for(slot, &hash, bytes.to_vec()).await {
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
        let row = self.update("", slot, Some((&hash, bytes)), change).await?;
        if row.rev == 1 {
            let upload = UploadRow {
                at: crate::event::now_ms(),
                slot: slot.as_str().to_string(),
                hash,
                origin: "bundled".into(),
                mode: "active".into(),
                outcome: "installed".into(),
                ..UploadRow::default()
            };
            if let Err(e) = self.inner.db.record_upload(upload).await {
                tracing::error!(%slot, error = %e, "cannot record the bundled plugin in the slot's history");
            }
        }
        Ok(())
    }

    /// Returns to the previous version.
    pub async fn rollback(&self, tenant: &str, slot: Slot) -> Result<SlotRow, PluginError> {
        self.rollback_to(tenant, slot, None).await
    }

    /// Returns to `version`, one of the slot's earlier versions (`None`: the
    /// previous one). The active version goes into the history in its place.
    pub async fn rollback_to(
        &self,
        tenant: &str,
        slot: Slot,
        version: Option<String>,
    ) -> Result<SlotRow, PluginError> {
        let keep = self.inner.history;
        let change: SlotChange = Box::new(move |mut row: SlotRow| {
            if row.history.is_empty() {
                return Err(Refusal("there is no earlier version to roll back to"));
            }
            let at = match &version {
                None => 0,
                Some(v) => row.history.iter().position(|h| h == v).ok_or(Refusal(
                    "that version is not one of the slot's earlier versions",
                ))?,
            };
            let prev = row.history.remove(at);
            if at > 0 {
                if let Some(old) = row.active.take() {
                    push_history(&mut row.history, old, keep);
                }
            }
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
                return Err(Refusal("no candidate is running in shadow"));
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
                return Err(Refusal("no candidate is running in shadow"));
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
                return Err(Refusal("no component is active in this slot"));
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
        self.info(tenant, slot)
            .row
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Who gave a slot a component, for its upload history.
#[derive(Debug, Clone, Default)]
pub struct By {
    /// `admin` or `operator:{subject}`; none for the watched dir.
    pub actor: Option<String>,
    /// The operator's message.
    pub message: Option<String>,
}

/// An install's origin as the upload history names it: `upload`,
/// `watched` (a `file:` origin) or `bundled`.
pub fn origin_kind(origin: &str) -> &'static str {
    if origin.starts_with("file:") {
        "watched"
    } else if origin == "bundled" {
        "bundled"
    } else {
        "upload"
    }
}

fn push_history(history: &mut Vec<String>, hash: String, keep: usize) {
    history.retain(|x| *x != hash);
    history.insert(0, hash);
    history.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::push_history;

    #[test]
    fn history_is_newest_first_without_repeats_and_bounded() {
        let mut h = Vec::new();
        for v in ["a", "b", "c", "b"] {
            push_history(&mut h, v.to_string(), 3);
        }
        assert_eq!(h, ["b", "c", "a"]);
        push_history(&mut h, "d".into(), 3);
        assert_eq!(h, ["d", "b", "c"]);
    }
}
