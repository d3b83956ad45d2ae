//! Client and publisher tokens (JWTs) and the keys that check them.
//!
//! Two kinds of key verify a token, chosen by its `alg`:
//!
//! - **This server's secret** (HS256): `SWITCHYARD_JWT_SECRET` (at least
//!   `MIN_SECRET_BYTES`), else generated into the data dir (embedded) or
//!   Postgres (cluster). It signs what
//!   `switchyard token` and `POST /admin/tokens` mint: user tokens, and
//!   publisher tokens (`svc`, `publish`) that only this secret can make.
//! - **The identity provider's public keys** (RS256/384/512, ES256/384,
//!   EdDSA): a PEM file (`SWITCHYARD_JWT_PUBLIC_KEY`, one key used whatever
//!   `kid` a token names) or a JWKS URL (`SWITCHYARD_JWKS_URL`, https, see
//!   `jwks`; keys found by `kid`). They verify user tokens only.
//!
//! An HS256 token is only ever checked with the secret and an asymmetric one
//! only with a public key of its algorithm's family, so a public key can never
//! be used as an HMAC secret; `none` and every other algorithm are refused.
//! `iss` and `aud` are checked when configured (and written by the minting
//! commands), and the claim names of the user and tenant are settings.
//! Tokens and secrets are never logged.

pub mod jwks;
pub mod publish;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Claims of a user token.
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

/// Claims of a publisher token: a service that may publish to some topics
/// of one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceClaims {
    /// The service's name (`svc`).
    pub service: String,
    /// The tenant slug.
    pub tenant: String,
    /// Topic patterns it may publish to (`publish`): a topic, or a prefix
    /// ending in `*`.
    pub publish: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// A console role, granted by an identity provider's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads and changes everything the admin API does.
    Operator,
    /// Reads every admin GET; changes nothing.
    Viewer,
}

/// What a valid token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A user of a tenant.
    User(Claims),
    /// A publishing service of a tenant.
    Service(ServiceClaims),
}

/// Why a token was refused (the message is safe to show the client).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// `alg` is not accepted (or no key of its kind is configured).
    #[error("the token's algorithm is not accepted (HS256 with this server's secret; RS256, RS384, RS512, ES256, ES384 or EdDSA with the identity provider's keys, where configured)")]
    Algorithm,
    /// The signature does not match.
    #[error("the token's signature is not valid")]
    Signature,
    /// `exp` is in the past.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer (`iss`) is not the one this server accepts")]
    Issuer,
    /// `aud` does not name the configured audience.
    #[error("the token's audience (`aud`) does not include this server")]
    Audience,
    /// A required claim is missing or not of its type.
    #[error("the token has no `{0}` claim of the expected type")]
    MissingClaim(String),
    /// The user claim is not a user id Switchyard can use.
    #[error("the token's `{0}` claim is not a valid user id (1-128 letters, digits, '-', '_', '.' and '@')")]
    InvalidUser(String),
    /// A publisher token's `publish` patterns are not valid.
    #[error("the token's `publish` claim is not a list of topic patterns")]
    InvalidPatterns,
    /// `kid` names no key of the identity provider.
    #[error("the token's key id (`kid`) is not among the identity provider's keys")]
    UnknownKey,
    /// The identity provider's keys could not be fetched yet.
    #[error("the identity provider's keys cannot be fetched now; retry")]
    KeysUnavailable,
}

/// Why a publisher token cannot be minted (the message names the argument).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The service name is not a user id.
    #[error("the service name must be 1-128 letters, digits, '-', '_', '.' and '@'")]
    Service,
    /// The tenant is not a slug.
    #[error("the tenant: {0}")]
    Tenant(#[from] crate::event::NameError),
    /// The topic patterns are not valid.
    #[error(transparent)]
    Patterns(#[from] publish::PatternError),
}

/// Why the identity provider's keys cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// `SWITCHYARD_JWT_PUBLIC_KEY` cannot be read.
    #[error("cannot read SWITCHYARD_JWT_PUBLIC_KEY {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `SWITCHYARD_JWT_PUBLIC_KEY` holds no public key this server reads.
    #[error("SWITCHYARD_JWT_PUBLIC_KEY {0} is not a PEM public key (RSA, EC or Ed25519)")]
    NotAKey(String),
    /// The JWKS client could not be set up.
    #[error(transparent)]
    Jwks(#[from] jwks::JwksError),
}

/// How tokens are checked and minted: claim names, issuer and audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required member of `aud`, if set.
    pub audience: Option<String>,
    /// The claim holding the user id.
    pub user_claim: String,
    /// The claim holding the tenant slug.
    pub tenant_claim: String,
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules {
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            tenant_claim: "tenant".into(),
        }
    }
}

