//! Access-token verification: every algorithm accepted, every attack refused with its own error,
//! keys fetched, rotated and rate-limited against a wiremock JWKS, introspection, the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fhirseal_smart::verify::{
    AuthError, ConfigError, IntrospectionConfig, IssuerConfig, KeySource, Verifier, VerifierConfig,
};
use fhirseal_smart::{ClaimNames, ContextError};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::{Value, json};
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ISS: &str = "https://as.example.org";
const AUD: &str = "https://fhir.example.org/r4";

// --- keys and tokens ---

struct Key {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    /// The public JWK, with `kid` and without `alg`.
    jwk: Value,
    /// For RSA keys: the public key, DER (SubjectPublicKeyInfo).
    public_der: Vec<u8>,
}

struct Keys {
    rsa: Key,
    rsa2: Key,
    es256: Key,
    es384: Key,
    ed: Key,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa: rsa_key("rsa-1"),
        rsa2: rsa_key("rsa-2"),
        es256: ec_key("es256-1", Algorithm::ES256),
        es384: ec_key("es384-1", Algorithm::ES384),
        ed: ed_key("ed-1"),
    })
}

fn rsa_key(kid: &str) -> Key {
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = <aws_lc_rs::rsa::KeyPair as AsDer<Pkcs8V1Der<'static>>>::as_der(&pair).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(pkcs8.as_ref())
    );
    let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap()).unwrap();
    jwk.as_object_mut().unwrap().remove("alg");
    jwk["kid"] = json!(kid);
    let public_der =
        <aws_lc_rs::rsa::PublicKey as AsDer<PublicKeyX509Der<'static>>>::as_der(pair.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
    Key {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding,
        jwk,
        public_der,
    }
}

fn ec_key(kid: &str, alg: Algorithm) -> Key {
    let (signing, crv, size) = match alg {
        Algorithm::ES256 => (&ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
        _ => (&ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
    };
    let pair = EcdsaKeyPair::generate(signing).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({
        "kty": "EC", "crv": crv, "kid": kid, "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..=size]),
        "y": URL_SAFE_NO_PAD.encode(&point[1 + size..]),
    });
    Key {
        kid: kid.into(),
        alg,
        encoding: EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
        jwk,
        public_der: Vec::new(),
    }
}

fn ed_key(kid: &str) -> Key {
    let pair = Ed25519KeyPair::generate().unwrap();
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
    });
    Key {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pair.to_pkcs8v1().unwrap().as_ref()),
        jwk,
        public_der: Vec::new(),
    }
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A patient-level token for `Patient/123` by `Practitioner/7`.
fn claims() -> Value {
    json!({
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "exp": now() + 300,
        "iat": now(),
        "scope": "patient/Observation.rs openid fhirUser launch/patient",
        "patient": "123",
        "fhirUser": "Practitioner/7",
        "client_id": "app",
    })
}

fn with(mut claims: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn jws_header(key: &Key, alg: Algorithm) -> Header {
    let mut header = Header::new(alg);
    header.kid = Some(key.kid.clone());
    header
}

fn sign_as(header: &Header, key: &Key, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &key.encoding).unwrap()
}

fn sign(key: &Key, claims: &Value) -> String {
    sign_as(&jws_header(key, key.alg), key, claims)
}

fn part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn jwks(jwks: &[&Value]) -> Value {
    json!({ "keys": jwks })
}

fn jwk_set(value: &Value) -> JwkSet {
    serde_json::from_value(value.clone()).unwrap()
}

fn static_issuer(keys: &[&Key]) -> IssuerConfig {
    let set = jwks(&keys.iter().map(|k| &k.jwk).collect::<Vec<_>>());
    IssuerConfig::new(ISS, vec![AUD.into()], KeySource::Static(jwk_set(&set)))
}

fn verifier(issuer: IssuerConfig) -> Verifier {
    Verifier::new(VerifierConfig::new(vec![issuer]), reqwest::Client::new()).unwrap()
}

fn all_keys() -> Verifier {
    let k = keys();
    verifier(static_issuer(&[&k.rsa, &k.es256, &k.es384, &k.ed]))
}

async fn jwks_server(body: &Value) -> MockServer {
    let server = MockServer::start().await;
    mount_jwks(&server, body).await;
    server
}

