//! Search: paging through the gateway's own links, `POST _search`, parameters on sealed elements
//! refused or answered exactly, `_include` and `_revinclude`, and summaries that would drop
//! sealed elements.

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};

use super::{
    PatientCanaries, assert_gateway_urls, assert_no_upstream_url, assert_sealed_upstream,
    diagnostics, expect, id_set, observation, patient,
};
use crate::support::Who;
use crate::support::sekmet::{Call, Gateway, canary, entries, gateway, is_masked, link, unique};

/// A patient with five Observations (values 70–74, units canaries); returns their ids, units.
async fn five_observations(gw: &Gateway, pid: &str) -> (Vec<String>, Vec<String>) {
    let mut ids = Vec::new();
    let mut units = Vec::new();
    for n in 0..5 {
        let id = unique("obs");
        let unit = canary("unit");
        let reply = gw
            .put(
                &observation(&id, pid, 70.0 + f64::from(n), &unit),
                &Who::Doctor,
            )
            .await;
        expect(&reply, StatusCode::CREATED);
        ids.push(id);
        units.push(unit);
    }
    (ids, units)
}

#[tokio::test]
async fn search_pages_through_the_gateway_with_results_opened() {
    let gw = gateway().await;
    let pid = unique("pat");
    let (ids, units) = five_observations(&gw, &pid).await;

    let mut next = Some(format!("/fhir/Observation?subject=Patient/{pid}&_count=2"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(uri) = next {
        pages += 1;
        assert!(pages <= 5, "more pages than results");
        let page = gw.get(&uri, &Who::Nurse).await;
        expect(&page, StatusCode::OK);
        assert_eq!(page.json["type"], "searchset");
        assert_no_upstream_url(&gw, &page);
        assert_gateway_urls(&page.json);
        let matches = entries(&page.json, Some("match"));
        assert!(matches.len() <= 2, "{}", page.text);
        for resource in matches {
            let at = ids.iter().position(|i| *i == resource["id"]).unwrap();
            assert_eq!(resource["valueQuantity"]["unit"], units[at].as_str());
            assert_eq!(resource["interpretation"][0]["text"], units[at].as_str());
            seen.push(ids[at].clone());
        }
        next = link(&page.json, "next");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert_eq!(seen.len(), 5, "no result twice: {seen:?}");

    // POST [type]/_search answers the same.
    let call = Call::new(Method::POST, "/fhir/Observation/_search", &Who::Doctor).body(
        "application/x-www-form-urlencoded",
        &format!("subject=Patient%2F{pid}&_count=10"),
    );
    let posted = gw.send(call).await;
    expect(&posted, StatusCode::OK);
    assert_gateway_urls(&posted.json);
    assert_eq!(
        id_set(&entries(&posted.json, Some("match"))),
        ids.iter().cloned().collect::<BTreeSet<_>>()
    );
    let units: Vec<&str> = units.iter().map(String::as_str).collect();
    assert_sealed_upstream(&gw, &units);
}

#[tokio::test]
async fn search_refuses_a_parameter_on_a_sealed_element_naming_it() {
    let gw = gateway().await;
    // Practitioner.address is sealed with search = "reject".
    let get = gw
        .get("/fhir/Practitioner?address-city=Springfield", &Who::Doctor)
        .await;
    expect(&get, StatusCode::BAD_REQUEST);
    assert_eq!(get.json["resourceType"], "OperationOutcome");
    assert!(diagnostics(&get).contains("address-city"), "{}", get.text);
    let call = Call::new(Method::POST, "/fhir/Practitioner/_search", &Who::Doctor)
        .body("application/x-www-form-urlencoded", "address=Main");
    let post = gw.send(call).await;
    expect(&post, StatusCode::BAD_REQUEST);
    assert!(diagnostics(&post).contains("address"), "{}", post.text);

    // An unsealed parameter on the same type works.
    let ok = gw
        .get("/fhir/Practitioner?active=true&_count=1", &Who::Doctor)
        .await;
    expect(&ok, StatusCode::OK);
    assert_eq!(ok.json["type"], "searchset");
}

#[tokio::test]
async fn search_on_sealed_patient_and_result_elements_is_refused_or_exact() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );

    // Unsealed parameters: found, opened.
    let found = gw
        .get(
            &format!("/fhir/Patient?_id={id}&gender=female"),
            &Who::Doctor,
        )
        .await;
    expect(&found, StatusCode::OK);
    let matches = entries(&found.json, Some("match"));
    assert_eq!(id_set(&matches), BTreeSet::from([id.clone()]));
    assert_eq!(matches[0]["name"], original["name"]);

    // Sealed ones (the policy: demographics by blind index, results by filtering): either a 400
    // naming the parameter, or exactly the right answer; never a wrong one.
    for (parameter, value) in [
        ("birthdate", c.birth_date.as_str()),
        ("family", c.family.as_str()),
    ] {
        let reply = gw
            .get(&format!("/fhir/Patient?{parameter}={value}"), &Who::Doctor)
            .await;
        if reply.status == StatusCode::BAD_REQUEST {
            assert!(diagnostics(&reply).contains(parameter), "{}", reply.text);
        } else {
            expect(&reply, StatusCode::OK);
            assert_eq!(
                id_set(&entries(&reply.json, Some("match"))),
                BTreeSet::from([id.clone()]),
                "{parameter}"
            );
        }
    }
    let pid = unique("pat");
    let (obs, units) = five_observations(&gw, &pid).await;
    let reply = gw
        .get(
            &format!("/fhir/Observation?subject=Patient/{pid}&value-quantity=lt72.5"),
            &Who::Doctor,
        )
        .await;
    if reply.status == StatusCode::BAD_REQUEST {
        assert!(
            diagnostics(&reply).contains("value-quantity"),
            "{}",
            reply.text
        );
    } else {
        expect(&reply, StatusCode::OK);
        assert_eq!(
            id_set(&entries(&reply.json, Some("match"))),
            obs[..3].iter().cloned().collect::<BTreeSet<_>>()
        );
    }
    let mut canaries = c.all();
    canaries.extend(units.iter().map(String::as_str));
    assert_sealed_upstream(&gw, &canaries);
}

/// Only the SSN items of `Patient.identifier` are sealed (`where(system=…us-ssn)`): a search by
/// MRN names another system, so the upstream answers it exactly, with the Patient opened; one
/// for the SSN's system is answered from the blind index; one that could match both (no system,
/// or both systems) is refused naming `identifier`.
#[tokio::test]
async fn an_mrn_search_is_answered_by_the_server_and_an_ssn_search_by_the_index() {
    let gw = gateway().await;
    let id = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let found = gw
        .get(
            &format!("/fhir/Patient?identifier=urn:e2e:mrn%7CMRN-{id}"),
            &Who::Doctor,
        )
        .await;
    expect(&found, StatusCode::OK);
    let matches = entries(&found.json, Some("match"));
    assert_eq!(
        id_set(&matches),
        BTreeSet::from([id.clone()]),
        "{}",
        found.text
    );
    assert_eq!(matches[0]["name"], original["name"]);
    // What a server holding everything in clear answers: the same, asked directly.
    let direct = gw
        .upstream_get(&format!("Patient?identifier=urn:e2e:mrn%7CMRN-{id}"))
        .await;
    assert_eq!(
        id_set(&entries(&direct.json, None)),
        BTreeSet::from([id.clone()])
    );
    // The SSN's own system: answered from its blind index (`sealed_search.rs`), and only for
    // a caller who may open SSNs; the doctor cannot, so nothing matches for the doctor.
    let ssn_query = format!(
        "/fhir/Patient?identifier=http://hl7.org/fhir/sid/us-ssn%7C{}",
        c.ssn
    );
    let by_doctor = gw.get(&ssn_query, &Who::Doctor).await;
    expect(&by_doctor, StatusCode::OK);
    assert_eq!(by_doctor.json["total"], 0, "{}", by_doctor.text);
    let by_registrar = gw.get(&ssn_query, &Who::Registrar).await;
    expect(&by_registrar, StatusCode::OK);
    assert_eq!(
        id_set(&entries(&by_registrar.json, Some("match"))),
        BTreeSet::from([id.clone()])
    );
    // Anything that could match an SSN and an MRN at once is refused.
    for query in [
        format!("identifier=MRN-{id}"),
        format!("identifier=urn:e2e:mrn%7CMRN-{id},{}", c.ssn),
        format!(
            "identifier:of-type=http://hl7.org/fhir/sid/us-ssn%7CSS%7C{}",
            c.ssn
        ),
    ] {
        let refused = gw
            .get(&format!("/fhir/Patient?{query}"), &Who::Doctor)
            .await;
        expect(&refused, StatusCode::BAD_REQUEST);
        assert!(
            diagnostics(&refused).contains("identifier"),
            "{query}: {}",
            refused.text
        );
        assert!(!refused.text.contains(&c.ssn), "{query}: {}", refused.text);
    }
    assert_sealed_upstream(&gw, &c.all());
}

#[tokio::test]
async fn include_brings_the_referenced_patient_opened() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    let original = patient(&pid, &c);
    expect(
        &gw.put(&original, &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let oid = unique("obs");
    let unit = canary("unit");
    expect(
        &gw.put(&observation(&oid, &pid, 60.0, &unit), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );

    let reply = gw
        .get(
            &format!("/fhir/Observation?_id={oid}&_include=Observation:subject"),
            &Who::Doctor,
        )
        .await;
    expect(&reply, StatusCode::OK);
    assert_gateway_urls(&reply.json);
    let matches = entries(&reply.json, Some("match"));
    assert_eq!(id_set(&matches), BTreeSet::from([oid]));
    assert_eq!(matches[0]["valueQuantity"]["unit"], unit.as_str());
    let included = entries(&reply.json, Some("include"));
    assert_eq!(id_set(&included), BTreeSet::from([pid.clone()]));
    assert_eq!(included[0]["name"], original["name"]);
    assert_eq!(included[0]["birthDate"], original["birthDate"]);
    assert!(is_masked(&included[0]["identifier"][0]));
    let mut canaries = c.all();
    canaries.push(&unit);
    assert_sealed_upstream(&gw, &canaries);
}

#[tokio::test]
async fn revinclude_leaves_out_what_the_caller_may_not_read() {
    let gw = gateway().await;
    let pid = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&pid, &c), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    let oid = unique("obs");
    let unit = canary("unit");
    expect(
        &gw.put(&observation(&oid, &pid, 66.0, &unit), &Who::Doctor)
            .await,
        StatusCode::CREATED,
    );
    let uri = format!("/fhir/Patient?_id={pid}&_revinclude=Observation:subject");

    // The physician gets both; the pharmacist (no rule for Observations) only the Patient,
    // masked.
    let doctor = gw.get(&uri, &Who::Doctor).await;
    expect(&doctor, StatusCode::OK);
    assert_eq!(
        id_set(&entries(&doctor.json, None)),
        BTreeSet::from([pid.clone(), oid])
    );
    let pharmacist = gw.get(&uri, &Who::Pharmacist).await;
    expect(&pharmacist, StatusCode::OK);
    let all = entries(&pharmacist.json, None);
    assert_eq!(
        id_set(&all),
        BTreeSet::from([pid.clone()]),
        "{}",
        pharmacist.text
    );
    assert!(is_masked(&all[0]["name"][0]));
    for canary in c.all().into_iter().chain([unit.as_str()]) {
        assert!(!pharmacist.text.contains(canary), "{}", pharmacist.text);
    }
}

#[tokio::test]
async fn summaries_that_would_drop_sealed_elements_are_refused_naming_the_parameter() {
    let gw = gateway().await;
    let a = unique("pat");
    let c = PatientCanaries::new();
    expect(
        &gw.put(&patient(&a, &c), &Who::Registrar).await,
        StatusCode::CREATED,
    );
    for who in [Who::Nurse, Who::Doctor] {
        for (query, name) in [
            ("_summary=true", "_summary"),
            ("_summary=text", "_summary"),
            ("_elements=birthDate", "_elements"),
        ] {
            let reply = gw
                .get(&format!("/fhir/Patient?_id={a}&{query}"), &who)
                .await;
            expect(&reply, StatusCode::BAD_REQUEST);
            assert!(
                diagnostics(&reply).contains(name),
                "{query}: {}",
                reply.text
            );
            for canary in c.all() {
                assert!(!reply.text.contains(canary), "{query}: {}", reply.text);
            }
        }
        // A count drops no sealed element.
        let reply = gw
            .get(&format!("/fhir/Patient?_id={a}&_summary=count"), &who)
            .await;
        expect(&reply, StatusCode::OK);
        assert_eq!(reply.json["total"], 1, "{}", reply.text);
    }
}
