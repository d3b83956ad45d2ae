//! A connection's first request head, as the accept loop reads it: any
//! bytes, fed whole and in pieces, never panic, and the parser's answer is
//! the same whichever read completes the head. A head routed as a stream is
//! a plain `GET` of a stream path with nothing that needs hyper (a body,
//! `Expect`, an upgrade), and its cursor and query parse or get a 400.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::first_request::{is_stream_path, parse, Head};
use switchyard::fuzzing::{streams, HeadLimits, QueryPairs};

fn same_answer(a: &Head, b: &Head) -> bool {
    match (a, b) {
        (Head::Stream(a), Head::Stream(b)) => {
            a.uri() == b.uri() && a.version() == b.version() && a.headers() == b.headers()
        }
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, c, buf @ ..] = data else { return };
    // Small limits often, so that both 431s are reached; more than the 48
    // header lines parsed on the stack sometimes.
    let limits = HeadLimits {
        max_bytes: 16 + (*a as usize) * 64,
        max_headers: 1 + (*b as usize % 128),
        timeout: Duration::from_secs(10),
    };
    let whole = parse(buf, &limits);

    // The accept loop parses after every read; the first answer that is
    // not `Partial` is the one it acts on. Reads end at arbitrary places:
    // here every `c`-th byte and at every line end.
    let step = 1 + (*c as usize % 64);
    let mut first = None;
    for end in 1..buf.len() {
        if end % step != 0 && buf[end - 1] != b'\n' {
            continue;
        }
        let head = parse(&buf[..end], &limits);
        if !matches!(head, Head::Partial) {
            first = Some((end, head));
            break;
        }
    }
    if let Some((end, head)) = first {
        assert!(
            same_answer(&head, &whole),
            "the first {end} bytes parse as {head:?}, all {} as {whole:?}",
            buf.len()
        );
    }

    let Head::Stream(req) = whole else { return };
    assert_eq!(req.method(), "GET");
    let target = req.uri().to_string();
    assert!(is_stream_path(&target), "routed as a stream: {target:?}");
    for (name, value) in req.headers() {
        let name = name.as_str();
        assert!(
            !matches!(name, "transfer-encoding" | "expect" | "upgrade"),
            "a stream head with {name}"
        );
        if name == "content-length" {
            assert!(value.as_bytes().iter().all(|c| matches!(c, b'0' | b' ')));
        }
        if name == "connection" {
            let v = value.as_bytes().to_ascii_lowercase();
            assert!(!v.windows(7).any(|w| w == b"upgrade"));
        }
    }
    // What the stream handler reads next: the query and the cursor.
    let q = QueryPairs(
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    );
    let header = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}").trim().to_string());
    if let Err(e) = streams::last_event_id(header.as_deref().or(q.get("lastEventId"))) {
        assert_eq!(e.status.as_u16(), 400);
    }
    if let Err(e) = streams::subscription_shape(&q) {
        assert_eq!(e.status.as_u16(), 400);
    }
});
