//! Every FHIR REST interaction through the gateway against a real FHIR server (sekmet-fhir,
//! strict validation, started by `scripts/test`), as a FHIR R4 client expects of any server:
//! unique canary strings in every element the policy seals, then a scan of the server's own
//! storage that finds none of them; each kind of caller sees them opened or masked as the embedded
//! hospital policy says (physicians and nurses open names, birth dates, results and diagnoses;
//! only physicians open contact details, and only physicians delete; only the registrar and the
//! patient open a social security number; a pharmacist reads a Patient with its demographics
//! masked; a patient reads only their own record); and every URL a client gets back points at
//! the gateway.

mod forged;
mod parity;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::support::sekmet::{
    Call, Gateway, bundle_urls, canary, canary_date, entries, gateway, is_labelled_masked,
    is_masked, link, unique, without_server_meta,
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

// --- The harness itself ---------------------------------------------------------------

#[tokio::test]
async fn the_canary_scan_finds_plaintext_written_around_the_gateway() {
    let gw = gateway().await;
    let id = unique("pat");
    let family = canary("family");
    let written = json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]});
    assert_eq!(gw.upstream_put(&written).await, StatusCode::CREATED);
    let found = gw.canary_scan(&[&family, "CANARY-never-written-anywhere"]);
    assert!(
        found.iter().any(|f| f.contains("table resources")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|f| f.contains("table versions")),
        "{found:?}"
    );
    assert!(found.iter().all(|f| f.starts_with(&family)), "{found:?}");
}

// --- Capabilities and read ----------------------------------------------------------------

#[tokio::test]
async fn metadata_is_the_upstreams_statement_at_the_gateways_base() {
    let gw = gateway().await;
    let reply = gw
        .send(Call::new(Method::GET, "/fhir/metadata", &Who::Doctor))
        .await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["resourceType"], "CapabilityStatement");
    assert_eq!(reply.json["fhirVersion"], "4.0.1");
    assert_eq!(reply.json["implementation"]["url"], BASE);
    assert_eq!(
        reply.json["rest"][0]["security"]["service"][0]["coding"][0]["code"],
        "SMART-on-FHIR"
    );
    assert_no_upstream_url(&gw, &reply);
}

#[tokio::test]
async fn update_as_create_stores_sealed_and_each_reader_sees_what_the_policy_opens() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);

    let reply = gw.put(&original, &Who::Doctor).await;
    expect(&reply, StatusCode::CREATED);
    assert_eq!(reply.header(header::ETAG), "W/\"1\"");
    assert_no_upstream_url(&gw, &reply);
    assert_sealed_upstream(&gw, &c.all());

    // The stored form: labelled, the birth date a masked companion, the MRN as sent.
    let stored = gw.upstream_get(&format!("Patient/{id}")).await;
    expect(&stored, StatusCode::OK);
    assert!(is_labelled_masked(&stored.json), "{}", stored.text);
    assert!(stored.json.get("birthDate").is_none(), "{}", stored.text);
    assert_eq!(stored.json["identifier"][1], original["identifier"][1]);
    assert_eq!(stored.json["gender"], "female");

    let uri = format!("/fhir/Patient/{id}");
    let doctor = gw.get(&uri, &Who::Doctor).await;
    assert_clinician_view(&doctor, &original, &c, &Who::Doctor);
    assert_eq!(doctor.header(header::ETAG), "W/\"1\"");
    let nurse = gw.get(&uri, &Who::Nurse).await;
    assert_clinician_view(&nurse, &original, &c, &Who::Nurse);

    // The registrar and the patient open everything, the narrative included.
    assert_opened(&gw.get(&uri, &Who::Registrar).await.json, &original);
    let own = gw.get(&uri, &Who::Patient(id.clone())).await;
    expect(&own, StatusCode::OK);
    assert_opened(&own.json, &original);

    // A pharmacist reads the Patient with every protected element masked.
    let pharmacist = gw.get(&uri, &Who::Pharmacist).await;
    expect(&pharmacist, StatusCode::OK);
    let body = &pharmacist.json;
    for masked in [
        &body["name"][0],
        &body["telecom"][0],
        &body["address"][0],
        &body["_birthDate"],
    ] {
        assert!(is_masked(masked), "{body}");
    }
    assert!(body.get("birthDate").is_none());
    assert!(is_masked(&body["identifier"][0]));
    assert_eq!(body["identifier"][1], original["identifier"][1]);
    assert_eq!(
        (&body["gender"], &body["active"]),
        (&original["gender"], &original["active"])
    );
    for canary in c.all() {
        assert!(
            !pharmacist.text.contains(canary),
            "{canary}: {}",
            pharmacist.text
        );
    }

    // Another patient may not read it at all.
    let other = gw.get(&uri, &Who::Patient(unique("pat"))).await;
    expect(&other, StatusCode::FORBIDDEN);
    assert!(!other.text.contains(&c.family));

    // vread opens the same way.
    let version = gw.get(&format!("{uri}/_history/1"), &Who::Registrar).await;
    expect(&version, StatusCode::OK);
    assert_opened(&version.json, &original);
}

#[tokio::test]
async fn unknown_resources_are_404_and_deleted_ones_410_and_only_physicians_delete() {
    let gw = gateway().await;
    let unknown = gw
        .get(&format!("/fhir/Patient/{}", unique("nobody")), &Who::Doctor)
        .await;
    expect(&unknown, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json["resourceType"], "OperationOutcome");

    let pid = unique("pat");
    let id = unique("obs");
    let unit = canary("unit");
    let original = observation(&id, &pid, 71.0, &unit);
    expect(&gw.put(&original, &Who::Doctor).await, StatusCode::CREATED);
    let uri = format!("/fhir/Observation/{id}");
    let missing_version = gw.get(&format!("{uri}/_history/9"), &Who::Doctor).await;
    expect(&missing_version, StatusCode::NOT_FOUND);

    // The nurse may not delete (the policy); the resource stays.
    let refused = gw.send(Call::new(Method::DELETE, &uri, &Who::Nurse)).await;
    expect(&refused, StatusCode::FORBIDDEN);
    expect(&gw.get(&uri, &Who::Nurse).await, StatusCode::OK);

    let deleted = gw.send(Call::new(Method::DELETE, &uri, &Who::Doctor)).await;
    assert!(
        deleted.status == StatusCode::OK || deleted.status == StatusCode::NO_CONTENT,
        "{}: {}",
        deleted.status,
        deleted.text
    );
    assert_no_upstream_url(&gw, &deleted);
    let gone = gw.get(&uri, &Who::Doctor).await;
    expect(&gone, StatusCode::GONE);
    assert_eq!(gone.json["resourceType"], "OperationOutcome");
    // The version before the delete still opens.
    let before = gw.get(&format!("{uri}/_history/1"), &Who::Doctor).await;
    expect(&before, StatusCode::OK);
    assert_opened(&before.json, &original);
    assert_sealed_upstream(&gw, &[&unit]);
}