/// Signs and verifies tokens with this server's secret (HS256).
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    rules: Arc<TokenRules>,
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
    /// Keys from a secret, with the default claim names and no issuer or
    /// audience.
    pub fn new(secret: &[u8]) -> Keys {
        Keys::with_rules(secret, TokenRules::default())
    }

    /// Keys from a secret that mint and check by `rules`.
    pub fn with_rules(secret: &[u8], rules: TokenRules) -> Keys {
        // An empty secret never gets here: configuration refuses one shorter
        // than `MIN_SECRET_BYTES`, so does `secret_from_data_dir`, and a
        // generated one has 43 characters. HMAC takes any other length.
        Keys {
            encoding: EncodingKey::from_secret(secret).expect("a non-empty HMAC secret"),
            decoding: DecodingKey::from_secret(secret).expect("a non-empty HMAC secret"),
            rules: Arc::new(rules),
        }
    }

    /// The rules these keys mint and check by.
    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    fn sign_map(&self, mut claims: Map<String, Value>) -> String {
        if let Some(iss) = &self.rules.issuer {
            claims.insert("iss".into(), iss.clone().into());
        }
        if let Some(aud) = &self.rules.audience {
            claims.insert("aud".into(), aud.clone().into());
        }
        let header = jsonwebtoken::Header::new(Algorithm::HS256);
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("HS256 signing of a JSON object does not fail")
    }

    /// Mints a user token.
    pub fn sign(&self, claims: &Claims) -> String {
        let mut m = Map::new();
        m.insert(self.rules.user_claim.clone(), claims.sub.clone().into());
        m.insert(
            self.rules.tenant_claim.clone(),
            claims.tenant.clone().into(),
        );
        m.insert("exp".into(), claims.exp.into());
        m.insert("iat".into(), claims.iat.into());
        self.sign_map(m)
    }

    /// Mints a publisher token.
    pub fn sign_service(&self, claims: &ServiceClaims) -> String {
        let mut m = Map::new();
        m.insert("svc".into(), claims.service.clone().into());
        m.insert(
            self.rules.tenant_claim.clone(),
            claims.tenant.clone().into(),
        );
        m.insert("publish".into(), claims.publish.clone().into());
        m.insert("exp".into(), claims.exp.into());
        m.insert("iat".into(), claims.iat.into());
        self.sign_map(m)
    }

    /// Signs a user token that carries `extra` claims beside the user's (a
    /// marketplace's `bid_on`, say, for a stream authorizer to read); the
    /// user, tenant and time claims win over `extra`'s.
    pub fn sign_with_claims(&self, claims: &Claims, extra: &Map<String, Value>) -> String {
        let mut m = extra.clone();
        m.insert(self.rules.user_claim.clone(), claims.sub.clone().into());
        m.insert(
            self.rules.tenant_claim.clone(),
            claims.tenant.clone().into(),
        );
        m.insert("exp".into(), claims.exp.into());
        m.insert("iat".into(), claims.iat.into());
        m.remove("svc");
        self.sign_map(m)
    }

    /// Verifies a user token at `now` (seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        match self.verify_identity(token, now)? {
            Identity::User(c) => Ok(c),
            Identity::Service(_) => Err(TokenError::MissingClaim(self.rules.user_claim.clone())),
        }
    }

    /// Verifies a user or publisher token signed with this secret.
    fn verify_identity(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        if peek(token)?.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        let claims = decode(token, &self.decoding, Algorithm::HS256, &self.rules)?;
        identity(claims, &self.rules, now, true)
    }
}

