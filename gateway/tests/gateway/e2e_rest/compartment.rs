//! A patient's compartment: a patient reads and searches only their own record (alone, in a
//! batch, through history and `$everything`), which is their subject's, not another patient's
//! they name, nor one under another server's base.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::json;

use super::{
    PatientCanaries, assert_gateway_urls, assert_no_upstream_url, assert_sealed_upstream,
    condition, expect, id_set, observation, patient,
};
use crate::support::sekmet::{canary, entries, gateway, unique};
use crate::support::{BASE, Reply, Who};

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
async fn everything_returns_the_patients_record_opened() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&pid, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );
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
