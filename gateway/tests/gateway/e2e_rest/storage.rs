//! The canary scan itself, and the canaries it must not find: a patient's name repeated in a
//! reference's `display` is sealed with the rest.

use axum::http::StatusCode;
use serde_json::json;

use super::{PatientCanaries, assert_sealed_upstream, expect, observation, patient};
use crate::support::Who;
use crate::support::sekmet::{canary, gateway, unique};

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
