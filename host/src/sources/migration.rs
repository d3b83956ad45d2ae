//! Moving browsers over without a gap. During a Redis stream source's
//! migration window (`migration_until`), a stream's `Last-Event-ID` may be
//! an entry id of that Redis stream (`1700000000000-0`), as the SSE service
//! being replaced sent them (seed 004's `/api/realtime/stream` did). The
//! source stored each entry's event (or dead letter) under the key
//! `src {source} {stream} {entry id}` together with the event's id, in the
//! same commit (`redis_stream.rs`), so such a stream starts right after the
//! event that entry became: nothing lost, nothing repeated, as entries
//! become events in order.
//!
//! An entry the source has not committed yet (the old service read it a
//! moment before this node did) is waited for, briefly. One it never stored
//! (older than the source's group, or its key no longer kept) starts the
//! stream over with a `reset` per topic, as an id of the tenant's own that
//! it never issued does: the page refetches its state rather than silently
//! missing events. Both outcomes are counted per source.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{Kind, Sources};
use crate::event::Seq;
use crate::store::{Error, Store};

/// An entry this recent that is not stored yet may still be on its way.
const FRESH_MS: i64 = 30_000;
/// How long a stream waits for such an entry.
const WAIT: Duration = Duration::from_secs(3);
/// How often it looks again meanwhile.
const POLL: Duration = Duration::from_millis(100);

/// Where a stream with a foreign `Last-Event-ID` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Right after this event (the last one the entry became).
    After(Seq),
    /// No source in its window stored that entry: start over.
    Unknown,
}

/// Reads `migration_until` (RFC 3339, `2027-01-31T00:00:00Z`) as ms since
/// the epoch.
pub fn parse_until(t: &str) -> Result<i64, String> {
    let at = OffsetDateTime::parse(t.trim(), &Rfc3339)
        .map_err(|e| format!("{t:?} is not an RFC 3339 time (2027-01-31T00:00:00Z): {e}"))?;
    Ok((at.unix_timestamp_nanos() / 1_000_000).clamp(0, i64::MAX as i128) as i64)
}

/// The time (ms) of a Redis stream entry id (`{ms}-{seq}`, both decimal),
/// or `None` if `id` is not one.
pub fn entry_ms(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

/// The store keys under which the sources in their window at `now_ms`
/// that may publish to `tenant` would have stored `entry`, with each
/// source's index.
fn candidates(sources: &Sources, tenant: &str, entry: &str, now_ms: i64) -> Vec<(usize, String)> {
    sources
        .all
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            let spec = &s.spec;
            spec.kind == Kind::RedisStream
                && spec.migration_until_ms.is_some_and(|until| now_ms < until)
                && spec.mapping.tenant.literal().is_none_or(|t| t == tenant)
        })
        .map(|(i, s)| (i, format!("src {} {} {entry}", s.spec.name, s.spec.key)))
        .collect()
}

/// Where a stream of `tenant` whose `Last-Event-ID` is `entry` starts;
/// `None` if `entry` is no stream entry id or no source is in its window
/// (the id is then refused as any malformed one is).
pub async fn resume_point(
    sources: &Sources,
    store: &dyn Store,
    tenant: &str,
    entry: &str,
) -> Result<Option<Resume>, Error> {
    let Some(ms) = entry_ms(entry) else {
        return Ok(None);
    };
    let now = crate::event::now_ms();
    let keys = candidates(sources, tenant, entry, now);
    if keys.is_empty() {
        return Ok(None);
    }
    // Recent enough (and not from the future beyond clock skew) to be on
    // its way: wait for it; anything else is looked up once.
    let age = now.saturating_sub(ms.min(i64::MAX as u64) as i64);
    let waits = (-5_000..=FRESH_MS).contains(&age);
    let deadline = tokio::time::Instant::now() + if waits { WAIT } else { Duration::ZERO };
    loop {
        for (i, key) in &keys {
            if let Some(ids) = store.keyed_ids(tenant, key).await? {
                if let Some(last) = ids.iter().copied().max() {
                    sources.all[*i].m.resumed.inc();
                    return Ok(Some(Resume::After(last)));
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    for (i, _) in &keys {
        sources.all[*i].m.resume_unknown.inc();
    }
    tracing::info!(%tenant, %entry, "a stream's Last-Event-ID is a stream entry no source in its migration window stored; it starts over");
    Ok(Some(Resume::Unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids() {
        assert_eq!(entry_ms("1700000000000-0"), Some(1_700_000_000_000));
        assert_eq!(entry_ms("5-18446744073709551615"), Some(5));
        assert_eq!(entry_ms("42"), None);
        assert_eq!(entry_ms("-1"), None);
        assert_eq!(entry_ms("1-"), None);
        assert_eq!(entry_ms("1-2-3"), None);
        assert_eq!(entry_ms("1-x"), None);
        assert_eq!(entry_ms("+1-0"), None);
        assert_eq!(entry_ms("1-18446744073709551616"), None);
        assert_eq!(entry_ms("123456789012345678901-0"), None);
    }

    #[test]
    fn until() {
        assert_eq!(parse_until("1970-01-01T00:00:01Z"), Ok(1_000));
        assert_eq!(
            parse_until("2027-01-31T01:00:00+01:00"),
            Ok(1_801_353_600_000)
        );
        assert!(parse_until("2027-01-31").is_err());
        assert!(parse_until("tomorrow").is_err());
    }
}
