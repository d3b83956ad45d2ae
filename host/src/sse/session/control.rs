//! The frames the server sends of its own: a topic's snapshot, a reset when
//! history no longer covers a gap, and the goodbyes (`auth.expired`,
//! `shutdown`). Each frame's data is a typed struct, serialized once per
//! frame.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

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
        // Retained data is stored as compact JSON; anything else would be
        // a fault of the store (or the filter's checked output), so such a
        // snapshot is left out rather than sent broken.
        let Ok(data) = serde_json::from_str::<&RawValue>(&data) else {
            tracing::error!(topic, "retained data is not JSON; snapshot left out");
            return;
        };
        let frame = SnapshotFrame {
            tenant: &self.req.tenant,
            topic,
            kind: "snapshot",
            data,
            as_of,
            ts,
        };
        self.out
            .push_back(control(self.cursor, "snapshot", &to_json(&frame)));
    }

    pub(super) fn push_reset(&mut self, topic: &str, reason: ResetReason) {
        self.ctx.metrics.resets.inc();
        let frame = ResetFrame {
            tenant: &self.req.tenant,
            topic,
            kind: "reset",
            reason,
            resume_from: self.cursor,
        };
        self.out
            .push_back(control(self.cursor, "reset", &to_json(&frame)));
    }

    /// Ends a stream whose token has expired (`auth.expired`).
    pub(super) fn finish_expired(&mut self) {
        let frame = AuthExpiredFrame {
            tenant: &self.req.tenant,
            reason: "token expired; reconnect with a fresh token",
        };
        self.out
            .push_back(control(self.cursor, "auth.expired", &to_json(&frame)));
        self.phase = Phase::Done;
    }

    /// Ends a stream an operator closed (`switchyard.disconnected`): what was written
    /// stays written, and the frame carries the cursor to resume from.
    pub(super) fn finish_disconnected(&mut self) {
        let frame = DisconnectedFrame {
            tenant: &self.req.tenant,
            reason: "closed by an operator",
            resume_from: self.told,
        };
        self.out.push_back(control(
            self.cursor,
            "switchyard.disconnected",
            &to_json(&frame),
        ));
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
        let frame = ShutdownFrame {
            reason: "server shutting down",
            resume_from: self.told,
            reconnect_window_ms: self.ctx.reconnect_window.as_millis() as u64,
        };
        self.out
            .push_back(control(self.told, "shutdown", &to_json(&frame)));
        self.phase = Phase::Done;
    }
}

/// A server frame (`snapshot`, `reset`, `shutdown`, ...) that keeps the cursor.
fn control(cursor: Seq, kind: &str, data: &str) -> Bytes {
    encode::event(cursor, kind, data)
}

fn to_json<T: Serialize>(frame: &T) -> String {
    // Structs of strings, numbers and checked JSON: serializing cannot fail.
    serde_json::to_string(frame).unwrap_or_default()
}

/// The data of a `snapshot` frame: a topic's retained state as of an id.
#[derive(Debug, Serialize)]
pub struct SnapshotFrame<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// Always `snapshot`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The retained data (or the topic's default), as the filter left it.
    pub data: &'a RawValue,
    /// The id of the event that set it (0: a default, no event yet).
    pub as_of: Seq,
    /// When it was set, ms since the epoch.
    pub ts: i64,
}

/// Why a topic's history no longer covers a stream's cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The cursor is past the tenant's head (an id from elsewhere).
    UnknownId,
    /// Retention removed events after the cursor.
    HistoryTrimmed,
}

/// The data of a `reset` frame.
#[derive(Debug, Serialize)]
pub struct ResetFrame<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The topic whose history does not cover the cursor.
    pub topic: &'a str,
    /// Always `reset`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Why.
    pub reason: ResetReason,
    /// Where the stream goes on from.
    pub resume_from: Seq,
}

/// The data of an `auth.expired` frame (the stream's last).
#[derive(Debug, Serialize)]
pub struct AuthExpiredFrame<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// What to do.
    pub reason: &'static str,
}

/// The data of a `switchyard.disconnected` frame (the stream's last: an operator
/// closed it).
#[derive(Debug, Serialize)]
pub struct DisconnectedFrame<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Why.
    pub reason: &'static str,
    /// The last id the client was told.
    pub resume_from: Seq,
}

/// The data of a `shutdown` frame (the stream's last).
#[derive(Debug, Serialize)]
pub struct ShutdownFrame {
    /// Why.
    pub reason: &'static str,
    /// The cursor to resume from on another node.
    pub resume_from: Seq,
    /// Spread the reconnect over a random wait within this window.
    pub reconnect_window_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames' data keep the wire shape clients read.
    #[test]
    fn control_frames_keep_their_wire_shape() {
        let data: &RawValue = serde_json::from_str(r#"{"a":[1,2]}"#).expect("json");
        assert_eq!(
            to_json(&SnapshotFrame {
                tenant: "acme",
                topic: "feed:\"1\"",
                kind: "snapshot",
                data,
                as_of: 7,
                ts: 9,
            }),
            r#"{"tenant":"acme","topic":"feed:\"1\"","type":"snapshot","data":{"a":[1,2]},"as_of":7,"ts":9}"#
        );
        assert_eq!(
            to_json(&ResetFrame {
                tenant: "acme",
                topic: "t",
                kind: "reset",
                reason: ResetReason::HistoryTrimmed,
                resume_from: 3,
            }),
            r#"{"tenant":"acme","topic":"t","type":"reset","reason":"history_trimmed","resume_from":3}"#
        );
        assert_eq!(
            to_json(&ShutdownFrame {
                reason: "server shutting down",
                resume_from: 5,
                reconnect_window_ms: 5000,
            }),
            r#"{"reason":"server shutting down","resume_from":5,"reconnect_window_ms":5000}"#
        );
        assert_eq!(
            to_json(&AuthExpiredFrame {
                tenant: "acme",
                reason: "token expired; reconnect with a fresh token",
            }),
            r#"{"tenant":"acme","reason":"token expired; reconnect with a fresh token"}"#
        );
    }
}