// --- Writes -------------------------------------------------------------------------------

#[tokio::test]
async fn update_checks_if_match_against_the_current_version() {
    let gw = gateway().await;
    let id = unique("pat");
    let first = PatientCanaries::new();
    expect(
        &gw.put(&patient(&id, &first), &Who::Nurse).await,
        StatusCode::CREATED,
    );

    let second = PatientCanaries::new();
    let v2 = patient(&id, &second);
    let call = Call::new(Method::PUT, &format!("/fhir/Patient/{id}"), &Who::Nurse)
        .header(header::IF_MATCH, "W/\"1\"")
        .json(&v2);
    let updated = gw.send(call).await;
    expect(&updated, StatusCode::OK);
    assert_eq!(updated.header(header::ETAG), "W/\"2\"");
    assert_no_upstream_url(&gw, &updated);

    // A stale version: 412, and nothing changes.
    let third = PatientCanaries::new();
    let call = Call::new(Method::PUT, &format!("/fhir/Patient/{id}"), &Who::Nurse)
        .header(header::IF_MATCH, "W/\"1\"")
        .json(&patient(&id, &third));
    let stale = gw.send(call).await;
    expect(&stale, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.json["resourceType"], "OperationOutcome");
    let current = gw
        .get(&format!("/fhir/Patient/{id}"), &Who::Registrar)
        .await;
    expect(&current, StatusCode::OK);
    assert_eq!(current.header(header::ETAG), "W/\"2\"");
    assert_opened(&current.json, &v2);

    let mut canaries = first.all();
    canaries.extend(second.all());
    canaries.extend(third.all());
    assert_sealed_upstream(&gw, &canaries);
}

