//! Client tokens (JWT, HS256) and how a request proves who it is.
//!
//! A token is read from `Authorization: Bearer`, a `switchyard_token` cookie,
//! or `?token=` (a browser's `EventSource` cannot set headers). Only HS256 is
//! accepted: `alg: none`, any other algorithm, a wrong signature, an expired
//! token or a malformed one is refused. Tokens and secrets are never logged.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Claims of a client token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The tenant slug.
    pub tenant: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default)]
    pub iat: u64,
}

/// Why a token was refused (the message is safe to show the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not HS256.
    #[error("the token's algorithm is not accepted (only HS256)")]
    Algorithm,
    /// The signature does not match.
    #[error("the token's signature is not valid")]
    Signature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Signs and verifies client tokens with one secret.
#[derive(Clone)]
pub struct Keys {
    secret: Vec<u8>,
}

// The secret never reaches a log through Debug.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<secret>)")
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Keys {
    /// Keys from a secret.
    pub fn new(secret: &[u8]) -> Keys {
        Keys {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.secret).expect("HMAC accepts keys of any length")
    }

    /// Mints a token.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// Verifies a token at `now` (seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Reads `dir/jwt_secret`, creating it (random, mode 0600) if missing.
pub fn secret_from_data_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let secret = random_secret();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(&path) {
        Ok(mut f) => {
            use std::io::Write;
            f.write_all(secret.as_bytes())?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().as_bytes().to_vec())
        }
        Err(e) => Err(e),
    }
}

/// 32 random bytes, base64url.
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS provides randomness");
    URL_SAFE_NO_PAD.encode(b)
}

/// Parses a duration like `90s`, `15m`, `1h`, `7d` (or plain seconds).
pub fn parse_ttl(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "u1".into(),
            tenant: "acme".into(),
            exp,
            iat: 0,
        }
    }

    #[test]
    fn round_trip() {
        let k = Keys::new(b"secret");
        let t = k.sign(&claims(2000));
        assert_eq!(k.verify(&t, 1000), Ok(claims(2000)));
    }

    #[test]
    fn refuses_expired_forged_and_none() {
        let k = Keys::new(b"secret");
        let t = k.sign(&claims(2000));
        assert_eq!(k.verify(&t, 2000), Err(TokenError::Expired));
        assert_eq!(
            Keys::new(b"other").verify(&t, 1000),
            Err(TokenError::Signature)
        );
        let parts: Vec<&str> = t.split('.').collect();
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            k.verify(&format!("{none}.{}.", parts[1]), 1000),
            Err(TokenError::Algorithm)
        );
        // A payload swapped under a valid signature.
        let evil = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Claims {
                sub: "admin".into(),
                ..claims(9999)
            })
            .expect("json"),
        );
        assert_eq!(
            k.verify(&format!("{}.{evil}.{}", parts[0], parts[2]), 1000),
            Err(TokenError::Signature)
        );
        assert_eq!(k.verify("garbage", 1000), Err(TokenError::Malformed));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("90"), Some(90));
        assert_eq!(parse_ttl("15m"), Some(900));
        assert_eq!(parse_ttl("0s"), None);
        assert_eq!(parse_ttl("1y"), None);
    }

    #[test]
    fn data_dir_secret_is_stable() {
        let dir = std::env::temp_dir().join(format!("sy-secret-{}", random_secret()));
        let a = secret_from_data_dir(&dir).expect("create");
        let b = secret_from_data_dir(&dir).expect("reuse");
        assert_eq!(a, b);
        let _ = std::fs::remove_dir_all(dir);
    }
}
