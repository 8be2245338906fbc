//! Authenticity against the upstream (issue 13, `docs/authenticity.md`): acting as the upstream's
//! operator, around the gateway, the test writes to sekmet-fhir directly what anyone holding the
//! public parameters can make, and every reader sees those elements masked and flagged as forged,
//! never the test's values, with the audit line counting them:
//!
//! - (a) a sealed element replaced by an envelope of the test's own, under a header `Basic` the
//!   test writes itself;
//! - (b) a stored header `Basic` replaced by one of the test's own with the same id, and an element
//!   under it by an envelope of the test's own;
//! - (c) a genuine envelope transplanted from one Patient into another;
//! - (d) plaintext written where the policy seals (a birth date, a name): withheld as forged too,
//!   and the forged placeholder a reader got refused when written back.

use axum::http::StatusCode;
use fhirseal::headers::HeaderStore;
use fhirseal_envelope::{
    ElementContext, Envelope, Granularity, Header, HeaderId, ResourceKey, SealingKey,
};
use fhirseal_seal::shape::{FHIRSEAL_CODE_SYSTEM, FORGED_CODE};
use rand_core::OsRng;
use serde_json::{Value, json};

use super::{PatientCanaries, diagnostics, expect, patient};
use crate::support::sekmet::{DATA_ABSENT_REASON, Gateway, SEALED_ELEMENT, gateway, unique};
use crate::support::{Who, header_in, last_audit_line};

/// The birth dates the operator wants clinicians to see.
const FORGED_A: &str = "1888-08-08";
const FORGED_B: &str = "1877-07-07";

#[tokio::test]
async fn what_the_upstream_forges_replaces_or_moves_is_masked_and_flagged_for_every_reader() {
    let (gw, audit) = gateway().await.with_audit();
    let ids = [unique("pat-a"), unique("pat-b"), unique("pat-c")];
    let canaries = [
        PatientCanaries::new(),
        PatientCanaries::new(),
        PatientCanaries::new(),
    ];
    let mut stored = Vec::new();
    for (id, c) in ids.iter().zip(&canaries) {
        expect(
            &gw.put(&patient(id, c), &Who::Registrar).await,
            StatusCode::CREATED,
        );
        let reply = gw.upstream_get(&format!("Patient/{id}")).await;
        expect(&reply, StatusCode::OK);
        stored.push(reply.json);
    }
    let [a, b, c] = &ids;

    // (a) A's birth date: the operator's envelope under a header Basic of its own.
    let genuine = stored_header(&gw, &stored[0]["_birthDate"]).await;
    let members = json!({"birthDate": FORGED_A});
    let (header, envelope) = forge(&gw, &genuine, None, a, "Patient.birthDate", &members);
    assert_eq!(
        gw.upstream_put(&HeaderStore::resource(&header)).await,
        StatusCode::CREATED
    );
    set_envelope(&mut stored[0]["_birthDate"], &envelope);

    // (b) B's header replaced by the operator's own under the same id, and B's birth date by an
    // envelope under it.
    let genuine = stored_header(&gw, &stored[1]["_birthDate"]).await;
    let members = json!({"birthDate": FORGED_B});
    let (header, envelope) = forge(
        &gw,
        &genuine,
        Some(genuine.id()),
        b,
        "Patient.birthDate",
        &members,
    );
    assert_eq!(
        gw.upstream_put(&HeaderStore::resource(&header)).await,
        StatusCode::OK
    );
    // This gateway stored the genuine header and cached it; the cache's TTL (or another
    // replica) lets the replacement through, which is what is tested here.
    gw.state.headers.forget(genuine.id());
    set_envelope(&mut stored[1]["_birthDate"], &envelope);

    // (c) A's genuine name envelope in C's name.
    let a_name = envelope_text(&stored[0]["name"][0]);
    set_envelope(&mut stored[2]["name"][0], &a_name);

    for resource in &stored {
        assert_eq!(gw.upstream_put(resource).await, StatusCode::OK);
    }

    let cases: [(&str, &str, &[&str], usize); 3] = [
        (a, "_birthDate", &[FORGED_A], 1),
        // B's name is sealed under the same (replaced) header as its birth date.
        (b, "_birthDate", &[FORGED_B], 2),
        (c, "name", &[&canaries[0].family, &canaries[0].given], 1),
    ];
    for (id, element, never, forged) in cases {
        let readers = [
            Who::Doctor,
            Who::Nurse,
            Who::Pharmacist,
            Who::Patient(id.to_string()),
        ];
        for who in &readers {
            let reply = gw.get(&format!("/fhir/Patient/{id}"), who).await;
            expect(&reply, StatusCode::OK);
            let body = &reply.json;
            let flagged = if element == "name" {
                &body["name"][0]
            } else {
                &body[element]
            };
            assert!(is_forged(flagged), "{id} {element} as {who:?}: {body}");
            for value in never {
                assert!(
                    !reply.text.contains(value),
                    "{value} reached {who:?}: {}",
                    reply.text
                );
            }
            assert!(!reply.text.contains(SEALED_ELEMENT), "{}", reply.text);
            assert!(has_forged_label(body), "{who:?}: {body}");
            let line = last_audit_line(&audit);
            assert_eq!(line["resources"], json!([format!("Patient/{id}")]));
            assert_eq!(line["forged"], json!(forged), "{id} as {who:?}: {line}");
        }
    }

    // Beside them, the honest elements open as before for a physician.
    let doctor = gw.get(&format!("/fhir/Patient/{a}"), &Who::Doctor).await;
    assert_eq!(
        doctor.json["name"][0]["family"],
        canaries[0].family.as_str()
    );
    let doctor = gw.get(&format!("/fhir/Patient/{b}"), &Who::Doctor).await;
    assert_eq!(
        doctor.json["telecom"][0]["value"],
        canaries[1].phone.as_str()
    );
    let doctor = gw.get(&format!("/fhir/Patient/{c}"), &Who::Doctor).await;
    assert_eq!(doctor.json["birthDate"], canaries[2].birth_date.as_str());
    let line = last_audit_line(&audit);
    assert!(line["opened"].as_u64().unwrap() > 0, "{line}");
    assert_eq!(line["forged"], json!(1), "{line}");
}

