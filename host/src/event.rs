//! Events, topics and the names they are made of, with their validation rules.
//!
//! An event is serialized to its JSON text exactly once, when it is appended
//! to the log; the log, the fan-out, REST and SSE all carry that text.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

/// A per-tenant sequence number: the event id, ordered, gapless, the same on
/// every node, and the whole `Last-Event-ID` cursor of a stream.
pub type Seq = u64;

/// The largest id there can be: ids are stored as signed 64-bit integers
/// (SQLite `INTEGER`, Postgres `bigint`).
pub const MAX_SEQ: Seq = i64::MAX as Seq;

/// Parses a decimal id as a client sends it (`Last-Event-ID`, `after=`):
/// anything but a number from 0 to `MAX_SEQ` in ASCII digits is refused
/// (no sign, which `u64::from_str` would take), so no cursor can wrap to a
/// negative one in the store and read from the start.
pub fn parse_seq(s: &str) -> Option<Seq> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<Seq>().ok().filter(|v| *v <= MAX_SEQ)
}

/// An event as a producer hands it in, before it has an id.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Tenant slug.
    pub tenant: String,
    /// Validated topic name.
    pub topic: String,
    /// Validated event type.
    pub kind: String,
    /// Compact JSON text of the data (no raw newlines: safe on an SSE `data:` line).
    pub data: String,
    /// Also keep `data` as the topic's current state (its `snapshot`).
    pub retain: bool,
}

/// An event as stored in the log.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Id within the tenant.
    pub seq: Seq,
    /// Tenant slug.
    pub tenant: Arc<str>,
    /// Topic name.
    pub topic: String,
    /// Event type.
    pub kind: String,
    /// The event's JSON text: `{id, tenant, topic, type, data, ts}`.
    pub json: String,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
}

/// An event as it is stored, served over REST and sent on a stream.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Event)]
pub struct EventJson<'a> {
    /// An event id: ordered within the tenant, usable as `Last-Event-ID` on
    /// any node.
    #[schema(value_type = u64, minimum = 0)]
    id: Seq,
    tenant: &'a str,
    topic: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[schema(value_type = serde_json::Value)]
    data: &'a RawValue,
    /// Milliseconds since the Unix epoch.
    ts: i64,
}

/// Renders an event's JSON text once, at append.
pub fn event_json(seq: Seq, tenant: &str, topic: &str, kind: &str, data: &str, ts: i64) -> String {
    // `data` was produced by serde_json in compact form, so it is valid JSON.
    let data = RawValue::from_string(data.to_string())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is valid JSON"));
    serde_json::to_string(&EventJson {
        id: seq,
        tenant,
        topic,
        kind,
        data: &data,
        ts,
    })
    .expect("serializing strings and numbers cannot fail")
}

/// The `data` member of an event JSON as [`event_json`] renders it, found
/// without parsing: the text between the `"data"` key and the final `"ts"`
/// member. `None` when `json` is not in that form (the caller then parses).
///
/// The first `,"data":` is the key itself: the members before it are a
/// number and strings, and a JSON string cannot hold `,"` followed by more
/// text before its closing quote. The last `,"ts":` followed only by an
/// integer and `}` is the final member, whatever `data` holds.
pub fn data_of(json: &str) -> Option<&str> {
    if !json.starts_with("{\"id\":") {
        return None;
    }
    let start = json.find(",\"data\":")? + ",\"data\":".len();
    let end = json.rfind(",\"ts\":")?;
    let ts = json[end + ",\"ts\":".len()..].strip_suffix('}')?;
    let digits = ts.strip_prefix('-').unwrap_or(ts);
    if end <= start || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(&json[start..end])
}

/// An event ready to write to any number of SSE connections: its frame is
/// built once and shared (`Bytes` clones are reference counts).
#[derive(Debug)]
pub struct Frame {
    /// Id within the tenant.
    pub seq: Seq,
    /// Topic, for per-topic skipping during reset.
    pub topic: Box<str>,
    /// Event type, for `events=` filtering.
    pub kind: Box<str>,
    /// `id:`, `event:` and `data:` lines and the blank line.
    pub bytes: Bytes,
    /// Where the `event:` line starts and ends in `bytes`
    /// (`sse::encode::event_line`); equal for a frame without one.
    pub event_line: (u32, u32),
}

