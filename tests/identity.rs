//! Client tokens from an identity provider: a PEM public key or a JWKS
//! served by a small HTTP server inside the test (whose key is rotated),
//! RS/ES/EdDSA algorithms, issuer and audience, claim names, and the
//! algorithm confusions that must fail; in both modes. Keys are made with
//! `openssl`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{secs, Env, Mode, Node};
use switchyard::auth::now_secs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A key pair made by `openssl`: the private key to sign with, the public
/// PEM file a node reads.
struct KeyPair {
    private: Vec<u8>,
    public_pem: PathBuf,
    alg: Algorithm,
}

impl KeyPair {
    fn make(dir: &Path, name: &str, alg: Algorithm) -> KeyPair {
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        let gen: &[&str] = match alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
            }
            Algorithm::ES256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::ES384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            Algorithm::EdDSA => &["-algorithm", "ED25519"],
            other => panic!("no key for {other:?}"),
        };
        let ok = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(gen)
            .arg("-out")
            .arg(&private)
            .status()
            .expect("openssl is installed")
            .success();
        assert!(ok, "openssl genpkey");
        let ok = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl pkey -pubout");
        KeyPair {
            private: std::fs::read(&private).expect("private key"),
            public_pem: public,
            alg,
        }
    }

    fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                EncodingKey::from_rsa_pem(&self.private)
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&self.private),
            _ => EncodingKey::from_ed_pem(&self.private),
        }
        .expect("signing key")
    }

    fn decoding(&self) -> DecodingKey {
        let pem = std::fs::read(&self.public_pem).expect("public key");
        match self.alg {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                DecodingKey::from_rsa_pem(&pem)
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            _ => DecodingKey::from_ed_pem(&pem),
        }
        .expect("public key")
    }

    /// The public key as a JWK with `kid`.
    fn jwk(&self, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_decoding_key(&self.decoding(), Some(self.alg)).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    /// A token signed with this key (`alg` may be another of its family).
    fn sign(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding()).expect("sign")
    }
}