/// What a token's header says, read before any key is chosen.
struct Peeked {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads `alg` and `kid`; refuses `none` and every algorithm not listed.
fn peek(token: &str) -> Result<Peeked, TokenError> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
        #[serde(default)]
        kid: Option<String>,
    }
    let first = token.split('.').next().ok_or(TokenError::Malformed)?;
    let header: Header = URL_SAFE_NO_PAD
        .decode(first)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    let alg = match header.alg.as_str() {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(TokenError::Algorithm),
    };
    Ok(Peeked {
        alg,
        kid: header.kid,
    })
}

/// Checks the signature with `key` (whose family must be `alg`'s), `nbf`,
/// and `iss`/`aud` where configured, and returns the claims. `exp` is
/// checked by `identity`, against the caller's clock.
fn decode(
    token: &str,
    key: &DecodingKey,
    alg: Algorithm,
    rules: &TokenRules,
) -> Result<Map<String, Value>, TokenError> {
    use jsonwebtoken::errors::ErrorKind;
    if key.family() != alg.family() {
        return Err(TokenError::Algorithm);
    }
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = true;
    v.validate_aud = rules.audience.is_some();
    let mut required = vec!["exp"];
    if let Some(iss) = &rules.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    if let Some(aud) = &rules.audience {
        v.set_audience(&[aud]);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    match jsonwebtoken::decode::<Map<String, Value>>(token, key, &v) {
        // `iss` is one string (RFC 7519, 4.1.1); the library also takes an
        // array with the issuer among others, which names no one issuer
        // (found by fuzz/jwt_claims).
        Ok(data)
            if rules.issuer.is_some()
                && data.claims.get("iss").and_then(Value::as_str) != rules.issuer.as_deref() =>
        {
            Err(TokenError::Issuer)
        }
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::Algorithm,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            _ => TokenError::Malformed,
        }),
    }
}

/// A whole number of seconds (some providers write `exp` as a float).
fn seconds(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// The identity a verified token's claims describe. Publisher claims count
/// only in tokens signed with this server's secret (`local`).
fn identity(
    claims: Map<String, Value>,
    rules: &TokenRules,
    now: u64,
    local: bool,
) -> Result<Identity, TokenError> {
    let exp = seconds(claims.get("exp")).ok_or(TokenError::MissingClaim("exp".into()))?;
    if exp <= now {
        return Err(TokenError::Expired);
    }
    let iat = seconds(claims.get("iat")).unwrap_or(0);
    let text = |name: &str| -> Result<String, TokenError> {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| TokenError::MissingClaim(name.to_string()))
    };
    let tenant = text(&rules.tenant_claim)?;
    if local {
        if let Some(service) = claims.get("svc").and_then(Value::as_str) {
            let publish: Vec<String> = claims
                .get("publish")
                .and_then(Value::as_array)
                .ok_or(TokenError::InvalidPatterns)?
                .iter()
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or(TokenError::InvalidPatterns)?;
            publish::validate(&publish).map_err(|_| TokenError::InvalidPatterns)?;
            return Ok(Identity::Service(ServiceClaims {
                service: service.to_string(),
                tenant,
                publish,
                exp,
                iat,
            }));
        }
    }
    let sub = text(&rules.user_claim)?;
    if !valid_user_id(&sub) {
        return Err(TokenError::InvalidUser(rules.user_claim.clone()));
    }
    Ok(Identity::User(Claims {
        sub,
        tenant,
        exp,
        iat,
    }))
}

impl ServiceClaims {
    /// Checked claims for a new publisher token valid for `ttl` seconds from
    /// `now`; the error names the bad argument.
    pub fn new(
        service: &str,
        tenant: &str,
        publish: Vec<String>,
        ttl: u64,
        now: u64,
    ) -> Result<ServiceClaims, MintError> {
        if !valid_user_id(service) {
            return Err(MintError::Service);
        }
        crate::event::validate_slug(tenant)?;
        publish::validate(&publish)?;
        Ok(ServiceClaims {
            service: service.to_string(),
            tenant: tenant.to_string(),
            publish,
            exp: now.saturating_add(ttl),
            iat: now,
        })
    }
}

