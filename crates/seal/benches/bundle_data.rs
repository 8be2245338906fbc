//! The Bundle both benchmarks use: a 100-entry searchset of blood-pressure Observations.
#![allow(dead_code, unreachable_pub)]

use serde_json::{Value, json};

/// The structure every sealed element gets.
pub const POLICY: &str = "(role:physician and dept:cardiology) or role:nurse or role:lab";
/// The elements sealed (plus the narrative, which the rules seal with them).
pub const PATHS: &[&str] = &[
    "Observation.component.value[x]",
    "Observation.interpretation",
    "Observation.bodySite",
];

/// Entries in the Bundle.
pub const ENTRIES: usize = 100;

/// Observation `bp-{i}`: a blood-pressure panel with two components.
pub fn observation(i: usize) -> Value {
    json!({
        "resourceType": "Observation",
        "id": format!("bp-{i}"),
        "meta": {"versionId": "1", "lastUpdated": "2026-11-01T10:00:00Z"},
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">Blood pressure {}/{} mmHg</div>", 100 + i % 40, 60 + i % 30)},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel with all children optional"}], "text": "Blood pressure systolic & diastolic"},
        "subject": {"reference": format!("Patient/p{}", i % 17)},
        "effectiveDateTime": "2026-11-01T09:30:00+01:00",
        "performer": [{"reference": "Practitioner/example"}],
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "L", "display": "low"}], "text": "Below low normal"}],
        "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003", "display": "Right arm"}]},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6", "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 100 + i % 40, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4", "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 60 + i % 30, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
        ]
    })
}

/// The searchset of [`ENTRIES`] Observations.
pub fn bundle() -> Value {
    let entries: Vec<Value> = (0..ENTRIES)
        .map(|i| {
            json!({"fullUrl": format!("https://fhir.example.org/Observation/bp-{i}"),
                   "resource": observation(i), "search": {"mode": "match"}})
        })
        .collect();
    json!({"resourceType": "Bundle", "id": "search-1", "type": "searchset", "total": ENTRIES,
           "link": [{"relation": "self", "url": "https://fhir.example.org/Observation?code=85354-9"}],
           "entry": entries})
}
