//! A stream's or a history's query string: the pairs the extractor reads,
//! the cursor (`lastEventId`, `after=`), topics, event types, the tenant
//! and the subscription shape. Any bytes: no panic, a refusal is a 400,
//! and what is accepted keeps the rules the rest of the host relies on (no
//! name holds a character that could break a frame, a key or a log line).
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::extract::FromRequestParts;
use libfuzzer_sys::fuzz_target;
use switchyard::event::{classify_topic, validate_kind, validate_slug, TopicKind};
use switchyard::fuzzing::{streams, QueryPairs};

/// The extractors are ready at once (no I/O): one poll.
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the extractor waited"),
    }
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':')
}

fuzz_target!(|data: &[u8]| {
    let direct = QueryPairs(
        form_urlencoded::parse(data)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    // Through the extractor itself when the bytes make a request target.
    let q = match std::str::from_utf8(data).ok().and_then(|s| {
        axum::http::Request::get(format!("/events?{s}"))
            .body(())
            .ok()
    }) {
        Some(req) => {
            let (mut parts, ()) = req.into_parts();
            let q = now(QueryPairs::from_request_parts(&mut parts, &()))
                .unwrap_or_else(|_| panic!("QueryPairs refused a query"));
            if parts.uri.query() == std::str::from_utf8(data).ok() {
                assert_eq!(q.0, direct.0);
            }
            q
        }
        None => direct,
    };

    // `get` is the last value, `all` every one in order.
    for (k, _) in &q.0 {
        let all: Vec<&str> = q.all(k).collect();
        assert_eq!(q.get(k), all.last().copied());
    }

    // Cursors.
    for key in ["after", "limit"] {
        match q.number(key) {
            Ok(Some(n)) => assert_eq!(q.get(key).and_then(|v| v.parse().ok()), Some(n)),
            Ok(None) => assert!(matches!(q.get(key), None | Some(""))),
            Err(e) => {
                assert_eq!(e.status.as_u16(), 400);
                assert_eq!(e.code, "invalid_query");
            }
        }
    }
    let raw = q.get("lastEventId");
    match streams::last_event_id(raw) {
        Ok(Some(id)) => {
            let t = raw.expect("an id from a value").trim();
            let digits = t.strip_prefix('+').unwrap_or(t);
            assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{t:?}");
            assert_eq!(digits.parse::<u64>().ok(), Some(id));
        }
        Ok(None) => assert!(raw.is_none_or(|v| v.trim().is_empty())),
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.code, "invalid_last_event_id");
            assert!(e.message.len() < 400, "{}", e.message);
        }
    }

    // Names.
    for t in q.all("topic").chain(q.all("snapshot")) {
        if let Ok(kind) = classify_topic(t) {
            assert!(t.len() <= 32 + 1 + 128, "{t:?}");
            assert!(t.chars().all(name_char), "{t:?}");
            match t.split_once(':') {
                None => assert_eq!((t, kind), ("global", TopicKind::Global)),
                Some((k, id)) => {
                    assert!(
                        !k.is_empty() && !id.is_empty() && !id.contains(':'),
                        "{t:?}"
                    );
                    if kind == TopicKind::User {
                        assert!(switchyard::auth::valid_user_id(id), "{t:?}");
                    }
                }
            }
        }
    }
    if let Some(list) = q.get("events") {
        for kind in list.split(',').map(str::trim) {
            if validate_kind(kind).is_ok() {
                assert!(!kind.is_empty() && kind.len() <= 64 && kind.chars().all(name_char));
                assert!(!matches!(kind, "snapshot" | "reset" | "shutdown"));
            }
        }
    }
    for slug in q.all("tenant") {
        if validate_slug(slug).is_ok() {
            assert!(
                slug.len() <= 63
                    && slug
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            );
        }
    }

    // The subscription shape.
    match streams::subscription_shape(&q) {
        Ok(shape) => {
            assert!(shape.len() <= streams::MAX_SHAPE_PARAMS);
            assert!(
                shape.windows(2).all(|w| w[0] < w[1]),
                "sorted, no duplicates"
            );
            for (k, v) in &shape {
                assert!(!streams::HOST_PARAMS.contains(&k.as_str()));
                assert!(k.len() <= 64 && v.len() <= 256);
                assert!(q.0.contains(&(k.clone(), v.clone())));
            }
            for pair in &q.0 {
                if !streams::HOST_PARAMS.contains(&pair.0.as_str()) {
                    assert!(shape.contains(pair));
                }
            }
        }
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400);
            assert_eq!(e.code, "invalid_query");
        }
    }
});