/// How a stream writes event frames: `frames=` of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameForm {
    /// `id:`, `event: TYPE`, `data:` (the default): a browser's
    /// `EventSource` hands an event only to a listener for its type.
    #[default]
    Named,
    /// `id:` and `data:` only (`frames=message`): `EventSource` hands every
    /// event to `onmessage`, the type being in the event JSON. The server's
    /// own frames (`heartbeat`, `snapshot`, `reset`, `auth.expired`,
    /// `shutdown`) keep their names.
    Message,
}

impl Frame {
    /// Builds the frame for a stored event.
    pub fn from_parts(seq: Seq, topic: &str, kind: &str, json: &str) -> Frame {
        let (start, end) = crate::sse::encode::event_line(seq, kind);
        Frame {
            seq,
            topic: topic.into(),
            kind: kind.into(),
            bytes: crate::sse::encode::event(seq, kind, json),
            event_line: (start as u32, end as u32),
        }
    }

    /// The bytes before and after the part a stream of `form` leaves out:
    /// for a named stream the whole buffer (and nothing), for a message
    /// stream the two sides of its `event:` line.
    fn cut(&self, form: FrameForm) -> (usize, usize) {
        match form {
            FrameForm::Named => (0, 0),
            FrameForm::Message => (self.event_line.0 as usize, self.event_line.1 as usize),
        }
    }

    /// What a stream of `form` writes, borrowed (for a write that copies
    /// them out): the whole buffer, or the bytes before and after its
    /// `event:` line. The second is empty for a named stream.
    pub fn slices(&self, form: FrameForm) -> [&[u8]; 2] {
        let (start, end) = self.cut(form);
        if start == end {
            return [&self.bytes[..], &[]];
        }
        [&self.bytes[..start], &self.bytes[end..]]
    }

    /// How many bytes a stream of `form` writes of this frame.
    pub fn len_for(&self, form: FrameForm) -> usize {
        let (start, end) = self.cut(form);
        self.bytes.len() - (end - start)
    }

