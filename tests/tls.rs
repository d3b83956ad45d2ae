//! TLS and HTTP/2: what is particular to them (the stream tests in
//! events.rs, resume.rs, faults.rs and auth.rs run over both transports).
//! A stalled HTTP/2 stream is reset alone; header limits hold over HTTP/2;
//! the certificate files are reloaded while open streams keep going; curl
//! gets a stream over HTTP/2, over TLS with HTTP/1.1, and over clear-text
//! HTTP/2 with prior knowledge; a half configuration refuses to start.

mod support;

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt;
use reqwest::{StatusCode, Version};
use serde_json::json;
use support::{secs, test_ca, Env, Mode, Node, Sse, Transport, TRANSPORT};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A node serving TLS with a certificate from the test CA.
async fn tls_env(mode: Mode) -> Env {
    TRANSPORT.scope(Transport::TlsH2, Env::new(mode)).await
}

/// The DER of the first certificate in a PEM file.
fn der_of(pem_file: &std::path::Path) -> Vec<u8> {
    let text = std::fs::read_to_string(pem_file).expect("pem");
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

/// The certificate a fresh connection to `node` is given.
async fn served_cert(node: &Node) -> Vec<u8> {
    let client = support::client_builder()
        .tls_info(true)
        .build()
        .expect("client");
    let res = client
        .get(format!("{}/health", node.url))
        .send()
        .await
        .expect("health over TLS");
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec()
}

/// Over HTTP/2 a stream's bytes are the same frames as over HTTP/1.1: the
/// opening heartbeat with `retry:`, then heartbeats with the cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_frames_and_heartbeats() {
    let env = tls_env(Mode::Embedded)
        .await
        .set("SWITCHYARD_HEARTBEAT_MS", 200);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let id = node.publish(&tenant, "wire:3", "note", json!({})).await;
    let res = node
        .http
        .get(format!("{}/events?tenant={tenant}&topic=wire:3", node.url))
        .send()
        .await
        .expect("stream");
    assert_eq!(res.version(), Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let opening =
        format!("retry: 3000\nid: {id}\nevent: heartbeat\ndata: {{\"interval_ms\":200}}\n\n");
    let beat = format!("id: {id}\nevent: heartbeat\ndata: {{\"interval_ms\":200}}\n\n");
    let want = format!("{opening}{beat}{beat}");
    let mut body = res.bytes_stream();
    let mut got = Vec::new();
    while got.len() < want.len() {
        match tokio::time::timeout(secs(10), body.next()).await {
            Ok(Some(Ok(chunk))) => got.extend_from_slice(&chunk),
            other => panic!("stream ended early: {other:?}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got[..want.len()]), want);
    env.cleanup().await;
}

/// Two streams on one HTTP/2 connection; the client stops reading one. That
/// stream is reset after the write deadline and counted; the other, on the
/// same connection, keeps receiving; the reset one resumes with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_h2_stream_is_reset_alone() {
    let env = tls_env(Mode::Embedded)
        .await
        .set("SWITCHYARD_CLIENT_QUEUE", 4)
        .set("SWITCHYARD_WRITE_DEADLINE_MS", 500);
    let node = env.start().await;
    let tenant = node.tenant().await;
    let path = format!("/events?tenant={tenant}&topic=big:1");
    // A small stream window: a stream the client does not read fills it fast.
    let client = support::client_builder()
        .http2_initial_stream_window_size(16 * 1024)
        .build()
        .expect("client");
    let url = format!("{}{path}", node.url);
    let mut stalled = Sse::connect_with(&client, &url, None, &[])
        .await
        .expect("first stream");
    let mut reader = Sse::connect_with(&client, &url, None, &[])
        .await
        .expect("second stream");
    let pad = "y".repeat(8 * 1024);
    let mut ids = Vec::new();
    let mut seen = Vec::new();
    while node.metric("switchyard_write_deadline_closed_total").await < 1.0 {
        assert!(ids.len() < 400, "the stalled stream was never reset");
        ids.push(
            node.publish(&tenant, "big:1", "blob", json!({"pad": pad}))
                .await,
        );
        // The reader keeps up as it goes (its connection is the stalled one's).
        seen.extend(reader.take(1, secs(10)).await.iter().map(|e| e.seq()));
    }
    // After the reset, the shared connection still carries the other stream.
    ids.push(node.publish(&tenant, "big:1", "blob", json!({})).await);
    seen.extend(reader.take(1, secs(10)).await.iter().map(|e| e.seq()));
    assert_eq!(seen, ids, "the reading stream on the same connection");
    // The stalled stream gives what was in flight, then ends.
    let mut last = None;
    while let Some(ev) = stalled.next_data(secs(10)).await {
        last = Some(ev.seq());
    }
    assert!(stalled.ended, "the stalled stream was reset");
    assert!(last < ids.last().copied(), "it did not get everything");
    let mut resumed = node.sse(&path, last.or(Some(0))).await;
    let rest: Vec<u64> = ids.iter().copied().filter(|i| Some(*i) > last).collect();
    let got: Vec<u64> = resumed
        .take(rest.len(), secs(30))
        .await
        .iter()
        .map(|e| e.seq())
        .collect();
    assert_eq!(got, rest);
    env.cleanup().await;
}

/// Over HTTP/2 a header block over the size limit and a request with too
/// many header lines get 431, and the connection serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_limits() {
    let env = tls_env(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let url = format!("{}/events?tenant={tenant}&topic=a:1", node.url);
    let big = node
        .http
        .get(&url)
        .header("x-big", "a".repeat(17 * 1024))
        .send()
        .await
        .expect("request");
    assert_eq!(big.version(), Version::HTTP_2);
    assert_eq!(big.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let mut many = node.http.get(format!("{}/health", node.url));
    for i in 0..101 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let many = many.send().await.expect("request");
    assert_eq!(many.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let body: serde_json::Value = many.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "headers_too_large");
    let ok = node.http.get(format!("{}/health", node.url)).send().await;
    assert_eq!(ok.expect("health").status(), StatusCode::OK);
    env.cleanup().await;
}

/// New certificate files (renamed into place, as a rotation does) reach new
/// handshakes while an open stream keeps receiving; a broken file is logged
/// and the certificate in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation() {
    let env = tls_env(Mode::Embedded).await;
    let leaf = env.tls.clone().expect("tls env");
    let node = env.start().await;
    let tenant = node.tenant().await;
    let first = der_of(&leaf.cert);
    assert_eq!(served_cert(&node).await, first);
    let mut open = node
        .sse(&format!("/events?tenant={tenant}&topic=rot:1"), None)
        .await;

    let next = test_ca().issue(&env.data_dir.join("next"), "rotated");
    let second = der_of(&next.cert);
    assert_ne!(first, second);
    std::fs::rename(&next.key, &leaf.key).expect("rename key");
    std::fs::rename(&next.cert, &leaf.cert).expect("rename cert");
    support::wait_for(
        "new handshakes get the new certificate",
        secs(20),
        || async { served_cert(&node).await == second },
    )
    .await;
    let id = node.publish(&tenant, "rot:1", "note", json!({})).await;
    assert_eq!(open.take(1, secs(10)).await[0].seq(), id, "the open stream");

    std::fs::write(&leaf.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").expect("write");
    support::wait_for("the broken file logged", secs(20), || async {
        node.log_text().contains("TLS certificate not reloaded")
    })
    .await;
    assert_eq!(
        served_cert(&node).await,
        second,
        "the previous certificate stays"
    );
    let id = node.publish(&tenant, "rot:1", "note", json!({})).await;
    assert_eq!(open.take(1, secs(10)).await[0].seq(), id, "still open");
    env.cleanup().await;
}

/// curl's status line (with `-i`) and what followed, up to a `data:` line
/// holding `want`, on a stream replayed from the start.
async fn curl_stream(args: &[&str], url: &str, want: &str) -> (String, String) {
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "-i", "-H", "Accept: text/event-stream"])
        .args(["-H", "Last-Event-ID: 0"])
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl is installed");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let status = tokio::time::timeout(secs(10), lines.next_line())
        .await
        .expect("curl answers")
        .expect("read")
        .unwrap_or_default();
    let mut text = String::new();
    while !text
        .lines()
        .any(|l| l.starts_with("data: ") && l.contains(want))
    {
        match tokio::time::timeout(secs(10), lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                text.push_str(&line);
                text.push('\n');
            }
            other => panic!("curl {args:?} stream ended: {other:?}; got {text}"),
        }
    }
    let _ = child.kill().await;
    (status, text)
}

/// curl gets a stream over TLS with HTTP/2 and with HTTP/1.1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_over_tls() {
    let env = tls_env(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let id = node.publish(&tenant, "c:1", "note", json!({"x": 1})).await;
    let url = format!("{}/events?tenant={tenant}&topic=c:1", node.url);
    let ca = test_ca().pem_path();
    let ca = ca.to_str().expect("path");
    let id_line = format!("id: {id}");
    let (status, text) = curl_stream(&["--http2", "--cacert", ca], &url, r#""x":1"#).await;
    assert!(status.starts_with("HTTP/2 200"), "{status}");
    assert!(text.lines().any(|l| l == id_line), "{text}");
    let (status, text) = curl_stream(&["--http1.1", "--cacert", ca], &url, r#""x":1"#).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(text.lines().any(|l| l == id_line), "{text}");
    env.cleanup().await;
}

/// Without TLS, a client that knows the server speaks HTTP/2 (h2c with
/// prior knowledge) gets a stream too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h2c_prior_knowledge() {
    let env = Env::new(Mode::Embedded).await;
    let node = env.start().await;
    let tenant = node.tenant().await;
    let id = node.publish(&tenant, "c:1", "note", json!({"x": 2})).await;
    let url = format!("{}/events?tenant={tenant}&topic=c:1", node.url);
    let (status, text) = curl_stream(&["--http2-prior-knowledge"], &url, r#""x":2"#).await;
    assert!(status.starts_with("HTTP/2 200"), "{status}");
    assert!(text.lines().any(|l| l == format!("id: {id}")), "{text}");
    env.cleanup().await;
}

/// `switchyard serve` with `vars`: its exit status and what it wrote.
async fn serve_fails(env: &Env, vars: &[(&str, &str)]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("serve")
        .env_clear()
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_DATA_DIR", &env.data_dir)
        .envs(vars.iter().copied())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("exits")
        .expect("runs");
    assert!(!out.status.success(), "started with {vars:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Half a TLS configuration, or files that cannot be used, stop the start
/// with one line that says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_settings_refuse_to_start() {
    let env = tls_env(Mode::Embedded).await;
    let leaf = env.tls.clone().expect("tls env");
    let cert = leaf.cert.to_str().expect("path");
    let key = leaf.key.to_str().expect("path");
    let err = serve_fails(&env, &[("SWITCHYARD_TLS_CERT", cert)]).await;
    assert!(err.contains("SWITCHYARD_TLS_KEY"), "{err}");
    let err = serve_fails(&env, &[("SWITCHYARD_TLS_KEY", key)]).await;
    assert!(err.contains("SWITCHYARD_TLS_CERT"), "{err}");
    let missing = env.data_dir.join("missing.pem");
    let missing = missing.to_str().expect("path");
    let err = serve_fails(
        &env,
        &[
            ("SWITCHYARD_TLS_CERT", missing),
            ("SWITCHYARD_TLS_KEY", key),
        ],
    )
    .await;
    assert!(err.contains("missing.pem"), "{err}");
    // A key that is not the certificate's.
    let other = test_ca().issue(&env.data_dir.join("other"), "other");
    let other_key = other.key.to_str().expect("path");
    let err = serve_fails(
        &env,
        &[
            ("SWITCHYARD_TLS_CERT", cert),
            ("SWITCHYARD_TLS_KEY", other_key),
        ],
    )
    .await;
    assert!(err.contains("does not fit"), "{err}");
    env.cleanup().await;
}