#[tokio::test]
async fn a_write_the_policy_denies_is_403_and_stores_nothing() {
    let gw = gateway().await;
    // The pharmacist reads Patients but may not write them.
    let id = unique("pat");
    let c = PatientCanaries::new();
    let refused = gw.put(&patient(&id, &c), &Who::Pharmacist).await;
    expect(&refused, StatusCode::FORBIDDEN);
    expect(
        &gw.upstream_get(&format!("Patient/{id}")).await,
        StatusCode::NOT_FOUND,
    );
    // Nobody may write a type the policy does not name.
    let other = json!({"resourceType": "Immunization", "id": unique("imm"), "status": "completed",
        "vaccineCode": {"text": "flu"}, "patient": {"reference": "Patient/x"},
        "occurrenceDateTime": "2020-01-01"});
    expect(&gw.put(&other, &Who::Doctor).await, StatusCode::FORBIDDEN);
    // Nor a gateway-managed resource: a shared header's `Basic` (its replacement would mask,
    // or re-key, every element sealed under it).
    let header = json!({"resourceType": "Basic", "id": "fhirseal-header-00000000000000000000000000000000",
        "code": {"coding": [{"system": "https://fhirseal.dev/fhir/CodeSystem/fhirseal", "code": "sealed-header"}]}});
    expect(&gw.put(&header, &Who::Doctor).await, StatusCode::FORBIDDEN);
    expect(
        &gw.upstream_get("Basic/fhirseal-header-00000000000000000000000000000000")
            .await,
        StatusCode::NOT_FOUND,
    );
    let reply = gw.get("/fhir/Basic?_count=1", &Who::Doctor).await;
    expect(&reply, StatusCode::FORBIDDEN);
    // A patient's token (patient/*.rs) writes nothing.
    expect(
        &gw.put(&patient(&id, &c), &Who::Patient(id.clone())).await,
        StatusCode::FORBIDDEN,
    );
    expect(
        &gw.upstream_get(&format!("Patient/{id}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_sealed_upstream(&gw, &c.all());
}

#[tokio::test]
async fn create_assigns_the_id_and_answers_201_with_the_gateways_location() {
    let gw = gateway().await;
    let c = PatientCanaries::new();
    let client_id = unique("client-chosen");
    let original = patient(&client_id, &c);
    let reply = gw.post(&original, &Who::Doctor).await;
    expect(&reply, StatusCode::CREATED);
    assert_no_upstream_url(&gw, &reply);
    let location = reply.header(header::LOCATION);
    let id = location_id(&location, "Patient");
    assert_ne!(id, client_id, "create ignores the client's id");
    assert!(location.ends_with("/_history/1"), "{location}");
    assert_sealed_upstream(&gw, &c.all());

    let mut expected = original.clone();
    expected["id"] = json!(id);
    let read = gw
        .get(&format!("/fhir/Patient/{id}"), &Who::Registrar)
        .await;
    expect(&read, StatusCode::OK);
    assert_opened(&read.json, &expected);
    // What create answered, if anything (no `Prefer`: the server chooses), is the resource
    // opened for the caller as a read would.
    if !reply.text.is_empty() {
        assert_clinician_view(&reply, &expected, &c, &Who::Doctor);
    }
}

#[tokio::test]
async fn conditional_create_with_if_none_exist_creates_once() {
    let gw = gateway().await;
    let pid = unique("pat");
    let unit = canary("unit");
    let mut original = observation("ignored", &pid, 88.0, &unit);
    original.as_object_mut().unwrap().shift_remove("id");
    let condition = format!("identifier=urn:e2e:obs|{}", unique("cond"));
    original["identifier"][0]["value"] = json!(condition.split('|').nth(1).unwrap());

    let call = || {
        Call::new(Method::POST, "/fhir/Observation", &Who::Nurse)
            .header(header::HeaderName::from_static("if-none-exist"), &condition)
            .json(&original)
    };
    let first = gw.send(call()).await;
    expect(&first, StatusCode::CREATED);
    let id = location_id(&first.header(header::LOCATION), "Observation");
    let second = gw.send(call()).await;
    expect(&second, StatusCode::OK);
    assert_no_upstream_url(&gw, &second);
    if !second.header(header::LOCATION).is_empty() {
        assert_eq!(
            location_id(&second.header(header::LOCATION), "Observation"),
            id
        );
    }

    let search = gw
        .get(
            &format!("/fhir/Observation?{}", condition.replace('|', "%7C")),
            &Who::Nurse,
        )
        .await;
    expect(&search, StatusCode::OK);
    let matches = entries(&search.json, Some("match"));
    assert_eq!(id_set(&matches), BTreeSet::from([id]));
    assert_eq!(matches[0]["valueQuantity"]["unit"], unit.as_str());
    assert_sealed_upstream(&gw, &[&unit]);
}

#[tokio::test]
async fn json_patch_changes_an_unsealed_element_and_keeps_the_sealed_ones() {
    let gw = gateway().await;
    // An Observation, every protected element of which the physician opens.
    let oid = unique("obs");
    let unit = canary("unit");
    let original = observation(&oid, &unique("pat"), 80.0, &unit);
    expect(&gw.put(&original, &Who::Doctor).await, StatusCode::CREATED);
    let uri = format!("/fhir/Observation/{oid}");
    let patched = gw
        .send(json_patch(&uri, &Who::Doctor, "/status", "amended"))
        .await;
    expect(&patched, StatusCode::OK);
    assert_no_upstream_url(&gw, &patched);
    let read = gw.get(&uri, &Who::Nurse).await;
    expect(&read, StatusCode::OK);
    assert_eq!(read.header(header::ETAG), "W/\"2\"");
    let mut expected = original.clone();
    expected["status"] = json!("amended");
    assert_opened(&read.json, &expected);

    // A Patient, by a caller who opens all of it.
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(&gw.put(&original, &Who::Doctor).await, StatusCode::CREATED);
    let uri = format!("/fhir/Patient/{id}");
    let patched = gw
        .send(json_patch(&uri, &Who::FullAccess, "/gender", "male"))
        .await;
    expect(&patched, StatusCode::OK);
    let read = gw.get(&uri, &Who::Registrar).await;
    let mut expected = original.clone();
    expected["gender"] = json!("male");
    assert_opened(&read.json, &expected);

    // A physician cannot open the social security number: the patch is refused (the gateway
    // could not keep what it cannot open), or applied with it kept.
    let partial = gw
        .send(json_patch(&uri, &Who::Doctor, "/gender", "other"))
        .await;
    let read = gw.get(&uri, &Who::Registrar).await;
    if partial.status.is_success() {
        expected["gender"] = json!("other");
    } else {
        expect(&partial, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_opened(&read.json, &expected);

    // A patch of a sealed element: applied with the new value sealed too, or refused.
    let new_date = canary_date();
    let sealed = gw
        .send(json_patch(&uri, &Who::FullAccess, "/birthDate", &new_date))
        .await;
    let read = gw.get(&uri, &Who::Registrar).await;
    if sealed.status.is_success() {
        expected["birthDate"] = json!(new_date);
    } else {
        assert!(
            sealed.status.is_client_error(),
            "{}: {}",
            sealed.status,
            sealed.text
        );
        assert_eq!(sealed.json["resourceType"], "OperationOutcome");
    }
    assert_opened(&read.json, &expected);
    let mut canaries = c.all();
    canaries.extend([unit.as_str(), new_date.as_str()]);
    assert_sealed_upstream(&gw, &canaries);
}

fn json_patch<'a>(uri: &str, who: &'a Who, path: &str, value: &str) -> Call<'a> {
    let patch = json!([{"op": "replace", "path": path, "value": value}]);
    Call::new(Method::PATCH, uri, who).body("application/json-patch+json", &patch.to_string())
}

#[tokio::test]
async fn read_modify_write_by_a_partial_reader_keeps_what_it_cannot_open() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );

    // The usual FHIR update: read, change one thing, PUT it back. The nurse's copy has the
    // social security number and the narrative masked.
    let uri = format!("/fhir/Patient/{id}");
    let mut copy = gw.get(&uri, &Who::Nurse).await.json;
    assert!(is_masked(&copy["identifier"][0]));
    copy["gender"] = json!("male");
    copy.as_object_mut().unwrap().shift_remove("meta");
    let put = gw
        .send(
            Call::new(Method::PUT, &uri, &Who::Nurse)
                .header(header::IF_MATCH, "W/\"1\"")
                .json(&copy),
        )
        .await;

    // Either refused, or stored with what the nurse could not open kept as it was: never the
    // masked placeholder stored in place of the number.
    let read = gw.get(&uri, &Who::Registrar).await;
    expect(&read, StatusCode::OK);
    let mut expected = original.clone();
    if put.status.is_success() {
        expected["gender"] = json!("male");
    } else {
        assert!(put.status.is_client_error(), "{}: {}", put.status, put.text);
    }
    assert_eq!(
        read.json["identifier"], original["identifier"],
        "the social security number was lost by an update from a reader who could not open it"
    );
    assert_opened(&read.json, &expected);
    assert_sealed_upstream(&gw, &c.all());
}

// --- Search -------------------------------------------------------------------------------

/// A patient with five Observations (values 70–74, units canaries); returns their ids, units.
async fn five_observations(gw: &Gateway, pid: &str) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut units = Vec::new();
    for n in 0..5 {
        let id = unique("obs");
        let unit = canary("unit");
        let reply = gw
            .put(
                &observation(&id, pid, 70.0 + f64::from(n), &unit),
                &Who::Doctor,
            )
            .await;
        expect(&reply, StatusCode::CREATED);
        ids.push(id);
        units.push(unit);
    }
    (ids, units)
}

