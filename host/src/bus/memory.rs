//! `MemoryFanout`: embedded mode's bus; there is only this node's hub.

use super::hub::Hub;
use super::Fanout;
use crate::event::StoredEvent;

/// In-process fan-out.
pub struct MemoryFanout {
    hub: Hub,
}

impl MemoryFanout {
    /// Fan-out to `hub` alone.
    pub fn new(hub: Hub) -> Self {
        MemoryFanout { hub }
    }
}

impl Fanout for MemoryFanout {
    fn publish(&self, events: &[StoredEvent]) {
        self.hub.deliver(events.to_vec());
    }
}
