//! Any bytes as a token (a header, a query parameter): reading its header
//! (`alg`, `kid`) and verifying it never panics, with this server's secret
//! or any of the identity provider's key types configured; a token passes
//! only with a genuine HS256 signature by the secret (none can be made for
//! the public keys). The same bytes as a JWKS document: no panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchyard::auth::{jwks, now_secs, Keys, TokenRules, Verifier};
use switchyard_fuzz::jwt::{block_on, signed_by, verifier, PUBLIC_KEYS, SECRET};

fn verifiers() -> &'static [Verifier] {
    static V: OnceLock<Vec<Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        (0..PUBLIC_KEYS.len())
            .map(|i| verifier(TokenRules::default(), i))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = jwks::parse(data);
    let token = String::from_utf8_lossy(data);
    let now = now_secs();
    let genuine = signed_by(&token, SECRET);
    if Keys::new(SECRET).verify(&token, now).is_ok() {
        assert!(
            genuine,
            "accepted without the secret's signature: {token:?}"
        );
    }
    for v in verifiers() {
        if block_on(v.verify(&token, now)).is_ok() {
            assert!(
                genuine,
                "accepted without the secret's signature: {token:?}"
            );
        }
    }
});
