//! `GET /fhir/AuditEvent` over the tamper-evident audit chain (issue 19), end to end against the
//! real FHIR server, on a SQLite and on a PostgreSQL authority: every request of the test is
//! written down in a ledger (its request id, who made it, which patients it concerns, whether it
//! was refused), and each search must answer exactly what the ledger says, newest first. A
//! patient sees exactly the accesses to her record (writes, reads, a search, a batch, a refused
//! attempt) and none of another patient's; her `patient` is forced, and asking about another is a
//! 403; a compliance officer searches by user, user identifier, patient, date range and outcome,
//! page by page; everyone else gets a 403; unknown parameters are a 400 naming them, writes a 405;
//! no protected value of the records appears in any AuditEvent returned.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use crate::audit_chain::assert_r4_audit_event;
use crate::support::sekmet::{Gateway, canary, gateway, gateway_with};
use crate::support::{ISSUER, Reply, Who, postgres_database, practitioner, send, token};

/// One request of the test, as the audit trail should show it.
#[derive(Clone, Debug)]
struct Entry {
    id: String,
    agent: String,
    patients: Vec<String>,
    refused: bool,
}

/// The gateway, the ledger of every request made through it, and the test's names.
struct Run {
    gw: Gateway,
    ledger: Vec<Entry>,
    tag: String,
    compliance: String,
    canaries: Vec<String>,
}

const COMPLIANCE: &str = "Practitioner/e2e-compliance";

impl Run {
    fn new(gw: Gateway) -> Self {
        Self {
            gw,
            ledger: Vec::new(),
            tag: canary("as").to_lowercase().replace("canary-", ""),
            compliance: practitioner(COMPLIANCE, "compliance", "user/AuditEvent.rs"),
            canaries: Vec::new(),
        }
    }

    /// An id of this run (`as-…-pa`).
    fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Sends `method uri` with `bearer` (and `body`), as `agent`, concerning `patients` (ids),
    /// and writes it down.
    async fn call(
        &mut self,
        method: Method,
        uri: &str,
        bearer: &str,
        body: Option<&Value>,
        agent: &str,
        patients: &[&str],
    ) -> Reply {
        let id = format!("{}-r{}", self.tag, self.ledger.len());
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
            .header("x-request-id", &id);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/fhir+json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let reply = send(&self.gw.app, request.body(body).unwrap()).await;
        self.ledger.push(Entry {
            id,
            agent: agent.to_string(),
            patients: patients.iter().map(|p| format!("Patient/{p}")).collect(),
            refused: reply.status.is_client_error() || reply.status.is_server_error(),
        });
        reply
    }

    async fn as_who(
        &mut self,
        method: Method,
        uri: &str,
        who: &Who,
        body: Option<&Value>,
        patients: &[&str],
    ) -> Reply {
        let agent = match who {
            Who::Doctor => "Practitioner/e2e-dr".to_string(),
            Who::Nurse => "Practitioner/e2e-nurse".to_string(),
            Who::Registrar => "Practitioner/e2e-registrar".to_string(),
            Who::Pharmacist => "Practitioner/e2e-pharmacist".to_string(),
            Who::Patient(id) => format!("Patient/{id}"),
            Who::FullAccess => "Practitioner/e2e-full".to_string(),
        };
        self.call(method, uri, &token(who), body, &agent, patients)
            .await
    }

    /// An audit search by the compliance officer, concerning `patients`.
    async fn officer(&mut self, query: &str, patients: &[&str]) -> Reply {
        let bearer = self.compliance.clone();
        self.call(
            Method::GET,
            &format!("/fhir/AuditEvent{query}"),
            &bearer,
            None,
            COMPLIANCE,
            patients,
        )
        .await
    }

    /// The request ids of the ledger that `keep` selects, newest first.
    fn expected(&self, keep: impl Fn(&Entry) -> bool) -> Vec<String> {
        self.ledger
            .iter()
            .rev()
            .filter(|e| keep(e))
            .map(|e| e.id.clone())
            .collect()
    }

    /// The ledger's events concerning patient `id` (as the index reads it: a patient named, or
    /// the patient as the agent), newest first.
    fn of_patient(&self, id: &str) -> Vec<String> {
        let patient = format!("Patient/{id}");
        self.expected(|e| e.patients.contains(&patient) || e.agent == patient)
    }
}

/// The request ids of the AuditEvents of a searchset, in order, each event checked.
#[track_caller]
fn request_ids(reply: &Reply, run: &Run) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json["type"], "searchset", "{}", reply.text);
    for canary in &run.canaries {
        assert!(
            !reply.text.contains(canary.as_str()),
            "{canary} in {}",
            reply.text
        );
    }
    reply.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let event = &entry["resource"];
            assert_r4_audit_event(event);
            assert_eq!(entry["search"]["mode"], "match");
            assert!(
                entry["fullUrl"]
                    .as_str()
                    .unwrap()
                    .ends_with(event["id"].as_str().unwrap())
            );
            request_id(event)
        })
        .collect()
}