#[tokio::test]
async fn search_pages_through_the_gateway_with_results_opened() {
    let gw = gateway().await;
    let pid = unique("pat");
    let (ids, units) = five_observations(&gw, &pid).await;

    let mut next = Some(format!("/fhir/Observation?subject=Patient/{pid}&_count=2"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(uri) = next {
        pages += 1;
        assert!(pages <= 5, "more pages than results");
        let page = gw.get(&uri, &Who::Nurse).await;
        expect(&page, StatusCode::OK);
        assert_eq!(page.json["type"], "searchset");
        assert_no_upstream_url(&gw, &page);
        assert_gateway_urls(&page.json);
        let matches = entries(&page.json, Some("match"));
        assert!(matches.len() <= 2, "{}", page.text);
        for resource in matches {
            let at = ids.iter().position(|i| *i == resource["id"]).unwrap();
            assert_eq!(resource["valueQuantity"]["unit"], units[at].as_str());
            assert_eq!(resource["interpretation"][0]["text"], units[at].as_str());
            seen.push(ids[at].clone());
        }
        next = link(&page.json, "next");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(seen.len(), 5, "no result twice: {seen:?}");

    // POST [type]/_search answers the same.
    let call = Call::new(Method::POST, "/fhir/Observation/_search", &Who::Doctor).body(
        "application/x-www-form-urlencoded",
        &format!("subject=Patient%2F{pid}&_count=10"),
    );
    let posted = gw.send(call).await;
    expect(&posted, StatusCode::OK);
    assert_gateway_urls(&posted.json);
    assert_eq!(
        id_set(&entries(&posted.json, Some("match"))),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    let units: Vec<&str> = units.iter().map(String::as_str).collect();
    assert_sealed_upstream(&gw, &units);
}

#[tokio::test]
async fn search_refuses_a_parameter_on_a_sealed_element_naming_it() {
    let gw = gateway().await;
    // Practitioner.address is sealed with search = "reject".
    let get = gw
        .get("/fhir/Practitioner?address-city=Springfield", &Who::Doctor)
        .await;
    expect(&get, StatusCode::BAD_REQUEST);
    assert_eq!(get.json["resourceType"], "OperationOutcome");
    assert!(diagnostics(&get).contains("address-city"), "{}", get.text);
    let call = Call::new(Method::POST, "/fhir/Practitioner/_search", &Who::Doctor)
        .body("application/x-www-form-urlencoded", "address=Main");
    let post = gw.send(call).await;
    expect(&post, StatusCode::BAD_REQUEST);
    assert!(diagnostics(&post).contains("address"), "{}", post.text);

    // An unsealed parameter on the same type works.
    let ok = gw
        .get("/fhir/Practitioner?active=true&_count=1", &Who::Doctor)
        .await;
    expect(&ok, StatusCode::OK);
    assert_eq!(ok.json["type"], "searchset");
}

#[tokio::test]
async fn search_on_sealed_patient_and_result_elements_is_refused_or_exact() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(&gw.put(&original, &Who::Doctor).await, StatusCode::CREATED);

    // Unsealed parameters: found, opened.
    let found = gw
        .get(
            &format!("/fhir/Patient?_id={id}&gender=female"),
            &Who::Doctor,
        )
        .await;
    expect(&found, StatusCode::OK);
    let matches = entries(&found.json, Some("match"));
    assert_eq!(id_set(&matches), BTreeSet::from([id.clone()]));
    assert_eq!(matches[0]["name"], original["name"]);

    // Sealed ones (the policy: demographics by blind index, results by filtering): either a 400
    // naming the parameter, or exactly the right answer; never a wrong one.
    for (parameter, value) in [
        ("birthdate", c.birth_date.as_str()),
        ("family", c.family.as_str()),
    ] {
        let reply = gw
            .get(&format!("/fhir/Patient?{parameter}={value}"), &Who::Doctor)
            .await;
        if reply.status == StatusCode::BAD_REQUEST {
            assert!(diagnostics(&reply).contains(parameter), "{}", reply.text);
        } else {
            expect(&reply, StatusCode::OK);
            assert_eq!(
                id_set(&entries(&reply.json, Some("match"))),
                BTreeSet::from([id.clone()]),
                "{parameter}"
            );
        }
    }
    let pid = unique("pat");
    let (obs, units) = five_observations(&gw, &pid).await;
    let reply = gw
        .get(
            &format!("/fhir/Observation?subject=Patient/{pid}&value-quantity=lt72.5"),
            &Who::Doctor,
        )
        .await;
    if reply.status == StatusCode::BAD_REQUEST {
        assert!(
            diagnostics(&reply).contains("value-quantity"),
            "{}",
            reply.text
        );
    } else {
        expect(&reply, StatusCode::OK);
        assert_eq!(
            id_set(&entries(&reply.json, Some("match"))),
            obs[..3].iter().cloned().collect::<BTreeSet<_>>()
        );
    }
    let mut canaries = c.all();
    canaries.extend(units.iter().map(String::as_str));
    assert_sealed_upstream(&gw, &canaries);
}

#[tokio::test]
async fn include_brings_the_referenced_patient_opened() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&pid, &c);
    expect(&gw.put(&original, &Who::Doctor).await, StatusCode::CREATED);
    let oid = unique("obs");
    let unit = canary("unit");
    expect(
        &gw.put(&observation(&oid, &pid, 60.0, &unit), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );

    let reply = gw
        .get(
            &format!("/fhir/Observation?_id={oid}&_include=Observation:subject"),
            &Who::Doctor,
        )
        .await;
    expect(&reply, StatusCode::OK);
    assert_gateway_urls(&reply.json);
    let matches = entries(&reply.json, Some("match"));
    assert_eq!(id_set(&matches), BTreeSet::from([oid]));
    assert_eq!(matches[0]["valueQuantity"]["unit"], unit.as_str());
    let included = entries(&reply.json, Some("include"));
    assert_eq!(id_set(&included), BTreeSet::from([pid.clone()]));
    assert_eq!(included[0]["name"], original["name"]);
    assert_eq!(included[0]["birthDate"], original["birthDate"]);
    assert!(is_masked(&included[0]["identifier"][0]));
    let mut canaries = c.all();
    canaries.push(&unit);
    assert_sealed_upstream(&gw, &canaries);
}

#[tokio::test]
async fn a_patient_searches_only_their_own_record() {
    let gw = gateway().await;
    let (a, b) = (unique("pat"), unique("pat"));
    let (ca, cb) = (PatientCanaries::new(), PatientCanaries::new());
    let (ua, ub) = (canary("unit"), canary("unit"));
    let (oa, ob) = (unique("obs"), unique("obs"));
    for (resource, who) in [
        (patient(&a, &ca), Who::Registrar),
        (patient(&b, &cb), Who::Registrar),
        (observation(&oa, &a, 61.0, &ua), Who::Doctor),
        (observation(&ob, &b, 62.0, &ub), Who::Doctor),
    ] {
        expect(&gw.put(&resource, &who).await, StatusCode::CREATED);
    }
    let me = Who::Patient(a.clone());

    // An unsealed parameter that matches both: the scopes narrow it to the caller's record.
    let both = format!("_id={oa},{ob}");
    let reply = gw.get(&format!("/fhir/Observation?{both}"), &me).await;
    expect(&reply, StatusCode::OK);
    let matches = entries(&reply.json, Some("match"));
    assert_eq!(
        id_set(&matches),
        BTreeSet::from([oa.clone()]),
        "{}",
        reply.text
    );
    assert_eq!(matches[0]["valueQuantity"]["unit"], ua.as_str());
    assert!(!reply.text.contains(&ub), "{}", reply.text);
    let reply = gw.get(&format!("/fhir/Patient?_id={a},{b}"), &me).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(
        id_set(&entries(&reply.json, None)),
        BTreeSet::from([a.clone()])
    );
    assert!(
        reply.json.get("total").is_none() || reply.json["total"] == 1,
        "`total` counts what the caller may not see: {}",
        reply.text
    );
    // Asking for the other patient's record: nothing of it.
    let reply = gw
        .get(&format!("/fhir/Observation?subject=Patient/{b}"), &me)
        .await;
    assert_nothing_of("Observation?subject=<other>", &reply);
    assert!(!reply.text.contains(&ub));
    for uri in [
        format!("/fhir/Observation/{ob}"),
        format!("/fhir/Patient/{b}"),
        format!("/fhir/Patient/{b}/$everything"),
        format!("/fhir/Patient/{b}/_history"),
    ] {
        let reply = gw.get(&uri, &me).await;
        assert_nothing_of(&uri, &reply);
        for canary in cb.all().into_iter().chain([ub.as_str()]) {
            assert!(!reply.text.contains(canary), "{uri}: {}", reply.text);
        }
    }
    // A batch reading the other record: nothing of it.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{a}")}},
        {"request": {"method": "GET", "url": format!("Patient/{b}")}},
        {"request": {"method": "GET", "url": format!("Observation?_id={oa},{ob}")}}
    ]});
    let reply = gw.bundle(&batch, &me).await;
    expect(&reply, StatusCode::OK);
    let answers = reply.json["entry"].as_array().unwrap();
    assert!(
        answers[0]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("200")
    );
    assert_eq!(answers[0]["resource"]["name"], patient(&a, &ca)["name"]);
    let refused = answers[1]["response"]["status"].as_str().unwrap();
    assert!(
        refused.starts_with("403") || refused.starts_with("404"),
        "{refused}"
    );
    for canary in cb.all().into_iter().chain([ub.as_str()]) {
        assert!(!reply.text.contains(canary), "{}", reply.text);
    }

    // Type history: refused (the gateway cannot narrow it to a compartment), or only the
    // caller's own versions and not a count of everyone's.
    let reply = gw.get("/fhir/Observation/_history?_count=50", &me).await;
    if !reply.status.is_client_error() {
        expect(&reply, StatusCode::OK);
        let seen = id_set(&entries(&reply.json, None));
        assert!(seen.iter().all(|id| *id == oa), "{seen:?}");
        assert!(
            reply.json["total"].as_u64().is_none_or(|t| t <= 1),
            "`total` counts what the caller may not see: {}",
            reply.json["total"]
        );
        assert!(!reply.text.contains(&ub));
    }
    let mut canaries = ca.all();
    canaries.extend(cb.all());
    canaries.extend([ua.as_str(), ub.as_str()]);
    assert_sealed_upstream(&gw, &canaries);
}

