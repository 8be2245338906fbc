//! The same request alone and inside a batch or a transaction gives the same decision, the same
//! filtering and the same audit (issue 14): the gateway runs a Bundle entry through the same
//! flow as the single interaction, so a search inside a batch is narrowed to the caller's
//! compartment and its entries checked exactly as alone. Wave 1's batch path skipped the policy
//! and let a patient count another patient's records; each case here would have caught it.

use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{PatientCanaries, condition, expect, observation, patient};
use crate::support::sekmet::{Call, Gateway, gateway, unique};
use crate::support::{Reply, Who, last_audit_line};

/// One request as the client sends it: method, URL below the base, body.
struct Case<'a> {
    who: &'a Who,
    method: Method,
    url: String,
    body: Option<Value>,
}

/// What the client can compare of an answer: the status code and the body with what the server
/// makes anew for each answer (Bundle ids, timestamps, paging links) left out.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    body: Value,
}

/// The audit of one interaction: what it was, on what, with what effect.
#[derive(Debug, PartialEq)]
struct Audited {
    interaction: Value,
    resources: Value,
    patients: Value,
    opened: Value,
    masked: Value,
    status: u16,
}

/// The world of these tests: a patient with her own records, another patient with a Condition
/// and an HIV-screening Observation (LOINC 75622-1), and the gateway with its audit lines.
struct World {
    gw: Gateway,
    audit: Arc<Mutex<Vec<String>>>,
    own: String,
    other: String,
    own_observation: String,
}

async fn world() -> World {
    let (gw, audit) = gateway().await.with_audit();
    let (own, other) = (unique("pat-own"), unique("pat-other"));
    for id in [&own, &other] {
        expect(
            &gw.put(&patient(id, &PatientCanaries::new()), &Who::Registrar)
                .await,
            StatusCode::CREATED,
        );
    }
    let own_observation = unique("obs-own");
    let mut hiv = observation(&unique("obs-hiv"), &other, 1.0, "screen");
    hiv["code"] = json!({"coding": [{"system": "http://loinc.org", "code": "75622-1"}]});
    for resource in [
        observation(&own_observation, &own, 72.0, "beats"),
        hiv,
        condition(&unique("cond"), &other, "hidden"),
        condition(&unique("cond"), &own, "own"),
    ] {
        expect(&gw.put(&resource, &Who::Doctor).await, StatusCode::CREATED);
    }
    World {
        gw,
        audit,
        own,
        other,
        own_observation,
    }
}

impl World {
    /// The case alone: what the client saw, and its audit line.
    async fn alone(&self, case: &Case<'_>) -> (Seen, Audited) {
        let mut call = Call::new(
            case.method.clone(),
            &format!("/fhir/{}", case.url),
            case.who,
        );
        if let Some(body) = &case.body {
            call = call.json(body);
        }
        let reply = self.gw.send(call).await;
        let audit = last_audit_line(&self.audit);
        (seen_alone(&reply), audited(&audit, &audit))
    }

    /// The case as the one entry of a Bundle of `kind`: what the client saw of the entry, and
    /// the audit of the entry within the Bundle's audit line.
    async fn inside(&self, case: &Case<'_>, kind: &str) -> (Seen, Audited) {
        let mut entry = json!({"request": {"method": case.method.as_str(), "url": case.url}});
        if let Some(body) = &case.body {
            entry["resource"] = body.clone();
            entry["fullUrl"] = json!(format!("urn:uuid:{}", uuid_like()));
        }
        let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [entry]});
        let reply = self.gw.bundle(&bundle, case.who).await;
        let line = last_audit_line(&self.audit);
        let seen = if reply.status == StatusCode::OK {
            let entry = &reply.json["entry"][0];
            let status = entry["response"]["status"].as_str().unwrap_or_default();
            let status: u16 = status.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
            let body = entry
                .get("resource")
                .or_else(|| entry["response"].get("outcome"))
                .cloned()
                .unwrap_or(Value::Null);
            Seen {
                status,
                body: comparable(&body),
            }
        } else {
            // A transaction refused as a whole answers with the entry's status.
            seen_alone(&reply)
        };
        let entry_line = line["entries"][0].clone();
        (seen, audited(&line, &entry_line))
    }

    /// Asserts that the case gives the same answer and audit alone and inside a batch and a
    /// transaction; returns the status seen.
    async fn same(&self, case: Case<'_>) -> u16 {
        let (alone, alone_audit) = self.alone(&case).await;
        for kind in ["batch", "transaction"] {
            let (inside, inside_audit) = self.inside(&case, kind).await;
            assert_eq!(
                inside, alone,
                "{:?} {} {} inside a {kind}",
                case.who, case.method, case.url
            );
            assert_eq!(
                inside_audit, alone_audit,
                "the audit of {:?} {} {} inside a {kind}",
                case.who, case.method, case.url
            );
        }
        alone.status
    }
}

