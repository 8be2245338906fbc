//! The authentication step through HTTP: each attack on the bearer token is refused with 401 and
//! a `WWW-Authenticate` error, and the scope checks with 403. The issuer's keys come from a JWKS
//! endpoint (wiremock), so fetching, caching and refetching are exercised as in production.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode, header};
use axum::routing::get;
use axum::{Json, Router, middleware};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fhirseal::auth::{Caller, authenticate};
use fhirseal::error::ApiError;
use fhirseal_fhir::rest::Interaction;
use fhirseal_smart::verify::{IssuerConfig, KeySource, Verifier, VerifierConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use wiremock::MockServer;

use crate::support::{
    self, ATTACKER_KEY, ISSUER, ISSUER_PUBLIC, issuer_header, jwks_server, now, sign, sign_with,
};

/// The audience of this test's tokens: its verifier's, not a configured gateway's.
const BASE: &str = "https://gateway.hospital.example/fhir";

type Store = Arc<HashMap<String, Value>>;

struct Harness {
    app: Router,
    jwks: MockServer,
}

async fn harness() -> Harness {
    let jwks = jwks_server().await;
    let issuer = IssuerConfig::new(
        ISSUER,
        vec![BASE.into()],
        KeySource::Url(format!("{}/jwks", jwks.uri())),
    );
    let mut config = VerifierConfig::new(vec![issuer]);
    // Each unknown `kid` may refetch at once, so the refetch itself is what is tested.
    config.min_refetch_interval = Duration::ZERO;
    let verifier = Arc::new(Verifier::new(config, reqwest::Client::new()).unwrap());

    let store: Store = Arc::new(
        [
            json!({"resourceType": "Patient", "id": "123"}),
            json!({"resourceType": "Patient", "id": "124"}),
            json!({"resourceType": "Observation", "id": "o123", "status": "final",
                "code": {"text": "x"}, "subject": {"reference": "Patient/123"}}),
            json!({"resourceType": "Observation", "id": "o124", "status": "final",
                "code": {"text": "x"}, "subject": {"reference": "Patient/124"}}),
        ]
        .into_iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                r,
            )
        })
        .collect(),
    );
    let app = Router::new()
        .route("/fhir/{type}/{id}", get(read))
        .route("/fhir/{type}", axum::routing::post(create))
        .layer(middleware::from_fn_with_state(verifier, authenticate))
        .with_state(store);
    Harness { app, jwks }
}

