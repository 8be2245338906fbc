//! The FHIR HTTP surface: the CapabilityStatement at the gateway's base, trailing slashes, a
//! batch entry's outcome, PATCH's media type and the `cors` claim.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{assert_no_upstream_url, diagnostics, expect, observation};
use crate::support::sekmet::{Call, canary, gateway, unique};
use crate::support::{BASE, Who};

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