    /// Queues what a stream of `form` writes of this frame past its first
    /// `skip` bytes (what a write already took): shared slices of the one
    /// buffer (reference counts, no copy). Nothing empty is queued.
    pub fn push_to(&self, form: FrameForm, skip: usize, out: &mut VecDeque<Bytes>) {
        let (start, end) = self.cut(form);
        if skip == 0 && start == end {
            out.push_back(self.bytes.clone());
            return;
        }
        if skip < start {
            out.push_back(self.bytes.slice(skip..start));
        }
        let from = end + skip.saturating_sub(start);
        if from < self.bytes.len() {
            out.push_back(self.bytes.slice(from..));
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The member set of a topic, the retained state of its `T~members`
/// topic: the fold of its events (`member.joined`, `member.left`,
/// `members.truncated`, and `presence.reset`, which replaces the set) in id
/// order. Each event carries `v`, a number the
/// place that decided the transition gives it, rising per topic; an event
/// whose `v` is not above the set's was decided before the one the set
/// already holds (two nodes' appends may commit in either order) and
/// changes nothing. Clients fold the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemberSet {
    /// The members, in the order they joined.
    pub members: Vec<Member>,
    /// More users came than the topic's cap of members: the set is empty
    /// and only counts are kept (`T~occupancy`) until the topic empties.
    pub truncated: bool,
    /// The `v` of the last event folded.
    pub v: u64,
}

/// One member of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Member {
    /// The user id.
    pub user: String,
    /// The configured claims of the user's token.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl MemberSet {
    /// Folds one event of the members topic. A `presence.reset` carries a
    /// whole set (its members, `truncated` and `v`) and replaces this one.
    pub fn apply(&mut self, kind: &str, data: &str) {
        if kind == "presence.reset" {
            if let Ok(set) = serde_json::from_str::<MemberSet>(data) {
                if set.v > self.v {
                    *self = set;
                }
            }
            return;
        }
        #[derive(serde::Deserialize)]
        struct Change {
            v: u64,
            #[serde(default)]
            user: Option<String>,
            #[serde(default)]
            claims: serde_json::Map<String, serde_json::Value>,
        }
        let Ok(c) = serde_json::from_str::<Change>(data) else {
            return;
        };
        if c.v <= self.v {
            return;
        }
        self.v = c.v;
        match (kind, c.user) {
            ("member.joined", Some(user)) => {
                self.truncated = false;
                match self.members.iter_mut().find(|m| m.user == user) {
                    Some(m) => m.claims = c.claims,
                    None => self.members.push(Member {
                        user,
                        claims: c.claims,
                    }),
                }
            }
            ("member.left", Some(user)) => self.members.retain(|m| m.user != user),
            ("members.truncated", _) => {
                self.members.clear();
                self.truncated = true;
            }
            _ => {}
        }
    }

    /// The set folded from `state` (a retained state, if any) and `events`
    /// (type and data), as JSON text.
    pub fn fold<'a>(
        state: Option<&str>,
        events: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> String {
        let mut set: MemberSet = state
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for (kind, data) in events {
            set.apply(kind, data);
        }
        serde_json::to_string(&set).expect("strings and maps serialize")
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NameError(pub String);

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')
}

/// Checks a tenant slug: 1 to 63 of `a-z`, `0-9`, `-`, starting alphanumeric.
pub fn validate_slug(slug: &str) -> Result<(), NameError> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(NameError(format!(
            "tenant slug {slug:?} must be 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )))
    }
}

/// The kinds of topic, each with its own access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// `global`: tenant-wide, public.
    Global,
    /// `tenant:{slug}`: broadcasts of the named tenant, which must be the request's.
    Tenant,
    /// `product:{id}`: public bid activity.
    Product,
    /// `user:{id}`: private to that user.
    User,
    /// Any other `{kind}:{id}`: public, producer-defined.
    Custom,
    /// `{topic}~occupancy` or `{topic}~members`: the presence of a topic,
    /// written by the server only and readable by whoever may read the
    /// topic ([`derived`] names it).
    Derived,
}

/// What a derived topic tells of its base topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// `{topic}~occupancy`: open streams and distinct users, a retained
    /// `occupancy` event.
    Occupancy,
    /// `{topic}~members`: `member.joined`, `member.left`,
    /// `members.truncated`; the retained state is the member set.
    Members,
    /// `tenant:{slug}~lifecycle` only: `topic.occupied`, `topic.vacated`,
    /// `user.online`, `user.offline` of the whole tenant, for backends.
    Lifecycle,
    /// `tenant:{slug}~deadletters` only: `source.dead_letter`, a message a
    /// source could not publish (the reason and the raw message), for
    /// backends.
    DeadLetters,
}

impl Derived {
    /// The suffix after `~`.
    pub fn suffix(self) -> &'static str {
        match self {
            Derived::Occupancy => "occupancy",
            Derived::Members => "members",
            Derived::Lifecycle => "lifecycle",
            Derived::DeadLetters => "deadletters",
        }
    }

    /// The derived topic of `base`.
    pub fn of(self, base: &str) -> String {
        format!("{base}~{}", self.suffix())
    }
}

/// The base topic and what a derived topic (`T~occupancy`, `T~members`)
/// tells of it; `None` for any other name (which [`classify_topic`] may
/// still refuse). The base is not checked here.
pub fn derived(topic: &str) -> Option<(&str, Derived)> {
    let (base, suffix) = topic.rsplit_once('~')?;
    match suffix {
        "occupancy" => Some((base, Derived::Occupancy)),
        "members" => Some((base, Derived::Members)),
        "lifecycle" => Some((base, Derived::Lifecycle)),
        "deadletters" => Some((base, Derived::DeadLetters)),
        _ => None,
    }
}

