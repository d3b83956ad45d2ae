//! The frames the server sends of its own: a topic's snapshot, a reset when
//! history no longer covers a gap, and the goodbyes (`shutdown`).

use std::borrow::Cow;

use bytes::Bytes;

use super::{Phase, Session};
use crate::event::Seq;
use crate::sse::encode;
use crate::store::Retained;

impl Session {
    pub(super) fn push_snapshot(&mut self, topic: &str, retained: Option<&Retained>) {
        let (data, as_of, ts) = match retained {
            Some(r) => (r.data.as_str(), r.seq, r.ts),
            None => match self.req.defaults.iter().find(|(t, _)| t == topic) {
                Some((_, d)) => (d.as_str(), 0, crate::event::now_ms()),
                None => return,
            },
        };
        // The event filter sees a snapshot too (`snapshot_data`), so a
        // redacting filter redacts the state.
        let data = match self.ctx.plugins.filter(&self.req.tenant) {
            None => Cow::Borrowed(data),
            Some(f) => {
                match f.snapshot_data(&self.req.tenant, topic, as_of, data, ts, &self.req.shape) {
                    Some(d) => d,
                    None => return,
                }
            }
        };
        let data = format!(
            "{{\"tenant\":{},\"topic\":{},\"type\":\"snapshot\",\"data\":{},\"as_of\":{},\"ts\":{}}}",
            json_str(&self.req.tenant),
            json_str(topic),
            data,
            as_of,
            ts
        );
        self.out.push_back(control(self.cursor, "snapshot", &data));
    }

    pub(super) fn push_reset(&mut self, topic: &str, reason: &str) {
        self.ctx.metrics.resets.inc();
        let data = format!(
            "{{\"tenant\":{},\"topic\":{},\"type\":\"reset\",\"reason\":\"{reason}\",\"resume_from\":{}}}",
            json_str(&self.req.tenant),
            json_str(topic),
            self.cursor
        );
        self.out.push_back(control(self.cursor, "reset", &data));
    }

    /// Ends a stream whose token has expired (`auth.expired`).
    pub(super) fn finish_expired(&mut self) {
        let data = format!(
            "{{\"tenant\":{},\"reason\":\"token expired; reconnect with a fresh token\"}}",
            json_str(&self.req.tenant)
        );
        self.out
            .push_back(control(self.cursor, "auth.expired", &data));
        self.phase = Phase::Done;
    }

    /// Flushes what is already queued, then says goodbye.
    pub(super) fn finish_shutdown(&mut self) {
        if !self.sub.lagged() {
            let mut sent = 0;
            while let Some(f) = self.sub.try_recv() {
                sent += self.offer(&f) as u64;
            }
            self.ctx.metrics.events_sent.add(sent);
        }
        // The window lets this node's clients land on the others spread
        // out, each after a random wait within it, instead of all at once.
        let data = format!(
            "{{\"reason\":\"server shutting down\",\"resume_from\":{},\"reconnect_window_ms\":{}}}",
            self.told,
            self.ctx.reconnect_window.as_millis()
        );
        self.out.push_back(control(self.told, "shutdown", &data));
        self.phase = Phase::Done;
    }
}

/// A server frame (`snapshot`, `reset`, `shutdown`, ...) that keeps the cursor.
fn control(cursor: Seq, kind: &str, data: &str) -> Bytes {
    encode::event(cursor, kind, data)
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}
