//! Instance and type history: every version opened, at the gateway's URLs.

use axum::http::StatusCode;

use super::{
    PatientCanaries, assert_gateway_urls, assert_no_upstream_url, assert_opened,
    assert_sealed_upstream, expect, patient,
};
use crate::support::Who;
use crate::support::sekmet::{entries, gateway, unique};

#[tokio::test]
async fn history_lists_every_version_opened_at_the_gateways_urls() {
    let gw = gateway().await;
    let id = unique("pat");
    let first = PatientCanaries::new();
    let second = PatientCanaries::new();
    let v1 = patient(&id, &first);
    let v2 = patient(&id, &second);
    expect(&gw.put(&v1, &Who::Registrar).await, StatusCode::CREATED);
    // Every element replaced: by a writer who reads them all.
    expect(&gw.put(&v2, &Who::FullAccess).await, StatusCode::OK);

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
