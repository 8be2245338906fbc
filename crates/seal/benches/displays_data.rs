//! The searchset both display benchmarks use: 100 entries, Observations and Encounters whose
//! references carry displays, with arrays, nested backbones and a contained resource, and rules
//! that seal every display (`displays: all`).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use fhirseal_envelope::Granularity;
use fhirseal_seal::{Displays, ElementRule, Narrative, RuleSet, Rules};
use rshabe::AccessStructure;
use serde_json::{Value, json};

/// The structure every sealed element gets.
pub const POLICY: &str = "(role:physician and dept:cardiology) or role:nurse";
/// Entries in the Bundle.
pub const ENTRIES: usize = 100;

/// Observation `o-{i}`: references with displays (one to a contained Practitioner), components.
pub fn observation(i: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("o-{i}"),
        "meta": {"versionId": "1", "lastUpdated": "2026-11-01T10:00:00Z"},
        "contained": [{"resourceType": "Practitioner", "id": "pr1",
                       "name": [{"family": "Careful", "given": ["Adam"]}],
                       "qualification": [{"code": {"text": "MD"},
                                          "issuer": {"reference": "Organization/o1", "display": "Medical board"}}]}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}]},
        "subject": {"reference": format!("Patient/p{}", i % 17), "display": "Jane Doe"},
        "encounter": {"reference": format!("Encounter/e-{i}"), "display": "Outpatient visit"},
        "effectiveDateTime": "2026-11-01T09:30:00+01:00",
        "performer": [{"reference": "#pr1", "display": "Dr Adam Careful"},
                      {"reference": "Organization/o1", "display": "General Hospital"}],
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "L", "display": "low"}]}],
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003", "display": "Right arm"}]},
        "referenceRange": [{"low": {"value": 90, "unit": "mmHg"}, "high": {"value": 140, "unit": "mmHg"},
                            "appliesTo": [{"text": "adults"}]}],
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 100 + i % 40, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 60 + i % 30, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

/// Encounter `e-{i}`: backbone arrays (participants, diagnoses, locations) holding references.
pub fn encounter(i: usize) -> Value {
    json!({
        "resourceType": "Encounter",
        "id": format!("e-{i}"),
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185345009", "display": "Encounter for symptom"}]}],
        "subject": {"reference": format!("Patient/p{}", i % 17), "display": "Jane Doe"},
        "participant": [
            {"type": [{"coding": [{"code": "PPRF", "display": "primary performer"}]}],
             "period": {"start": "2026-11-01T09:00:00Z"},
             "individual": {"reference": "Practitioner/pr2", "display": "Dr Eve Example"}},
            {"type": [{"coding": [{"code": "ATND", "display": "attender"}]}],
             "individual": {"reference": "Practitioner/pr3", "display": "Nurse Bob"}}
        ],
        "period": {"start": "2026-11-01T09:00:00Z", "end": "2026-11-01T10:00:00Z"},
        "reasonCode": [{"text": "Headache"}],
        "diagnosis": [{"condition": {"reference": "Condition/c1", "display": "Migraine"}, "rank": 1}],
        "hospitalization": {"admitSource": {"text": "referral"},
                            "origin": {"reference": "Location/l0", "display": "Home"}},
        "location": [{"location": {"reference": "Location/l1", "display": "Room 12"}, "status": "completed"}],
        "serviceProvider": {"reference": "Organization/o1", "display": "General Hospital"}
    })
}

/// The searchset: Observations and Encounters, alternately.
pub fn bundle() -> Value {
    let entries: Vec<Value> = (0..ENTRIES)
        .map(|i| {
            let resource = if i % 2 == 0 {
                observation(i)
            } else {
                encounter(i)
            };
            let url = format!(
                "https://fhir.example.org/{}/{}",
                resource["resourceType"].as_str().unwrap(),
                resource["id"].as_str().unwrap()
            );
            json!({"fullUrl": url, "resource": resource, "search": {"mode": "match"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "id": "search-2", "type": "searchset", "total": ENTRIES,
           "entry": entries})
}

/// Rules sealing an element of each type and every display.
pub fn rules() -> Rules {
    let policy = AccessStructure::parse(POLICY).unwrap();
    let set = |resource_type: &str, paths: &[&str]| {
        RuleSet::new(
            resource_type,
            paths
                .iter()
                .map(|p| ElementRule::new(p, policy.clone(), Granularity::Shared).unwrap())
                .collect(),
            Narrative::Seal,
            Displays::All,
        )
        .unwrap()
    };
    Rules::new([
        set(
            "Observation",
            &[
                "Observation.component.value[x]",
                "Observation.interpretation",
            ],
        ),
        set("Encounter", &["Encounter.reasonCode"]),
    ])
    .unwrap()
}
