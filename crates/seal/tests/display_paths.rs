//! The paths at which the walk for `Reference.display` strings finds them, which sealing binds
//! each sealed display to and the read path names a display in clear by: through arrays, nested
//! backbones, a choice, an extension and contained resources (with and without an id).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "seal/support/fixture.rs"]
mod fixture;

use fhirseal_envelope::Granularity;
use fhirseal_seal::{
    Displays, ElementRule, Narrative, Reader, RuleSet, Rules, Sealer, SharedHeaders,
};
use fixture::{ALL, Fixture, cache};
use rshabe::AccessStructure;
use serde_json::{Value, json};

fn rules() -> Rules {
    let policy = AccessStructure::parse("role:physician").unwrap();
    Rules::new([RuleSet::new(
        "Encounter",
        vec![ElementRule::new("Encounter.reasonCode", policy, Granularity::Shared).unwrap()],
        Narrative::Seal,
        Displays::All,
    )
    .unwrap()])
    .unwrap()
}

fn encounter() -> Value {
    json!({
        "resourceType": "Encounter",
        "id": "e1",
        "contained": [
            {"resourceType": "Practitioner", "id": "pr1",
             "qualification": [
                {"code": {"text": "MD"}},
                {"code": {"text": "PhD"},
                 "issuer": {"reference": "Organization/o2", "display": "University"}}]},
            {"resourceType": "Location",
             "managingOrganization": {"reference": "Organization/o1", "display": "General Hospital"}}
        ],
        "extension": [
            {"url": "http://example.org/referrer",
             "valueReference": {"reference": "Practitioner/pr9", "display": "Dr Referrer"}}
        ],
        "status": "finished",
        "class": {"code": "AMB", "display": "ambulatory"},
        "subject": {"reference": "Patient/p1", "display": "Jane Doe"},
        "participant": [
            {"individual": {"reference": "#pr1", "display": "Dr Adam Careful"}},
            {"type": [{"text": "attender"}]},
            {"individual": {"reference": "Practitioner/pr3", "display": "Nurse Bob"},
             "period": {"start": "2026-11-01T09:00:00Z"}}
        ],
        "reasonCode": [{"text": "Headache"}],
        "diagnosis": [{"condition": {"reference": "Condition/c1", "display": "Migraine"}}],
        "hospitalization": {"origin": {"reference": "Location/l0", "display": "Home"},
                            "destination": {"reference": "Location/l2"}},
        "location": [
            {"location": {"reference": "Location/l1", "display": "Room 12"}},
            {"location": {"reference": "Location/l3", "display": "Room 14"}}
        ],
        "serviceProvider": {"reference": "Organization/o1", "display": "General Hospital"}
    })
}

/// Every display of [`encounter`], where the walk finds it, in its order.
const DISPLAYS: &[&str] = &[
    "Encounter.contained(#pr1).qualification[1].issuer.display",
    "Encounter.contained[1].managingOrganization.display",
    "Encounter.extension[0].valueReference.display",
    "Encounter.subject.display",
    "Encounter.participant[0].individual.display",
    "Encounter.participant[2].individual.display",
    "Encounter.diagnosis[0].condition.display",
    "Encounter.hospitalization.origin.display",
    "Encounter.location[0].location.display",
    "Encounter.location[1].location.display",
    "Encounter.serviceProvider.display",
];

#[test]
fn displays_in_clear_are_named_by_their_exact_paths() {
    let fx = Fixture::new(3);
    let headers = SharedHeaders::new();
    let cache = cache();
    let mut read = encounter();
    let report = Reader::new("reader", None, &cache, &headers, &fx.sealing)
        .with_rules(&rules())
        .open(&mut read);
    // The sealed element in clear, then every display, each once, by its exact path.
    let mut expected = vec!["Encounter/e1 Encounter.reasonCode[0]".to_string()];
    expected.extend(DISPLAYS.iter().map(|p| format!("Encounter/e1 {p}")));
    assert_eq!(report.forged_elements, expected);
    assert_eq!(report.forged, expected.len());
    // A reference without a display and a `Coding.display` are not walked into.
    assert_eq!(read["class"]["display"], "ambulatory");
    assert_eq!(
        read["hospitalization"]["destination"],
        json!({"reference": "Location/l2"})
    );
}

#[test]
fn displays_sealed_at_their_paths_open_there() {
    let mut fx = Fixture::new(4);
    let key = fx.key(ALL, 0);
    let rules = rules();
    let mut headers = SharedHeaders::new();
    let original = encounter();
    let sealed = Sealer::new(&fx.pp, &fx.sealing, 0, &mut headers, &mut fx.rng)
        .seal(&original, &rules)
        .unwrap();
    // The reason and every display: each bound to the path the walk found it at.
    assert_eq!(sealed.elements, 1 + DISPLAYS.len());
    let text = sealed.resource.to_string();
    for word in ["Jane Doe", "Room 14", "University", "Dr Referrer"] {
        assert!(!text.contains(word), "{word} in clear");
    }
    let cache = cache();
    let mut opened = sealed.resource;
    let report = Reader::new("reader", Some(&key), &cache, &headers, &fx.sealing)
        .with_rules(&rules)
        .open(&mut opened);
    assert_eq!((report.masked, report.forged), (0, 0), "{report:?}");
    assert_eq!(opened["subject"], original["subject"]);
    assert_eq!(opened["location"], original["location"]);
    assert_eq!(opened["contained"], original["contained"]);
    assert_eq!(opened["extension"], original["extension"]);
}