async fn mount_jwks(server: &MockServer, body: &Value) {
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

fn remote_config(server: &MockServer, min_refetch: Duration) -> VerifierConfig {
    let issuer = IssuerConfig::new(
        ISS,
        vec![AUD.into()],
        KeySource::Url(format!("{}/jwks", server.uri())),
    );
    VerifierConfig {
        min_refetch_interval: min_refetch,
        ..VerifierConfig::new(vec![issuer])
    }
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

async fn refused(verifier: &Verifier, token: &str) -> AuthError {
    verifier
        .verify(token)
        .await
        .expect_err("the token must be refused")
}

// --- accepted ---

#[tokio::test]
async fn every_algorithm_is_accepted_and_its_claims_read() {
    let k = keys();
    let v = all_keys();
    let rs384 = sign_as(&jws_header(&k.rsa, Algorithm::RS384), &k.rsa, &claims());
    for token in [
        sign(&k.rsa, &claims()),
        rs384,
        sign(&k.es256, &claims()),
        sign(&k.es384, &claims()),
        sign(&k.ed, &claims()),
    ] {
        let verified = v.verify(&token).await.unwrap();
        assert_eq!(verified.issuer, ISS);
        assert_eq!(verified.subject.as_deref(), Some("user-1"));
        assert_eq!(verified.context.patient.as_deref(), Some("Patient/123"));
        assert_eq!(
            verified.context.principal.fhir_user.as_deref(),
            Some("Practitioner/7")
        );
        assert!(
            verified
                .context
                .scopes
                .to_string()
                .contains("patient/Observation.rs")
        );
    }
}

#[tokio::test]
async fn a_token_without_kid_needs_exactly_one_fitting_key() {
    let k = keys();
    let token = sign_as(&Header::new(Algorithm::RS256), &k.rsa, &claims());
    verifier(static_issuer(&[&k.rsa, &k.es256]))
        .verify(&token)
        .await
        .unwrap();
    let two = verifier(static_issuer(&[&k.rsa, &k.rsa2]));
    assert_eq!(refused(&two, &token).await, AuthError::UnknownKey);
}

// --- algorithms ---

#[tokio::test]
async fn alg_none_is_refused() {
    let v = all_keys();
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"});
        let token = format!("{}.{}.", part(&header), part(&claims()));
        assert_eq!(
            refused(&v, &token).await,
            AuthError::AlgorithmRefused,
            "{alg}"
        );
    }
    // Without `alg` at all.
    let token = format!("{}.{}.", part(&json!({"kid": "rsa-1"})), part(&claims()));
    assert_eq!(refused(&v, &token).await, AuthError::Malformed);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let k = keys();
    let v = all_keys();
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&k.rsa.public_der)
    );
    for secret in [k.rsa.public_der.as_slice(), pem.as_bytes()] {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some("rsa-1".into());
            let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
                .unwrap();
            assert_eq!(refused(&v, &token).await, AuthError::AlgorithmRefused);
        }
    }
    // And an issuer cannot be configured to accept HMAC.
    let mut issuer = static_issuer(&[&k.rsa]);
    issuer.algorithms.push(Algorithm::HS256);
    let error = Verifier::new(VerifierConfig::new(vec![issuer]), reqwest::Client::new());
    assert!(matches!(error, Err(ConfigError::HmacAlgorithm { .. })));
}

#[tokio::test]
async fn the_algorithm_must_be_the_one_the_key_is_pinned_to() {
    let k = keys();
    // ES256 header naming the RSA key (signed with the EC key).
    let token = sign_as(&jws_header(&k.rsa, Algorithm::ES256), &k.es256, &claims());
    assert_eq!(
        refused(&all_keys(), &token).await,
        AuthError::AlgorithmRefused
    );
    // RS384 on a JWK whose `alg` is RS256.
    let mut pinned = static_issuer(&[&k.rsa]);
    let mut jwk = k.rsa.jwk.clone();
    jwk["alg"] = json!("RS256");
    pinned.keys = KeySource::Static(jwk_set(&jwks(&[&jwk])));
    let v = verifier(pinned);
    v.verify(&sign(&k.rsa, &claims())).await.unwrap();
    let token = sign_as(&jws_header(&k.rsa, Algorithm::RS384), &k.rsa, &claims());
    assert_eq!(refused(&v, &token).await, AuthError::AlgorithmRefused);
    // An algorithm the issuer does not allow.
    let mut narrow = static_issuer(&[&k.rsa, &k.es256]);
    narrow.algorithms = vec![Algorithm::RS256];
    let token = sign(&k.es256, &claims());
    assert_eq!(
        refused(&verifier(narrow), &token).await,
        AuthError::AlgorithmRefused
    );
}