/// A user id as topics and paths take it.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// A public key of the identity provider and the algorithms it verifies.
#[derive(Clone)]
pub struct ProviderKey {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// The key.
    pub key: Arc<DecodingKey>,
    /// Algorithms it may verify (one family).
    pub algs: Vec<Algorithm>,
}

/// Where the identity provider's keys come from.
enum Provider {
    /// A PEM file read at start.
    Static(Vec<ProviderKey>),
    /// A JWKS URL, fetched and refreshed.
    Jwks(Arc<jwks::Jwks>),
}

/// Verifies every token a request may carry: this server's (HS256) and
/// the identity provider's.
#[derive(Clone)]
pub struct Verifier {
    local: Keys,
    provider: Option<Arc<Provider>>,
}

impl Verifier {
    /// Only this server's secret.
    pub fn local(keys: Keys) -> Verifier {
        Verifier {
            local: keys,
            provider: None,
        }
    }

    /// This server's secret and, where configured, the identity provider's
    /// keys (a JWKS is fetched once here; a failure is logged, and retried
    /// when a token needs it; `jwks_allow_http`: an `http://` URL may be
    /// fetched).
    pub async fn start(
        keys: Keys,
        public_key: Option<&Path>,
        jwks_url: Option<&str>,
        jwks_allow_http: bool,
    ) -> Result<Verifier, ProviderError> {
        let provider = match (public_key, jwks_url) {
            (Some(path), _) => Some(Provider::Static(vec![pem_key(path)?])),
            (None, Some(url)) => Some(Provider::Jwks(
                jwks::Jwks::start(url, jwks_allow_http).await?,
            )),
            (None, None) => None,
        };
        Ok(Verifier {
            local: keys,
            provider: provider.map(Arc::new),
        })
    }

    /// This server's keys (for minting).
    pub fn keys(&self) -> &Keys {
        &self.local
    }

    /// Verifies a token at `now` (seconds).
    pub async fn verify(&self, token: &str, now: u64) -> Result<Identity, TokenError> {
        let peeked = peek(token)?;
        if peeked.alg == Algorithm::HS256 {
            return self.local.verify_identity(token, now);
        }
        let claims = self.provider_claims(token, peeked).await?;
        identity(claims, &self.local.rules, now, false)
    }

