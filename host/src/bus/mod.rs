//! Moving committed events to subscribers, on this node and on every other.
//!
//! - `publisher`: the group-commit appender every producer goes through.
//! - `hub`: this node's subscribers, ordered per tenant, one queue each, and
//!   the per-tenant filter lanes, where live events meet the event filter off
//!   the dispatcher.
//! - `Fanout`: how committed events reach every node's hub: `memory` (one
//!   node); cluster mode's Redis Stream is in `backend::cluster::fanout`.
//! - `retention`: bounds each topic's history by count and age.

pub mod hub;
pub mod memory;
pub mod publisher;
pub mod retention;

use crate::event::StoredEvent;

/// Carries committed events to the hubs of every node, this one included.
///
/// `publish` never waits on the network: a node whose bus is down still
/// serves its own subscribers, and every node's tail check fills what the bus
/// did not carry from the store.
pub trait Fanout: Send + Sync + 'static {
    /// Hands committed events (in commit order) to every node.
    fn publish(&self, events: &[StoredEvent]);
}