/// A read-only case (its answer does not change the world).
fn get<'a>(who: &'a Who, url: String) -> Case<'a> {
    Case {
        who,
        method: Method::GET,
        url,
        body: None,
    }
}

fn seen_alone(reply: &Reply) -> Seen {
    Seen {
        status: reply.status.as_u16(),
        body: comparable(&reply.json),
    }
}

/// `line`'s interaction and resources and `entry`'s counts and status: alone both are the one
/// line; inside a Bundle the line names the Bundle and `entries` the entries.
fn audited(line: &Value, entry: &Value) -> Audited {
    let status = entry
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(0);
    let _ = line;
    Audited {
        interaction: entry["interaction"].clone(),
        resources: entry["resources"].clone(),
        patients: entry["patients"].clone(),
        opened: entry["opened"].clone(),
        masked: entry["masked"].clone(),
        status,
    }
}

/// `body` less what each answer makes anew: a Bundle's id, meta and links; and an
/// OperationOutcome's `expression`, which inside a transaction names the entry that failed it.
fn comparable(body: &Value) -> Value {
    let mut body = body.clone();
    let Value::Object(object) = &mut body else {
        return body;
    };
    match object.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {
            for key in ["id", "meta", "link"] {
                object.shift_remove(key);
            }
        }
        Some("OperationOutcome") => {
            if let Some(Value::Array(issues)) = object.get_mut("issue") {
                for issue in issues.iter_mut().filter_map(Value::as_object_mut) {
                    issue.shift_remove("expression");
                }
            }
        }
        _ => {}
    }
    body
}

fn uuid_like() -> String {
    unique("u").replace(|c: char| !c.is_ascii_hexdigit(), "0")
}

#[tokio::test]
async fn a_patient_sees_the_same_alone_and_inside_a_bundle() {
    let w = world().await;
    let me = Who::Patient(w.own.clone());
    let (own, other) = (&w.own, &w.other);
    // Her own records: read, version, history, searches with and without her compartment.
    assert_eq!(w.same(get(&me, format!("Patient/{own}"))).await, 200);
    assert_eq!(
        w.same(get(&me, format!("Patient/{own}/_history/1"))).await,
        200
    );
    assert_eq!(
        w.same(get(&me, format!("Patient/{own}/_history"))).await,
        200
    );
    assert_eq!(
        w.same(get(&me, format!("Observation/{}", w.own_observation)))
            .await,
        200
    );
    assert_eq!(w.same(get(&me, "Condition".into())).await, 200);
    assert_eq!(
        w.same(get(&me, "Observation?_include=Observation:subject".into()))
            .await,
        200
    );
    // Another patient's: refused alone, refused inside; her searches never count them.
    assert_eq!(w.same(get(&me, format!("Patient/{other}"))).await, 403);
    assert_eq!(
        w.same(get(&me, format!("Patient/{other}/_history/1")))
            .await,
        403
    );
    assert_eq!(
        w.same(get(&me, format!("Patient/{other}/_history"))).await,
        403
    );
    let counted = w
        .same(get(
            &me,
            format!("Condition?subject=Patient/{other}&_summary=count"),
        ))
        .await;
    let screened = w
        .same(get(
            &me,
            format!("Observation?subject=Patient/{other}&code=75622-1"),
        ))
        .await;
    assert_eq!((counted, screened), (200, 200));
    let (seen, _) = w
        .alone(&get(
            &me,
            format!("Condition?subject=Patient/{other}&_summary=count"),
        ))
        .await;
    assert_eq!(seen.body["total"], json!(0), "{:?}", seen.body);
    // Writes her scopes do not grant: refused the same way.
    let note = observation(&unique("obs"), own, 1.0, "self-reported");
    let create = Case {
        who: &me,
        method: Method::POST,
        url: "Observation".into(),
        body: Some(note),
    };
    assert_eq!(w.same(create).await, 403);
}

