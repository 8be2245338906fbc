//! Writes element by element (issue 15, `docs/gateway-rest.md` "Writes"): under the embedded
//! policy a ward nurse reads a Patient's name and birth date, not the social security number,
//! phone, address or narrative. She cannot set, change or erase those by any write (PUT, PATCH,
//! conditional update, transaction entry, a placeholder's `masked` edited to `unknown`), and
//! what sekmet-fhir stores of them is byte-identical afterwards; she can change what she reads
//! (her masked copy written back, a JSON Patch, a client model that dropped the masked elements),
//! and every sealed value stays. Creates follow the same rule: she cannot create a Patient with
//! a social security number, unless a policy's `writers` lets her set it unread.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    PatientCanaries, SSN_SYSTEM, assert_opened, assert_sealed_upstream, diagnostics, expect,
    patient,
};
use crate::support::Who;
use crate::support::sekmet::{
    Call, DATA_ABSENT_REASON, Gateway, canary, canary_date, gateway, gateway_with, is_masked,
    unique,
};

/// What sekmet-fhir stores of the elements the nurse cannot read: the SSN's identifier, the
/// phone, the address and the narrative, sealed (JSON text).
async fn stored_sealed(gw: &Gateway, id: &str) -> Vec<String> {
    let stored = gw.upstream_get(&format!("Patient/{id}")).await.json;
    ["/identifier/0", "/telecom", "/address", "/text"]
        .iter()
        .map(|p| serde_json::to_string(stored.pointer(p).unwrap()).unwrap())
        .collect()
}

fn patch(uri: &str, ops: &Value) -> Call<'static> {
    Call::new(Method::PATCH, uri, &Who::Nurse).body("application/json-patch+json", &ops.to_string())
}

#[tokio::test]
async fn the_nurse_cannot_set_change_or_erase_what_she_cannot_read_by_any_write() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let uri = format!("/fhir/Patient/{id}");
    let before = stored_sealed(&gw, &id).await;
    let copy = gw.get(&uri, &Who::Nurse).await.json;
    let phone = canary("phone");
    let ssn = canary("ssn");

    // PUT: a phone of her choosing in place of the one she cannot read.
    let mut put = copy.clone();
    put["telecom"] = json!([{"system": "phone", "value": phone}]);
    expect(&gw.put(&put, &Who::Nurse).await, StatusCode::FORBIDDEN);
    // PUT: the placeholder's `masked` edited to `unknown` (the narrative's, the phone's).
    let unknown = json!({"url": DATA_ABSENT_REASON, "valueCode": "unknown"});
    let mut edited = copy.clone();
    edited["text"]["extension"] = json!([unknown]);
    let reply = gw.put(&edited, &Who::Nurse).await;
    expect(&reply, StatusCode::FORBIDDEN);
    assert!(reply.text.contains("Patient.text"), "{}", reply.text);
    let mut edited = copy.clone();
    edited["telecom"][0] = json!({"extension": [unknown]});
    expect(&gw.put(&edited, &Who::Nurse).await, StatusCode::FORBIDDEN);
    // PATCH: a new phone, the address removed.
    let ops = json!([{"op": "replace", "path": "/telecom/0", "value": {"system": "phone", "value": phone}}]);
    expect(&gw.send(patch(&uri, &ops)).await, StatusCode::FORBIDDEN);
    let ops = json!([{"op": "remove", "path": "/address/0"}]);
    let reply = gw.send(patch(&uri, &ops)).await;
    expect(&reply, StatusCode::FORBIDDEN);
    assert!(reply.text.contains("Patient.address[0]"), "{}", reply.text);
    // Conditional update: an SSN of her choosing.
    let mut conditional = copy.clone();
    conditional["identifier"][0] =
        json!({"system": "http://hl7.org/fhir/sid/us-ssn", "value": ssn});
    let call =
        Call::new(Method::PUT, &format!("/fhir/Patient?_id={id}"), &Who::Nurse).json(&conditional);
    expect(&gw.send(call).await, StatusCode::FORBIDDEN);
    // A transaction entry: a new address.
    let mut entry = copy.clone();
    entry["address"] = json!([{"line": [canary("line")], "city": "Elsewhere"}]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": entry, "request": {"method": "PUT", "url": format!("Patient/{id}")}}]});
    let reply = gw.bundle(&bundle, &Who::Nurse).await;
    assert!(
        reply.status.is_client_error(),
        "{}: {}",
        reply.status,
        reply.text
    );

    // Nothing she could not read changed: byte for byte upstream, and as the registrar reads it.
    assert_eq!(stored_sealed(&gw, &id).await, before);
    let read = gw.get(&uri, &Who::Registrar).await;
    assert_opened(&read.json, &original);
    assert_eq!(read.json["meta"]["versionId"], "1");
    let mut canaries = c.all();
    canaries.extend([phone.as_str(), ssn.as_str()]);
    assert_sealed_upstream(&gw, &canaries);
}