/// A refusal (403, 404), or a Bundle with nothing in it that also does not count what it left
/// out (`total` absent or 0).
#[track_caller]
fn assert_nothing_of(what: &str, reply: &Reply) {
    if reply.status == StatusCode::FORBIDDEN || reply.status == StatusCode::NOT_FOUND {
        return;
    }
    expect(reply, StatusCode::OK);
    assert!(
        entries(&reply.json, None).is_empty(),
        "{what}: {}",
        reply.text
    );
    assert!(
        reply.json.get("total").is_none() || reply.json["total"] == 0,
        "{what}: `total` counts what the caller may not see: {}",
        reply.text
    );
}

#[tokio::test]
async fn the_record_is_its_subjects_not_another_patient_it_names() {
    let gw = gateway().await;
    let (a, b) = (unique("pat"), unique("pat"));
    let oid = unique("obs");
    let unit = canary("unit");
    // A's result; another patient, B, is named as a performer (R4's Patient compartment for
    // Observation lists `performer` before `subject`).
    let mut result = observation(&oid, &a, 63.0, &unit);
    result["performer"] = json!([{"reference": format!("Patient/{b}")}]);
    expect(&gw.put(&result, &Who::Doctor).await, StatusCode::CREATED);
    let uri = format!("/fhir/Observation/{oid}");

    // Both checks run, so one run says everything that is wrong.
    let mut wrong = Vec::new();
    let subject = gw.get(&uri, &Who::Patient(a.clone())).await;
    if subject.status != StatusCode::OK || subject.json["valueQuantity"]["unit"] != unit.as_str() {
        wrong.push(format!(
            "patient A cannot read their own result: {}",
            subject.text
        ));
    }
    let other = gw.get(&uri, &Who::Patient(b.clone())).await;
    if other.text.contains(&unit) {
        wrong.push(format!(
            "patient B opens patient A's result: {}",
            other.text
        ));
    }
    let search = gw
        .get(
            &format!("/fhir/Observation?_id={oid}&_include=Observation:performer"),
            &Who::Patient(a.clone()),
        )
        .await;
    if id_set(&entries(&search.json, None)) != BTreeSet::from([oid.clone()]) {
        wrong.push(format!("patient A's search: {}", search.text));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_sealed_upstream(&gw, &[&unit]);
}

#[tokio::test]
async fn revinclude_leaves_out_what_the_caller_may_not_read() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&pid, &c), &Who::Doctor).await,
        StatusCode::CREATED,
    );
    let oid = unique("obs");
    let unit = canary("unit");
    expect(
        &gw.put(&observation(&oid, &pid, 66.0, &unit), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );
    let uri = format!("/fhir/Patient?_id={pid}&_revinclude=Observation:subject");

    // The physician gets both; the pharmacist (no rule for Observations) only the Patient,
    // masked.
    let doctor = gw.get(&uri, &Who::Doctor).await;
    expect(&doctor, StatusCode::OK);
    assert_eq!(
        id_set(&entries(&doctor.json, None)),
        BTreeSet::from([pid.clone(), oid])
    );
    let pharmacist = gw.get(&uri, &Who::Pharmacist).await;
    expect(&pharmacist, StatusCode::OK);
    let all = entries(&pharmacist.json, None);
    assert_eq!(
        id_set(&all),
        BTreeSet::from([pid.clone()]),
        "{}",
        pharmacist.text
    );
    assert!(is_masked(&all[0]["name"][0]));
    for canary in c.all().into_iter().chain([unit.as_str()]) {
        assert!(!pharmacist.text.contains(canary), "{}", pharmacist.text);
    }
}

