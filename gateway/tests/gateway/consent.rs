//! Patient consent end to end, against a real FHIR server of the test's own (sekmet-fhir: the
//! test advances the period and runs the ciphertext-update job over everything stored), under
//! the shipped 42 CFR Part 2 policy and its `[[consent]]` rule (`docs/consent.md`):
//!
//! - a Part 2 patient consents to a named clinic: its clinicians open the programme's elements of
//!   her records, another clinic's do not, and her contact details (not governed) stay closed;
//! - a patient denies a named programme physician: that physician's reads of her records are
//!   masked (his key re-issued without `consent:unrestricted`), another programme physician and
//!   another patient's records are untouched, and a copy of his former key opens her record
//!   before the update job and nothing of it after;
//! - the clinic's consent ends with its period: once its bound has passed and the sweep has run,
//!   the clinic's clinician opens nothing;
//! - a Consent the gateway cannot enforce is refused by path and stored nowhere; the consent
//!   log is the authority's, not the upstream's: a Consent the upstream writes by itself grants
//!   nothing;
//! - the protected values never reach the upstream, in any form.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use fhirseal::app::app;
use fhirseal::state::AppState;
use fhirseal_envelope::HeaderCache;
use fhirseal_seal::Reader;
use rand_core::OsRng;
use serde_json::{Value, json};

use crate::support::sekmet::{OwnServer, upstream_get, upstream_put};
use crate::support::{BASE, ISSUER, admin_api, configured, now, send, sign};

const DIAGNOSIS_1: &str = "Canary-SUD-Diagnosis-C1";
const DIAGNOSIS_2: &str = "Canary-SUD-Diagnosis-C2";
const PHONE: &str = "555-CANARY-C1";
const SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";

/// A practitioner's token: `code` in a PractitionerRole at `organization`.
fn practitioner(id: &str, code: &str, organization: &str) -> String {
    sign(&json!({
        "iss": ISSUER, "aud": BASE, "sub": id, "exp": now() + 600, "iat": now(),
        "fhirUser": format!("Practitioner/{id}"), "scope": "user/*.cruds",
        "practitioner_roles": [{"code": [code], "organization": format!("Organization/{organization}")}],
    }))
}

/// The patient `id`'s own token.
fn patient_token(id: &str) -> String {
    sign(&json!({
        "iss": ISSUER, "aud": BASE, "sub": id, "exp": now() + 600, "iat": now(),
        "fhirUser": format!("Patient/{id}"), "scope": "patient/*.cruds", "patient": id,
    }))
}

/// A patient-privacy Consent of `patient` with `provision`.
fn consent(id: &str, patient: &str, provision: Value) -> Value {
    json!({
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "provision": provision,
    })
}

fn actor(reference: &str) -> Value {
    json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
           "reference": {"reference": reference}})
}

fn condition(id: &str, patient: &str, text: &str) -> Value {
    json!({"resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"text": text},
        "subject": {"reference": format!("Patient/{patient}")}})
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/fhir+json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let reply = send(app, request.body(body).unwrap()).await;
    (
        reply.status,
        serde_json::from_str(&reply.text).unwrap_or(Value::Null),
    )
}

/// Whether `token`'s read of `Condition/id` opens its code.
async fn opens(app: &Router, token: &str, id: &str) -> bool {
    let (status, body) = call(app, "GET", &format!("/fhir/Condition/{id}"), token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["code"]["text"].is_string()
}

/// `POST /consent/reseal` for `patient` (the walk a consent write starts in the background,
/// waited for).
async fn reseal(admin: &Router, patient: &str) -> Value {
    let request = Request::builder()
        .method("POST")
        .uri("/consent/reseal")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"patient": patient}).to_string()))
        .unwrap();
    let reply = send(admin, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    serde_json::from_str(&reply.text).unwrap()
}