#[tokio::test]
async fn keys_not_meant_for_signatures_are_not_used() {
    let k = keys();
    let mut enc = k.rsa.jwk.clone();
    enc["use"] = json!("enc");
    let mut no_verify = k.es256.jwk.clone();
    no_verify["key_ops"] = json!(["encrypt"]);
    let secret =
        json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode(&k.rsa.public_der)});
    let mut issuer = static_issuer(&[&k.ed]);
    issuer.keys = KeySource::Static(jwk_set(&jwks(&[&enc, &no_verify, &secret, &k.ed.jwk])));
    let v = verifier(issuer);
    assert_eq!(
        refused(&v, &sign(&k.rsa, &claims())).await,
        AuthError::UnknownKey
    );
    assert_eq!(
        refused(&v, &sign(&k.es256, &claims())).await,
        AuthError::UnknownKey
    );
    // A set of only unusable keys is a configuration error.
    let mut issuer = static_issuer(&[&k.ed]);
    issuer.keys = KeySource::Static(jwk_set(&jwks(&[&enc, &secret])));
    let error = Verifier::new(VerifierConfig::new(vec![issuer]), reqwest::Client::new());
    assert!(matches!(error, Err(ConfigError::NoUsableKeys { .. })));
}

// --- header key references ---

#[tokio::test]
async fn header_key_references_are_refused() {
    let k = keys();
    let v = all_keys();
    let mut jku = jws_header(&k.rsa, Algorithm::RS256);
    jku.jku = Some("https://evil.example/jwks".into());
    let mut x5u = jws_header(&k.rsa, Algorithm::RS256);
    x5u.x5u = Some("https://evil.example/cert".into());
    let mut jwk = jws_header(&k.rsa, Algorithm::RS256);
    jwk.jwk = Some(serde_json::from_value(k.rsa.jwk.clone()).unwrap());
    let mut x5c = jws_header(&k.rsa, Algorithm::RS256);
    x5c.x5c = Some(vec![STANDARD.encode(&k.rsa.public_der)]);
    for header in [jku, x5u, jwk, x5c] {
        let token = sign_as(&header, &k.rsa, &claims());
        assert_eq!(refused(&v, &token).await, AuthError::ForeignKeyReference);
    }
}

// --- claims ---

#[tokio::test]
async fn lifetime_is_checked_with_leeway_on_both_sides() {
    let k = keys();
    let v = all_keys(); // 30 s leeway
    let t = now();
    let cases = [
        (json!({"exp": t - 100}), Err(AuthError::Expired)),
        (json!({"exp": t - 40}), Err(AuthError::Expired)),
        (json!({"exp": t - 10}), Ok(())),
        (json!({"nbf": t + 100}), Err(AuthError::NotYetValid)),
        (json!({"nbf": t + 40}), Err(AuthError::NotYetValid)),
        (json!({"nbf": t + 10}), Ok(())),
        (json!({"exp": null}), Err(AuthError::NoExpiry)),
        (json!({"exp": "soon"}), Err(AuthError::Malformed)),
    ];
    for (changes, expected) in cases {
        let token = sign(&k.rsa, &with(claims(), changes.clone()));
        assert_eq!(v.verify(&token).await.map(|_| ()), expected, "{changes}");
    }
}

#[tokio::test]
async fn audience_must_name_the_gateway() {
    let k = keys();
    let v = all_keys();
    for (aud, expected) in [
        (
            json!("https://other.example.org/fhir"),
            Err(AuthError::WrongAudience),
        ),
        (json!(["https://other.example.org", AUD]), Ok(())),
        (json!([]), Err(AuthError::WrongAudience)),
        (Value::Null, Err(AuthError::WrongAudience)),
    ] {
        let token = sign(&k.rsa, &with(claims(), json!({ "aud": aud })));
        assert_eq!(v.verify(&token).await.map(|_| ()), expected, "{aud}");
    }
    // No configured audience refuses everything.
    let mut issuer = static_issuer(&[&k.rsa]);
    issuer.audience.clear();
    let token = sign(&k.rsa, &claims());
    assert_eq!(
        refused(&verifier(issuer), &token).await,
        AuthError::WrongAudience
    );
}

#[tokio::test]
async fn issuer_must_be_configured_exactly() {
    let k = keys();
    let v = all_keys();
    for iss in [
        json!("https://evil.example.org"),
        json!(format!("{ISS}/")),
        Value::Null,
    ] {
        let token = sign(&k.rsa, &with(claims(), json!({ "iss": iss })));
        assert_eq!(refused(&v, &token).await, AuthError::UnknownIssuer, "{iss}");
    }
}

#[tokio::test]
async fn a_patient_scope_without_patient_is_refused() {
    let k = keys();
    let token = sign(&k.rsa, &with(claims(), json!({"patient": null})));
    assert_eq!(
        refused(&all_keys(), &token).await,
        AuthError::BadClaims(ContextError::NoPatient)
    );
    let token = sign(
        &k.rsa,
        &with(claims(), json!({"scope": "patient/Observation.zz"})),
    );
    assert!(matches!(
        refused(&all_keys(), &token).await,
        AuthError::BadClaims(ContextError::Scope(_))
    ));
}

