//! SSE frames: a stream of any events (ids, accepted types, any JSON data,
//! tenants and topics of any text) with heartbeats, as the server writes
//! it, reads back through a standard SSE parser as exactly those events,
//! with the right ids: no byte of an event breaks the framing. The event's
//! JSON keeps its `data` findable without a parse (`event::data_of`). The
//! events' unnamed frames (`frames=message`: each frame without its
//! `event:` line, as two slices of the one buffer) read back as the same
//! events, each of type `message`.
#![no_main]

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard::event::{data_of, event_json, validate_kind, Frame, FrameForm};
use switchyard::fuzzing::sse;
use switchyard_fuzz::{json, name, parse_sse, text, SseEvent, NAME_CHARS};

#[derive(Debug)]
enum Item {
    Event {
        seq: u64,
        tenant: String,
        topic: String,
        kind: String,
        data: Value,
        ts: i64,
    },
    Heartbeat {
        seq: u64,
    },
}

#[derive(Debug)]
struct Input {
    retry_ms: u64,
    heartbeat_ms: u64,
    start: u64,
    items: Vec<Item>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut items = Vec::new();
        for _ in 0..u.int_in_range(0..=6)? {
            items.push(if u.ratio(1, 4)? {
                Item::Heartbeat {
                    seq: u.arbitrary()?,
                }
            } else {
                Item::Event {
                    seq: u.arbitrary()?,
                    tenant: text(u)?,
                    topic: text(u)?,
                    kind: if u.ratio(1, 8)? {
                        text(u)?
                    } else {
                        name(u, NAME_CHARS, 70)?
                    },
                    data: json(u, 3)?,
                    ts: u.arbitrary()?,
                }
            });
        }
        Ok(Input {
            retry_ms: u.arbitrary()?,
            heartbeat_ms: u.arbitrary()?,
            start: u.arbitrary()?,
            items,
        })
    }
}

fuzz_target!(|input: Input| {
    let body = sse::heartbeat_body(Duration::from_millis(input.heartbeat_ms));
    let heartbeat_data = format!("{{\"interval_ms\":{}}}", input.heartbeat_ms);
    let mut wire = BytesMut::new();
    let mut unnamed_wire = Vec::new();
    let mut unnamed = Vec::new();
    wire.extend_from_slice(&sse::opening(
        Duration::from_millis(input.retry_ms),
        input.start,
        &body,
    ));
    let mut expected = vec![SseEvent {
        kind: "heartbeat".into(),
        data: heartbeat_data.clone(),
        last_id: input.start.to_string(),
    }];
    for item in &input.items {
        match item {
            Item::Heartbeat { seq } => {
                wire.extend_from_slice(&sse::id_line(*seq));
                wire.extend_from_slice(&body);
                expected.push(SseEvent {
                    kind: "heartbeat".into(),
                    data: heartbeat_data.clone(),
                    last_id: seq.to_string(),
                });
            }
            Item::Event {
                seq,
                tenant,
                topic,
                kind,
                data,
                ts,
            } => {
                // Only validated types reach the encoder; every one of them
                // is safe on an `event:` line.
                if validate_kind(kind).is_err() {
                    continue;
                }
                assert!(!kind.contains(['\r', '\n']), "{kind:?} accepted");
                // Data as the publish path renders it: compact JSON.
                let data = data.to_string();
                let json = event_json(*seq, tenant, topic, kind, &data, *ts);
                assert_eq!(data_of(&json), Some(data.as_str()), "in {json}");
                let parsed: Value = serde_json::from_str(&json).expect("event JSON parses");
                assert_eq!(parsed["tenant"].as_str(), Some(tenant.as_str()));
                assert_eq!(parsed["topic"].as_str(), Some(topic.as_str()));
                assert_eq!(parsed["id"].as_u64(), Some(*seq));
                assert_eq!(parsed["ts"].as_i64(), Some(*ts));

                let frame = Frame::from_parts(*seq, topic, kind, &json);
                assert!(frame.bytes.len() <= sse::frame_len(kind, &json));
                let mut put = BytesMut::new();
                sse::put_event(&mut put, *seq, kind, &json);
                assert_eq!(&put[..], &frame.bytes[..]);
                wire.extend_from_slice(&frame.bytes);
                let mut put = BytesMut::new();
                sse::put_unnamed(&mut put, *seq, &json);
                assert_eq!(frame.slices(FrameForm::Message).concat(), &put[..]);
                assert_eq!(frame.len_for(FrameForm::Message), put.len());
                unnamed_wire.extend_from_slice(&put);
                unnamed.push(SseEvent {
                    kind: "message".into(),
                    data: json.clone(),
                    last_id: seq.to_string(),
                });
                expected.push(SseEvent {
                    kind: kind.clone(),
                    data: json,
                    last_id: seq.to_string(),
                });
            }
        }
    }
    let text = std::str::from_utf8(&wire).expect("frames are UTF-8");
    let read = parse_sse(text);
    assert_eq!(read.retry, Some(input.retry_ms));
    assert_eq!(read.events, expected);
    let text = std::str::from_utf8(&unnamed_wire).expect("frames are UTF-8");
    assert_eq!(parse_sse(text).events, unnamed);
});
