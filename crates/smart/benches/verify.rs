//! Access-token verification costs: `cargo bench -p fhirseal-smart --bench verify`.
//!
//! - `rs256/jwk_each_time`: what caching saves. jsonwebtoken's `DecodingKey::from_jwk` and
//!   `decode` per token (signature, `exp`, `aud`, `iss`).
//! - `rs256/jsonwebtoken_decoding_key_kept`: the same with the `DecodingKey` built once (it
//!   still rebuilds the RSA key inside aws-lc on every call).
//! - `rs256/cached_key` and `es256/cached_key`: [`Verifier::verify`] with the token cache off:
//!   parsing, the aws-lc key parsed once per JWK, signature, claims, `TokenContext`.
//! - `rs256/cache_hit`: [`Verifier::verify`] of a token verified before (SHA-256 and a map).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use criterion::{Criterion, criterion_group, criterion_main};
use fhirseal_smart::verify::{IssuerConfig, KeySource, Verifier, VerifierConfig};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

const ISS: &str = "https://as.example.org";
const AUD: &str = "https://fhir.example.org/r4";

fn rsa() -> (EncodingKey, Value) {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = <aws_lc_rs::rsa::KeyPair as AsDer<Pkcs8V1Der<'static>>>::as_der(&pair).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    jwk["kid"] = json!("rsa-1");
    (key, jwk)
}

fn es256() -> (EncodingKey, Value) {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "es256-1",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..]),
    });
    (
        EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
        jwk,
    )
}

fn token(key: &EncodingKey, alg: Algorithm, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISS, "aud": AUD, "sub": "user-1", "exp": now + 3600, "iat": now,
        "scope": "patient/Observation.rs patient/Patient.rs openid fhirUser launch/patient",
        "patient": "123", "fhirUser": "Practitioner/7", "client_id": "app",
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn verifier(jwks: &[&Value], cache_entries: usize) -> Verifier {
    let set: JwkSet = serde_json::from_value(json!({ "keys": jwks })).unwrap();
    let issuer = IssuerConfig::new(ISS, vec![AUD.into()], KeySource::Static(set));
    let config = VerifierConfig {
        cache_entries,
        ..VerifierConfig::new(vec![issuer])
    };
    Verifier::new(config, reqwest::Client::new()).unwrap()
}

fn verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (rsa_key, rsa_jwk) = rsa();
    let (ec_key, ec_jwk) = es256();
    let rs256 = token(&rsa_key, Algorithm::RS256, "rsa-1");
    let es256 = token(&ec_key, Algorithm::ES256, "es256-1");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[AUD]);
    validation.set_issuer(&[ISS]);
    let jwk: Jwk = serde_json::from_value(rsa_jwk.clone()).unwrap();

    let mut group = c.benchmark_group("rs256");
    group.bench_function("jwk_each_time", |b| {
        b.iter(|| {
            let key = DecodingKey::from_jwk(black_box(&jwk)).unwrap();
            jsonwebtoken::decode::<Value>(black_box(&rs256), &key, &validation).unwrap()
        });
    });
    let kept = DecodingKey::from_jwk(&jwk).unwrap();
    group.bench_function("jsonwebtoken_decoding_key_kept", |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(black_box(&rs256), &kept, &validation).unwrap());
    });
    let uncached = verifier(&[&rsa_jwk, &ec_jwk], 0);
    group.bench_function("cached_key", |b| {
        b.iter(|| {
            runtime
                .block_on(uncached.verify(black_box(&rs256)))
                .unwrap()
        });
    });
    let cached = verifier(&[&rsa_jwk, &ec_jwk], 10_000);
    runtime.block_on(cached.verify(&rs256)).unwrap();
    group.bench_function("cache_hit", |b| {
        b.iter(|| runtime.block_on(cached.verify(black_box(&rs256))).unwrap());
    });
    group.finish();

    c.benchmark_group("es256")
        .bench_function("cached_key", |b| {
            b.iter(|| {
                runtime
                    .block_on(uncached.verify(black_box(&es256)))
                    .unwrap()
            });
        });
}

criterion_group!(benches, verify);
criterion_main!(benches);