#[tokio::test]
async fn claim_names_are_configurable() {
    let k = keys();
    let mut issuer = static_issuer(&[&k.rsa]);
    issuer.claims = ClaimNames {
        patient: vec!["context.patient".into()],
        scope: vec!["scp".into()],
        ..ClaimNames::default()
    };
    let token = sign(
        &k.rsa,
        &with(
            claims(),
            json!({
                "scope": null,
                "patient": "999",
                "scp": ["patient/Observation.rs", "openid"],
                "context": {"patient": "55"},
            }),
        ),
    );
    let verified = verifier(issuer).verify(&token).await.unwrap();
    assert_eq!(verified.context.patient.as_deref(), Some("Patient/55"));
    assert_eq!(
        verified.context.scopes.to_string(),
        "patient/Observation.rs openid"
    );
}

// --- form ---

#[tokio::test]
async fn oversize_tokens_are_refused_before_decoding() {
    let k = keys();
    let v = all_keys();
    let big = sign(&k.rsa, &with(claims(), json!({"pad": "x".repeat(9000)})));
    assert_eq!(refused(&v, &big).await, AuthError::Oversize);
    assert_eq!(refused(&v, &"!".repeat(8193)).await, AuthError::Oversize);
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let k = keys();
    let v = all_keys();
    let good = sign(&k.rsa, &claims());
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let not_json = URL_SAFE_NO_PAD.encode(b"not json");
    for token in [
        String::new(),
        "a.b.c".into(),
        format!("{not_json}.{}.{signature}", part(&claims())),
        format!(
            "{}.{}.{signature}",
            part(&json!(["RS256"])),
            part(&claims())
        ),
        format!("{head}.{not_json}.{signature}"),
        format!("{head}.{}.{signature}", part(&json!("a string"))),
        format!("{head}.{}!.{signature}", part(&claims())),
        format!("{head}.{}.{signature}=", part(&claims())),
        format!(
            "{}.{}.{signature}",
            part(&json!({"alg": "RS256", "kid": 1})),
            part(&claims())
        ),
        format!(
            "{}.{}.{signature}",
            part(&json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]})),
            part(&claims())
        ),
        format!(
            "{}.{}.{signature}",
            part(&json!({"alg": 256})),
            part(&claims())
        ),
        "opaque-token-without-introspection".into(),
        "two words".into(),
    ] {
        assert_eq!(refused(&v, &token).await, AuthError::Malformed, "{token}");
    }
}

#[tokio::test]
async fn signatures_are_checked() {
    let k = keys();
    let v = all_keys();
    // Signed by another RSA key under rsa-1's kid.
    let token = sign_as(&jws_header(&k.rsa, Algorithm::RS256), &k.rsa2, &claims());
    assert_eq!(refused(&v, &token).await, AuthError::BadSignature);
    // A payload swapped under a valid signature.
    let good = sign(&k.rsa, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let forged = with(claims(), json!({"patient": "456"}));
    let token = format!("{}.{}.{}", parts[0], part(&forged), parts[2]);
    assert_eq!(refused(&v, &token).await, AuthError::BadSignature);
    // An unknown kid in a static set.
    let mut unknown = jws_header(&k.rsa, Algorithm::RS256);
    unknown.kid = Some("nope".into());
    let token = sign_as(&unknown, &k.rsa, &claims());
    assert_eq!(refused(&v, &token).await, AuthError::UnknownKey);
}

#[tokio::test]
async fn authorization_header_must_be_bearer() {
    let k = keys();
    let v = all_keys();
    let token = sign(&k.rsa, &claims());
    assert_eq!(v.authenticate(None).await.unwrap_err(), AuthError::Missing);
    for value in [
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearerabc",
        "",
        "DPoP abc",
    ] {
        assert_eq!(
            v.authenticate(Some(value)).await.unwrap_err(),
            AuthError::NotBearer,
            "{value}"
        );
    }
    assert_eq!(
        v.authenticate(Some("Bearer")).await.unwrap_err(),
        AuthError::Malformed
    );
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER  {token} "),
    ] {
        v.authenticate(Some(&value)).await.unwrap();
    }
}

// --- cache ---

#[tokio::test]
async fn a_cache_hit_returns_the_same_verified_token_without_fetching() {
    let k = keys();
    let server = jwks_server(&jwks(&[&k.rsa.jwk])).await;
    let v = Verifier::new(
        remote_config(&server, Duration::from_secs(30)),
        reqwest::Client::new(),
    )
    .unwrap();
    let token = sign(&k.rsa, &claims());
    let first = v.verify(&token).await.unwrap();
    let second = v.verify(&token).await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    let third = v
        .clone()
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&first, &third));
    assert_eq!(requests(&server).await, 1);
    // Debug shows who, not the claims (which name a patient) or the token.
    let debug = format!("{first:?} {v:?}");
    assert!(!debug.contains("Patient/123") && !debug.contains(&token[..40]));
}

