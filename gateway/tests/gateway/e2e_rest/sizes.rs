//! Sizes (issue 15, `docs/gateway-rest.md` "Writes"): the gateway writes nothing it could not
//! read back. A resource whose sealed form is over 7/8 of `upstream.max_response_bytes` is a
//! 413 before anything is stored, whatever `server.max_body_bytes` lets in; one just under is
//! stored and reads back; a transaction whose entries fit alone but not together is a 413 too.
//!
//! The gateway here reads at most 8 MiB from sekmet-fhir, so it writes at most 7 MiB, and takes
//! bodies of up to 64 MiB: what refuses is the sealed-size check, never the body limit.

use std::time::Instant;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{diagnostics, expect};
use crate::support::Who;
use crate::support::sekmet::{Gateway, canary, gateway_with, unique};

const MAX_RESPONSE: u64 = 8 * 1024 * 1024;
const LIMIT: u64 = MAX_RESPONSE / 8 * 7;

async fn sized_gateway() -> Gateway {
    gateway_with(&[
        (
            "FHIRSEAL__UPSTREAM__MAX_RESPONSE_BYTES",
            &MAX_RESPONSE.to_string(),
        ),
        ("FHIRSEAL__SERVER__MAX_BODY_BYTES", "67108864"),
    ])
    .await
}

/// Nothing of `Patient/{id}` is stored: the gateway answers 404 for it, and no row of sekmet's
/// store names it.
async fn assert_nothing_stored(gw: &Gateway, id: &str) {
    let read = gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await;
    expect(&read, StatusCode::NOT_FOUND);
    let rows = gw.canary_scan(&[id]);
    assert!(rows.is_empty(), "{id} is stored: {rows:?}");
}

/// A 413 naming `what` and the limit, and nothing of `secret`.
#[track_caller]
fn assert_too_large(reply: &crate::support::Reply, what: &str, secret: &str) {
    expect(reply, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.json["resourceType"], "OperationOutcome");
    assert_eq!(reply.json["issue"][0]["code"], "too-costly");
    let words = diagnostics(reply);
    assert!(
        words.contains(what) && words.contains(&LIMIT.to_string()),
        "{words}"
    );
    assert!(!reply.text.contains(secret), "{}", reply.text);
}

/// The length of `value` as compact JSON.
fn len(value: &Value) -> u64 {
    serde_json::to_string(value).unwrap().len() as u64
}

/// A Patient `id` the physician may set whole (a name she reads, sealed), padded with `pad`
/// bytes of identifiers that are not sealed (FHIR strings stay under 1 MB each).
fn padded(id: &str, family: &str, pad: u64) -> Value {
    let mut identifiers = Vec::new();
    let mut left = pad;
    while left > 0 {
        let chunk = left.min(900_000);
        identifiers.push(json!({"system": "urn:e2e:pad", "value": "p".repeat(chunk as usize)}));
        left -= chunk;
    }
    let mut patient = json!({"resourceType": "Patient", "id": id,
                             "name": [{"family": family}], "gender": "other"});
    if !identifiers.is_empty() {
        patient["identifier"] = Value::Array(identifiers);
    }
    patient
}

#[tokio::test]
async fn a_write_whose_sealed_form_exceeds_the_read_cap_is_a_413_and_nothing_is_stored() {
    let started = Instant::now();
    let gw = sized_gateway().await;

    // 100,000 social security numbers: 6.8 MB as sent, under both the body limit and the write
    // limit, but ten times that sealed (each number its own envelope and blind-index token).
    let id = unique("huge");
    let identifiers: Vec<Value> = (0..100_000)
        .map(|i| json!({"system": "http://hl7.org/fhir/sid/us-ssn", "value": format!("9{i:08}")}))
        .collect();
    let huge = json!({"resourceType": "Patient", "id": id, "identifier": identifiers});
    assert!(
        len(&huge) < LIMIT,
        "{} is not under the limit as sent",
        len(&huge)
    );
    let reply = gw.put(&huge, &Who::Doctor).await;
    assert_too_large(&reply, &format!("Patient/{id}"), "900099999");
    assert_nothing_stored(&gw, &id).await;
    let sealed_refusal = started.elapsed();

    // Just under the limit, sealed: stored, and it reads back whole. The sealed size of the
    // padded Patient is that of the unpadded one, measured as stored, plus the padding's.
    let family = canary("family");
    let base_id = unique("base");
    let id = unique("fits");
    assert_eq!(base_id.len(), id.len());
    expect(
        &gw.put(&padded(&base_id, &family, 0), &Who::Doctor).await,
        StatusCode::CREATED,
    );
    let mut stored = gw.upstream_get(&format!("Patient/{base_id}")).await.json;
    stored["meta"]
        .as_object_mut()
        .unwrap()
        .shift_remove("versionId");
    stored["meta"]
        .as_object_mut()
        .unwrap()
        .shift_remove("lastUpdated");
    let sealed_base = len(&stored);
    let plain_base = len(&padded(&base_id, &family, 0));
    let sealed_size = |pad| sealed_base + len(&padded(&id, &family, pad)) - plain_base;
    let mut pad = LIMIT - sealed_base;
    while sealed_size(pad) > LIMIT - 1024 {
        pad -= 256;
    }
    let fits = padded(&id, &family, pad);
    let fits_size = sealed_size(pad);
    assert!(
        fits_size <= LIMIT && fits_size > LIMIT - 2048,
        "{fits_size}"
    );
    expect(&gw.put(&fits, &Who::Doctor).await, StatusCode::CREATED);
    // (The check of "nothing stored" would see it.)
    assert!(!gw.canary_scan(&[&id]).is_empty());
    let read = gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await;
    expect(&read, StatusCode::OK);
    assert_eq!(read.json["identifier"], fits["identifier"]);
    assert_eq!(read.json["name"], fits["name"]);

    // Just over it (2 KiB more of padding): refused, and the stored version is untouched.
    let mut over = padded(&id, &family, pad + 2048);
    over["gender"] = json!("male");
    assert!(sealed_size(pad + 2048) > LIMIT);
    let reply = gw.put(&over, &Who::Doctor).await;
    assert_too_large(&reply, &format!("Patient/{id}"), &family);
    let read = gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await;
    assert_eq!(read.json["meta"]["versionId"], "1");
    assert_eq!(read.json["gender"], "other");

    // A transaction of two Patients that fit alone (3/5 of the limit each), not together.
    let (a, b) = (unique("half"), unique("half"));
    let entries: Vec<Value> = [&a, &b]
        .iter()
        .map(|id| {
            json!({"resource": padded(id, &family, LIMIT / 5 * 3),
                   "request": {"method": "PUT", "url": format!("Patient/{id}")}})
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let reply = gw.bundle(&bundle, &Who::Doctor).await;
    assert_too_large(&reply, "the transaction", &family);
    for id in [&a, &b] {
        assert_nothing_stored(&gw, id).await;
    }
    eprintln!(
        "the 100,000-identifier refusal took {sealed_refusal:?}; the whole test {:?}",
        started.elapsed()
    );
}
