//! `read` through the whole flow: a bearer token from a trusted issuer, the scopes, the policy,
//! the caller enrolled on first use, the shared headers fetched from the upstream, and the
//! resource opened where the caller's attributes satisfy it and masked elsewhere.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::headers::HeaderStore;
use fhirseal_envelope::BlindIndex;
use fhirseal_seal::{Sealer, SharedHeaders};
use rand_core::OsRng;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{Configured, configured, fhir_base, now, practitioner, searchset, send};

pub(crate) const NAME: &str = "Canary-Name-7Q";
pub(crate) const SSN: &str = "999-CANARY-01";

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1", "active": true,
        // A tag of the hospital's own, which readers see beside none of the blind-index tokens.
        "meta": {"tag": [{"system": "urn:ward", "code": "7", "display": "Ward 7"}]},
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": SSN},
                       {"system": "urn:mrn", "value": "MRN-1"}],
        "name": [{"family": NAME, "given": ["Ada"]}],
        "gender": "female", "birthDate": "1971-02-03"})
}

/// The gateway in front of a wiremock upstream holding `Patient/p1` sealed (and its shared
/// headers), `Patient/gone` (404); also the metrics test's.
pub(crate) struct Harness {
    pub(crate) app: Router,
    pub(crate) upstream: MockServer,
    pub(crate) gateway: Configured,
}

pub(crate) async fn harness() -> Harness {
    let upstream = MockServer::start().await;
    let gateway = configured(&fhir_base(&upstream), &[]).await;
    let state = &gateway.state;

    // The stored form, sealed as the gateway's write path seals: the policy's rules for this
    // patient, the authority's public parameters, the current period, shared headers.
    let rules = state.policy.rules_for(Some("Patient/p1"));
    let period = state.authority.current_period(now()).unwrap();
    let mut shared = SharedHeaders::new();
    // The policy asks for blind-index search tokens on demographics; reading needs none.
    let index = BlindIndex::new([7; 32]);
    let sealed = Sealer::new(
        state.authority.public_params(),
        state.sealing.key(),
        period,
        &mut shared,
        &mut OsRng,
    )
    .with_blind_index(&index)
    .seal(&patient(), &rules)
    .unwrap()
    .resource;
    assert!(!sealed.to_string().contains(NAME) && !sealed.to_string().contains(SSN));
    let tags = sealed["meta"]["tag"].as_array().unwrap();
    assert!(tags.len() > 1 && tags.contains(&patient()["meta"]["tag"][0]));
    let basics: Vec<Value> = shared
        .take_created()
        .iter()
        .map(|h| json!({"resource": HeaderStore::resource(h)}))
        .collect();
    assert!(!basics.is_empty());
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(&sealed)
                .insert_header("ETag", "W/\"3\""),
        )
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/p1/_history/3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&sealed))
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Basic"))
        .respond_with(ResponseTemplate::new(200).set_body_json(searchset(basics)))
        .mount(&upstream)
        .await;
    Mock::given(method("GET"))
        .and(path("/fhir/Patient/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "not-found", "diagnostics": "upstream-canary"}]})))
        .mount(&upstream)
        .await;
    Harness {
        app: app(state.clone()),
        upstream,
        gateway,
    }
}

async fn get(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, String, Value, String) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let reply = send(app, request.body(Body::empty()).unwrap()).await;
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "application/fhir+json; charset=utf-8",
        "{}",
        reply.text
    );
    let etag = reply.header(header::ETAG);
    let body = serde_json::from_str(&reply.text).unwrap();
    (reply.status, etag, body, reply.text)
}

#[tokio::test]
async fn each_reader_sees_what_the_policy_opens_for_them() {
    let h = harness().await;

    // A physician: demographics opened, the social security number (registrar, self) masked.
    let doctor = practitioner("Practitioner/dr-grey", "doctor", "user/*.rs");
    let (status, etag, body, text) = get(&h.app, "/fhir/Patient/p1", Some(&doctor)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(etag, "W/\"3\"");
    assert_eq!(body["name"], patient()["name"]);
    assert_eq!(body["birthDate"], "1971-02-03");
    assert!(!text.contains(SSN), "{text}");

    // A registrar: the social security number too.
    let registrar = practitioner("Practitioner/reg-1", "registrar", "user/Patient.rs");
    let (status, _, body, _) = get(&h.app, "/fhir/Patient/p1", Some(&registrar)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, patient(), "everything opens for the registrar");
    let (status, _, version, _) =
        get(&h.app, "/fhir/Patient/p1/_history/3", Some(&registrar)).await;
    assert_eq!(
        (status, version),
        (StatusCode::OK, patient()),
        "vread opens the same way"
    );

    // A pharmacist may read the Patient (the policy's pharmacy rule) but opens no demographics.
    let pharmacist = practitioner("Practitioner/ph-1", "pharmacist", "user/*.rs");
    let (status, _, body, text) = get(&h.app, "/fhir/Patient/p1", Some(&pharmacist)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !text.contains(NAME) && !text.contains(SSN) && !text.contains("1971"),
        "{text}"
    );
    assert_eq!(
        body["gender"], "female",
        "unprotected elements are as stored"
    );
}

#[tokio::test]
async fn refusals_are_outcomes_and_leak_nothing() {
    let h = harness().await;
    // No token.
    let (status, _, body, _) = get(&h.app, "/fhir/Patient/p1", None).await;
    assert_eq!(
        (status, body["issue"][0]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("login"))
    );
    // A scope without the type.
    let narrow = practitioner("Practitioner/dr-grey", "doctor", "user/Observation.rs");
    let (status, _, _, text) = get(&h.app, "/fhir/Patient/p1", Some(&narrow)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!text.contains(NAME));
    // The policy: someone whose roles give no access rule for Patient.
    let hr = practitioner("Practitioner/hr-1", "janitor", "user/*.rs");
    let (status, _, body, text) = get(&h.app, "/fhir/Patient/p1", Some(&hr)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert_eq!(body["issue"][0]["code"], "forbidden");
    assert!(!text.contains(NAME) && !text.contains("p1"), "{text}");
    // Upstream 404: ours, with nothing of the upstream's words.
    let doctor = practitioner("Practitioner/dr-grey", "doctor", "user/*.rs");
    let (status, _, _, text) = get(&h.app, "/fhir/Patient/gone", Some(&doctor)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!text.contains("upstream-canary"), "{text}");
    // Not a FHIR id, not a resource type.
    let (status, _, _, _) = get(&h.app, "/fhir/Patient/a%20b", Some(&doctor)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _, _) = get(&h.app, "/fhir/Nonsense/p1", Some(&doctor)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _, _) = get(&h.app, "/fhir/Patient/p1/_history/a%20b", Some(&doctor)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let pharmacist_vread = practitioner("Practitioner/ph-1", "pharmacist", "user/*.rs");
    let (status, _, _, text) = get(
        &h.app,
        "/fhir/Patient/p1/_history/3",
        Some(&pharmacist_vread),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains(NAME), "{text}");
}
