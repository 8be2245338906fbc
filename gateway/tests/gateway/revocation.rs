//! The revocation life cycle end to end through HTTP, against a real FHIR server (sekmet-fhir,
//! started with `scripts/fhir-server`): a doctor reads sealed resources opened; an administrator
//! revokes the doctor, advances the period and runs the ciphertext-update job through the admin
//! API; then the doctor's tokens open nothing, the headers stored upstream are at the new period,
//! a copy of the doctor's old decryption key opens nothing of what is stored, and a doctor
//! enrolled afterwards opens everything. The sealed values never reach the upstream.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::state::AppState;
use fhirseal_envelope::{BlindIndex, Header, HeaderCache, HeaderId};
use fhirseal_seal::{HeaderLookup, Reader, Sealer, SharedHeaders};
use rand_core::OsRng;
use serde_json::{Value, json};

use crate::support::sekmet::{OwnServer, upstream_get, upstream_put};
use crate::support::{admin_api, configured, header_in, now, practitioner, send};

const NAME: &str = "Canary-Name-R8";
const SSN: &str = "999-CANARY-R8";
const RESULT: &str = "Canary-Result-R8";

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1", "active": true,
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": SSN}],
        "name": [{"family": NAME, "given": ["Ada"]}],
        "gender": "female", "birthDate": "1971-02-03"})
}

fn observation() -> Value {
    json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": "Patient/p1"},
        "valueString": RESULT})
}

/// Headers by id, for a [`Reader`] outside the gateway.
struct Found(HashMap<HeaderId, Header>);