#[tokio::test]
async fn a_nurse_and_a_doctor_see_the_same_alone_and_inside_a_bundle() {
    let w = world().await;
    let own = &w.own;
    for who in [Who::Nurse, Who::Doctor] {
        assert_eq!(w.same(get(&who, format!("Patient/{own}"))).await, 200);
        assert_eq!(
            w.same(get(&who, format!("Observation?subject=Patient/{own}")))
                .await,
            200
        );
        assert_eq!(
            w.same(get(&who, "Patient?name:contains=anything".into()))
                .await,
            400
        );
        assert_eq!(w.same(get(&who, "Patient?name=anything".into())).await, 200);
        assert_eq!(w.same(get(&who, "Patient/..".into())).await, 400);
        assert_eq!(
            w.same(get(&who, format!("Patient/{own}/_history"))).await,
            200
        );
        // A version, a count, an include and another patient's records (clinicians' searches
        // are not narrowed to a compartment: the policy decides per entry).
        assert_eq!(
            w.same(get(&who, format!("Patient/{own}/_history/1"))).await,
            200
        );
        assert_eq!(
            w.same(get(
                &who,
                format!("Condition?subject=Patient/{own}&_summary=count")
            ))
            .await,
            200
        );
        assert_eq!(
            w.same(get(
                &who,
                format!("Observation?subject=Patient/{own}&_include=Observation:subject")
            ))
            .await,
            200
        );
        assert_eq!(
            w.same(get(&who, format!("Condition?subject=Patient/{}", w.other)))
                .await,
            200
        );
        assert_eq!(
            w.same(get(
                &who,
                format!("Observation?subject=Patient/{}&code=75622-1", w.other)
            ))
            .await,
            200
        );
    }
    // Deletes: only physicians may; a patient may not delete even her own records.
    let me = Who::Patient(own.clone());
    for (who, status) in [(Who::Nurse, 403), (Who::Doctor, 204), (me, 403)] {
        // Each run deletes its own Observation: the same content alone and inside.
        let ids = [unique("obs-del"), unique("obs-del"), unique("obs-del")];
        for id in &ids {
            expect(
                &w.gw
                    .put(&observation(id, own, 1.0, "x"), &Who::Doctor)
                    .await,
                StatusCode::CREATED,
            );
        }
        let case = |id: &str| Case {
            who: &who,
            method: Method::DELETE,
            url: format!("Observation/{id}"),
            body: None,
        };
        let (alone, alone_audit) = w.alone(&case(&ids[0])).await;
        assert_eq!(alone.status, status, "{who:?}");
        for (kind, id) in [("batch", &ids[1]), ("transaction", &ids[2])] {
            let (inside, inside_audit) = w.inside(&case(id), kind).await;
            assert_eq!(inside.status, alone.status, "{who:?} inside a {kind}");
            assert_eq!(inside_audit.status, alone_audit.status, "{who:?} {kind}");
            assert_eq!(inside_audit.interaction, alone_audit.interaction);
        }
    }
    // Creates and updates: sealed the same way, answered the same way.
    let clinicians = [Who::Nurse, Who::Doctor];
    let resource = |id: &str| observation(id, own, 80.0, "bpm");
    let create = |who| Case {
        who,
        method: Method::POST,
        url: "Observation".into(),
        body: Some(resource("ignored")),
    };
    for who in &clinicians {
        let (alone, alone_audit) = w.alone(&create(who)).await;
        assert_eq!(alone.status, 201, "{who:?}");
        for kind in ["batch", "transaction"] {
            let (inside, inside_audit) = w.inside(&create(who), kind).await;
            assert_eq!(
                inside.status, 201,
                "{who:?} create inside a {kind}: {:?}",
                inside.body
            );
            assert_eq!(inside_audit.opened, alone_audit.opened, "{who:?} {kind}");
            assert_eq!(inside_audit.masked, alone_audit.masked, "{who:?} {kind}");
            assert_eq!(
                inside_audit.interaction, alone_audit.interaction,
                "{who:?} {kind}"
            );
        }
    }
}

