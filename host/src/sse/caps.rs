//! Per-user and per-tenant caps on concurrent streams, and a budget of
//! their own for anonymous ones.
//!
//! `Caps` decides which slots a stream needs and holds them in a `Lease` for
//! the stream's life: a signed-in stream (a client, publisher or admin
//! token) takes one of its tenant's and, for a user, one of the user's; an
//! anonymous stream takes one of its tenant's anonymous budget and one of
//! its client address's, so anonymous readers can neither lock a tenant's
//! users out nor one address take a tenant's whole anonymous budget. A
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
    /// The tenant has too many anonymous streams.
    AnonymousTenant,
    /// The client address has too many anonymous streams.
    Address,
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
    limits: CapLimits,
    store: Arc<dyn CapStore>,
}

/// The caps' limits.
#[derive(Debug, Clone, Copy)]
pub struct CapLimits {
    /// Streams per user.
    pub per_user: u32,
    /// Signed-in streams per tenant.
    pub per_tenant: u32,
    /// Anonymous streams per tenant.
    pub anonymous_per_tenant: u32,
    /// Anonymous streams per client address.
    pub per_address: u32,
}

/// Who holds a stream, as the caps count it.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// A user's client token.
    User(&'a str),
    /// A token that is no user's (publisher, admin).
    Service,
    /// No token, from this client address.
    Anonymous(std::net::IpAddr),
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
    /// Caps of `limits`, counted by `store`.
    pub fn new(limits: CapLimits, store: Arc<dyn CapStore>) -> Arc<Caps> {
        Arc::new(Caps { limits, store })
    }

    /// Takes the slots of a stream of `tenant` held by `holder`.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &str,
        holder: Holder<'_>,
    ) -> Result<Lease, Refusal> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let l = self.limits;
        let (keys, limits, refusals) = match holder {
            Holder::User(u) => (
                vec![
                    format!("tenant:{{{tenant}}}"),
                    format!("user:{{{tenant}}}:{u}"),
                ],
                vec![l.per_tenant, l.per_user],
                [Refusal::Tenant, Refusal::User],
            ),
            Holder::Service => (
                vec![format!("tenant:{{{tenant}}}")],
                vec![l.per_tenant],
                [Refusal::Tenant, Refusal::Tenant],
            ),
            // The address key is not per tenant: one address reading many
            // tenants is still one client. Each key's hash tag (`{…}`) is
            // what a Redis Cluster places it by: a tenant's keys together.
            Holder::Anonymous(addr) => (
                vec![format!("anon:{{{tenant}}}"), format!("addr:{{{addr}}}")],
                vec![l.anonymous_per_tenant, l.per_address],
                [Refusal::AnonymousTenant, Refusal::Address],
            ),
        };
        match self.store.acquire(id, &keys, &limits).await {
            Ok(()) => Ok(Lease {
                caps: self.clone(),
                id,
                keys,
            }),
            Err(CapError::Full(i)) => Err(refusals[i.min(1)]),
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