/// Checks a topic name and says what kind it is.
///
/// A topic is `global` or `{kind}:{id}`: `kind` is 1 to 32 of `a-z`, `0-9`,
/// `_`, `-` starting with a letter; `id` is 1 to 128 of letters, digits,
/// `-`, `_`, `.`, `@`. Nothing else, so no name can smuggle a newline or a
/// separator into a frame, a Redis key or a log line. Such a topic `T`
/// (not a `user:` one) has derived topics `T~occupancy` and `T~members`
/// ([`TopicKind::Derived`]).
pub fn classify_topic(topic: &str) -> Result<TopicKind, NameError> {
    if let Some((base, d)) = derived(topic) {
        // One level only, and never of a user's private topic; a tenant's
        // lifecycle is of its broadcast topic only.
        return match classify_base(base)? {
            TopicKind::Tenant => Ok(TopicKind::Derived),
            _ if d == Derived::Lifecycle => Err(NameError(format!(
                "topic {topic:?}: only `tenant:{{slug}}` has a lifecycle topic"
            ))),
            _ if d == Derived::DeadLetters => Err(NameError(format!(
                "topic {topic:?}: only `tenant:{{slug}}` has a dead-letter topic"
            ))),
            TopicKind::User => Err(NameError(format!(
                "topic {topic:?}: `user:` topics have no presence"
            ))),
            _ => Ok(TopicKind::Derived),
        };
    }
    classify_base(topic)
}

fn classify_base(topic: &str) -> Result<TopicKind, NameError> {
    if topic == "global" {
        return Ok(TopicKind::Global);
    }
    let Some((kind, id)) = topic.split_once(':') else {
        return Err(NameError(format!(
            "topic {topic:?} is neither \"global\" nor of the form kind:id"
        )));
    };
    let kind_ok = !kind.is_empty()
        && kind.len() <= 32
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !kind_ok {
        return Err(NameError(format!(
            "topic kind {kind:?} must be 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter"
        )));
    }
    if id.is_empty() || id.len() > 128 || !id.chars().all(is_id_char) {
        return Err(NameError(format!(
            "topic id {id:?} must be 1-128 characters of letters, digits, '-', '_', '.' and '@'"
        )));
    }
    Ok(match kind {
        "tenant" => TopicKind::Tenant,
        "product" => TopicKind::Product,
        "user" => TopicKind::User,
        _ => TopicKind::Custom,
    })
}

/// Checks an event type: 1 to 64 of letters, digits, `.`, `_`, `-`, `:`.
pub fn validate_kind(kind: &str) -> Result<(), NameError> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if !ok {
        return Err(NameError(format!(
            "event type {kind:?} must be 1-64 characters of letters, digits, '.', '_', '-' and ':'"
        )));
    }
    if is_reserved_kind(kind) {
        return Err(NameError(format!(
            "event type {kind:?} is reserved for the server's own frames"
        )));
    }
    if is_presence_kind(kind) {
        return Err(NameError(format!(
            "event type {kind:?} is reserved for the server's presence events"
        )));
    }
    Ok(())
}

/// Event types of the server's presence events (on derived topics), which
/// publishers and plugins may not use: a published `member.left` would
/// change every client's member set.
pub const PRESENCE_KINDS: [&str; 9] = [
    "occupancy",
    "member.joined",
    "member.left",
    "members.truncated",
    "presence.reset",
    "topic.occupied",
    "topic.vacated",
    "user.online",
    "user.offline",
];

/// True for one of [`PRESENCE_KINDS`], in any letter case.
pub fn is_presence_kind(kind: &str) -> bool {
    PRESENCE_KINDS.iter().any(|r| r.eq_ignore_ascii_case(kind))
}

/// Event types only the server sends: its control frames, which clients act
/// on (a published `auth.expired` or `heartbeat` would make every
/// `switchyard.js` client of the topic stop or refetch its token), and the
/// names `EventSource` itself dispatches (`error`, `open`).
pub const RESERVED_KINDS: [&str; 7] = [
    "snapshot",
    "reset",
    "shutdown",
    "heartbeat",
    "auth.expired",
    "error",
    "open",
];

