//! An identity provider's JWKS: fetched at start, refetched when a token
//! names a `kid` the node does not know (how a key rotation reaches it
//! without a restart), and refreshed in the background when old.
//!
//! Refetches are bounded: one at a time (others wait for it and use its
//! result), at most one every `MIN_REFETCH` after a success, and backing
//! off (doubling up to `MAX_BACKOFF`) while the provider fails, so tokens
//! with made-up key ids cannot turn a node into a flood of requests.
//!
//! A fetch is bounded too, as the URL's answer decides who may sign in:
//! https only (`http://` only when `SWITCHYARD_JWKS_ALLOW_HTTP` says so),
//! no redirect followed (a redirect could lead the node anywhere, plain
//! http included), `CONNECT_TIMEOUT` to connect and `FETCH_TIMEOUT` for
//! the whole answer, and the body read piece by piece and dropped past
//! `MAX_BYTES` (a key set is a few KiB; an endless body must not fill
//! the node's memory).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{ProviderKey, TokenError};

/// Fewest seconds between two fetches after a successful one.
const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Longest wait between fetches while the provider fails.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A key set older than this is refetched in the background.
const REFRESH: Duration = Duration::from_secs(15 * 60);
/// Bound on one fetch, from connecting to the body's last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on connecting (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest JWKS document accepted.
pub const MAX_BYTES: usize = 256 * 1024;

/// The provider's keys and how they are kept fresh.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: ArcSwap<Vec<ProviderKey>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// When the last fetch started.
    last: Option<Instant>,
    /// When a fetch last succeeded.
    last_ok: Option<Instant>,
    /// Fetches failed in a row.
    failures: u32,
    /// Bumped by every fetch, so a waiter knows one ran meanwhile.
    generation: u64,
}

impl FetchState {
    fn wait(&self) -> Duration {
        if self.failures == 0 {
            return MIN_REFETCH;
        }
        let secs = 1u64 << self.failures.min(9);
        Duration::from_secs(secs).min(MAX_BACKOFF)
    }
}

