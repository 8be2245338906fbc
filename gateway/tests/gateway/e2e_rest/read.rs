//! Read and vread by each kind of caller, as the policy opens or masks; unknown resources, deleted
//! ones, and who may delete.

use axum::http::{Method, StatusCode, header};

use super::{
    PatientCanaries, assert_clinician_view, assert_no_upstream_url, assert_opened,
    assert_sealed_upstream, expect, observation, patient,
};
use crate::support::Who;
use crate::support::sekmet::{Call, canary, gateway, is_labelled_masked, is_masked, unique};

#[tokio::test]
async fn update_as_create_stores_sealed_and_each_reader_sees_what_the_policy_opens() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);

    let reply = gw.put(&original, &Who::Registrar).await;
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
