//! Per-user and per-tenant caps on concurrent streams.
//!
//! `Caps` decides which slots a stream needs (its tenant's, and its user's
//! when signed in) and holds them in a `Lease` for the stream's life; a
//! `CapStore` counts them: `MemoryCaps` in this process (embedded mode), or
//! leases in Redis that hold across every node (cluster mode, in
//! `backend::cluster`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which cap refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The user has too many streams.
    User,
    /// The tenant has too many streams.
    Tenant,
    /// The cap could not be checked (Redis down).
    Unavailable,
}

/// Why a `CapStore` did not take the slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// The key at this index is full.
    Full(usize),
    /// The counts could not be read.
    Unavailable,
}

/// Counts of open streams per key, each under its own limit.
#[async_trait::async_trait]
pub trait CapStore: Send + Sync + 'static {
    /// Takes one slot on every key for connection `id`, or none if any key
    /// is at its limit.
    async fn acquire(&self, id: u64, keys: &[String], limits: &[u32]) -> Result<(), CapError>;
    /// Gives the connection's slots back.
    fn release(&self, id: u64, keys: Vec<String>);
}

/// Stream caps.
pub struct Caps {
    per_user: u32,
    per_tenant: u32,
    store: Arc<dyn CapStore>,
}

/// Held while a stream is open; dropping it releases the stream's slots.
pub struct Lease {
    caps: Arc<Caps>,
    id: u64,
    keys: Vec<String>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.caps
            .store
            .release(self.id, std::mem::take(&mut self.keys));
    }
}

impl Caps {
    /// Caps of `per_user` and `per_tenant` streams, counted by `store`.
    pub fn new(per_user: u32, per_tenant: u32, store: Arc<dyn CapStore>) -> Arc<Caps> {
        Arc::new(Caps {
            per_user,
            per_tenant,
            store,
        })
    }

    /// Takes a slot for a stream of `tenant` (and `user`, if signed in).
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        user: Option<&str>,
    ) -> Result<Lease, Refusal> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut keys = vec![format!("tenant:{tenant}")];
        let mut limits = vec![self.per_tenant];
        if let Some(u) = user {
            keys.push(format!("user:{tenant}:{u}"));
            limits.push(self.per_user);
        }
        match self.store.acquire(id, &keys, &limits).await {
            Ok(()) => Ok(Lease {
                caps: self.clone(),
                id,
                keys,
            }),
            Err(CapError::Full(0)) => Err(Refusal::Tenant),
            Err(CapError::Full(_)) => Err(Refusal::User),
            Err(CapError::Unavailable) => Err(Refusal::Unavailable),
        }
    }
}

/// Counts in this process.
#[derive(Default)]
pub struct MemoryCaps(Mutex<HashMap<String, u32>>);

#[async_trait::async_trait]
impl CapStore for MemoryCaps {
    async fn acquire(&self, _id: u64, keys: &[String], limits: &[u32]) -> Result<(), CapError> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (i, k) in keys.iter().enumerate() {
            if counts.get(k).copied().unwrap_or(0) >= limits[i] {
                return Err(CapError::Full(i));
            }
        }
        for k in keys {
            *counts.entry(k.clone()).or_default() += 1;
        }
        Ok(())
    }

    fn release(&self, _id: u64, keys: Vec<String>) {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for k in &keys {
            if let Some(n) = counts.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(k);
                }
            }
        }
    }
}
