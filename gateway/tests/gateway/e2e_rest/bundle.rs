//! Batches and transactions: `urn:uuid:` references resolved, each batch entry answered on its
//! own, and a transaction with one denied entry refused whole.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{
    PatientCanaries, assert_clinician_view, assert_no_upstream_url, assert_opened,
    assert_sealed_upstream, expect, location_id, observation, patient,
};
use crate::support::sekmet::{canary, gateway, unique};
use crate::support::{BASE, Who};

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
    // By a caller who may read (so set) every element of both.
    let reply = gw.bundle(&bundle, &Who::FullAccess).await;
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

    // The same transaction by a physician who is also the registration desk (who may set every
    // element of the Patient: a caller may set only what it may read) goes through whole.
    let reply = gw.bundle(&bundle, &Who::FullAccess).await;
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