impl HeaderLookup for Found {
    fn header(&self, id: HeaderId) -> Option<Header> {
        self.0.get(&id).cloned()
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let reply = send(app, request.body(body).unwrap()).await;
    (reply.status, reply.text)
}

/// `GET path` straight from the FHIR server, not through the gateway.
async fn raw(state: &AppState, path: &str) -> (Value, String) {
    let reply = upstream_get(state, path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}");
    (serde_json::from_str(&reply.text).unwrap(), reply.text)
}

/// The shared headers stored on the FHIR server.
async fn stored_headers(state: &AppState) -> Found {
    let (bundle, _) = raw(
        state,
        "Basic?code=https://fhirseal.dev/fhir/CodeSystem/fhirseal%7Csealed-header&_count=100",
    )
    .await;
    Found(
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let h = header_in(&e["resource"]);
                (h.id(), h)
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_doctor_opens_nothing_after_the_update_job() {
    let server = OwnServer::start();
    let setup = configured(&server.url, &[]).await;
    let state = setup.state.clone();
    let gateway = app(state.clone());
    let admin = admin_api(&state);

    // Seal and store, as the write path does: the policy's rules, the current period, the
    // shared headers stored first.
    let rules = state.policy.rules_for(Some("Patient/p1"));
    let period = state.authority.current_period(now()).unwrap();
    assert_eq!(period, 0);
    let mut shared = SharedHeaders::new();
    let index = BlindIndex::new([7; 32]);
    let mut sealed = Vec::new();
    {
        let mut rng = OsRng;
        let mut sealer = Sealer::new(
            state.authority.public_params(),
            state.sealing.key(),
            period,
            &mut shared,
            &mut rng,
        )
        .with_blind_index(&index);
        for resource in [patient(), observation()] {
            sealed.push(sealer.seal(&resource, &rules).unwrap().resource);
        }
    }
    let created = shared.take_created();
    assert!(!created.is_empty());
    state.headers.store(&created).await.unwrap();
    for resource in &sealed {
        let reply = upstream_put(&state, resource).await;
        assert!(
            reply.status.is_success(),
            "{}/{}: {}",
            resource["resourceType"],
            resource["id"],
            reply.text
        );
    }

    // The doctor reads both opened.
    let grey = practitioner("Practitioner/dr-grey", "doctor", "user/*.rs");
    let (status, text) = call(&gateway, "GET", "/fhir/Patient/p1", Some(&grey), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["name"], patient()["name"]);
    let (status, text) = call(&gateway, "GET", "/fhir/Observation/o1", Some(&grey), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(RESULT), "{text}");

    // A copy of the doctor's period-0 key, kept by the doctor: today it opens the stored data.
    let old_key = state
        .authority
        .decryption_key("Practitioner/dr-grey", 0, &mut OsRng)
        .unwrap();
    let cache = HeaderCache::new(16, Duration::from_secs(60));
    let headers = stored_headers(&state).await;
    let (mut stored, _) = raw(&state, "Patient/p1").await;
    let before = Reader::new(
        "copy",
        Some(&old_key),
        &cache,
        &headers,
        state.sealing.key(),
    )
    .open(&mut stored);
    assert!(
        before.opened > 0,
        "the copy works before the update: {before:?}"
    );

    // Revoke, advance the period, run the job: all through the admin API.
    let (status, text) = call(
        &admin,
        "POST",
        "/authority/revoke",
        None,
        Some(json!({"kind": "user", "name": "Practitioner/dr-grey"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("Practitioner/dr-grey"), "{text}");
    let advance = Some(json!({}));
    let (status, text) = call(&admin, "POST", "/authority/period/advance", None, advance).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["period"], 1);
    let wait = Some(json!({"wait": true}));
    let (status, text) = call(&admin, "POST", "/jobs/ct-update", None, wait).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let job: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(job["finished"], true, "{text}");
    assert_eq!(job["target_period"], 1);
    assert_eq!(job["headers_moved"], created.len(), "{text}");
    let (status, text) = call(&admin, "GET", "/jobs/ct-update", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains(r#""finished":true"#), "{text}");

    // The doctor's tokens open nothing any more.
    for uri in ["/fhir/Patient/p1", "/fhir/Observation/o1"] {
        let (status, text) = call(&gateway, "GET", uri, Some(&grey), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {text}");
        assert!(text.contains("decryption keys are revoked"), "{text}");
        assert!(!text.contains(NAME) && !text.contains(RESULT), "{text}");
    }

    // Straight from the FHIR server: every stored header is at period 1, the sealed values are
    // nowhere, and the old key copy opens nothing.
    let headers = stored_headers(&state).await;
    assert_eq!(headers.0.len(), created.len());
    assert!(headers.0.values().all(|h| h.ciphertext().period() == 1));
    for path in ["Patient/p1", "Observation/o1"] {
        let (mut stored, text) = raw(&state, path).await;
        for canary in [NAME, SSN, RESULT] {
            assert!(
                !text.contains(canary),
                "{path} stores {canary} in the clear"
            );
        }
        let cache = HeaderCache::new(16, Duration::from_secs(60));
        let report = Reader::new(
            "copy",
            Some(&old_key),
            &cache,
            &headers,
            state.sealing.key(),
        )
        .open(&mut stored);
        assert_eq!(report.opened, 0, "{path}: {report:?}");
        assert!(report.masked > 0, "{path}: {report:?}");
    }

    // A doctor enrolled now opens everything.
    let house = practitioner("Practitioner/dr-house", "doctor", "user/*.rs");
    let (status, text) = call(&gateway, "GET", "/fhir/Patient/p1", Some(&house), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["name"], patient()["name"]);
    assert_eq!(body["birthDate"], "1971-02-03");
    let (status, text) = call(&gateway, "GET", "/fhir/Observation/o1", Some(&house), None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(RESULT), "{text}");

    // Revoking again is a conflict; an unknown identity is not found.
    let (status, _) = call(
        &admin,
        "POST",
        "/authority/revoke",
        None,
        Some(json!({"kind": "user", "name": "Practitioner/dr-grey"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, text) = call(
        &admin,
        "POST",
        "/authority/revoke",
        None,
        Some(json!({"kind": "user", "name": "Practitioner/nobody"})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    let (status, text) = call(&admin, "GET", "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    drop(server);
}