#[tokio::test]
async fn conditional_update_creates_then_updates_the_one_match() {
    let gw = gateway().await;
    let pid = unique("pat");
    let key = unique("cu");
    let uri = format!("/fhir/Observation?identifier=urn:e2e:obs%7C{key}");
    let (first, second) = (canary("unit"), canary("unit"));
    let mut body = observation(&unique("obs"), &pid, 40.0, &first);
    body["identifier"][0]["value"] = json!(key);
    body.as_object_mut().unwrap().shift_remove("id");

    let created = gw
        .send(Call::new(Method::PUT, &uri, &Who::Nurse).json(&body))
        .await;
    expect(&created, StatusCode::CREATED);
    assert_no_upstream_url(&gw, &created);
    let id = location_id(&created.header(header::LOCATION), "Observation");

    body["valueQuantity"]["unit"] = json!(second);
    let updated = gw
        .send(Call::new(Method::PUT, &uri, &Who::Nurse).json(&body))
        .await;
    expect(&updated, StatusCode::OK);
    assert_eq!(
        location_id(&updated.header(header::LOCATION), "Observation"),
        id
    );
    let read = gw
        .get(&format!("/fhir/Observation/{id}"), &Who::Doctor)
        .await;
    expect(&read, StatusCode::OK);
    assert_eq!(read.header(header::ETAG), "W/\"2\"");
    assert_eq!(read.json["valueQuantity"]["unit"], second.as_str());
    assert_sealed_upstream(&gw, &[&first, &second]);
}

// --- History ------------------------------------------------------------------------------

#[tokio::test]
async fn history_lists_every_version_opened_at_the_gateways_urls() {
    let gw = gateway().await;
    let id = unique("pat");
    let first = PatientCanaries::new();
    let second = PatientCanaries::new();
    let v1 = patient(&id, &first);
    let v2 = patient(&id, &second);
    expect(&gw.put(&v1, &Who::Doctor).await, StatusCode::CREATED);
    expect(&gw.put(&v2, &Who::Doctor).await, StatusCode::OK);

    let reply = gw
        .get(&format!("/fhir/Patient/{id}/_history"), &Who::Registrar)
        .await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["type"], "history");
    assert_no_upstream_url(&gw, &reply);
    assert_gateway_urls(&reply.json);
    let versions = entries(&reply.json, None);
    assert_eq!(versions.len(), 2, "{}", reply.text);
    assert_opened(versions[0], &v2);
    assert_opened(versions[1], &v1);

    // The nurse sees the same versions, with the social security numbers masked.
    let nurse = gw
        .get(&format!("/fhir/Patient/{id}/_history"), &Who::Nurse)
        .await;
    expect(&nurse, StatusCode::OK);
    let versions = entries(&nurse.json, None);
    assert_eq!(versions[1]["name"], v1["name"]);
    assert!(!nurse.text.contains(&first.ssn) && !nurse.text.contains(&second.ssn));

    // Type history: a history Bundle at the gateway's URLs.
    let typed = gw
        .get("/fhir/Patient/_history?_count=2", &Who::Doctor)
        .await;
    expect(&typed, StatusCode::OK);
    assert_eq!(typed.json["type"], "history");
    assert_no_upstream_url(&gw, &typed);
    assert_gateway_urls(&typed.json);

    let mut canaries = first.all();
    canaries.extend(second.all());
    assert_sealed_upstream(&gw, &canaries);
}

// --- Batch and transaction ----------------------------------------------------------------

#[tokio::test]
async fn a_transaction_resolves_urn_uuid_references_and_stores_sealed() {
    let gw = gateway().await;
    let c = PatientCanaries::new();
    let unit = canary("unit");
    let mut new_patient = patient("x", &c);
    new_patient.as_object_mut().unwrap().shift_remove("id");
    let mut new_observation = observation("x", "x", 65.0, &unit);
    new_observation.as_object_mut().unwrap().shift_remove("id");
    new_observation["subject"] =
        json!({"reference": "urn:uuid:3f8a6a4e-0b1e-4c55-9a57-1d1c2f0e9b01"});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:3f8a6a4e-0b1e-4c55-9a57-1d1c2f0e9b01", "resource": new_patient,
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:7c0e1d22-5f4b-4b8e-8d3c-0a9e6b2f4c11", "resource": new_observation,
         "request": {"method": "POST", "url": "Observation"}}
    ]});
    let reply = gw.bundle(&bundle, &Who::Doctor).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["type"], "transaction-response");
    assert_no_upstream_url(&gw, &reply);
    let answers: Vec<&Value> = reply.json["entry"].as_array().unwrap().iter().collect();
    assert_eq!(answers.len(), 2);
    for answer in &answers {
        assert!(
            answer["response"]["status"]
                .as_str()
                .unwrap()
                .starts_with("201"),
            "{answer}"
        );
    }
    let pid = location_id(
        answers[0]["response"]["location"].as_str().unwrap(),
        "Patient",
    );
    let oid = location_id(
        answers[1]["response"]["location"].as_str().unwrap(),
        "Observation",
    );
    assert_sealed_upstream(&gw, &[&c.all()[..], &[unit.as_str()]].concat());

    let observation = gw
        .get(&format!("/fhir/Observation/{oid}"), &Who::Doctor)
        .await;
    expect(&observation, StatusCode::OK);
    assert_eq!(
        observation.json["subject"]["reference"],
        format!("Patient/{pid}")
    );
    assert_eq!(observation.json["valueQuantity"]["unit"], unit.as_str());
    let mut expected = new_patient.clone();
    expected["id"] = json!(pid);
    let read = gw
        .get(&format!("/fhir/Patient/{pid}"), &Who::Registrar)
        .await;
    expect(&read, StatusCode::OK);
    assert_opened(&read.json, &expected);
}

