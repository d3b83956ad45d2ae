//! What a source reads becomes an event: a channel or key pattern with
//! captures, templates for tenant, topic and type (literal text, `{1}` for
//! the first `*` of the pattern, `{/a/b}` for a field of the message by JSON
//! pointer), and `data` by JSON pointer (empty: the whole message).
//!
//! Everything here is pure and checked at start (`Mapping::new`); a message
//! that does not map gives the reason, in words, for its dead letter.

use serde_json::Value;

use crate::event::{classify_topic, validate_kind, validate_slug, TopicKind};

/// Why a message does not map (the dead letter's reason).
pub type Reason = String;

/// A glob of `*`s only (Redis patterns' `?`, `[` and `\` are refused at
/// start, so that a capture is always what a `*` matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literal pieces around the `*`s (one more than there are `*`s).
    pieces: Vec<String>,
}

impl Pattern {
    /// Parses a pattern (`sse:product:*`).
    pub fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() || text.len() > 256 {
            return Err("a pattern must be 1-256 characters".into());
        }
        if let Some(c) = text
            .chars()
            .find(|c| matches!(c, '?' | '[' | ']' | '\\') || c.is_control() || c.is_whitespace())
        {
            return Err(format!(
                "pattern {text:?}: only `*` is a wildcard here ({c:?} is not allowed)"
            ));
        }
        if text.contains("**") {
            return Err(format!(
                "pattern {text:?}: two `*` in a row have no capture between them"
            ));
        }
        Ok(Pattern {
            text: text.to_string(),
            pieces: text.split('*').map(str::to_string).collect(),
        })
    }

    /// The pattern as given (what `PSUBSCRIBE` is given).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// How many captures a match gives.
    pub fn captures(&self) -> usize {
        self.pieces.len() - 1
    }

    /// What each `*` matched, or `None` when `name` does not match (each
    /// `*` takes the shortest run that lets the rest match, as Redis's
    /// matcher does for the pieces between).
    pub fn matches<'a>(&self, name: &'a str) -> Option<Vec<&'a str>> {
        let first = self.pieces.first()?;
        let mut rest = name.strip_prefix(first.as_str())?;
        let mut out = Vec::with_capacity(self.captures());
        let last = self.pieces.len() - 1;
        for (i, piece) in self.pieces.iter().enumerate().skip(1) {
            if i == last {
                let cap = rest.strip_suffix(piece.as_str())?;
                out.push(cap);
                rest = "";
            } else {
                let at = rest.find(piece.as_str())?;
                out.push(&rest[..at]);
                rest = &rest[at + piece.len()..];
            }
        }
        rest.is_empty().then_some(out)
    }
}

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Capture(usize),
    Field(String),
}

/// A template: literal text with `{n}` (the n-th capture, from 1) and
/// `{/pointer}` (a string or integer field of the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; `captures` is how many the pattern gives.
    pub fn new(text: &str, captures: usize) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("template {text:?}: `{{` without `}}`"))?;
            let inner = &rest[open + 1..open + close];
            if inner.starts_with('/') {
                parts.push(Part::Field(inner.to_string()));
            } else {
                let n: usize = inner.parse().map_err(|_| {
                    format!(
                        "template {text:?}: `{{{inner}}}` is neither `{{1}}`.. nor `{{/field}}`"
                    )
                })?;
                if n == 0 || n > captures {
                    return Err(format!(
                        "template {text:?}: `{{{n}}}`, but the pattern has {captures} capture(s)"
                    ));
                }
                parts.push(Part::Capture(n - 1));
            }
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("template {text:?}: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("a template must not be empty".into());
        }
        Ok(Template { parts })
    }

    /// Whether it names a field of the message.
    pub fn reads_message(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    /// The template's text when it is all literal.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// Renders it for a message with these captures.
    pub fn render(&self, captures: &[&str], msg: Option<&Value>) -> Result<String, Reason> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Capture(i) => out.push_str(captures.get(*i).copied().unwrap_or("")),
                Part::Field(ptr) => match msg.and_then(|m| m.pointer(ptr)) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
                        out.push_str(&n.to_string())
                    }
                    Some(_) => return Err(format!("field {ptr} is not a string or an integer")),
                    None => return Err(format!("field {ptr} is missing")),
                },
            }
        }
        Ok(out)
    }
}

/// How a source's messages become events (checked at start).
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The tenant: literal, captured or from a field.
    pub tenant: Template,
    /// The topic.
    pub topic: Template,
    /// The event type.
    pub kind: Template,
    /// `data`: a JSON pointer into the message; empty: the whole message.
    pub data: String,
    /// Keep each event's data as its topic's retained state.
    pub retain: bool,
}

/// A message mapped to an event's parts (names checked).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// Tenant slug.
    pub tenant: String,
    /// Topic.
    pub topic: String,
    /// Event type.
    pub kind: String,
    /// The data, compact JSON.
    pub data: String,
}