/// True for a type publishers and plugins may not use: `RESERVED_KINDS` and
/// the `switchyard.` prefix (kept for what the server adds later), in any
/// letter case (`EventSource` matches names exactly; a proxy or client
/// library may not).
pub fn is_reserved_kind(kind: &str) -> bool {
    const PREFIX: &str = "switchyard.";
    RESERVED_KINDS.iter().any(|r| r.eq_ignore_ascii_case(kind))
        || kind
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
}

/// Checks a type named in a stream's `events=` list: the syntax of
/// `validate_kind`, reserved names allowed (they filter nothing: the
/// server's own frames are always sent).
pub fn validate_kind_filter(kind: &str) -> Result<(), NameError> {
    match validate_kind(kind) {
        Err(_) if is_reserved_kind(kind) || is_presence_kind(kind) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_classified() {
        assert_eq!(classify_topic("global"), Ok(TopicKind::Global));
        assert_eq!(classify_topic("tenant:acme"), Ok(TopicKind::Tenant));
        assert_eq!(classify_topic("user:42"), Ok(TopicKind::User));
        assert_eq!(classify_topic("product:p-1"), Ok(TopicKind::Product));
        assert_eq!(
            classify_topic("service:balance-sync"),
            Ok(TopicKind::Custom)
        );
    }

    #[test]
    fn a_frame_is_queued_as_slices_of_its_one_buffer() {
        let f = Frame::from_parts(42, "t", "bid.accepted", r#"{"id":42}"#);
        let whole = b"id: 42\nevent: bid.accepted\ndata: {\"id\":42}\n\n".to_vec();
        let unnamed = b"id: 42\ndata: {\"id\":42}\n\n".to_vec();
        assert_eq!(&f.bytes[..], &whole[..]);
        for (form, want) in [(FrameForm::Named, &whole), (FrameForm::Message, &unnamed)] {
            assert_eq!(f.len_for(form), want.len());
            assert_eq!(f.slices(form).concat(), *want);
            for skip in 0..want.len() {
                let mut out = VecDeque::new();
                f.push_to(form, skip, &mut out);
                assert!(out.iter().all(|b| !b.is_empty()));
                // Slices of the one buffer, not copies.
                assert!(out
                    .iter()
                    .all(|b| f.bytes.as_ptr_range().contains(&b.as_ptr())));
                let got: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
                assert_eq!(got, want[skip..]);
            }
        }
    }

    #[test]
    fn derived_topics_are_classified() {
        assert_eq!(
            classify_topic("product:p1~occupancy"),
            Ok(TopicKind::Derived)
        );
        assert_eq!(classify_topic("global~members"), Ok(TopicKind::Derived));
        assert_eq!(
            derived("product:p1~members"),
            Some(("product:p1", Derived::Members))
        );
        assert_eq!(
            classify_topic("tenant:acme~deadletters"),
            Ok(TopicKind::Derived)
        );
        for bad in [
            "product:p1~deadletters",
            "global~deadletters",
            "user:u1~occupancy",
            "user:u1~members",
            "product:p1~occupancy~members",
            "product:p1~other",
            "~occupancy",
            "product:~occupancy",
        ] {
            assert!(classify_topic(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_kind("occupancy").is_err());
        assert!(validate_kind("Member.Left").is_err());
        assert!(validate_kind_filter("member.joined").is_ok());
    }

    #[test]
    fn members_fold_by_v() {
        let j = |u: &str, v: u64| format!(r#"{{"user":"{u}","claims":{{"name":"{u}!"}},"v":{v}}}"#);
        let l = |u: &str, v: u64| format!(r#"{{"user":"{u}","v":{v}}}"#);
        let s = MemberSet::fold(
            None,
            [
                ("member.joined", j("a", 1).as_str()),
                ("member.joined", j("b", 2).as_str()),
                // Decided after the leave below, committed before it.
                ("member.joined", j("a", 5).as_str()),
                ("member.left", l("a", 4).as_str()),
                ("member.left", l("b", 6).as_str()),
            ]
            .into_iter(),
        );
        let set: MemberSet = serde_json::from_str(&s).expect("json");
        assert_eq!(set.v, 6);
        assert_eq!(set.members.len(), 1);
        assert_eq!(set.members[0].user, "a");
        assert_eq!(set.members[0].claims["name"], "a!");
        let t = MemberSet::fold(
            Some(&s),
            [("members.truncated", r#"{"max":1,"v":7}"#)].into_iter(),
        );
        let set: MemberSet = serde_json::from_str(&t).expect("json");
        assert!(set.truncated && set.members.is_empty());
        // A reset replaces the set; transitions decided before it (a lower
        // `v`) change nothing after it, later ones apply.
        let reset = r#"{"members":[{"user":"c","claims":{}}],"truncated":false,"v":20}"#;
        let r = MemberSet::fold(
            Some(&t),
            [
                ("presence.reset", reset),
                ("member.joined", j("d", 19).as_str()),
                ("member.joined", j("e", 21).as_str()),
                (
                    "presence.reset",
                    r#"{"members":[],"truncated":false,"v":3}"#,
                ),
            ]
            .into_iter(),
        );
        let set: MemberSet = serde_json::from_str(&r).expect("json");
        let users: Vec<&str> = set.members.iter().map(|m| m.user.as_str()).collect();
        assert_eq!((users, set.truncated, set.v), (vec!["c", "e"], false, 21));
    }

    #[test]
    fn bad_topics_are_refused() {
        for bad in [
            "", "nope", ":x", "a:", "A:b", "a:b\nc", "a:b c", "a:b:c", "1x:y",
        ] {
            assert!(classify_topic(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn kinds_refuse_newlines_and_reserved_names() {
        assert!(validate_kind("bid.accepted").is_ok());
        assert!(validate_kind("a\nb").is_err());
        assert!(validate_kind("reset").is_err());
        assert!(validate_kind("").is_err());
    }

    #[test]
    fn event_json_has_every_field() {
        let j = event_json(7, "acme", "global", "note", r#"{"a":1}"#, 1000);
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        assert_eq!(v["id"], 7);
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["topic"], "global");
        assert_eq!(v["type"], "note");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["ts"], 1000);
    }

    #[test]
    fn data_is_found_without_parsing_whatever_it_holds() {
        let tricky = [
            r#"{"a":1}"#,
            r#"{"x":","data":","y":{"ts":5},"z":","ts":9}"}"#,
            r#"[1,"ts",{"data":null}]"#,
            r#""a string""#,
            "null",
            "-3.5e2",
            r#"{"ts":1,"data":2}"#,
        ];
        for data in tricky {
            for (tenant, topic, kind, ts) in [
                ("demo", "global", "note", 1_700_000_000_000),
                ("a", "b:c", "d,", -5),
            ] {
                let j = event_json(42, tenant, topic, kind, data, ts);
                let parsed: serde_json::Value = serde_json::from_str(&j).expect("json");
                let found = data_of(&j).unwrap_or_else(|| panic!("not found in {j}"));
                let found: serde_json::Value = serde_json::from_str(found).expect("data is json");
                assert_eq!(found, parsed["data"], "{j}");
            }
        }
    }

    #[test]
    fn data_of_declines_other_renderings() {
        for other in [
            r#"{"id": 1, "ts": 5, "data": {"a": 1}, "type": "x"}"#,
            r#"{"data":1,"id":2,"ts":3}"#,
            r#"{"id":1,"tenant":"t","topic":"g","type":"k","data":1,"ts":3,"extra":1}"#,
            r#"{"id":1,"tenant":"t","topic":"g","type":"k","data":1,"ts":}"#,
            "",
        ] {
            assert_eq!(data_of(other), None, "{other}");
        }
    }

    #[test]
    fn ids_are_plain_digits_up_to_the_largest_the_store_holds() {
        assert_eq!(parse_seq("0"), Some(0));
        assert_eq!(parse_seq("42"), Some(42));
        assert_eq!(parse_seq("9223372036854775807"), Some(MAX_SEQ));
        for bad in [
            "",
            "+7",
            "-1",
            " 7",
            "7 ",
            "0x10",
            "9223372036854775808",
            "1e3",
        ] {
            assert_eq!(parse_seq(bad), None, "{bad:?}");
        }
    }
}