#[tokio::test]
async fn a_batch_answers_each_entry_and_refuses_only_the_denied_ones() {
    let gw = gateway().await;
    let pid = unique("pat");
    let kept = unique("obs");
    let kept_unit = canary("unit");
    expect(
        &gw.put(&observation(&kept, &pid, 50.0, &kept_unit), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );
    let new = unique("obs");
    let unit = canary("unit");
    let immunization = unique("imm");
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": observation(&new, &pid, 51.0, &unit),
         "request": {"method": "PUT", "url": format!("Observation/{new}")}},
        {"request": {"method": "DELETE", "url": format!("Observation/{kept}")}},
        {"resource": {"resourceType": "Immunization", "id": immunization, "status": "completed",
                      "vaccineCode": {"text": "flu"}, "patient": {"reference": format!("Patient/{pid}")},
                      "occurrenceDateTime": "2020-01-01"},
         "request": {"method": "PUT", "url": format!("Immunization/{immunization}")}}
    ]});
    let reply = gw.bundle(&bundle, &Who::Nurse).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["type"], "batch-response");
    assert_no_upstream_url(&gw, &reply);
    let statuses: Vec<&str> = reply.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 3, "{}", reply.text);
    assert!(statuses[0].starts_with("201"), "{statuses:?}");
    assert!(
        statuses[1].starts_with("403"),
        "nurses may not delete: {statuses:?}"
    );
    assert!(
        statuses[2].starts_with("403"),
        "no rule for Immunization: {statuses:?}"
    );

    let stored = gw
        .get(&format!("/fhir/Observation/{new}"), &Who::Doctor)
        .await;
    expect(&stored, StatusCode::OK);
    assert_eq!(stored.json["valueQuantity"]["unit"], unit.as_str());
    expect(
        &gw.get(&format!("/fhir/Observation/{kept}"), &Who::Doctor)
            .await,
        StatusCode::OK,
    );
    expect(
        &gw.upstream_get(&format!("Immunization/{immunization}"))
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_sealed_upstream(&gw, &[&unit, &kept_unit]);
}

#[tokio::test]
async fn a_transaction_with_a_denied_entry_fails_whole_and_stores_nothing() {
    let gw = gateway().await;
    let pid = unique("pat");
    let kept = unique("obs");
    let kept_unit = canary("unit");
    expect(
        &gw.put(&observation(&kept, &pid, 50.0, &kept_unit), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );
    let c = PatientCanaries::new();
    let new = unique("obs");
    let unit = canary("unit");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": format!("{BASE}/Patient/{pid}"), "resource": patient(&pid, &c),
         "request": {"method": "PUT", "url": format!("Patient/{pid}")}},
        {"fullUrl": format!("{BASE}/Observation/{new}"), "resource": observation(&new, &pid, 51.0, &unit),
         "request": {"method": "PUT", "url": format!("Observation/{new}")}},
        {"request": {"method": "DELETE", "url": format!("Observation/{kept}")}}
    ]});
    let reply = gw.bundle(&bundle, &Who::Nurse).await;
    expect(&reply, StatusCode::FORBIDDEN);
    assert_eq!(reply.json["resourceType"], "OperationOutcome");
    expect(
        &gw.upstream_get(&format!("Patient/{pid}")).await,
        StatusCode::NOT_FOUND,
    );
    expect(
        &gw.upstream_get(&format!("Observation/{new}")).await,
        StatusCode::NOT_FOUND,
    );
    expect(
        &gw.get(&format!("/fhir/Observation/{kept}"), &Who::Nurse)
            .await,
        StatusCode::OK,
    );

    // The same transaction by the physician goes through whole.
    let reply = gw.bundle(&bundle, &Who::Doctor).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["type"], "transaction-response");
    expect(
        &gw.get(&format!("/fhir/Observation/{kept}"), &Who::Doctor)
            .await,
        StatusCode::GONE,
    );
    assert_clinician_view(
        &gw.get(&format!("/fhir/Patient/{pid}"), &Who::Nurse).await,
        &patient(&pid, &c),
        &c,
        &Who::Nurse,
    );
    assert_sealed_upstream(
        &gw,
        &[&c.all()[..], &[unit.as_str(), kept_unit.as_str()]].concat(),
    );
}

// --- Operations ---------------------------------------------------------------------------

#[tokio::test]
async fn everything_returns_the_patients_record_opened() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&pid, &c);
    expect(&gw.put(&original, &Who::Doctor).await, StatusCode::CREATED);
    let (obs, units) = {
        let mut obs = Vec::new();
        let mut units = Vec::new();
        for n in 0..2 {
            let id = unique("obs");
            let unit = canary("unit");
            expect(
                &gw.put(
                    &observation(&id, &pid, 90.0 + f64::from(n), &unit),
                    &Who::Doctor,
                )
                .await,
                StatusCode::CREATED,
            );
            obs.push(id);
            units.push(unit);
        }
        (obs, units)
    };
    let cid = unique("cond");
    let diagnosis = canary("diagnosis");
    expect(
        &gw.put(&condition(&cid, &pid, &diagnosis), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );

    for who in [Who::Doctor, Who::Patient(pid.clone())] {
        let reply = gw
            .get(&format!("/fhir/Patient/{pid}/$everything"), &who)
            .await;
        expect(&reply, StatusCode::OK);
        assert_eq!(reply.json["type"], "searchset");
        assert_no_upstream_url(&gw, &reply);
        assert_gateway_urls(&reply.json);
        let all = entries(&reply.json, None);
        let found = id_set(&all);
        for id in [&pid, &obs[0], &obs[1], &cid] {
            assert!(found.contains(id), "{id} missing from {found:?}");
        }
        let by_id = |id: &str| *all.iter().find(|r| r["id"] == id).unwrap();
        assert_eq!(by_id(&pid)["name"], original["name"], "{who:?}");
        assert_eq!(by_id(&obs[0])["valueQuantity"]["unit"], units[0].as_str());
        assert_eq!(by_id(&cid)["code"]["text"], diagnosis.as_str());
    }
    let mut canaries = c.all();
    canaries.extend(units.iter().map(String::as_str));
    canaries.push(&diagnosis);
    assert_sealed_upstream(&gw, &canaries);
}

