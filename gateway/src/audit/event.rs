//! A chained audit line as a FHIR R4 `AuditEvent`, for `fhirseal audit export`.
//!
//! | audit line | `AuditEvent` |
//! |---|---|
//! | `interaction` | `type` `rest` (audit-event-type) and `subtype` the interaction (restful-interaction); a sign-in (`login`): `type` DICOM `110114` User Authentication, `subtype` `110122` Login |
//! | `interaction` | `action`: `C` create, `R` read/vread/history/capabilities, `U` update/patch, `D` delete, `E` search, batch, transaction, operation, sign-in |
//! | `ts` | `recorded` |
//! | `outcome`, `status` | `outcome` `0` success, `4` client error or denied, `8` server error; `outcomeDesc` the policy's reason of a denial, else `HTTP <status>` |
//! | `who` | `agent[0]`, the requestor: `who.reference` the `fhirUser`, `who.identifier` the token's issuer and subject; `agent[1]` the client (`who.identifier` issuer and client id, type DICOM `110150` Application); no verified caller: `who.display` `unauthenticated` (a sign-in: the user name typed, and the source address as `network`) |
//! | — | `source.observer`: the gateway (its FHIR base), `source.type` `3` Web Server |
//! | `patients` (and each entry's), and every `Patient/id` of `resources` | one `entity` each, as the Basic Audit Log Patterns' patient entity: `what.reference` `Patient/id`, `type` `1` Person (audit-entity-type), `role` `1` Patient (object-role) |
//! | `resources` (and each entry's) | one `entity` each, `what.reference` `Type/id`, `type` `2` System Object (a `Patient/id` is the patient entity above) |
//! | `break_glass` with `outcome` `granted` | `purposeOfEvent` v3-ActReason `BTG` |
//! | `consents` | one `entity` each, `what.reference` `Consent/id`, `type` `2` System Object, described as the Consent the decision followed |
//! | `request_id`, counts | an `entity` whose `what.identifier` is the request id (system [`REQUEST_ID_SYSTEM`]), with `detail` `method`, `path`, `opened`, `masked`, `forged`, `sealed`, and `opened_paths` and `masked_paths` (the element paths, comma-separated) when there are any |
//!
//! The `AuditEvent`'s id is `chain-<seq>`, the record's sequence number. Nothing goes in that the
//! line does not hold, and the line holds no protected value.

use serde_json::{Map, Value, json};

/// The identifier system of request ids in exported `AuditEvent`s.
pub const REQUEST_ID_SYSTEM: &str = "urn:fhirseal:request-id";

const EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const DICOM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const SOURCE_TYPE: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// The `AuditEvent` of chain record `seq` holding `line`, observed by the gateway at
/// `observer` (its FHIR base URL).
///
/// # Errors
/// The line is not a JSON object (a record that is not an audit line): its problem.
pub fn audit_event(seq: u64, line: &str, observer: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(line) = value else {
        return Err("not a JSON object".into());
    };
    let text = |key: &str| line.get(key).and_then(Value::as_str);
    let login = line.get("login").filter(|l| l.is_object());
    let interaction = text("interaction");
    let status = line.get("status").and_then(Value::as_u64).unwrap_or(0);
    let (kind, subtype) = match (login, interaction) {
        (Some(_), _) => (
            coding(DICOM, "110114", "User Authentication"),
            Some(coding(DICOM, "110122", "Login")),
        ),
        (None, i) => (
            coding(EVENT_TYPE, "rest", "RESTful Operation"),
            i.map(|i| coding(INTERACTION, i, i)),
        ),
    };
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("chain-{seq}"),
        "type": kind,
        "action": action(interaction, login.is_some()),
        "recorded": text("ts").unwrap_or("1970-01-01T00:00:00.000Z"),
        "outcome": outcome(text("outcome")),
        "outcomeDesc": line.get("reason").and_then(Value::as_str).map_or_else(
            || format!("HTTP {status}"),
            str::to_string,
        ),
        "agent": agents(line.get("who"), login),
        "source": {
            "observer": {"display": "FHIRseal gateway", "identifier": {"value": observer}},
            "type": [coding(SOURCE_TYPE, "3", "Web Server")],
        },
        "entity": entities(&line),
    });
    if let (Some(subtype), Value::Object(object)) = (subtype, &mut event) {
        object.insert("subtype".into(), json!([subtype]));
    }
    // Break-glass, asserted and granted: the purpose of use (docs/break-glass.md).
    let granted = line
        .get("break_glass")
        .and_then(|b| b.get("outcome"))
        .and_then(Value::as_str)
        == Some("granted");
    if let (true, Value::Object(object)) = (granted, &mut event) {
        object.insert(
            "purposeOfEvent".into(),
            json!([{"coding": [coding(ACT_REASON, "BTG", "break the glass")]}]),
        );
    }
    Ok(event)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