/// A JWKS server: answers every request with the current document and
/// counts the requests.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: Vec<Jwk>) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().expect("addr")
        );
        let doc = Arc::new(Mutex::new(String::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let server = JwksServer { url, doc, hits };
        server.serve(keys);
        let (doc, hits) = (server.doc.clone(), server.hits.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (doc, hits) = (doc.clone(), hits.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    let body = doc.lock().expect("doc").clone();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        server
    }

    /// Serves these keys from now on (a rotation).
    fn serve(&self, keys: Vec<Jwk>) {
        *self.doc.lock().expect("doc") =
            serde_json::to_string(&JwkSet { keys }).expect("jwks json");
    }
}

const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "switchyard-test";

/// Claims as the provider writes them: the user in `uid`, the tenant in `org`.
fn claims(user: &str, tenant: &str) -> Value {
    json!({
        "uid": user,
        "org": tenant,
        "iss": ISSUER,
        "aud": [AUDIENCE, "another-api"],
        "exp": now_secs() + 600,
        "iat": now_secs(),
    })
}

/// What `GET /api/users/{user}/messages` answers with `token`.
async fn answer(node: &Node, user: &str, token: &str) -> (StatusCode, String) {
    let r = node
        .http
        .get(format!("{}/api/users/{user}/messages?after=0", node.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    (r.status(), r.text().await.unwrap_or_default())
}

async fn expect(node: &Node, user: &str, token: &str, status: StatusCode, says: &str) {
    let (got, body) = answer(node, user, token).await;
    assert_eq!(got, status, "{body}");
    assert!(body.contains(says), "{says:?} not in {body}");
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-keys-{}", support::rand_id()));
    std::fs::create_dir_all(&dir).expect("key dir");
    dir
}

/// A PEM public key (RSA): RS256/384/512 tokens with the configured claim
/// names, issuer and audience; every wrong variant refused with the reason;
/// this server's own HS256 tokens still work beside it.
async fn public_key_file(mode: Mode) {
    let dir = temp_dir();
    let rsa = KeyPair::make(&dir, "rsa", Algorithm::RS256);
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_JWT_PUBLIC_KEY", rsa.public_pem.display())
        .set("SWITCHYARD_JWT_ISSUER", ISSUER)
        .set("SWITCHYARD_JWT_AUDIENCE", AUDIENCE)
        .set("SWITCHYARD_JWT_USER_CLAIM", "uid")
        .set("SWITCHYARD_JWT_TENANT_CLAIM", "org");
    let nodes = env.start_nodes(2).await;
    let node = nodes.last().expect("a node");
    let tenant = node.tenant().await;
    for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
        let t = rsa.sign(alg, None, &claims("alice", &tenant));
        for n in &nodes {
            expect(n, "alice", &t, StatusCode::OK, "messages").await;
        }
    }
    // A provider's tokens always name their key (`kid`); the one PEM key
    // verifies them whatever the name.
    for kid in ["2024-rotation-1", "a0b1c2"] {
        let t = rsa.sign(Algorithm::RS256, Some(kid), &claims("alice", &tenant));
        for n in &nodes {
            expect(n, "alice", &t, StatusCode::OK, "messages").await;
        }
    }
    let with = |k: &str, v: Value| {
        let mut c = claims("alice", &tenant);
        c[k] = v;
        rsa.sign(Algorithm::RS256, None, &c)
    };
    let without = |k: &str| {
        let mut c = claims("alice", &tenant);
        c.as_object_mut().expect("object").remove(k);
        rsa.sign(Algorithm::RS256, None, &c)
    };
    let unauthorized = StatusCode::UNAUTHORIZED;
    expect(
        node,
        "alice",
        &with("iss", json!("https://evil.test/")),
        unauthorized,
        "issuer",
    )
    .await;
    expect(node, "alice", &without("iss"), unauthorized, "`iss`").await;
    expect(
        node,
        "alice",
        &with("aud", json!("other")),
        unauthorized,
        "audience",
    )
    .await;
    expect(node, "alice", &without("aud"), unauthorized, "`aud`").await;
    expect(
        node,
        "alice",
        &with("exp", json!(now_secs() - 5)),
        unauthorized,
        "expired",
    )
    .await;
    expect(
        node,
        "alice",
        &with("nbf", json!(now_secs() + 600)),
        unauthorized,
        "not valid yet",
    )
    .await;
    expect(node, "alice", &without("uid"), unauthorized, "`uid`").await;
    expect(node, "alice", &without("org"), unauthorized, "`org`").await;
    expect(
        node,
        "alice",
        &with("uid", json!("auth0|123")),
        unauthorized,
        "valid user id",
    )
    .await;
    // `sub` means nothing here: the user is `uid`.
    let mut c = claims("bob", &tenant);
    c["sub"] = json!("alice");
    let bob = rsa.sign(Algorithm::RS256, None, &c);
    expect(
        node,
        "alice",
        &bob,
        StatusCode::FORBIDDEN,
        "belong to that user",
    )
    .await;
    // Another key of the same kind: a bad signature, with a `kid` or not.
    let other = KeyPair::make(&dir, "other", Algorithm::RS256);
    let forged = other.sign(Algorithm::RS256, None, &claims("alice", &tenant));
    expect(node, "alice", &forged, unauthorized, "signature").await;
    let forged = other.sign(Algorithm::RS256, Some("a0b1c2"), &claims("alice", &tenant));
    expect(node, "alice", &forged, unauthorized, "signature").await;
    // Confusion: the public key as an HMAC secret, and `alg: none`.
    let public = std::fs::read(&rsa.public_pem).expect("pem");
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", &tenant),
        &EncodingKey::from_secret(&public).expect("secret"),
    )
    .expect("sign");
    expect(node, "alice", &hs, unauthorized, "signature").await;
    let payload = hs.split('.').nth(1).expect("payload");
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    expect(node, "alice", &none, unauthorized, "algorithm").await;
    // The public key as an HMAC secret, with a `kid`: still refused.
    let hs_kid = jsonwebtoken::encode(
        &Header {
            kid: Some("a0b1c2".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("alice", &tenant),
        &EncodingKey::from_secret(&public).expect("secret"),
    )
    .expect("sign");
    expect(node, "alice", &hs_kid, unauthorized, "signature").await;
    // No EC key is configured: an ES256 token is refused by its algorithm,
    // with a `kid` or not.
    let ec = KeyPair::make(&dir, "ec", Algorithm::ES256);
    let es = ec.sign(Algorithm::ES256, None, &claims("alice", &tenant));
    expect(node, "alice", &es, unauthorized, "algorithm").await;
    let es = ec.sign(Algorithm::ES256, Some("a0b1c2"), &claims("alice", &tenant));
    expect(node, "alice", &es, unauthorized, "algorithm").await;
    // `switchyard token` writes the configured claims, issuer and audience.
    let own = env.token("alice", &tenant).await;
    expect(node, "alice", &own, StatusCode::OK, "messages").await;
    let body: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(own.split('.').nth(1).expect("payload"))
            .expect("base64"),
    )
    .expect("json");
    assert_eq!(body["uid"], "alice", "{body}");
    assert_eq!(body["org"], tenant.as_str(), "{body}");
    assert_eq!(body["iss"], ISSUER, "{body}");
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}
both_modes!(public_key_file_test, public_key_file);

/// A JWKS URL: ES256, ES384 and EdDSA keys found by `kid`; the provider
/// rotates to a new RSA key and the nodes fetch it when the first token
/// naming it arrives, without a restart; made-up key ids cost a bounded
/// number of fetches.
async fn jwks_rotation(mode: Mode) {
    let dir = temp_dir();
    let p256 = KeyPair::make(&dir, "p256", Algorithm::ES256);
    let p384 = KeyPair::make(&dir, "p384", Algorithm::ES384);
    let ed = KeyPair::make(&dir, "ed", Algorithm::EdDSA);
    let jwks = JwksServer::start(vec![p256.jwk("k-256"), p384.jwk("k-384"), ed.jwk("k-ed")]).await;
    let env = Env::new(mode)
        .await
        .set("SWITCHYARD_JWKS_URL", &jwks.url)
        .set("SWITCHYARD_JWKS_ALLOW_HTTP", "true")
        .set("SWITCHYARD_JWT_ISSUER", ISSUER)
        .set("SWITCHYARD_JWT_AUDIENCE", AUDIENCE)
        .set("SWITCHYARD_JWT_USER_CLAIM", "uid")
        .set("SWITCHYARD_JWT_TENANT_CLAIM", "org");
    let nodes = env.start_nodes(2).await;
    let node = nodes.last().expect("a node");
    let tenant = node.tenant().await;
    for (key, kid) in [(&p256, "k-256"), (&p384, "k-384"), (&ed, "k-ed")] {
        let t = key.sign(key.alg, Some(kid), &claims("alice", &tenant));
        for n in &nodes {
            expect(n, "alice", &t, StatusCode::OK, "messages").await;
        }
    }
    // A key named by another key's id does not verify.
    let swapped = p256.sign(Algorithm::ES256, Some("k-384"), &claims("alice", &tenant));
    expect(node, "alice", &swapped, StatusCode::UNAUTHORIZED, "key id").await;
    // Rotation: the provider now signs with a new RSA key.
    let rsa = KeyPair::make(&dir, "rsa", Algorithm::RS256);
    jwks.serve(vec![p256.jwk("k-256"), rsa.jwk("k-rsa")]);
    let t = rsa.sign(Algorithm::RS256, Some("k-rsa"), &claims("alice", &tenant));
    for n in &nodes {
        support::wait_for("the rotated key is fetched", secs(30), || async {
            answer(n, "alice", &t).await.0 == StatusCode::OK
        })
        .await;
    }
    // Unknown key ids: refused, and the refetches they cause are bounded.
    let before = jwks.hits.load(Ordering::SeqCst);
    for i in 0..20 {
        let t = rsa.sign(
            Algorithm::RS256,
            Some(&format!("made-up-{i}")),
            &claims("alice", &tenant),
        );
        expect(node, "alice", &t, StatusCode::UNAUTHORIZED, "key id").await;
    }
    let fetched = jwks.hits.load(Ordering::SeqCst) - before;
    assert!(fetched <= 2, "20 made-up key ids caused {fetched} fetches");
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}
both_modes!(jwks_rotation_test, jwks_rotation);

/// A provider that is down at start: tokens get 503 (retry) rather than a
/// 401, and work once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_down_at_start() {
    let dir = temp_dir();
    let ed = KeyPair::make(&dir, "ed", Algorithm::EdDSA);
    // A port with nothing behind it yet.
    let port = support::free_port();
    let env = Env::new(Mode::Embedded)
        .await
        .set(
            "SWITCHYARD_JWKS_URL",
            format!("http://127.0.0.1:{port}/jwks"),
        )
        .set("SWITCHYARD_JWKS_ALLOW_HTTP", "true");
    let node = env.start().await;
    let t = ed.sign(
        Algorithm::EdDSA,
        Some("k-ed"),
        &json!({"sub": "alice", "tenant": "demo", "exp": now_secs() + 600}),
    );
    expect(
        &node,
        "alice",
        &t,
        StatusCode::SERVICE_UNAVAILABLE,
        "identity_unavailable",
    )
    .await;
    // The provider comes up on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the provider's port");
    let doc = serde_json::to_string(&JwkSet {
        keys: vec![ed.jwk("k-ed")],
    })
    .expect("json");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                doc.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
        }
    });
    support::wait_for("the provider's keys are fetched", secs(30), || async {
        answer(&node, "alice", &t).await.0 == StatusCode::OK
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}

/// A test HTTP server answering every request with `answer(n)` (n: the
/// request's number from 0), written in pieces of 64 KiB; counts requests
/// and the bytes it managed to write.
struct RawServer {
    addr: std::net::SocketAddr,
    hits: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
}

impl RawServer {
    async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> RawServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let (h, w) = (hits.clone(), written.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (hits, written, answer) = (h.clone(), w.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    match answer(n) {
                        Answer::Whole(bytes) => {
                            for piece in bytes.chunks(64 * 1024) {
                                if s.write_all(piece).await.is_err() {
                                    return;
                                }
                                written.fetch_add(piece.len(), Ordering::SeqCst);
                            }
                        }
                        Answer::Endless(head) => {
                            if s.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            // Chunks of 64 KiB of spaces, never a last one.
                            let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                            // Bounded so a node that reads on does not keep
                            // the test busy for long.
                            while written.load(Ordering::SeqCst) < 1 << 30 {
                                if s.write_all(chunk.as_bytes()).await.is_err() {
                                    return;
                                }
                                written.fetch_add(chunk.len(), Ordering::SeqCst);
                            }
                        }
                    }
                    let _ = s.shutdown().await;
                });
            }
        });
        RawServer {
            addr,
            hits,
            written,
        }
    }
}