#[tokio::test]
async fn the_nurse_changes_what_she_reads_and_every_sealed_value_stays() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let uri = format!("/fhir/Patient/{id}");
    let before = stored_sealed(&gw, &id).await;
    let mut expected = original.clone();

    // Her masked copy written back with the gender changed.
    let mut copy = gw.get(&uri, &Who::Nurse).await.json;
    copy["gender"] = json!("male");
    expect(&gw.put(&copy, &Who::Nurse).await, StatusCode::OK);
    expected["gender"] = json!("male");
    assert_opened(&gw.get(&uri, &Who::Registrar).await.json, &expected);

    // A JSON Patch of the gender.
    let ops = json!([{"op": "replace", "path": "/gender", "value": "other"}]);
    expect(&gw.send(patch(&uri, &ops)).await, StatusCode::OK);
    expected["gender"] = json!("other");
    assert_opened(&gw.get(&uri, &Who::Registrar).await.json, &expected);

    // A client model that dropped the masked elements: nothing it left out is deleted.
    let dropped = json!({
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": "urn:e2e:mrn", "value": format!("MRN-{id}")}],
        "active": true,
        "name": original["name"], "gender": "female", "birthDate": original["birthDate"]
    });
    expect(&gw.put(&dropped, &Who::Nurse).await, StatusCode::OK);
    expected["gender"] = json!("female");
    assert_opened(&gw.get(&uri, &Who::Registrar).await.json, &expected);

    assert_eq!(stored_sealed(&gw, &id).await, before);
    assert_sealed_upstream(&gw, &c.all());
}

/// A Patient the nurse reads all of but its social security number.
fn registration(id: &str, ssn: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
           "identifier": [{"system": SSN_SYSTEM, "value": ssn}],
           "name": [{"family": family}], "gender": "female", "birthDate": canary_date()})
}

#[tokio::test]
async fn the_nurse_cannot_create_what_she_cannot_read() {
    let gw = gateway().await;
    let (ssn, family) = (canary("ssn"), canary("family"));
    // By `PUT` of a new id, and by `POST`.
    let id = unique("pat");
    let reply = gw.put(&registration(&id, &ssn, &family), &Who::Nurse).await;
    expect(&reply, StatusCode::FORBIDDEN);
    let words = diagnostics(&reply);
    assert!(
        words.contains("Patient.identifier[0]") && words.contains("may set only what it may read"),
        "{words}"
    );
    assert!(!reply.text.contains(&ssn) && !reply.text.contains(&family));
    let reply = gw
        .post(&registration(&unique("pat"), &ssn, &family), &Who::Nurse)
        .await;
    expect(&reply, StatusCode::FORBIDDEN);
    assert!(diagnostics(&reply).contains("Patient.identifier[0]"));
    // Nothing stored.
    expect(
        &gw.upstream_get(&format!("Patient/{id}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_sealed_upstream(&gw, &[&ssn, &family]);
    // Without the number, hers to create.
    let mut without = registration(&id, &ssn, &family);
    without.as_object_mut().unwrap().shift_remove("identifier");
    expect(&gw.put(&without, &Who::Nurse).await, StatusCode::CREATED);
}

#[tokio::test]
async fn a_writers_structure_lets_the_nurse_set_a_number_she_cannot_read_and_the_doctor_reads_it() {
    // The hospital policy, with social security numbers read by physicians too and set, unread,
    // by nurses.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    let hospital = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fhir-profiles/policies/general-hospital.toml"),
    )
    .unwrap();
    let ssn_readers = "readers = \"role:registrar or patient:self\"";
    assert_eq!(hospital.matches(ssn_readers).count(), 1);
    let text = hospital.replace(
        ssn_readers,
        "readers = \"role:registrar or role:physician or patient:self\"\nwriters = \"role:nurse\"",
    );
    std::fs::write(&policy, text).unwrap();
    let files = format!("[\"{}\"]", policy.display());
    let gw = gateway_with(&[("FHIRSEAL__POLICY__FILES", &files)]).await;

    let (ssn, family) = (canary("ssn"), canary("family"));
    let id = unique("pat");
    let original = registration(&id, &ssn, &family);
    let reply = gw.put(&original, &Who::Nurse).await;
    expect(&reply, StatusCode::CREATED);
    assert!(!reply.text.contains(&ssn), "{}", reply.text);
    assert_sealed_upstream(&gw, &[&ssn, &family]);
    let uri = format!("/fhir/Patient/{id}");
    // The doctor reads it; the nurse does not read it back.
    let doctor = gw.get(&uri, &Who::Doctor).await;
    expect(&doctor, StatusCode::OK);
    assert_eq!(doctor.json["identifier"], original["identifier"]);
    let nurse = gw.get(&uri, &Who::Nurse).await;
    assert!(is_masked(&nurse.json["identifier"][0]), "{}", nurse.text);
    assert_eq!(nurse.json["name"], original["name"]);
    // Writers add; they do not overwrite what they cannot see. A value in place of the
    // placeholder is an item added (the unread one keeps its place, `PUT` semantics); a patch
    // that replaces it is refused.
    let ops = json!([{"op": "replace", "path": "/identifier/0",
                      "value": {"system": SSN_SYSTEM, "value": canary("ssn")}}]);
    let call = Call::new(Method::PATCH, &uri, &Who::Nurse)
        .body("application/json-patch+json", &ops.to_string());
    let reply = gw.send(call).await;
    expect(&reply, StatusCode::FORBIDDEN);
    assert!(
        diagnostics(&reply).contains("Patient.identifier[0]"),
        "{}",
        reply.text
    );
    let second = json!({"system": SSN_SYSTEM, "value": canary("ssn")});
    let mut added = nurse.json.clone();
    added["identifier"][0] = second.clone();
    expect(&gw.put(&added, &Who::Nurse).await, StatusCode::OK);
    let doctor = gw.get(&uri, &Who::Doctor).await;
    assert_eq!(
        doctor.json["identifier"],
        json!([original["identifier"][0], second])
    );
    // Only where a rule names her: contact details have no writers.
    let mut phoned = registration(&unique("pat"), &canary("ssn"), &family);
    phoned["telecom"] = json!([{"system": "phone", "value": canary("phone")}]);
    let reply = gw.put(&phoned, &Who::Nurse).await;
    expect(&reply, StatusCode::FORBIDDEN);
    assert!(
        diagnostics(&reply).contains("Patient.telecom[0]"),
        "{}",
        reply.text
    );
}