impl Mapping {
    /// Maps a message (`msg`, the parsed payload) that arrived on a name
    /// with these captures.
    pub fn map(&self, captures: &[&str], msg: &Value) -> Result<Mapped, Reason> {
        let tenant = self.tenant.render(captures, Some(msg))?;
        validate_slug(&tenant).map_err(|e| format!("tenant: {e}"))?;
        let topic = self.topic.render(captures, Some(msg))?;
        match classify_topic(&topic).map_err(|e| format!("topic: {e}"))? {
            TopicKind::Derived => {
                return Err(format!(
                    "topic {topic:?} is one the server writes (presence, lifecycle, dead letters)"
                ))
            }
            TopicKind::Tenant if topic["tenant:".len()..] != tenant => {
                return Err(format!("topic {topic:?} belongs to another tenant"))
            }
            _ => {}
        }
        let kind = self.kind.render(captures, Some(msg))?;
        validate_kind(&kind).map_err(|e| format!("type: {e}"))?;
        if crate::event::is_reserved_kind(&kind) {
            return Err(format!("type {kind:?} is the server's own"));
        }
        let data = if self.data.is_empty() {
            msg
        } else {
            msg.pointer(&self.data)
                .ok_or_else(|| format!("field {} is missing", self.data))?
        };
        Ok(Mapped {
            tenant,
            topic,
            kind,
            data: serde_json::to_string(data).map_err(|e| format!("data: {e}"))?,
        })
    }
}

/// Parses a message's payload: JSON text, else the reason.
pub fn parse_json(raw: &[u8]) -> Result<Value, Reason> {
    serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))
}

/// A Redis stream entry's fields as one JSON object: a value that starts
/// with `{` or `[` is read as JSON (a producer's `payload`), any other is a
/// string.
pub fn entry_object(fields: &[(String, Vec<u8>)]) -> Result<Value, Reason> {
    let mut map = serde_json::Map::new();
    for (name, value) in fields {
        let text =
            std::str::from_utf8(value).map_err(|_| format!("field {name:?} is not UTF-8 text"))?;
        let v = match text.trim_start().as_bytes().first() {
            Some(b'{' | b'[') => serde_json::from_str(text)
                .map_err(|e| format!("field {name:?} is not JSON: {e}"))?,
            _ => Value::String(text.to_string()),
        };
        map.insert(name.clone(), v);
    }
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_capture_what_each_star_matched() {
        let p = Pattern::new("sse:product:*").expect("valid");
        assert_eq!(p.matches("sse:product:42"), Some(vec!["42"]));
        assert_eq!(p.matches("sse:user:42"), None);
        let p = Pattern::new("t:*:x:*").expect("valid");
        assert_eq!(p.matches("t:acme:x:7"), Some(vec!["acme", "7"]));
        assert_eq!(p.matches("t:acme:y:7"), None);
        let p = Pattern::new("service:balance-sync").expect("valid");
        assert_eq!(p.matches("service:balance-sync"), Some(vec![]));
        assert!(Pattern::new("a?b").is_err());
        assert!(Pattern::new("a[bc]").is_err());
        assert!(Pattern::new("a**").is_err());
    }

    #[test]
    fn templates_render_captures_and_fields() {
        let t = Template::new("product:{1}", 1).expect("valid");
        assert_eq!(t.render(&["42"], None).as_deref(), Ok("product:42"));
        let t = Template::new("match:{/matchId}", 0).expect("valid");
        let m = json!({"matchId": 7});
        assert_eq!(t.render(&[], Some(&m)).as_deref(), Ok("match:7"));
        assert!(t.render(&[], Some(&json!({}))).is_err());
        assert!(Template::new("x:{2}", 1).is_err());
        assert!(Template::new("x:{a}", 1).is_err());
        assert!(Template::new("x:{1", 1).is_err());
    }

    #[test]
    fn a_message_maps_or_says_why_not() {
        let m = Mapping {
            tenant: Template::new("acme", 0).expect("valid"),
            topic: Template::new("user:{1}", 1).expect("valid"),
            kind: Template::new("{/type}", 1).expect("valid"),
            data: String::new(),
            retain: false,
        };
        let msg = json!({"type": "message", "from": 3});
        let e = m.map(&["9"], &msg).expect("maps");
        assert_eq!(e.topic, "user:9");
        assert_eq!(e.kind, "message");
        assert_eq!(e.data, r#"{"from":3,"type":"message"}"#);
        assert!(m.map(&["a b"], &msg).expect_err("topic").contains("topic"));
        assert!(m
            .map(&["9"], &json!({}))
            .expect_err("type")
            .contains("/type"));
        assert!(m
            .map(&["9"], &json!({"type": "snapshot"}))
            .expect_err("reserved")
            .contains("server's own"));
    }

    #[test]
    fn stream_entries_read_json_fields() {
        let o = entry_object(&[
            ("event".into(), b"match:updated".to_vec()),
            ("payload".into(), br#"{"matchId":"m1"}"#.to_vec()),
        ])
        .expect("object");
        assert_eq!(
            o,
            json!({"event": "match:updated", "payload": {"matchId": "m1"}})
        );
        assert!(entry_object(&[("payload".into(), b"{nope".to_vec())]).is_err());
    }
}