/// What a `RawServer` answers.
enum Answer {
    /// These bytes, the whole answer.
    Whole(Vec<u8>),
    /// This head (chunked), then a body that never ends.
    Endless(String),
}

fn ok_json(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A token of `key` (named `kid`) for alice of the demo tenant.
fn demo_token(key: &KeyPair, kid: &str) -> String {
    key.sign(
        key.alg,
        Some(kid),
        &json!({"sub": "alice", "tenant": "demo", "exp": now_secs() + 600}),
    )
}

/// A JWKS URL must be https: an `http://` one stops the start with one line
/// saying so and naming the setting that allows it for development.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_plain_http_is_refused() {
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_JWKS_URL", "http://127.0.0.1:9/jwks");
    let out = support::start_refused(&env, &[]).await;
    assert!(
        out.lines().any(
            |l| l.contains("SWITCHYARD_JWKS_URL must be an https:// URL")
                && l.contains("SWITCHYARD_JWKS_ALLOW_HTTP=true")
        ),
        "{out}"
    );
    env.cleanup().await;
}

/// The provider's answer is a redirect: the node does not follow it (the
/// target is never asked), tokens get 503 (retry), and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_redirects_are_not_followed() {
    let dir = temp_dir();
    let ed = KeyPair::make(&dir, "ed", Algorithm::EdDSA);
    let doc = serde_json::to_string(&JwkSet {
        keys: vec![ed.jwk("k-ed")],
    })
    .expect("json");
    let target = RawServer::start(move |_| Answer::Whole(ok_json(&doc))).await;
    let location = format!("http://{}/jwks", target.addr);
    let redirect = RawServer::start(move |_| {
        Answer::Whole(
            format!("HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .into_bytes(),
        )
    })
    .await;
    let env = Env::new(Mode::Embedded)
        .await
        .set(
            "SWITCHYARD_JWKS_URL",
            format!("http://{}/jwks", redirect.addr),
        )
        .set("SWITCHYARD_JWKS_ALLOW_HTTP", "true");
    let node = env.start().await;
    expect(
        &node,
        "alice",
        &demo_token(&ed, "k-ed"),
        StatusCode::SERVICE_UNAVAILABLE,
        "identity_unavailable",
    )
    .await;
    assert!(redirect.hits.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        target.hits.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    let log = node.log_text();
    assert!(log.contains("redirect, which is not followed"), "{log}");
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}

/// A key set over 256 KiB is refused: one that says its length, and one
/// that never ends, whose reading stops soon after the cap (the node does
/// not read on until its timeout). Tokens get 503; the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_bodies_are_capped() {
    let dir = temp_dir();
    let ed = KeyPair::make(&dir, "ed", Algorithm::EdDSA);
    let token = demo_token(&ed, "k-ed");
    // A valid key set padded to 300 KiB.
    let doc = serde_json::to_string(&JwkSet {
        keys: vec![ed.jwk("k-ed")],
    })
    .expect("json");
    let padded = format!("{doc}{}", " ".repeat(300 * 1024));
    let big = RawServer::start(move |_| Answer::Whole(ok_json(&padded))).await;
    let endless = RawServer::start(|_| {
        Answer::Endless(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                .into(),
        )
    })
    .await;
    for server in [&big, &endless] {
        let env = Env::new(Mode::Embedded)
            .await
            .set(
                "SWITCHYARD_JWKS_URL",
                format!("http://{}/jwks", server.addr),
            )
            .set("SWITCHYARD_JWKS_ALLOW_HTTP", "true");
        let node = env.start().await;
        expect(
            &node,
            "alice",
            &token,
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable",
        )
        .await;
        let log = node.log_text();
        assert!(log.contains("larger than 256 KiB"), "{log}");
        drop(node);
        env.cleanup().await;
    }
    // What the node took of the endless body: the cap and what the
    // sockets' buffers hold, not all a loopback carries in 5 s.
    let written = endless.written.load(Ordering::SeqCst);
    assert!(
        written < 64 << 20,
        "the node read {written} bytes of an endless key set"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A JWKS over https (the default): its certificate comes from a CA the
/// node trusts (`SSL_CERT_FILE`), and the keys are fetched without
/// `SWITCHYARD_JWKS_ALLOW_HTTP`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_over_https() {
    let dir = temp_dir();
    let ed = KeyPair::make(&dir, "ed", Algorithm::EdDSA);
    let leaf = support::test_ca().issue(&dir.join("tls"), "localhost");
    // HTTP/1.1 only (the answer below is written by hand).
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&leaf.cert)
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(&leaf.key).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let doc = serde_json::to_string(&JwkSet {
        keys: vec![ed.jwk("k-ed")],
    })
    .expect("json");
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (acceptor, doc, hits) = (acceptor.clone(), doc.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(&ok_json(&doc)).await;
                let _ = s.shutdown().await;
            });
        }
    });
    let ca = support::test_ca().pem_path().display().to_string();
    let env = Env::new(Mode::Embedded)
        .await
        .set("SWITCHYARD_JWKS_URL", format!("https://{addr}/jwks"))
        .set("SSL_CERT_FILE", ca);
    let node = env.start().await;
    let (status, body) = answer(&node, "alice", &demo_token(&ed, "k-ed")).await;
    assert_eq!(status, StatusCode::OK, "{body}\n{}", node.log_text());
    assert!(hits.load(Ordering::SeqCst) >= 1);
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup().await;
}