/// Keys fetched at start-up serve the first token without a fetch of its own; a static key set
/// needs none; a prefetch that failed does not hold the first token back (it fetches again,
/// inside the refetch interval).
#[tokio::test]
async fn prefetched_keys_serve_the_first_token_and_a_failed_prefetch_does_not_block_it() {
    let k = keys();
    let server = jwks_server(&jwks(&[&k.rsa.jwk])).await;
    let v = Verifier::new(
        remote_config(&server, Duration::from_secs(30)),
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(v.prefetch_keys().await, [(ISS.to_string(), true)]);
    assert_eq!(requests(&server).await, 1);
    assert_eq!(v.prefetch_keys().await, [(ISS.to_string(), true)]);
    v.verify(&sign(&k.rsa, &claims())).await.unwrap();
    assert_eq!(
        requests(&server).await,
        1,
        "the token used the prefetched keys"
    );

    assert_eq!(
        all_keys().prefetch_keys().await,
        [(ISS.to_string(), true)],
        "a static key set is at hand"
    );

    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&down)
        .await;
    mount_jwks(&down, &jwks(&[&k.rsa.jwk])).await;
    let v = Verifier::new(
        remote_config(&down, Duration::from_secs(30)),
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(v.prefetch_keys().await, [(ISS.to_string(), false)]);
    v.verify(&sign(&k.rsa, &claims())).await.unwrap();
    assert_eq!(requests(&down).await, 2);
}

/// A token whose signature fails is refused every time it is shown: it is never kept as verified.
#[tokio::test]
async fn a_token_whose_signature_fails_is_never_cached() {
    let k = keys();
    let v = all_keys();
    // Signed by another RSA key under rsa-1's kid.
    let token = sign_as(&jws_header(&k.rsa, Algorithm::RS256), &k.rsa2, &claims());
    for _ in 0..3 {
        assert_eq!(refused(&v, &token).await, AuthError::BadSignature);
    }
    // Nor through the header the gateway reads.
    assert_eq!(
        v.authenticate(Some(&format!("Bearer {token}")))
            .await
            .unwrap_err(),
        AuthError::BadSignature
    );
}

/// The cache is keyed by the whole token, signature included: the same header and claims under
/// another signature are not a hit for the verified token, and are refused.
#[tokio::test]
async fn the_same_claims_under_another_signature_are_not_a_cache_hit() {
    let k = keys();
    let v = all_keys();
    let claims = claims();
    let good = sign(&k.rsa, &claims);
    let verified = v.verify(&good).await.unwrap();
    let (signed, _) = good.rsplit_once('.').unwrap();
    // The signature of another key over the same header and payload.
    let other = sign_as(&jws_header(&k.rsa, Algorithm::RS256), &k.rsa2, &claims);
    let (other_signed, other_signature) = other.rsplit_once('.').unwrap();
    assert_eq!(signed, other_signed, "the same header and claims");
    assert_eq!(
        refused(&v, &format!("{signed}.{other_signature}")).await,
        AuthError::BadSignature
    );
    // The verified signature with one character changed.
    let (_, signature) = good.rsplit_once('.').unwrap();
    let mut changed = signature.as_bytes().to_vec();
    changed[10] = if changed[10] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    assert_eq!(
        refused(&v, &format!("{signed}.{changed}")).await,
        AuthError::BadSignature
    );
    // The verified token is still the cached one.
    assert!(Arc::ptr_eq(&verified, &v.verify(&good).await.unwrap()));
}

/// A verifier keeping at most two tokens still verifies a third, and the first again after it
/// was pushed out; with no cache at all, every token is checked each time and still accepted.
#[tokio::test]
async fn a_bounded_cache_verifies_past_its_bound() {
    let k = keys();
    for entries in [0, 2] {
        let v = Verifier::new(
            VerifierConfig {
                cache_entries: entries,
                ..VerifierConfig::new(vec![static_issuer(&[&k.rsa])])
            },
            reqwest::Client::new(),
        )
        .unwrap();
        let tokens: Vec<String> = (0..5)
            .map(|i| sign(&k.rsa, &with(claims(), json!({"jti": i}))))
            .collect();
        for _ in 0..2 {
            for token in &tokens {
                v.verify(token).await.unwrap();
            }
        }
        let first = v.verify(&tokens[0]).await.unwrap();
        let again = v.verify(&tokens[0]).await.unwrap();
        // Kept when there is room, a new check each time when there is none.
        assert_eq!(Arc::ptr_eq(&first, &again), entries > 0, "{entries}");
    }
}

#[tokio::test]
async fn a_token_that_expires_in_the_cache_is_refused() {
    let k = keys();
    let mut issuer = static_issuer(&[&k.rsa]);
    issuer.leeway_seconds = 0;
    let v = verifier(issuer);
    let exp = now() + 2;
    let token = sign(&k.rsa, &with(claims(), json!({"exp": exp})));
    v.verify(&token).await.unwrap();
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(refused(&v, &token).await, AuthError::Expired);
}

// --- key fetching ---

#[tokio::test]
async fn an_unknown_kid_refetches_once_within_the_rate_limit() {
    let k = keys();
    let server = jwks_server(&jwks(&[&k.rsa.jwk])).await;
    let v = Verifier::new(
        remote_config(&server, Duration::from_millis(400)),
        reqwest::Client::new(),
    )
    .unwrap();
    v.verify(&sign(&k.rsa, &claims())).await.unwrap();
    assert_eq!(requests(&server).await, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut unknown = jws_header(&k.rsa, Algorithm::RS256);
    unknown.kid = Some("rotated-away".into());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let v = v.clone();
            let token = sign_as(&unknown, &k.rsa, &with(claims(), json!({"jti": i})));
            tokio::spawn(async move { v.verify(&token).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Err(AuthError::UnknownKey));
    }
    assert_eq!(
        requests(&server).await,
        2,
        "one refetch for eight concurrent tokens"
    );
    let token = sign_as(&unknown, &k.rsa, &claims());
    assert_eq!(refused(&v, &token).await, AuthError::UnknownKey);
    assert_eq!(requests(&server).await, 2, "no refetch within the interval");
}

#[tokio::test]
async fn a_rotated_key_is_accepted_after_a_refetch() {
    let k = keys();
    let server = jwks_server(&jwks(&[&k.rsa.jwk])).await;
    let v = Verifier::new(
        remote_config(&server, Duration::from_millis(300)),
        reqwest::Client::new(),
    )
    .unwrap();
    v.verify(&sign(&k.rsa, &claims())).await.unwrap();
    server.reset().await;
    mount_jwks(&server, &jwks(&[&k.rsa.jwk, &k.rsa2.jwk])).await;
    let rotated = sign(&k.rsa2, &claims());
    // Within the interval the new kid is not fetched yet...
    assert_eq!(refused(&v, &rotated).await, AuthError::UnknownKey);
    assert_eq!(requests(&server).await, 0);
    // ...after it, one fetch brings it.
    tokio::time::sleep(Duration::from_millis(400)).await;
    v.verify(&rotated).await.unwrap();
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn old_keys_are_refreshed_and_kept_when_the_refresh_fails() {
    let k = keys();
    let server = jwks_server(&jwks(&[&k.rsa.jwk])).await;
    let config = VerifierConfig {
        max_key_age: Duration::from_millis(200),
        ..remote_config(&server, Duration::from_millis(100))
    };
    let v = Verifier::new(config, reqwest::Client::new()).unwrap();
    v.verify(&sign(&k.rsa, &claims())).await.unwrap();
    server.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = sign(&k.rsa, &with(claims(), json!({"jti": "second"})));
    v.verify(&token).await.unwrap();
    assert_eq!(requests(&server).await, 1, "the refresh was attempted");
}

#[tokio::test]
async fn unreachable_or_broken_key_sets_fail_closed() {
    let k = keys();
    let token = sign(&k.rsa, &claims());
    let broken = [
        ResponseTemplate::new(500),
        ResponseTemplate::new(200).set_body_raw("not json", "application/json"),
        ResponseTemplate::new(200).set_body_raw(
            serde_json::to_vec(&jwks(&[&k.rsa.jwk])).unwrap(),
            "text/html",
        ),
        ResponseTemplate::new(200)
            .set_body_json(json!({"keys": [k.rsa.jwk.clone()], "pad": "x".repeat(300 * 1024)})),
        ResponseTemplate::new(200).set_body_json(json!(["not", "a", "set"])),
    ];
    for response in broken {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(response)
            .mount(&server)
            .await;
        let v = Verifier::new(
            remote_config(&server, Duration::from_secs(30)),
            reqwest::Client::new(),
        )
        .unwrap();
        assert_eq!(refused(&v, &token).await, AuthError::KeysUnavailable);
        // Rate-limited: a second token does not fetch again.
        let other = sign(&k.rsa, &with(claims(), json!({"jti": "2"})));
        assert_eq!(refused(&v, &other).await, AuthError::KeysUnavailable);
        assert_eq!(requests(&server).await, 1);
    }
    // Nothing listening.
    let port = closed_port();
    let issuer = IssuerConfig::new(
        ISS,
        vec![AUD.into()],
        KeySource::Url(format!("http://127.0.0.1:{port}/jwks")),
    );
    assert_eq!(
        refused(&verifier(issuer), &token).await,
        AuthError::KeysUnavailable
    );
}

// --- introspection ---

const BASIC: &str = "Basic Z2F0ZXdheTpzM2NyZXQ="; // gateway:s3cret

fn introspection(server: &MockServer) -> IntrospectionConfig {
    IntrospectionConfig {
        endpoint: format!("{}/introspect", server.uri()),
        client_id: "gateway".into(),
        client_secret: Some("s3cret".into()),
        claims: ClaimNames::default(),
        issuer: Some(ISS.into()),
        audience: vec![AUD.into()],
    }
}

fn introspecting(server: &MockServer) -> Verifier {
    let config = VerifierConfig {
        introspection: Some(introspection(server)),
        ..VerifierConfig::new(vec![static_issuer(&[&keys().rsa])])
    };
    Verifier::new(config, reqwest::Client::new()).unwrap()
}

async fn answer(server: &MockServer, token: &str, body: Value) {
    Mock::given(method("POST"))
        .and(path("/introspect"))
        .and(header("authorization", BASIC))
        .and(body_string_contains(format!("token={token}")))
        .and(body_string_contains("token_type_hint=access_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

#[tokio::test]
async fn introspection_accepts_active_tokens_and_caches_them() {
    let server = MockServer::start().await;
    let response = with(claims(), json!({"active": true}));
    answer(&server, "opaque-1", response).await;
    let v = introspecting(&server);
    let first = v.verify("opaque-1").await.unwrap();
    assert_eq!(first.context.patient.as_deref(), Some("Patient/123"));
    assert_eq!(first.issuer, ISS);
    let second = v.verify("opaque-1").await.unwrap();
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(requests(&server).await, 1);
    // JWTs still go to the issuer's keys.
    v.verify(&sign(&keys().rsa, &claims())).await.unwrap();
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn introspection_refusals() {
    let server = MockServer::start().await;
    let active = || with(claims(), json!({"active": true}));
    let cases = [
        ("inactive", json!({"active": false}), AuthError::Inactive),
        ("no-active", with(claims(), json!({})), AuthError::Inactive),
        (
            "active-string",
            with(claims(), json!({"active": "true"})),
            AuthError::Inactive,
        ),
        (
            "other-iss",
            with(active(), json!({"iss": "https://evil"})),
            AuthError::UnknownIssuer,
        ),
        (
            "other-aud",
            with(active(), json!({"aud": "https://other"})),
            AuthError::WrongAudience,
        ),
        (
            "no-exp",
            with(active(), json!({"exp": null})),
            AuthError::NoExpiry,
        ),
        (
            "expired",
            with(active(), json!({"exp": now() - 5})),
            AuthError::Expired,
        ),
        (
            "no-patient",
            with(active(), json!({"patient": null})),
            AuthError::BadClaims(ContextError::NoPatient),
        ),
    ];
    for (token, body, _) in &cases {
        answer(&server, token, body.clone()).await;
    }
    let v = introspecting(&server);
    for (token, _, expected) in cases {
        assert_eq!(refused(&v, token).await, expected, "{token}");
    }
    // Wrong client credentials: the mock does not match, the server answers 404.
    let mut config = introspection(&server);
    config.client_secret = Some("wrong".into());
    answer(&server, "opaque-ok", active()).await;
    let wrong = Verifier::new(
        VerifierConfig {
            introspection: Some(config),
            ..VerifierConfig::default()
        },
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(
        refused(&wrong, "opaque-ok").await,
        AuthError::KeysUnavailable
    );
    v.verify("opaque-ok").await.unwrap();
}

#[tokio::test]
async fn unreachable_introspection_fails_closed() {
    let server = MockServer::start().await;
    let mut config = introspection(&server);
    config.endpoint = format!("http://127.0.0.1:{}/introspect", closed_port());
    let v = Verifier::new(
        VerifierConfig {
            introspection: Some(config),
            ..VerifierConfig::default()
        },
        reqwest::Client::new(),
    )
    .unwrap();
    assert_eq!(refused(&v, "opaque-2").await, AuthError::KeysUnavailable);
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// --- configuration and errors ---

#[test]
fn configurations_that_cannot_work_are_refused() {
    let k = keys();
    let new = |config| Verifier::new(config, reqwest::Client::new()).map(|_| ());
    assert_eq!(
        new(VerifierConfig::default()),
        Err(ConfigError::NothingToVerifyWith)
    );
    let remote = |url: &str| {
        VerifierConfig::new(vec![IssuerConfig::new(
            ISS,
            vec![AUD.into()],
            KeySource::Url(url.into()),
        )])
    };
    new(remote("https://as.example.org/jwks")).unwrap();
    new(remote("http://localhost:8080/jwks")).unwrap();
    for url in [
        "http://as.example.org/jwks",
        "https://user:pass@as.example.org/jwks",
        "/jwks",
        "ftp://as.example.org/jwks",
    ] {
        assert!(
            matches!(new(remote(url)), Err(ConfigError::BadUrl { .. })),
            "{url}"
        );
    }
    let twice = VerifierConfig::new(vec![static_issuer(&[&k.rsa]), static_issuer(&[&k.ed])]);
    assert!(matches!(
        new(twice),
        Err(ConfigError::DuplicateIssuer { .. })
    ));
    let mut none = static_issuer(&[&k.rsa]);
    none.algorithms.clear();
    assert!(matches!(
        new(VerifierConfig::new(vec![none])),
        Err(ConfigError::NoAlgorithms { .. })
    ));
    let zero = VerifierConfig {
        max_token_bytes: 0,
        ..VerifierConfig::new(vec![static_issuer(&[&k.rsa])])
    };
    assert_eq!(new(zero), Err(ConfigError::NoTokenSize));
    // Debug of a configuration does not show the client secret.
    let server_less = IntrospectionConfig {
        endpoint: "https://as.example.org/introspect".into(),
        client_id: "gateway".into(),
        client_secret: Some("s3cret-value".into()),
        claims: ClaimNames::default(),
        issuer: None,
        audience: Vec::new(),
    };
    assert!(!format!("{server_less:?}").contains("s3cret-value"));
}

#[test]
fn www_authenticate_follows_rfc_6750() {
    assert_eq!(
        AuthError::Missing.www_authenticate("fhirseal"),
        r#"Bearer realm="fhirseal""#
    );
    assert_eq!(
        AuthError::Expired.www_authenticate("fhirseal"),
        r#"Bearer realm="fhirseal", error="invalid_token", error_description="The access token expired""#
    );
    assert_eq!(
        AuthError::NotBearer.www_authenticate("a\"b\\c\r\n"),
        r#"Bearer realm="a\"b\\c", error="invalid_request", error_description="The Authorization header must use the Bearer scheme""#
    );
    let all = [
        AuthError::Missing,
        AuthError::NotBearer,
        AuthError::Oversize,
        AuthError::Malformed,
        AuthError::AlgorithmRefused,
        AuthError::ForeignKeyReference,
        AuthError::UnknownIssuer,
        AuthError::UnknownKey,
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::NoExpiry,
        AuthError::WrongAudience,
        AuthError::Inactive,
        AuthError::BadClaims(ContextError::NoPatient),
        AuthError::BadClaims(ContextError::Claims("x".into())),
        AuthError::KeysUnavailable,
    ];
    for error in all {
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
        assert!(
            error
                .description()
                .bytes()
                .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
            "{error:?}"
        );
        assert_eq!(error.oauth_error().is_none(), error == AuthError::Missing);
    }
}

// --- no input panics or verifies ---

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_tokens_never_verify(
        text in any::<String>(),
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        shaped in "[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{0,120}",
        payload in "[A-Za-z0-9_-]{0,200}",
        header in prop::sample::select(vec![
            json!({"alg": "RS256", "kid": "rsa-1"}),
            json!({"alg": "ES256", "kid": "es256-1"}),
            json!({"alg": "EdDSA"}),
            json!({"alg": "none"}),
        ]),
    ) {
        let v = all_keys();
        let rt = runtime();
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        let crafted = format!("{}.{payload}.{payload}", part(&header));
        for token in [&text, &lossy, &shaped, &crafted] {
            prop_assert!(rt.block_on(v.verify(token)).is_err());
            let bearer = format!("Bearer {token}");
            prop_assert!(rt.block_on(v.authenticate(Some(&bearer))).is_err());
        }
    }

    #[test]
    fn tampered_tokens_never_verify(index in any::<prop::sample::Index>(), replacement in "[A-Za-z0-9_.-]") {
        static TOKEN: OnceLock<String> = OnceLock::new();
        let token = TOKEN.get_or_init(|| sign(&keys().es256, &claims()));
        let at = index.index(token.len());
        let mut tampered = token.clone();
        tampered.replace_range(at..=at, &replacement);
        prop_assume!(tampered != *token);
        let v = all_keys();
        prop_assert!(runtime().block_on(v.verify(&tampered)).is_err());
    }
}
