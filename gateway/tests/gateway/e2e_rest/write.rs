//! Create, update (with `If-Match`), conditional create and update, JSON Patch, and a
//! read-modify-write by a caller who cannot open everything: stored sealed, refused where the
//! policy denies.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode, header};
use serde_json::json;

use super::{
    PatientCanaries, assert_clinician_view, assert_no_upstream_url, assert_opened,
    assert_sealed_upstream, expect, id_set, location_id, observation, patient,
};
use crate::support::Who;
use crate::support::sekmet::{Call, canary, canary_date, entries, gateway, is_masked, unique};

#[tokio::test]
async fn update_checks_if_match_against_the_current_version() {
    let gw = gateway().await;
    let id = unique("pat");
    let first = PatientCanaries::new();
    expect(
        &gw.put(&patient(&id, &first), &Who::Registrar).await,
        StatusCode::CREATED,
    );

    // A new version of every element: by a writer who can read them all (a nurse may not
    // replace what she cannot read, `e2e_rest::writes`).
    let second = PatientCanaries::new();
    let v2 = patient(&id, &second);
    let call = Call::new(
        Method::PUT,
        &format!("/fhir/Patient/{id}"),
        &Who::FullAccess,
    )
    .header(header::IF_MATCH, "W/\"1\"")
    .json(&v2);
    let updated = gw.send(call).await;
    expect(&updated, StatusCode::OK);
    assert_eq!(updated.header(header::ETAG), "W/\"2\"");
    assert_no_upstream_url(&gw, &updated);

    // A stale version: 412, and nothing changes.
    let third = PatientCanaries::new();
    let call = Call::new(
        Method::PUT,
        &format!("/fhir/Patient/{id}"),
        &Who::FullAccess,
    )
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
    let reply = gw.post(&original, &Who::Registrar).await;
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
        assert_opened(&reply.json, &expected);
    }
    assert_clinician_view(
        &gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await,
        &expected,
        &c,
        &Who::Doctor,
    );
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

    // A Patient, by a caller who opens all of it (so may set all of it).
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let uri = format!("/fhir/Patient/{id}");
    let patched = gw
        .send(json_patch(&uri, &Who::FullAccess, "/gender", "male"))
        .await;
    expect(&patched, StatusCode::OK);
    let read = gw.get(&uri, &Who::Registrar).await;
    let mut expected = original.clone();
    expected["gender"] = json!("male");
    assert_opened(&read.json, &expected);

    // A physician cannot open the social security number: the patch is applied to what she
    // reads, the number carried across as it was.
    let partial = gw
        .send(json_patch(&uri, &Who::Doctor, "/gender", "other"))
        .await;
    expect(&partial, StatusCode::OK);
    let read = gw.get(&uri, &Who::Registrar).await;
    expected["gender"] = json!("other");
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

    // Stored with what the nurse could not open carried across as it was: never the masked
    // placeholder stored in place of the number.
    expect(&put, StatusCode::OK);
    let read = gw.get(&uri, &Who::Registrar).await;
    expect(&read, StatusCode::OK);
    let mut expected = original.clone();
    expected["gender"] = json!("male");
    assert_eq!(
        read.json["identifier"], original["identifier"],
        "the social security number was lost by an update from a reader who could not open it"
    );
    assert_opened(&read.json, &expected);
    assert_sealed_upstream(&gw, &c.all());
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