// The read and create steps as the gateway's handlers take them: the caller's scopes decide
// before anything is returned or stored.
async fn read(
    caller: Caller,
    State(store): State<Store>,
    Path((resource_type, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let resource = store
        .get(&format!("{resource_type}/{id}"))
        .ok_or(ApiError::NotFound { resource_type, id })?;
    caller
        .0
        .context
        .check_resource(Interaction::Read, resource, &[BASE])?;
    Ok(Json(resource.clone()))
}

async fn create(caller: Caller, Json(resource): Json<Value>) -> Result<StatusCode, ApiError> {
    caller
        .0
        .context
        .check_resource(Interaction::Create, &resource, &[BASE])?;
    Ok(StatusCode::CREATED)
}

fn claims(scope: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": BASE, "sub": "dr-house", "exp": now() + 600, "iat": now(),
        "fhirUser": "Practitioner/7", "scope": scope, "patient": "123",
    })
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn get_with(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String, Value) {
    let reply = support::send(app, request).await;
    if !reply.status.is_success() {
        assert_eq!(
            reply.header(header::CONTENT_TYPE),
            "application/fhir+json; charset=utf-8"
        );
    }
    let challenge = reply.header(header::WWW_AUTHENTICATE);
    (
        reply.status,
        challenge,
        serde_json::from_str(&reply.text).unwrap(),
    )
}

/// A 401 whose challenge says `invalid_token`, with an OperationOutcome that does not echo the
/// token.
fn assert_refused(what: &str, (status, challenge, body): (StatusCode, String, Value), token: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert!(
        challenge.starts_with("Bearer realm=\"fhirseal\"")
            && challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    assert_eq!(body["resourceType"], "OperationOutcome", "{what}");
    assert_eq!(body["issue"][0]["code"], "login", "{what}");
    let text = body.to_string();
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        signature.len() < 8 || !text.contains(signature),
        "{what}: the token leaked"
    );
}

#[tokio::test]
async fn a_valid_token_reads_and_the_missing_one_is_challenged() {
    let h = harness().await;
    let (status, _, body) = get_with(
        &h.app,
        "/fhir/Patient/124",
        Some(&sign(&claims("user/*.rs"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], "124");

    let (status, challenge, body) = get_with(&h.app, "/fhir/Patient/124", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // RFC 6750 §3.1: a request without credentials gets no error code.
    assert_eq!(challenge, "Bearer realm=\"fhirseal\"");
    assert_eq!(body["issue"][0]["code"], "login");

    let basic = Request::get("/fhir/Patient/124")
        .header(header::AUTHORIZATION, "Basic ZHI6aG91c2U=")
        .body(Body::empty())
        .unwrap();
    let (status, challenge, _) = send(&h.app, basic).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge.contains("error=\"invalid_request\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn every_forged_or_stale_token_is_refused_with_401() {
    let h = harness().await;
    let good = claims("user/*.rs");
    let mut cases: Vec<(&str, String)> = Vec::new();
    // What each must be refused for: the challenge's description.
    let mut reasons: Vec<&str> = Vec::new();

    // alg none: no signature at all.
    reasons.push("signature algorithm is not accepted");
    cases.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "issuer-1", "typ": "JWT"})),
            b64(&good)
        ),
    ));
    // HS256 with the issuer's public key as the HMAC secret (the classic key confusion).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("issuer-1".into());
    reasons.push("signature algorithm is not accepted");
    cases.push((
        "HS256 with the public key",
        jsonwebtoken::encode(&hs, &good, &EncodingKey::from_secret(ISSUER_PUBLIC)).unwrap(),
    ));
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    reasons.push("expired");
    cases.push(("expired", sign(&expired)));
    let mut early = good.clone();
    early["nbf"] = json!(now() + 3600);
    reasons.push("not valid yet");
    cases.push(("not yet valid", sign(&early)));
    let mut aud = good.clone();
    aud["aud"] = json!("https://other-gateway.example/fhir");
    reasons.push("not meant for this server");
    cases.push(("wrong aud", sign(&aud)));
    let mut iss = good.clone();
    iss["iss"] = json!("https://evil.example");
    reasons.push("issuer is not trusted");
    cases.push(("wrong iss", sign(&iss)));
    // Signed by another key under the issuer's kid: the signature fails.
    reasons.push("signature is invalid");
    cases.push((
        "another key, the issuer's kid",
        sign_with(&issuer_header(), &good, ATTACKER_KEY),
    ));
    // The issuer's kid, and a jku pointing at the attacker's key set.
    let mut jku = issuer_header();
    jku.jku = Some("https://evil.example/jwks.json".into());
    reasons.push("a key outside the issuer's key set");
    cases.push(("jku elsewhere", sign_with(&jku, &good, ATTACKER_KEY)));
    let mut oversize = good.clone();
    oversize["padding"] = json!("x".repeat(10_000));
    reasons.push("too long");
    cases.push(("oversize", sign(&oversize)));
    reasons.push("malformed");
    cases.push(("not a JWT", "definitely-not-a-token".into()));

    for (what, token) in &cases {
        let response = get_with(&h.app, "/fhir/Patient/124", Some(token)).await;
        assert_refused(what, response, token);
    }
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_one_refetch() {
    let h = harness().await;
    // Warm: the keys are fetched once.
    let (status, _, _) = get_with(
        &h.app,
        "/fhir/Patient/124",
        Some(&sign(&claims("user/*.rs"))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let fetches = || async { h.jwks.received_requests().await.unwrap().len() };
    assert_eq!(fetches().await, 1);

    let mut rotated = Header::new(Algorithm::RS256);
    rotated.kid = Some("rotated-2".into());
    let forged = sign_with(&rotated, &claims("user/*.rs"), ATTACKER_KEY);
    let response = get_with(&h.app, "/fhir/Patient/124", Some(&forged)).await;
    assert!(
        response.1.contains("signing key is not known"),
        "{}",
        response.1
    );
    assert_refused("unknown kid", response, &forged);
    // The unknown kid made the gateway look again, once, before refusing.
    assert_eq!(fetches().await, 2);
}

#[tokio::test]
async fn a_patient_scope_reads_its_patient_only_and_a_missing_interaction_is_403() {
    let h = harness().await;
    let patient = sign(&claims(
        "launch/patient patient/Observation.rs patient/Patient.r",
    ));
    let (status, _, body) = get_with(&h.app, "/fhir/Observation/o123", Some(&patient)).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for uri in ["/fhir/Observation/o124", "/fhir/Patient/124"] {
        let (status, challenge, body) = get_with(&h.app, uri, Some(&patient)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert_eq!(body["issue"][0]["code"], "forbidden");
    }

    // `rs` has no `c`: creating, even in the patient's own compartment, is refused.
    let create = Request::post("/fhir/Observation")
        .header(header::AUTHORIZATION, format!("Bearer {patient}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/123"}})
            .to_string(),
        ))
        .unwrap();
    let (status, challenge, body) = send(&h.app, create).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(challenge.contains("insufficient_scope"));
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Observation")
    );

    // The scope reaches no type it does not name.
    let (status, _, _) = get_with(
        &h.app,
        "/fhir/Patient/123",
        Some(&sign(&claims("launch/patient patient/Observation.rs"))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