/// What the copy of a key opens of the stored `Condition/id`, read straight from the upstream.
async fn opened_by_copy(state: &AppState, key: &rshabe::DecryptionKey, id: &str) -> usize {
    let reply = upstream_get(state, &format!("Condition/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut stored: Value = serde_json::from_str(&reply.text).unwrap();
    let ids = fhirseal_seal::shared_header_ids(&stored);
    let headers = state.headers.lookup(&ids).await.unwrap();
    let cache = HeaderCache::new(16, Duration::from_secs(60));
    Reader::new("copy", Some(key), &cache, &headers, state.sealing.key())
        .open(&mut stored)
        .opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_enforced_by_the_encryption() {
    let server = OwnServer::start();
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fhir-profiles/policies/part2-substance-use.toml");
    let files = format!("[\"{}\"]", policy.display());
    let setup = configured(&server.url, &[("FHIRSEAL__POLICY__FILES", &files)]).await;
    let mut state = setup.state.clone();
    let (sink, lines) = fhirseal::audit::AuditSink::memory();
    state.audit = sink;
    let gateway = app(state.clone());
    let admin = admin_api(&state);

    let dr_a = practitioner("dr-a", "doctor", "st-mary-sud-programme");
    let dr_b = practitioner("dr-b", "doctor", "st-mary-sud-programme");
    let east = practitioner("dr-east", "doctor", "east-clinic");
    let west = practitioner("dr-west", "doctor", "west-clinic");
    let (p1, p2) = (patient_token("p1"), patient_token("p2"));

    // The programme writes two patients and their SUD diagnoses, sealed on the way in.
    for (id, phone) in [("p1", PHONE), ("p2", "555-0002")] {
        let patient = json!({"resourceType": "Patient", "id": id, "active": true,
            "telecom": [{"system": "phone", "value": phone}]});
        let (status, body) = call(
            &gateway,
            "PUT",
            &format!("/fhir/Patient/{id}"),
            &dr_a,
            Some(patient),
        )
        .await;
        assert!(status.is_success(), "{body}");
    }
    for (id, patient, text) in [("c1", "p1", DIAGNOSIS_1), ("c2", "p2", DIAGNOSIS_2)] {
        let (status, body) = call(
            &gateway,
            "PUT",
            &format!("/fhir/Condition/{id}"),
            &dr_a,
            Some(condition(id, patient, text)),
        )
        .await;
        assert!(status.is_success(), "{body}");
    }
    assert!(opens(&gateway, &dr_a, "c1").await && opens(&gateway, &dr_a, "c2").await);
    assert!(!opens(&gateway, &east, "c1").await, "no consent yet");

    // p1 consents to the east clinic.
    let k1 = consent(
        "k1",
        "p1",
        json!({"type": "deny", "provision": [
        {"type": "permit", "actor": [actor("Organization/east-clinic")]}]}),
    );
    let (status, body) = call(&gateway, "PUT", "/fhir/Consent/k1", &p1, Some(k1.clone())).await;
    assert!(status.is_success(), "{body}");
    let done = reseal(&admin, "Patient/p1").await;
    assert!(done["resealed"].as_u64().unwrap() >= 1, "{done}");
    assert!(
        opens(&gateway, &east, "c1").await,
        "the consented clinic's clinician opens it"
    );
    // The audit line says why: the Consent the decision followed; its AuditEvent names it.
    let line = lines.lock().unwrap().last().unwrap().clone();
    let parsed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed["consents"], json!(["Consent/k1"]), "{line}");
    assert_eq!(parsed["opened_paths"], json!(["Condition.code"]), "{line}");
    let event = fhirseal::audit::event::audit_event(1, &line, BASE).unwrap();
    assert!(
        event["entity"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["what"]["reference"] == "Consent/k1"),
        "{event}"
    );
    crate::support::write_audit_events("auditevent-consent", &[event]);
    assert!(
        !opens(&gateway, &west, "c1").await,
        "another clinic's does not"
    );
    let line: Value = serde_json::from_str(lines.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(line["masked_paths"], json!(["Condition.code"]), "{line}");
    assert!(line.get("opened_paths").is_none(), "{line}");
    assert!(
        !opens(&gateway, &east, "c2").await,
        "nor another patient's record"
    );
    let (_, patient) = call(&gateway, "GET", "/fhir/Patient/p1", &east, None).await;
    assert!(
        !patient.to_string().contains(PHONE),
        "contact details are not governed: {patient}"
    );
    assert!(
        opens(&gateway, &dr_a, "c1").await,
        "the programme still opens it"
    );

    // p2 denies dr-a. A copy of dr-a's key of this period, taken before.
    let period = state.authority.current_period(now()).unwrap();
    let copy = state
        .authority
        .decryption_key("Practitioner/dr-a", period, &mut OsRng)
        .unwrap();
    assert!(
        opened_by_copy(&state, &copy, "c2").await > 0,
        "the copy works before"
    );
    let k2 = consent(
        "k2",
        "p2",
        json!({"type": "permit", "provision": [
        {"type": "deny", "actor": [actor("Practitioner/dr-a")]}]}),
    );
    let (status, body) = call(&gateway, "PUT", "/fhir/Consent/k2", &p2, Some(k2)).await;
    assert!(status.is_success(), "{body}");
    reseal(&admin, "Patient/p2").await;
    assert!(
        !opens(&gateway, &dr_a, "c2").await,
        "the denied physician's read is masked"
    );
    assert!(
        opens(&gateway, &dr_b, "c2").await,
        "another programme physician still opens it"
    );
    assert!(
        opens(&gateway, &dr_a, "c1").await,
        "p1 denies nobody: dr-a still opens hers"
    );
    // dr-a's former registration was revoked when the denial was recorded.
    let former = state
        .authority
        .principal(fhirseal_authority::Kind::User, "Practitioner/dr-a")
        .unwrap();
    assert!(former.revoked_at.is_some(), "{former:?}");

    // The period advances and the update job runs: the copy opens nothing of p2's record.
    let request = |uri: &str, body: Value| {
        Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let reply = send(&admin, request("/authority/period/advance", json!({}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = send(&admin, request("/jobs/ct-update", json!({"wait": true}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        opened_by_copy(&state, &copy, "c2").await,
        0,
        "the copy opens nothing after the update job"
    );
    assert!(!opens(&gateway, &dr_a, "c2").await);
    assert!(opens(&gateway, &dr_b, "c2").await && opens(&gateway, &dr_a, "c1").await);

    // The clinic's consent ends with its period: a bound two seconds ahead.
    let end = fhirseal::audit::timestamp(now() + 2);
    let mut ending = k1.clone();
    ending["provision"]["provision"][0]["period"] = json!({"end": end});
    let (status, body) = call(&gateway, "PUT", "/fhir/Consent/k1", &p1, Some(ending)).await;
    assert!(status.is_success(), "{body}");
    reseal(&admin, "Patient/p1").await;
    assert!(opens(&gateway, &east, "c1").await, "in force until its end");
    let before = now();
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    assert_eq!(fhirseal::consent::sweep(&state, before, now()).await, 1);
    assert!(
        !opens(&gateway, &east, "c1").await,
        "access ends with the consent's period"
    );

    // What cannot be enforced is refused by path, and stored nowhere.
    let team = consent(
        "k3",
        "p1",
        json!({"type": "permit", "actor": [actor("CareTeam/t1")]}),
    );
    let (status, body) = call(&gateway, "PUT", "/fhir/Consent/k3", &p1, Some(team)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.to_string()
            .contains("Consent.provision.actor[0].reference"),
        "{body}"
    );
    assert_eq!(
        upstream_get(&state, "Consent/k3").await.status,
        StatusCode::NOT_FOUND
    );

    // A Consent the upstream writes by itself grants nothing: the log is the authority's.
    let forged = consent(
        "k4",
        "p2",
        json!({"type": "permit", "actor": [actor("Organization/west-clinic")]}),
    );
    assert!(upstream_put(&state, &forged).await.status.is_success());
    let done = reseal(&admin, "Patient/p2").await;
    assert!(done["consents"].as_u64().unwrap() == 2, "{done}");
    assert!(!opens(&gateway, &west, "c2").await);

    // Withdrawing the denial gives dr-a p2's record back.
    let (status, body) = call(&gateway, "DELETE", "/fhir/Consent/k2", &p2, None).await;
    assert!(status.is_success(), "{body}");
    reseal(&admin, "Patient/p2").await;
    assert!(opens(&gateway, &dr_a, "c2").await, "the denial withdrawn");

    // The protected values never reached the upstream.
    for path in ["Condition/c1", "Condition/c2", "Patient/p1"] {
        let text = upstream_get(&state, path).await.text;
        for canary in [DIAGNOSIS_1, DIAGNOSIS_2, PHONE] {
            assert!(!text.contains(canary), "{path} holds {canary} in clear");
        }
    }
}
