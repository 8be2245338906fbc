//! Every FHIR REST interaction through the gateway against a real FHIR server (sekmet-fhir,
//! strict validation, started by `scripts/test`), as a FHIR R4 client expects of any server:
//! unique canary strings in every element the policy seals, then a scan of the server's own
//! storage that finds none of them; each kind of caller sees them opened or masked as the embedded
//! hospital policy says (physicians and nurses open names, birth dates, results and diagnoses;
//! only physicians open contact details, and only physicians delete; only the registrar and the
//! patient open a social security number; a pharmacist reads a Patient with its demographics
//! masked; a patient reads only their own record); and every URL a client gets back points at
//! the gateway.

mod bundle;
mod compartment;
mod creates;
mod forged;
mod history;
mod http;
mod parity;
mod read;
mod rotation;
mod sealed_search;
mod search;
mod sizes;
mod storage;
mod warm;
mod write;
mod writes;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::sekmet::{
    Gateway, bundle_urls, canary, canary_date, is_labelled_masked, is_masked, without_server_meta,
};
use crate::support::{BASE, Reply, Who};

const SSN_SYSTEM: &str = "http://hl7.org/fhir/sid/us-ssn";

// --- Test data ----------------------------------------------------------------------------

/// The canaries of one Patient: one per sealed element.
struct PatientCanaries {
    family: String,
    given: String,
    phone: String,
    line: String,
    ssn: String,
    birth_date: String,
    narrative: String,
}

impl PatientCanaries {
    fn new() -> Self {
        Self {
            family: canary("family"),
            given: canary("given"),
            phone: canary("phone"),
            line: canary("line"),
            ssn: canary("ssn"),
            birth_date: canary_date(),
            narrative: canary("narrative"),
        }
    }

    fn all(&self) -> Vec<&str> {
        vec![
            &self.family,
            &self.given,
            &self.phone,
            &self.line,
            &self.ssn,
            &self.birth_date,
            &self.narrative,
        ]
    }
}

fn patient(id: &str, c: &PatientCanaries) -> Value {
    json!({
        "resourceType": "Patient", "id": id,
        "text": {"status": "generated",
                 "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", c.narrative)},
        "identifier": [{"system": SSN_SYSTEM, "value": c.ssn},
                       {"system": "urn:e2e:mrn", "value": format!("MRN-{id}")}],
        "active": true,
        "name": [{"family": c.family, "given": [c.given]}],
        "telecom": [{"system": "phone", "value": c.phone}],
        "gender": "female",
        "birthDate": c.birth_date,
        "address": [{"line": [c.line], "city": "Springfield"}]
    })
}

/// An Observation of `patient` whose sealed result holds `unit` (a canary) and `value`.
fn observation(id: &str, patient: &str, value: f64, unit: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "identifier": [{"system": "urn:e2e:obs", "value": format!("OBS-{id}")}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
                 "text": format!("heart rate {id}")},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": value, "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": "/min"},
        "interpretation": [{"text": unit}]
    })
}

/// A Condition of `patient` whose sealed code, body site and severity hold `text` (a canary).
fn condition(id: &str, patient: &str, text: &str) -> Value {
    json!({
        "resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"text": text},
        "bodySite": [{"text": text}],
        "severity": {"text": text},
        "subject": {"reference": format!("Patient/{patient}")}
    })
}

// --- Checks -------------------------------------------------------------------------------

#[track_caller]
fn expect(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.text);
}

/// The storage of the upstream holds none of `canaries`.
#[track_caller]
fn assert_sealed_upstream(gw: &Gateway, canaries: &[&str]) {
    let found = gw.canary_scan(canaries);
    assert!(
        found.is_empty(),
        "plaintext on the upstream:\n{}",
        found.join("\n")
    );
}

/// No URL of the upstream anywhere in what the client got.
#[track_caller]
fn assert_no_upstream_url(gw: &Gateway, reply: &Reply) {
    assert!(
        !reply.text.contains(&gw.server.url) && !reply.text.contains("127.0.0.1:180"),
        "an upstream URL reached the client: {}",
        reply.text
    );
    for value in reply.headers.values() {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains(&gw.server.url),
            "upstream URL in a header: {value}"
        );
    }
}

/// Every link and fullUrl of a Bundle is under the gateway's base.
#[track_caller]
fn assert_gateway_urls(bundle: &Value) {
    for url in bundle_urls(bundle) {
        assert!(
            url.starts_with(&format!("{BASE}/")),
            "not the gateway's URL: {url}"
        );
    }
}

/// `body` is `original` with every protected element open (up to the server's `meta`).
#[track_caller]
fn assert_opened(body: &Value, original: &Value) {
    assert_eq!(without_server_meta(body), without_server_meta(original));
    assert!(
        !is_labelled_masked(body),
        "all open, yet labelled MASKED: {body}"
    );
}

/// A clinician's view of `patient(id, c)`: name and birth date open; the social security
/// number and the narrative (sealed under all of the resource's structures) masked; the contact
/// details (telecom, address) open for a physician, masked for a nurse.
#[track_caller]
fn assert_clinician_view(reply: &Reply, original: &Value, c: &PatientCanaries, who: &Who) {
    assert!(
        reply.status.is_success(),
        "{}: {}",
        reply.status,
        reply.text
    );
    let body = &reply.json;
    for element in ["name", "birthDate", "gender", "active"] {
        assert_eq!(body[element], original[element], "{element}: {body}");
    }
    let contact = ["telecom", "address"];
    match who {
        Who::Doctor => {
            for element in contact {
                assert_eq!(body[element], original[element], "{element}: {body}");
            }
        }
        Who::Nurse => {
            for element in contact {
                assert!(is_masked(&body[element][0]), "{element} not masked: {body}");
            }
            assert!(!reply.text.contains(&c.phone) && !reply.text.contains(&c.line));
        }
        other => panic!("not a clinician: {other:?}"),
    }
    assert!(is_masked(&body["identifier"][0]), "SSN not masked: {body}");
    assert_eq!(body["identifier"][1], original["identifier"][1]);
    assert!(is_labelled_masked(body), "{body}");
    assert!(
        !reply.text.contains(&c.ssn) && !reply.text.contains(&c.narrative),
        "{}",
        reply.text
    );
}

fn id_set(resources: &[&Value]) -> BTreeSet<String> {
    resources
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn diagnostics(reply: &Reply) -> String {
    reply.json["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["diagnostics"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn location_id(location: &str, resource_type: &str) -> String {
    let rest = location
        .strip_prefix(&format!("{BASE}/{resource_type}/"))
        .or_else(|| location.strip_prefix(&format!("{resource_type}/")))
        .unwrap_or_else(|| panic!("Location {location:?} is not a {resource_type} of the gateway"));
    rest.split('/').next().unwrap().to_string()
}