fn action(interaction: Option<&str>, login: bool) -> &'static str {
    match interaction {
        _ if login => "E",
        Some("create") => "C",
        Some("read" | "vread" | "history-instance" | "history-type" | "capabilities") => "R",
        Some("update" | "patch") => "U",
        Some("delete") => "D",
        _ => "E",
    }
}

fn outcome(outcome: Option<&str>) -> &'static str {
    match outcome {
        Some("success") => "0",
        Some("server-error") => "8",
        _ => "4",
    }
}

/// The requestor (and the client it used), or who signed in.
fn agents(who: Option<&Value>, login: Option<&Value>) -> Value {
    let field = |v: Option<&Value>, key: &str| {
        v.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let issuer = field(who, "iss");
    let mut requestor = Map::new();
    requestor.insert("requestor".into(), json!(true));
    let mut person = Map::new();
    if let Some(fhir_user) = field(who, "fhir_user") {
        person.insert("reference".into(), json!(fhir_user));
    }
    if let Some(sub) = field(who, "sub") {
        person.insert("identifier".into(), json!({"system": issuer, "value": sub}));
    }
    if person.is_empty() {
        let name = field(login, "username").unwrap_or_else(|| "unauthenticated".into());
        person.insert("display".into(), json!(name));
    }
    requestor.insert("who".into(), Value::Object(person));
    if let Some(source) = field(login, "source") {
        requestor.insert("network".into(), json!({"address": source, "type": "2"}));
    }
    let mut agents = vec![Value::Object(requestor)];
    if let Some(client) = field(who, "client_id") {
        agents.push(json!({
            "type": {"coding": [coding(DICOM, "110150", "Application")]},
            "who": {"identifier": {"system": issuer, "value": client}},
            "requestor": false,
        }));
    }
    Value::Array(agents)
}

/// The patients a line concerns: its `patients` and its entries', and every `Patient/id` it
/// names as a resource (a line written before `patients` existed names them only so).
pub fn patients_of(line: &Map<String, Value>) -> Vec<&str> {
    let mut patients: Vec<&str> = Vec::new();
    for key in ["patients", "resources"] {
        for p in listed(line, key) {
            if (key == "patients" || p.starts_with("Patient/")) && !patients.contains(&p) {
                patients.push(p);
            }
        }
    }
    patients
}

/// The strings of the list `key` of the line and of each of its entries, in order.
fn listed<'a>(line: &'a Map<String, Value>, key: &str) -> Vec<&'a str> {
    let entries = line.get("entries").and_then(Value::as_array);
    std::iter::once(line.get(key))
        .chain(entries.into_iter().flatten().map(|e| e.get(key)))
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// One entity per patient concerned (the Basic Audit Log Patterns' patient entity), one per
/// other resource named (the request's and its entries'), and the request itself.
fn entities(line: &Map<String, Value>) -> Value {
    let patients = patients_of(line);
    let mut references: Vec<&str> = Vec::new();
    for r in listed(line, "resources") {
        if !references.contains(&r) && !patients.contains(&r) {
            references.push(r);
        }
    }
    let mut entities: Vec<Value> = patients
        .into_iter()
        .map(|p| {
            json!({"what": {"reference": p}, "type": coding(ENTITY_TYPE, "1", "Person"),
                   "role": coding(OBJECT_ROLE, "1", "Patient")})
        })
        .collect();
    entities.extend(references.into_iter().map(
        |r| json!({"what": {"reference": r}, "type": coding(ENTITY_TYPE, "2", "System Object")}),
    ));
    // Why: the patients' Consents the decisions were made under (docs/consent.md).
    entities.extend(listed(line, "consents").into_iter().map(|c| {
        json!({"what": {"reference": c}, "type": coding(ENTITY_TYPE, "2", "System Object"),
               "description": "a patient's Consent in force, which the access decision followed"})
    }));
    let detail: Vec<Value> = [
        "method",
        "path",
        "opened",
        "masked",
        "forged",
        "sealed",
        "opened_paths",
        "masked_paths",
    ]
    .into_iter()
    .filter_map(|key| {
        let value = match line.get(key)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Array(items) if !items.is_empty() => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            _ => return None,
        };
        Some(json!({"type": key, "valueString": value}))
    })
    .collect();
    if let Some(id) = line.get("request_id").and_then(Value::as_str) {
        entities.push(json!({
            "what": {"identifier": {"system": REQUEST_ID_SYSTEM, "value": id}},
            "type": coding(ENTITY_TYPE, "4", "Other"),
            "description": "the HTTP request",
            "detail": detail,
        }));
    }
    Value::Array(entities)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_maps_to_a_rest_read() {
        let line = r#"{"ts":"2026-11-28T05:33:49.139Z","request_id":"r1","method":"GET","path":"/fhir/Patient/p","status":200,"outcome":"success","who":{"sub":"dr.grey","fhir_user":"Practitioner/dr-grey","client_id":"demo-app","iss":"http://i"},"interaction":"read","resources":["Patient/p"],"opened":4,"masked":1,"forged":0,"sealed":0,"duration_ms":3.7}"#;
        let e = audit_event(7, line, "http://gw/fhir").unwrap();
        assert_eq!(e["id"], "chain-7");
        assert_eq!(e["type"]["code"], "rest");
        assert_eq!(e["subtype"][0]["code"], "read");
        assert_eq!(e["action"], "R");
        assert_eq!(e["outcome"], "0");
        assert_eq!(e["agent"][0]["who"]["reference"], "Practitioner/dr-grey");
        assert_eq!(e["agent"][0]["who"]["identifier"]["value"], "dr.grey");
        assert_eq!(e["agent"][1]["who"]["identifier"]["value"], "demo-app");
        assert_eq!(e["entity"][0]["what"]["reference"], "Patient/p");
        assert_eq!(e["entity"][0]["role"]["code"], "1");
        assert_eq!(e["entity"][1]["what"]["identifier"]["value"], "r1");
    }

    /// The patients of the line and of its entries are the patient entities; the other
    /// resources are system objects; nothing is named twice.
    #[test]
    fn patients_are_patient_entities() {
        let line = r#"{"ts":"2026-11-28T05:33:49.139Z","request_id":"r3","status":200,"outcome":"success","who":null,"interaction":"batch","resources":["Observation/o1","Patient/p2"],"patients":["Patient/p1"],"entries":[{"resources":["Observation/o1"],"patients":["Patient/p1"]},{"resources":["Patient/p2"],"patients":["Patient/p2"]}]}"#;
        let e = audit_event(3, line, "http://gw/fhir").unwrap();
        let entities = e["entity"].as_array().unwrap();
        let what: Vec<&str> = entities
            .iter()
            .filter_map(|e| e["what"]["reference"].as_str())
            .collect();
        assert_eq!(what, ["Patient/p1", "Patient/p2", "Observation/o1"]);
        for patient in &entities[..2] {
            assert_eq!(patient["type"]["code"], "1");
            assert_eq!(patient["role"]["system"], OBJECT_ROLE);
            assert_eq!(patient["role"]["code"], "1");
        }
        assert_eq!(entities[2]["type"]["code"], "2");
        assert!(entities[2].get("role").is_none());
    }

    #[test]
    fn a_failed_sign_in_names_the_user_typed() {
        let line = r#"{"ts":"2026-11-28T05:33:49.139Z","request_id":"r2","method":"POST","path":"/auth/login","status":400,"outcome":"client-error","who":null,"interaction":null,"resources":[],"login":{"username":"dr.grey","result":"failure","by":null,"source":"192.0.2.7"}}"#;
        let e = audit_event(1, line, "http://gw/fhir").unwrap();
        assert_eq!(e["type"]["code"], "110114");
        assert_eq!(e["subtype"][0]["code"], "110122");
        assert_eq!(e["outcome"], "4");
        assert_eq!(e["agent"][0]["who"]["display"], "dr.grey");
        assert_eq!(e["agent"][0]["network"]["address"], "192.0.2.7");
        assert!(audit_event(1, "[1]", "x").is_err());
        assert!(audit_event(1, "{", "x").is_err());
    }
}
