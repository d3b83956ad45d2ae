//! Signed tokens with any header and any claims: what the fuzzer cannot
//! reach by mutating bytes (a valid HS256 signature) is made here, so that
//! the claim rules run on every input. Verification never panics; a token
//! passes only when its header says HS256 and the secret signed it (an
//! RS256/ES256/EdDSA header over an HMAC made with a public key, the
//! algorithm-confusion attack, never passes); what passes is unexpired, of
//! the configured issuer and audience, and names a valid user, or (local
//! tokens only) a service with valid publish patterns.
#![no_main]

use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

use switchyard::auth::{now_secs, publish, valid_user_id, Identity, Keys, TokenRules, Verifier};
use switchyard_fuzz::jwt::{block_on, sign_hs256, verifier, PUBLIC_KEYS, SECRET};
use switchyard_fuzz::{json, name, text, NAME_CHARS};

fn providers() -> &'static [Verifier] {
    static V: OnceLock<Vec<Verifier>> = OnceLock::new();
    V.get_or_init(|| {
        (0..PUBLIC_KEYS.len())
            .map(|i| verifier(TokenRules::default(), i))
            .collect()
    })
}

#[derive(Debug)]
struct Input {
    rules: TokenRules,
    header: Map<String, Value>,
    claims: Map<String, Value>,
    /// Which key signs: the secret, or a provider's public key as an HMAC key.
    signer: Option<usize>,
    provider: usize,
}

const ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA",
    "none", "None", "", "hs256",
];

/// A time around now: past, near, future, huge, negative, fractional.
fn time(u: &mut Unstructured, now: u64) -> Result<Value> {
    let delta = u.int_in_range(-100_000i64..=100_000)?;
    Ok(match u.int_in_range(0..=5)? {
        0 => json!(now.saturating_add_signed(delta)),
        1 => json!(now as f64 + delta as f64 + 0.5),
        2 => json!(u.arbitrary::<u64>()?),
        3 => json!(delta),
        4 => json!(u.arbitrary::<f64>()?),
        _ => json(u, 1)?,
    })
}

fn id(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Value::String(name(u, NAME_CHARS, 130)?),
        1 => Value::String(text(u)?),
        2 => Value::String(String::new()),
        _ => json(u, 1)?,
    })
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let now = now_secs();
        let claim_names = ["sub", "tenant", "uid", "org"];
        let rules = TokenRules {
            issuer: if u.arbitrary()? { Some(text(u)?) } else { None },
            audience: if u.arbitrary()? { Some(text(u)?) } else { None },
            user_claim: u.choose(&claim_names[..3])?.to_string(),
            tenant_claim: u.choose(&claim_names[1..])?.to_string(),
        };
        let mut header = Map::new();
        header.insert(
            "alg".into(),
            if u.ratio(1, 10)? {
                json(u, 1)?
            } else {
                Value::String(u.choose(ALGS)?.to_string())
            },
        );
        if u.arbitrary()? {
            header.insert("typ".into(), json!("JWT"));
        }
        if u.arbitrary()? {
            header.insert("kid".into(), id(u)?);
        }
        if u.ratio(1, 4)? {
            header.extend(switchyard_fuzz::object(u, 1)?);
        }
        let mut claims = Map::new();
        for claim in ["sub", "tenant", "uid", "org", "svc"] {
            if u.ratio(2, 3)? {
                claims.insert(claim.into(), id(u)?);
            }
        }
        for claim in ["exp", "iat", "nbf"] {
            if u.ratio(3, 4)? {
                claims.insert(claim.into(), time(u, now)?);
            }
        }
        if u.arbitrary()? {
            let list = (0..u.int_in_range(0..=3)?)
                .map(|_| {
                    Ok(if u.arbitrary()? {
                        Value::String(format!("{}*", name(u, b"abc:-_*", 8)?))
                    } else {
                        id(u)?
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            claims.insert("publish".into(), Value::Array(list));
        }
        for (claim, rule) in [("iss", &rules.issuer), ("aud", &rules.audience)] {
            match (u.int_in_range(0..=3)?, rule) {
                (0 | 1, Some(v)) => {
                    claims.insert(claim.into(), json!(v));
                }
                (2, Some(v)) => {
                    claims.insert(claim.into(), json!([text(u)?, v]));
                }
                (3, _) => {
                    claims.insert(claim.into(), json(u, 1)?);
                }
                _ => {}
            }
        }
        if u.ratio(1, 4)? {
            claims.extend(switchyard_fuzz::object(u, 1)?);
        }
        Ok(Input {
            rules,
            header,
            claims,
            signer: if u.ratio(1, 4)? {
                Some(u.choose_index(PUBLIC_KEYS.len())?)
            } else {
                None
            },
            provider: u.choose_index(PUBLIC_KEYS.len())?,
        })
    }
}

fuzz_target!(|input: Input| {
    let secret = match input.signer {
        None => SECRET,
        Some(i) => PUBLIC_KEYS[i].1.as_bytes(),
    };
    let header = serde_json::to_vec(&Value::Object(input.header.clone())).expect("json");
    let claims = serde_json::to_vec(&Value::Object(input.claims.clone())).expect("json");
    let token = sign_hs256(&header, &claims, secret);
    let now = now_secs();
    // The provider's keys: nothing signed here verifies with them.
    let provider = &providers()[input.provider];
    if let Ok(id) = block_on(provider.verify(&token, now)) {
        assert!(
            input.header["alg"] == "HS256" && input.signer.is_none(),
            "{id:?}"
        );
    }
    let v = Verifier::local(Keys::with_rules(SECRET, input.rules.clone()));
    let user = v.keys().verify(&token, now);
    let identity = block_on(v.verify(&token, now));
    if let Ok(c) = &user {
        assert_eq!(identity.as_ref().ok(), Some(&Identity::User(c.clone())));
    }
    let Ok(identity) = identity else { return };

    assert_eq!(input.header["alg"], "HS256", "{token}");
    assert!(
        input.signer.is_none(),
        "accepted an HMAC made with a public key"
    );
    let c = &input.claims;
    let rules = &input.rules;
    if let Some(iss) = &rules.issuer {
        assert_eq!(c.get("iss"), Some(&json!(iss)));
    }
    if let Some(aud) = &rules.audience {
        let named = match c.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(a)) => a.contains(&json!(aud)),
            _ => false,
        };
        assert!(named, "aud {:?} accepted for {aud:?}", c.get("aud"));
    }
    let (tenant, exp) = match &identity {
        Identity::User(u) => {
            assert!(valid_user_id(&u.sub), "{:?}", u.sub);
            assert_eq!(c.get(&rules.user_claim), Some(&json!(u.sub)));
            (&u.tenant, u.exp)
        }
        Identity::Service(s) => {
            assert_eq!(c.get("svc"), Some(&json!(s.service)));
            assert!(publish::validate(&s.publish).is_ok(), "{:?}", s.publish);
            (&s.tenant, s.exp)
        }
    };
    assert!(!tenant.is_empty());
    assert_eq!(c.get(&rules.tenant_claim), Some(&json!(tenant)));
    assert!(exp > now, "expired at {exp}, now {now}");
});