fn request_id(event: &Value) -> String {
    event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["what"]["identifier"]["value"].as_str())
        .unwrap()
        .to_string()
}

fn next_link(reply: &Reply) -> Option<String> {
    reply.json["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_string())
}

#[track_caller]
fn expect(reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{}", reply.text);
    if !status.is_success() {
        assert_eq!(
            reply.json["resourceType"], "OperationOutcome",
            "{}",
            reply.text
        );
    }
}

fn patient(id: &str, family: &str, phone: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "active": true,
           "name": [{"family": family, "given": ["Ann"]}],
           "telecom": [{"system": "phone", "value": phone}], "gender": "female"})
}

fn observation(id: &str, patient: &str, unit: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
           "subject": {"reference": format!("Patient/{patient}")},
           "valueQuantity": {"value": 72, "unit": unit, "system": "http://unitsofmeasure.org",
                             "code": "/min"}})
}

/// The whole scenario on `gw`.
async fn scenario(gw: Gateway, backend: &'static str) {
    let mut run = Run::new(gw);
    let (pa, pb) = (run.id("pa"), run.id("pb"));
    let (oa, ob, ob2) = (run.id("oa"), run.id("ob"), run.id("ob2"));
    let (family_a, phone_a, unit_a) = (canary("family"), canary("phone"), canary("unit"));
    let (family_b, phone_b) = (canary("family"), canary("phone"));
    run.canaries = vec![
        family_a.clone(),
        phone_a.clone(),
        unit_a.clone(),
        family_b.clone(),
        phone_b.clone(),
    ];
    let (pa, pb) = (pa.as_str(), pb.as_str());

    // The accesses.
    let body = patient(pa, &family_a, &phone_a);
    let r = run
        .as_who(
            Method::PUT,
            &format!("/fhir/Patient/{pa}"),
            &Who::Registrar,
            Some(&body),
            &[pa],
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let body = patient(pb, &family_b, &phone_b);
    let r = run
        .as_who(
            Method::PUT,
            &format!("/fhir/Patient/{pb}"),
            &Who::Registrar,
            Some(&body),
            &[pb],
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let body = observation(&oa, pa, &unit_a);
    let r = run
        .as_who(
            Method::PUT,
            &format!("/fhir/Observation/{oa}"),
            &Who::Doctor,
            Some(&body),
            &[pa],
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let body = observation(&ob, pb, "beats");
    let r = run
        .as_who(
            Method::PUT,
            &format!("/fhir/Observation/{ob}"),
            &Who::Doctor,
            Some(&body),
            &[pb],
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/Patient/{pa}"),
            &Who::Doctor,
            None,
            &[pa],
        )
        .await;
    expect(&r, StatusCode::OK);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/Observation/{oa}"),
            &Who::Nurse,
            None,
            &[pa],
        )
        .await;
    expect(&r, StatusCode::OK);
    // A refused attempt on her record concerns her too.
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/Observation/{oa}"),
            &Who::Pharmacist,
            None,
            &[pa],
        )
        .await;
    expect(&r, StatusCode::FORBIDDEN);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/Observation?subject=Patient/{pa}"),
            &Who::Doctor,
            None,
            &[pa],
        )
        .await;
    expect(&r, StatusCode::OK);
    assert_eq!(
        r.json["entry"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{pb}")}},
        {"request": {"method": "GET", "url": format!("Observation/{oa}")}}]});
    let r = run
        .as_who(Method::POST, "/fhir", &Who::Doctor, Some(&batch), &[pb, pa])
        .await;
    expect(&r, StatusCode::OK);
    let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(&ob2, pb, "beats"),
         "request": {"method": "PUT", "url": format!("Observation/{ob2}")}}]});
    let r = run
        .as_who(
            Method::POST,
            "/fhir",
            &Who::Doctor,
            Some(&transaction),
            &[pb],
        )
        .await;
    expect(&r, StatusCode::OK);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/Patient/{pb}"),
            &Who::Doctor,
            None,
            &[pb],
        )
        .await;
    expect(&r, StatusCode::OK);
    let own = Who::Patient(pa.to_string());
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/Observation/{oa}"),
            &own,
            None,
            &[pa],
        )
        .await;
    expect(&r, StatusCode::OK);

    // The patient sees exactly the accesses to her record, newest first.
    let expected = run.of_patient(pa);
    assert_eq!(expected.len(), 8);
    let r = run
        .as_who(Method::GET, "/fhir/AuditEvent", &own, None, &[pa])
        .await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");
    let first = &r.json["entry"][0]["resource"];
    assert_eq!(
        first["agent"][0]["who"]["reference"],
        format!("Patient/{pa}")
    );
    let patients: Vec<&Value> = first["entity"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["role"]["code"] == "1")
        .collect();
    assert_eq!(patients.len(), 1, "{first}");
    assert_eq!(patients[0]["what"]["reference"], format!("Patient/{pa}"));
    assert_eq!(patients[0]["type"]["code"], "1");
    // Her search was audited: it is the newest of the next one, which names her explicitly.
    let expected = run.of_patient(pa);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/AuditEvent?patient=Patient/{pa}"),
            &own,
            None,
            &[pa],
        )
        .await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");
    // The refused attempt is there, with its outcome.
    let refused = &run.ledger[6];
    let event = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .find(|e| request_id(e) == refused.id)
        .unwrap();
    assert_eq!(event["outcome"], "4");
    assert_eq!(
        event["agent"][0]["who"]["reference"],
        "Practitioner/e2e-pharmacist"
    );
    let seq_of = |reply: &Reply, id: &str| -> String {
        reply.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .find(|e| request_id(e) == id)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let her_first = seq_of(&r, &run.ledger[0].id);

    // Forced to herself: another patient's trail, or an event of another's, is a 403.
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/AuditEvent?patient={pb}"),
            &own,
            None,
            &[],
        )
        .await;
    expect(&r, StatusCode::FORBIDDEN);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/AuditEvent/{her_first}"),
            &own,
            None,
            &[pa],
        )
        .await;
    expect(&r, StatusCode::OK);
    assert_eq!(r.json["resourceType"], "AuditEvent");
    assert_eq!(request_id(&r.json), run.ledger[0].id);

    // The other patient sees hers, none of the first's.
    let other = Who::Patient(pb.to_string());
    let expected = run.of_patient(pb);
    assert_eq!(expected.len(), 5);
    let r = run
        .as_who(Method::GET, "/fhir/AuditEvent", &other, None, &[pb])
        .await;
    let seen = request_ids(&r, &run);
    assert_eq!(seen, expected, "{backend}");
    let only_a: BTreeSet<String> = run.of_patient(pa).into_iter().collect::<BTreeSet<_>>();
    let only_a: BTreeSet<String> = only_a
        .difference(&run.of_patient(pb).into_iter().collect())
        .cloned()
        .collect();
    assert!(seen.iter().all(|id| !only_a.contains(id)));
    let her_first_read = seq_of(&r, &run.ledger[1].id);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/AuditEvent/{her_first_read}"),
            &own,
            None,
            &[],
        )
        .await;
    expect(&r, StatusCode::FORBIDDEN);

    // Clinicians are not compliance officers.
    let r = run
        .as_who(Method::GET, "/fhir/AuditEvent", &Who::Doctor, None, &[])
        .await;
    expect(&r, StatusCode::FORBIDDEN);
    let r = run
        .as_who(
            Method::GET,
            &format!("/fhir/AuditEvent?patient={pa}"),
            &Who::Nurse,
            None,
            &[],
        )
        .await;
    expect(&r, StatusCode::FORBIDDEN);
    // A compliance role without a scope for AuditEvent.
    let unscoped = practitioner(COMPLIANCE, "compliance", "user/Patient.rs");
    let r = run
        .call(
            Method::GET,
            "/fhir/AuditEvent",
            &unscoped,
            None,
            COMPLIANCE,
            &[],
        )
        .await;
    expect(&r, StatusCode::FORBIDDEN);

    // The compliance officer: by user, by user identifier, by patient, by outcome.
    let expected = run.expected(|e| e.agent == "Practitioner/e2e-dr");
    let r = run.officer("?agent=Practitioner/e2e-dr", &[]).await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");
    let expected = run.expected(|e| e.agent == "Practitioner/e2e-nurse");
    let r = run
        .officer(
            &format!("?agent:identifier={ISSUER}|Practitioner/e2e-nurse"),
            &[],
        )
        .await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");
    let expected = run.of_patient(pb);
    let r = run.officer(&format!("?patient={pb}"), &[pb]).await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");
    let expected = run.expected(|e| e.refused);
    assert!(expected.len() >= 6, "{expected:?}");
    let r = run.officer("?outcome=4", &[]).await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");
    let expected = run.expected(|e| !e.refused && e.agent == "Practitioner/e2e-dr");
    let r = run
        .officer("?outcome=0&agent=Practitioner/e2e-dr", &[])
        .await;
    assert_eq!(request_ids(&r, &run), expected, "{backend}");

    // Everything, two at a time, following the next links: each event once, newest first.
    let expected = run.expected(|_| true);
    let mut seen = Vec::new();
    let mut events = Vec::new();
    let mut page = run.officer("?_count=2", &[]).await;
    loop {
        let ids = request_ids(&page, &run);
        assert!(ids.len() <= 2);
        seen.extend(ids);
        events.extend(
            page.json["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"].clone()),
        );
        let Some(next) = next_link(&page) else { break };
        assert!(
            next.contains("_count=2") && next.contains("_before="),
            "{next}"
        );
        let path = next
            .strip_prefix("http://127.0.0.1:8080")
            .unwrap()
            .to_string();
        let bearer = run.compliance.clone();
        page = run
            .call(Method::GET, &path, &bearer, None, COMPLIANCE, &[])
            .await;
    }
    assert_eq!(seen, expected, "{backend}");
    crate::support::write_audit_events(&format!("auditevent-search-{backend}"), &events);

    // A date range: from the recorded time of the fourth access to that of the ninth.
    let recorded = |id: &str| -> String {
        events.iter().find(|e| request_id(e) == id).unwrap()["recorded"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (from, to) = (recorded(&run.ledger[3].id), recorded(&run.ledger[8].id));
    let in_range: Vec<String> = events
        .iter()
        .filter(|e| {
            let at = e["recorded"].as_str().unwrap();
            at >= from.as_str() && at <= to.as_str()
        })
        .map(request_id)
        .collect();
    assert!(in_range.len() >= 6, "{in_range:?}");
    let r = run
        .officer(&format!("?date=ge{from}&date=le{to}&_count=500"), &[])
        .await;
    assert_eq!(request_ids(&r, &run), in_range, "{backend}");
    let r = run
        .officer(&format!("?date=lt{from}&patient={pa}"), &[pa])
        .await;
    let before: Vec<String> = events
        .iter()
        .filter(|e| e["recorded"].as_str().unwrap() < from.as_str())
        .map(request_id)
        .filter(|id| run.of_patient(pa).contains(id))
        .collect();
    assert_eq!(request_ids(&r, &run), before, "{backend}");

    // Refusals, each an OperationOutcome: unknown parameters named, writes, unknown events.
    let r = run.officer("?name=Smith&_sort=-date", &[]).await;
    expect(&r, StatusCode::BAD_REQUEST);
    let said = r.json["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(said.contains("name") && said.contains("_sort"), "{said}");
    let r = run.officer("?date=2026-13-01", &[]).await;
    expect(&r, StatusCode::BAD_REQUEST);
    let bearer = run.compliance.clone();
    let forged = json!({"resourceType": "AuditEvent", "type": {"code": "rest"}});
    let r = run
        .call(
            Method::POST,
            "/fhir/AuditEvent",
            &bearer,
            Some(&forged),
            COMPLIANCE,
            &[],
        )
        .await;
    expect(&r, StatusCode::METHOD_NOT_ALLOWED);
    let r = run
        .call(
            Method::DELETE,
            "/fhir/AuditEvent/chain-1",
            &bearer,
            None,
            COMPLIANCE,
            &[],
        )
        .await;
    expect(&r, StatusCode::METHOD_NOT_ALLOWED);
    let r = run.officer("/chain-999999", &[]).await;
    expect(&r, StatusCode::NOT_FOUND);
    let r = run.officer("/not-a-chain-id", &[]).await;
    expect(&r, StatusCode::NOT_FOUND);
    // Nothing of the trail was ever asked of the upstream.
    let upstream = run.gw.upstream_get("AuditEvent").await;
    if upstream.status == StatusCode::OK {
        assert!(
            upstream.json["entry"].as_array().is_none_or(Vec::is_empty),
            "{}",
            upstream.text
        );
    }

    // The CapabilityStatement says the gateway serves AuditEvent read and search.
    let r = run
        .as_who(Method::GET, "/fhir/metadata", &Who::Doctor, None, &[])
        .await;
    let audit_events: Vec<&Value> = r.json["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "AuditEvent")
        .collect();
    assert_eq!(audit_events.len(), 1, "{}", r.text);
    assert_eq!(
        audit_events[0]["interaction"],
        json!([{"code": "read"}, {"code": "search-type"}])
    );
}

#[tokio::test]
async fn the_audit_trail_is_searched_by_patient_user_date_and_outcome_on_sqlite() {
    scenario(gateway().await, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_searched_by_patient_user_date_and_outcome_on_postgres() {
    let database = tokio::task::spawn_blocking(|| postgres_database("audit_search"))
        .await
        .unwrap();
    let gw = gateway_with(&[("FHIRSEAL__AUTHORITY__DATABASE", &database)]).await;
    scenario(gw, "postgres").await;
}