/// Updates and patches: the same decision and the same sealing alone and inside a Bundle. A
/// nurse may update an Observation; a patient may not; a JSON Patch travels inside a Bundle as a
/// Binary of `application/json-patch+json`, as FHIR says.
#[tokio::test]
async fn updates_and_patches_are_the_same_alone_and_inside_a_bundle() {
    use base64::Engine as _;
    let w = world().await;
    let own = &w.own;
    let patch = json!([{"op": "replace", "path": "/status", "value": "amended"}]);
    let binary = json!({"resourceType": "Binary", "contentType": "application/json-patch+json",
        "data": base64::engine::general_purpose::STANDARD.encode(patch.to_string())});
    let me = Who::Patient(own.clone());
    for (who, update_status, patch_status) in [
        (Who::Nurse, 200, 200),
        (Who::Doctor, 200, 200),
        (me, 403, 403),
    ] {
        // Three Observations with the same content: alone, in a batch, in a transaction.
        let ids = [unique("obs-upd"), unique("obs-upd"), unique("obs-upd")];
        for id in &ids {
            expect(
                &w.gw
                    .put(&observation(id, own, 60.0, "bpm"), &Who::Doctor)
                    .await,
                StatusCode::CREATED,
            );
        }
        let update = |id: &str| Case {
            who: &who,
            method: Method::PUT,
            url: format!("Observation/{id}"),
            body: Some(observation(id, own, 61.0, "bpm")),
        };
        let (alone, alone_audit) = w.alone(&update(&ids[0])).await;
        assert_eq!(
            alone.status, update_status,
            "{who:?} update: {:?}",
            alone.body
        );
        for (kind, id) in [("batch", &ids[1]), ("transaction", &ids[2])] {
            let (inside, inside_audit) = w.inside(&update(id), kind).await;
            assert_eq!(
                inside.status, alone.status,
                "{who:?} update inside a {kind}: {:?}",
                inside.body
            );
            assert_eq!(
                inside_audit.interaction, alone_audit.interaction,
                "{who:?} {kind}"
            );
            assert_eq!(inside_audit.opened, alone_audit.opened, "{who:?} {kind}");
            assert_eq!(inside_audit.masked, alone_audit.masked, "{who:?} {kind}");
        }
        // The same three, patched.
        let (alone, alone_audit) = {
            let call = Call::new(
                Method::PATCH,
                &format!("/fhir/Observation/{}", ids[0]),
                &who,
            )
            .body("application/json-patch+json", &patch.to_string());
            let reply = w.gw.send(call).await;
            let line = last_audit_line(&w.audit);
            (seen_alone(&reply), audited(&line, &line))
        };
        assert_eq!(
            alone.status, patch_status,
            "{who:?} patch: {:?}",
            alone.body
        );
        for (kind, id) in [("batch", &ids[1]), ("transaction", &ids[2])] {
            let case = Case {
                who: &who,
                method: Method::PATCH,
                url: format!("Observation/{id}"),
                body: Some(binary.clone()),
            };
            let (inside, inside_audit) = w.inside(&case, kind).await;
            assert_eq!(
                inside.status, alone.status,
                "{who:?} patch inside a {kind}: {:?}",
                inside.body
            );
            assert_eq!(
                inside_audit.interaction, alone_audit.interaction,
                "{who:?} {kind}"
            );
            if alone.status == 200 {
                assert_eq!(inside.body["status"], json!("amended"), "{who:?} {kind}");
            }
        }
    }
}