    /// The console role an identity provider's token grants through its
    /// `claim` (a string, or a list of strings, naming `operator` or
    /// `viewer`; `operator` wins), with the token's subject (the user
    /// claim). `Ok(None)`: a valid token that grants no role. Only the
    /// provider's tokens grant roles: this server's own secret signs user
    /// and publisher tokens, never an operator's.
    pub async fn verify_operator(
        &self,
        token: &str,
        now: u64,
        claim: &str,
    ) -> Result<Option<(String, Role)>, TokenError> {
        let peeked = peek(token)?;
        if peeked.alg == Algorithm::HS256 {
            return Ok(None);
        }
        let claims = self.provider_claims(token, peeked).await?;
        let exp = seconds(claims.get("exp")).ok_or(TokenError::MissingClaim("exp".into()))?;
        if exp <= now {
            return Err(TokenError::Expired);
        }
        let rules = &self.local.rules;
        let sub = claims
            .get(&rules.user_claim)
            .and_then(Value::as_str)
            .filter(|s| valid_user_id(s))
            .ok_or_else(|| TokenError::InvalidUser(rules.user_claim.clone()))?
            .to_string();
        let named = |role: &str| match claims.get(claim) {
            Some(Value::String(s)) => s == role,
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(role)),
            _ => false,
        };
        Ok(if named("operator") {
            Some((sub, Role::Operator))
        } else if named("viewer") {
            Some((sub, Role::Viewer))
        } else {
            None
        })
    }

    /// The claims of an identity provider's token, its signature, `nbf`,
    /// `iss` and `aud` checked (`exp` is the caller's to check).
    async fn provider_claims(
        &self,
        token: &str,
        peeked: Peeked,
    ) -> Result<Map<String, Value>, TokenError> {
        let candidates = match self.provider.as_deref() {
            None => return Err(TokenError::Algorithm),
            // A PEM file is one key with no id of its own: it verifies
            // tokens of its family whatever `kid` they carry (a provider
            // always writes one). The family check stays: an HS256 token
            // never gets here, and `decode` refuses a key of another family.
            Some(Provider::Static(keys)) => matching(keys, None, peeked.alg),
            Some(Provider::Jwks(j)) => j.keys_for(peeked.kid.as_deref(), peeked.alg).await?,
        };
        if candidates.is_empty() {
            return Err(TokenError::Algorithm);
        }
        let rules = &self.local.rules;
        let mut last = TokenError::Signature;
        for key in candidates {
            match decode(token, &key, peeked.alg, rules) {
                Ok(claims) => return Ok(claims),
                Err(e @ (TokenError::Signature | TokenError::Algorithm)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }
}

/// The keys that may verify a token of `alg` naming `kid` (no `kid`: every
/// key of the algorithm).
fn matching(keys: &[ProviderKey], kid: Option<&str>, alg: Algorithm) -> Vec<Arc<DecodingKey>> {
    keys.iter()
        .filter(|k| k.algs.contains(&alg))
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .map(|k| k.key.clone())
        .collect()
}

/// The identity provider's public key from a PEM file: RSA, EC (P-256 or
/// P-384) or Ed25519.
fn pem_key(path: &Path) -> Result<ProviderKey, ProviderError> {
    let pem = std::fs::read(path).map_err(|source| ProviderError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let (key, algs) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        (
            k,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        )
    } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        (k, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        (k, vec![Algorithm::EdDSA])
    } else {
        return Err(ProviderError::NotAKey(path.display().to_string()));
    };
    Ok(ProviderKey {
        kid: None,
        key: Arc::new(key),
        algs,
    })
}

/// Fewest bytes of an HS256 secret this server accepts (RFC 7518 §3.2 asks
/// for a key at least as long as the hash: anyone holding one token can
/// guess a shorter secret offline, then mint tokens for any user and
/// tenant, and publisher tokens).
pub const MIN_SECRET_BYTES: usize = 32;

/// Reads `dir/jwt_secret`, creating it (random, mode 0600) if missing. The
/// directory must exist (embedded mode creates it, private, first).
///
/// An empty or short file is refused, not replaced: it is an operator's
/// edit, and a new secret would end every token signed with the old one.
pub fn secret_from_data_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) => return stored_secret(&path, &s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
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
            f.sync_all()?;
            Ok(secret.into_bytes())
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            stored_secret(&path, &std::fs::read_to_string(&path)?)
        }
        Err(e) => Err(e),
    }
}

/// The secret in an existing `jwt_secret` file, refused when empty or short
/// (the error names the file and what to do; never the secret).
fn stored_secret(path: &Path, text: &str) -> std::io::Result<Vec<u8>> {
    let secret = text.trim();
    let problem = if secret.is_empty() {
        "is empty"
    } else if secret.len() < MIN_SECRET_BYTES {
        "holds a secret shorter than 32 bytes"
    } else {
        return Ok(secret.as_bytes().to_vec());
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "{} {problem}: write a secret of at least 32 bytes into it (`openssl rand -base64 32`), \
             or delete it to have a new one generated at start (tokens signed with the old secret \
             then stop working)",
            path.display()
        ),
    ))
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
        std::fs::create_dir_all(&dir).expect("dir");
        let a = secret_from_data_dir(&dir).expect("create");
        let b = secret_from_data_dir(&dir).expect("reuse");
        assert_eq!(a, b);
        assert!(a.len() >= MIN_SECRET_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("jwt_secret"))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn empty_or_short_data_dir_secret_is_refused_and_kept() {
        let dir = std::env::temp_dir().join(format!("sy-secret-{}", random_secret()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("jwt_secret");
        for (text, says) in [("", "is empty"), ("  \n", "is empty"), ("short", "shorter")] {
            std::fs::write(&path, text).expect("write");
            let err = secret_from_data_dir(&dir).expect_err("refused");
            let msg = err.to_string();
            assert!(msg.contains(says) && msg.contains("jwt_secret"), "{msg}");
            assert!(
                !msg.contains("short\n") && !msg.contains(": short"),
                "{msg}"
            );
            assert_eq!(std::fs::read_to_string(&path).expect("kept"), text);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