#[tokio::test]
async fn a_patients_name_repeated_in_a_reference_display_is_sealed_too() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&pid, &c), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    // The client copies the patient's name into the Observation's subject display, as many do.
    let oid = unique("obs");
    let unit = canary("unit");
    let shown = canary("display");
    let mut obs = observation(&oid, &pid, 71.0, &unit);
    obs["subject"]["display"] = json!(shown);
    expect(&gw.put(&obs, &Who::Doctor).await, StatusCode::CREATED);
    let read = gw
        .get(&format!("/fhir/Observation/{oid}"), &Who::Doctor)
        .await;
    expect(&read, StatusCode::OK);
    assert_eq!(
        read.json["subject"]["display"],
        json!(shown),
        "{}",
        read.text
    );
    assert_eq!(
        read.json["subject"]["reference"],
        json!(format!("Patient/{pid}"))
    );
    assert_sealed_upstream(&gw, &[&unit, &shown]);
}

#[tokio::test]
async fn a_patients_name_in_a_display_is_sealed_even_where_nothing_else_is() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&pid, &c), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    // An Encounter with no reason for the visit: nothing of it is protected but the name its
    // subject display repeats.
    let eid = unique("enc");
    let shown = canary("display");
    let encounter = json!({"resourceType": "Encounter", "id": eid, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": format!("Patient/{pid}"), "display": shown}});
    expect(&gw.put(&encounter, &Who::Doctor).await, StatusCode::CREATED);
    let read = gw
        .get(&format!("/fhir/Encounter/{eid}"), &Who::Doctor)
        .await;
    expect(&read, StatusCode::OK);
    assert_eq!(
        read.json["subject"]["display"],
        json!(shown),
        "{}",
        read.text
    );
    let other = gw
        .get(&format!("/fhir/Encounter/{eid}"), &Who::Pharmacist)
        .await;
    assert!(!other.text.contains(&shown), "{}", other.text);
    assert_sealed_upstream(&gw, &[&shown]);
}

#[tokio::test]
async fn an_absolute_reference_is_the_patients_only_under_our_base() {
    let gw = gateway().await;
    let a = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&a, &c), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let (ours, other) = (unique("obs"), unique("obs"));
    let (unit_ours, unit_other) = (canary("unit"), canary("unit"));
    let mut ours_obs = observation(&ours, &a, 71.0, &unit_ours);
    ours_obs["subject"]["reference"] = json!(format!("{BASE}/Patient/{a}"));
    let mut other_obs = observation(&other, &a, 72.0, &unit_other);
    other_obs["subject"]["reference"] = json!(format!("http://other.example/fhir/Patient/{a}"));
    for resource in [&ours_obs, &other_obs] {
        expect(&gw.put(resource, &Who::Doctor).await, StatusCode::CREATED);
    }
    let me = Who::Patient(a.clone());
    // Under the gateway's base: the patient's own record.
    let reply = gw.get(&format!("/fhir/Observation/{ours}"), &me).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["valueQuantity"]["unit"], unit_ours.as_str());
    // Under another server: another patient's, whatever its id.
    let uri = format!("/fhir/Observation/{other}");
    let reply = gw.get(&uri, &me).await;
    assert_nothing_of(&uri, &reply);
    assert!(!reply.text.contains(&unit_other), "{}", reply.text);
}

#[tokio::test]
async fn summaries_that_would_drop_sealed_elements_are_refused_naming_the_parameter() {
    let gw = gateway().await;
    let a = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&a, &c), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    for who in [Who::Nurse, Who::Doctor] {
        for (query, name) in [
            ("_summary=true", "_summary"),
            ("_summary=text", "_summary"),
            ("_elements=birthDate", "_elements"),
        ] {
            let reply = gw
                .get(&format!("/fhir/Patient?_id={a}&{query}"), &who)
                .await;
            expect(&reply, StatusCode::BAD_REQUEST);
            assert!(
                diagnostics(&reply).contains(name),
                "{query}: {}",
                reply.text
            );
            for canary in c.all() {
                assert!(!reply.text.contains(canary), "{query}: {}", reply.text);
            }
        }
        // A count drops no sealed element.
        let reply = gw
            .get(&format!("/fhir/Patient?_id={a}&_summary=count"), &who)
            .await;
        expect(&reply, StatusCode::OK);
        assert_eq!(reply.json["total"], 1, "{}", reply.text);
    }
}

/// Issue 14's client defects fixed by the one request flow: each keeps a test.
#[tokio::test]
async fn trailing_slashes_batch_outcomes_patch_media_type_and_no_cors_claim() {
    let gw = gateway().await;
    // `GET [base]/[type]/` is the type's search; `POST [base]/` takes a batch.
    let reply = gw.get("/fhir/Patient/?_count=1", &Who::Doctor).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["type"], "searchset", "{}", reply.text);
    let pid = unique("pat");
    let obs = unique("obs");
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": observation(&obs, &pid, 52.0, &canary("unit")),
         "request": {"method": "PUT", "url": format!("Observation/{obs}")}}
    ]});
    let call = Call::new(Method::POST, "/fhir/", &Who::Doctor)
        .body("application/fhir+json", &batch.to_string());
    let reply = gw.send(call).await;
    expect(&reply, StatusCode::OK);
    assert_eq!(reply.json["type"], "batch-response", "{}", reply.text);
    // A successful entry says so: no error-severity outcome.
    let response = &reply.json["entry"][0]["response"];
    assert!(
        response["status"].as_str().unwrap().starts_with("201"),
        "{response}"
    );
    let severities: Vec<&Value> = response["outcome"]["issue"]
        .as_array()
        .map(|issues| issues.iter().map(|i| &i["severity"]).collect())
        .unwrap_or_default();
    assert!(
        severities.iter().all(|s| *s != "error" && *s != "fatal"),
        "{response}"
    );
    // A PATCH with a FHIR JSON body is told what PATCH takes, not to send FHIR JSON.
    let call = Call::new(
        Method::PATCH,
        &format!("/fhir/Observation/{obs}"),
        &Who::Doctor,
    )
    .body("application/fhir+json", r#"{"resourceType": "Parameters"}"#);
    let reply = gw.send(call).await;
    expect(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let said = diagnostics(&reply);
    assert!(said.contains("JSON Patch"), "{said}");
    assert!(!said.contains("must be application/fhir+json"), "{said}");
    // The gateway serves no CORS, and does not claim to.
    let reply = gw
        .send(Call::new(Method::GET, "/fhir/metadata", &Who::Doctor))
        .await;
    expect(&reply, StatusCode::OK);
    assert_eq!(
        reply.json["rest"][0]["security"]["cors"], false,
        "{}",
        reply.text
    );
}
