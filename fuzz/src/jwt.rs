//! The keys the JWT targets verify with: this server's secret and the
//! identity provider's public keys (RSA, EC P-256, Ed25519), read from PEM
//! files as `SWITCHYARD_JWT_PUBLIC_KEY` would be. Only public keys are kept
//! here: no token can be signed for them, so none may pass.

use std::future::Future;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use switchyard::auth::{Keys, TokenRules, Verifier};

/// This server's HS256 secret in the targets.
pub const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32";

/// The identity provider's public keys, PEM.
pub const PUBLIC_KEYS: [(&str, &str); 3] = [
    ("rsa", include_str!("../keys/rsa.pub.pem")),
    ("ec", include_str!("../keys/ec.pub.pem")),
    ("ed25519", include_str!("../keys/ed25519.pub.pem")),
];

/// Runs a future on a runtime made once (the verifier's futures are ready
/// at once for these keys: no JWKS is fetched).
pub fn block_on<F: Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
    .block_on(f)
}

/// A verifier with the server's secret under `rules` and the provider key
/// `PUBLIC_KEYS[which]`.
pub fn verifier(rules: TokenRules, which: usize) -> Verifier {
    let (name, pem) = PUBLIC_KEYS[which];
    let path = std::env::temp_dir().join(format!(
        "switchyard-fuzz-{}-{name}.pub.pem",
        std::process::id()
    ));
    std::fs::write(&path, pem).expect("write the public key");
    let v = block_on(Verifier::start(
        Keys::with_rules(SECRET, rules),
        Some(path.as_path()),
        None,
        false,
    ))
    .expect("the public key is read");
    let _ = std::fs::remove_file(&path);
    v
}

/// `header.payload.signature`, signed with HMAC-SHA256 and `secret`
/// whatever the header says.
pub fn sign_hs256(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = hs256(signing.as_bytes(), secret);
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// HMAC-SHA256.
pub fn hs256(msg: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `token` carries a genuine HS256 signature by `secret`: only
/// such a token may ever be accepted.
pub fn signed_by(token: &str, secret: &[u8]) -> bool {
    let Some((signing, sig)) = token.rsplit_once('.') else {
        return false;
    };
    // Lenient about the last symbol's spare bits: a decoder that ignores
    // them reads the same signature.
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    lenient
        .decode(sig)
        .is_ok_and(|sig| sig == hs256(signing.as_bytes(), secret))
}