/// Why the key set could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The HTTP client could not be built (no TLS roots, ...).
    #[error("cannot build the HTTP client for SWITCHYARD_JWKS_URL: {0}")]
    Client(#[source] reqwest::Error),
    /// The request failed (connection, timeout, ...).
    #[error("request failed: {0}")]
    Request(#[source] reqwest::Error),
    /// The provider answered something other than a success.
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    /// The provider answered with a redirect, which is not followed.
    #[error("answered {0} (a redirect, which is not followed: set SWITCHYARD_JWKS_URL to the address the key set is served at)")]
    Redirect(reqwest::StatusCode),
    /// Over `MAX_BYTES`.
    #[error("the key set is larger than 256 KiB")]
    TooLarge,
    /// The body could not be read.
    #[error("reading the key set failed: {0}")]
    Body(#[source] reqwest::Error),
    /// The body is not a JWKS document.
    #[error("not a JWKS document: {0}")]
    NotJwks(#[source] serde_json::Error),
}

impl Jwks {
    /// Fetches the set once; a failure is logged and the set stays empty
    /// until a token makes the node try again. `allow_http`: an `http://`
    /// URL may be fetched (configuration has refused one otherwise).
    pub async fn start(url: &str, allow_http: bool) -> Result<Arc<Jwks>, JwksError> {
        let http = reqwest::Client::builder()
            .https_only(!allow_http)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(JwksError::Client)?;
        let jwks = Arc::new(Jwks {
            url: url.to_string(),
            http,
            keys: ArcSwap::from_pointee(Vec::new()),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        });
        jwks.refetch(None).await;
        Ok(jwks)
    }

    /// The keys that may verify a token of `alg` naming `kid`; refetches
    /// the set (within the bounds above) when there is none.
    pub async fn keys_for(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<DecodingKey>>, TokenError> {
        let found = super::matching(&self.keys.load(), kid, alg);
        if !found.is_empty() {
            self.refresh_if_old();
            return Ok(found);
        }
        let seen = self.fetch.lock().await.generation;
        self.refetch(Some(seen)).await;
        let keys = self.keys.load();
        let found = super::matching(&keys, kid, alg);
        match (found.is_empty(), keys.is_empty()) {
            (false, _) => Ok(found),
            (true, true) => Err(TokenError::KeysUnavailable),
            (true, false) if kid.is_some() => Err(TokenError::UnknownKey),
            (true, false) => Err(TokenError::Algorithm),
        }
    }

    fn refresh_if_old(self: &Arc<Self>) {
        let Ok(state) = self.fetch.try_lock() else {
            return; // a fetch is under way
        };
        if state.last_ok.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        drop(state);
        let me = self.clone();
        tokio::spawn(async move { me.refetch(None).await });
    }

    /// Fetches the set unless one was fetched since generation `seen`
    /// (another caller's fetch answers this one too) or the bounds say wait.
    async fn refetch(&self, seen: Option<u64>) {
        let mut state = self.fetch.lock().await;
        if let Some(seen) = seen {
            if state.generation != seen {
                return;
            }
            if state.last.is_some_and(|t| t.elapsed() < state.wait()) {
                return;
            }
        }
        state.last = Some(Instant::now());
        state.generation += 1;
        match self.fetch_once().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "identity provider keys fetched");
                self.keys.store(Arc::new(keys));
                state.failures = 0;
                state.last_ok = Some(Instant::now());
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                // With its causes: reqwest's own message alone does not say
                // whether DNS, TCP or the certificate failed.
                let mut error = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    error.push_str(": ");
                    error.push_str(&c.to_string());
                    cause = c.source();
                }
                tracing::warn!(
                    error = %error,
                    failures = state.failures,
                    retry_in_s = state.wait().as_secs(),
                    "cannot fetch the identity provider's keys (SWITCHYARD_JWKS_URL)"
                );
            }
        }
    }

    async fn fetch_once(&self) -> Result<Vec<ProviderKey>, JwksError> {
        let mut res = self
            .http
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(JwksError::Request)?;
        if res.status().is_redirection() {
            return Err(JwksError::Redirect(res.status()));
        }
        if !res.status().is_success() {
            return Err(JwksError::Status(res.status()));
        }
        if res.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(JwksError::TooLarge);
        }
        // Piece by piece, so a body past the cap is dropped (and its
        // connection closed) as soon as it passes it.
        let mut body = Vec::with_capacity(res.content_length().unwrap_or(0) as usize);
        while let Some(chunk) = res.chunk().await.map_err(JwksError::Body)? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body)
    }
}

/// The signing keys of a JWKS document. Keys for encryption, symmetric
/// (`oct`) keys and keys of other types or algorithms are left out.
pub fn parse(body: &[u8]) -> Result<Vec<ProviderKey>, JwksError> {
    let set: JwkSet = serde_json::from_slice(body).map_err(JwksError::NotJwks)?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
        ) {
            continue;
        }
        let by_type = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {
                vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512]
            }
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => continue,
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            _ => continue,
        };
        let algs = match jwk.common.key_algorithm {
            None => by_type,
            Some(ka) => match Algorithm::try_from(ka) {
                Ok(alg) if by_type.contains(&alg) => vec![alg],
                _ => continue,
            },
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(ProviderKey {
            kid: jwk.common.key_id.clone(),
            key: Arc::new(key),
            algs,
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_signing_keys_only() {
        let doc = br#"{"keys":[
            {"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"sXch","e":"AQAB"},
            {"kty":"RSA","kid":"r2","use":"enc","n":"sXch","e":"AQAB"},
            {"kty":"oct","kid":"h1","k":"c2VjcmV0"},
            {"kty":"EC","kid":"e1","crv":"P-384","x":"AAAA","y":"AAAA"},
            {"kty":"OKP","kid":"d1","crv":"Ed25519","x":"AAAA"},
            {"kty":"XYZ","kid":"x1"}
        ]}"#;
        let keys = parse(doc).expect("parse");
        let summary: Vec<(Option<&str>, &[Algorithm])> = keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.algs.as_slice()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("r1"), &[Algorithm::RS256][..]),
                (Some("e1"), &[Algorithm::ES384][..]),
                (Some("d1"), &[Algorithm::EdDSA][..]),
            ]
        );
        assert!(parse(b"{}").is_err());
    }
}