#[tokio::test]
async fn plaintext_the_upstream_writes_where_the_policy_seals_is_forged_and_not_written_back() {
    let (gw, audit) = gateway().await.with_audit();
    let id = unique("pat-plain");
    let canaries = PatientCanaries::new();
    expect(
        &gw.put(&patient(&id, &canaries), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let reply = gw.upstream_get(&format!("Patient/{id}")).await;
    expect(&reply, StatusCode::OK);
    // The operator writes a birth date and a name in clear over the sealed ones.
    let mut stored = reply.json;
    let object = stored.as_object_mut().unwrap();
    object.shift_remove("_birthDate");
    object.insert("birthDate".into(), json!(FORGED_A));
    stored["name"][0] = json!({"family": "Operator", "given": ["Mallory"]});
    assert_eq!(gw.upstream_put(&stored).await, StatusCode::OK);

    for who in [Who::Doctor, Who::Nurse] {
        let reply = gw.get(&format!("/fhir/Patient/{id}"), &who).await;
        expect(&reply, StatusCode::OK);
        let body = &reply.json;
        assert!(is_forged(&body["_birthDate"]), "{who:?}: {body}");
        assert!(body.get("birthDate").is_none(), "{who:?}: {body}");
        assert!(is_forged(&body["name"][0]), "{who:?}: {body}");
        for never in [FORGED_A, "Operator", "Mallory"] {
            assert!(!reply.text.contains(never), "{never} reached {who:?}");
        }
        assert!(has_forged_label(body), "{who:?}: {body}");
        let line = last_audit_line(&audit);
        assert_eq!(line["forged"], json!(2), "{who:?}: {line}");
        // The honest element beside them still opens.
        assert_eq!(
            body["telecom"][0]["value"].is_string(),
            matches!(who, Who::Doctor)
        );
    }

    // What a reader who opens every genuine element read, written back as it is: the forged
    // placeholders are refused by path.
    let full = gw
        .get(&format!("/fhir/Patient/{id}"), &Who::FullAccess)
        .await;
    let read_back = full.json;
    let reply = gw.put(&read_back, &Who::FullAccess).await;
    expect(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.json["resourceType"], "OperationOutcome");
    let said = diagnostics(&reply);
    assert!(said.contains("Patient.name[0]"), "{said}");
    assert!(
        !said.contains(FORGED_A) && !said.contains("Operator"),
        "{said}"
    );
    // With true values in their place, the write goes through; the forged label a client sends is
    // dropped by the gateway (the MASKED label the reader left, the seal still refuses).
    let mut fixed = read_back;
    let labels = fixed["meta"]["security"].as_array_mut().unwrap();
    labels.retain(|l| l["code"] != "MASKED");
    let object = fixed.as_object_mut().unwrap();
    object.shift_remove("_birthDate");
    object.insert("birthDate".into(), json!(canaries.birth_date));
    fixed["name"][0] = json!({"family": canaries.family, "given": [canaries.given]});
    expect(&gw.put(&fixed, &Who::FullAccess).await, StatusCode::OK);
    let reply = gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await;
    assert_eq!(reply.json["birthDate"], canaries.birth_date.as_str());
    assert!(!has_forged_label(&reply.json), "{}", reply.json);
    assert_eq!(last_audit_line(&audit)["forged"], json!(0));
}

/// What the upstream's operator makes from the public parameters alone, "the honest way" with a
/// sealing key of its own: a header for the structure and period of `genuine` (with id `id`, or
/// a fresh one), and an envelope of `members` for element `path` of `Patient/patient` under it.
fn forge(
    gw: &Gateway,
    genuine: &Header,
    id: Option<HeaderId>,
    patient: &str,
    path: &str,
    members: &Value,
) -> (Header, String) {
    let own = SealingKey::generate(&mut OsRng);
    let pp = gw.state.authority.public_params();
    let policy = genuine.ciphertext().policy();
    let period = genuine.ciphertext().period();
    let (header, key) =
        Header::new(pp, policy, period, Granularity::Shared, &own, &mut OsRng).unwrap();
    let header = match id {
        Some(id) => {
            let bytes = header.to_bytes();
            Header::from_bytes(&[&bytes[..1], id.as_bytes(), &bytes[17..]].concat()).unwrap()
        }
        None => header,
    };
    let resource_key = ResourceKey::generate(&mut OsRng);
    let wrapped = resource_key.wrap(&key, header.id(), "Patient", patient, &mut OsRng);
    let ctx = ElementContext::new("Patient", patient, path, policy);
    let envelope = fhirseal_envelope::seal(
        &ctx,
        header.id(),
        &wrapped,
        &resource_key,
        members.to_string().as_bytes(),
        &own,
        &mut OsRng,
    );
    (header, envelope.to_base64())
}

/// The header the envelope in `placeholder` names, as the upstream stores it.
async fn stored_header(gw: &Gateway, placeholder: &Value) -> Header {
    let envelope = Envelope::from_base64(&envelope_text(placeholder)).unwrap();
    let path = format!("Basic/{}", HeaderStore::resource_id(envelope.header()));
    let reply = gw.upstream_get(&path).await;
    expect(&reply, StatusCode::OK);
    header_in(&reply.json)
}

fn envelope_text(placeholder: &Value) -> String {
    placeholder["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == SEALED_ELEMENT)
        .unwrap()["valueBase64Binary"]
        .as_str()
        .unwrap()
        .to_string()
}

fn set_envelope(placeholder: &mut Value, envelope: &str) {
    for e in placeholder["extension"].as_array_mut().unwrap() {
        if e["url"] == SEALED_ELEMENT {
            e["valueBase64Binary"] = json!(envelope);
        }
    }
}

/// Whether `element` is masked and flagged as forged: data-absent-reason `error`, no envelope.
fn is_forged(element: &Value) -> bool {
    let Some(extensions) = element["extension"].as_array() else {
        return false;
    };
    extensions
        .iter()
        .any(|e| e["url"] == DATA_ABSENT_REASON && e["valueCode"] == "error")
        && !extensions.iter().any(|e| e["url"] == SEALED_ELEMENT)
}

fn has_forged_label(resource: &Value) -> bool {
    resource["meta"]["security"]
        .as_array()
        .is_some_and(|labels| {
            labels
                .iter()
                .any(|l| l["system"] == FHIRSEAL_CODE_SYSTEM && l["code"] == FORGED_CODE)
        })
}
