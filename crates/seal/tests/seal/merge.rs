//! Writes element by element ([`fhirseal_seal::merge`]): a nurse writes back what she read
//! masked; what she cannot read is carried across byte for byte, or the write is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use crate::support::fixture::{Fixture, cache};
use fhirseal_envelope::Granularity;
use fhirseal_seal::shape::{DATA_ABSENT_REASON, SEALED_ELEMENT};
use fhirseal_seal::{
    Displays, ElementRule, MergeError, Narrative, Reader, RuleSet, Rules, Sealer, SharedHeaders,
    merge, unreadable_paths,
};
use proptest::prelude::*;
use rshabe::{AccessStructure, DecryptionKey};
use serde_json::{Value, json};

const DOCTOR: &str = "role:physician";
const BOTH: &str = "role:physician or role:nurse";
const SSN: &str = "urn:oid:2.16.840.1.113883.4.1";

struct World {
    fx: Fixture,
    headers: SharedHeaders,
    nurse: DecryptionKey,
    doctor: DecryptionKey,
}

impl World {
    fn new() -> Self {
        let mut fx = Fixture::new(15);
        let nurse = fx.key(&["role:nurse"], 0);
        let doctor = fx.key(&["role:physician"], 0);
        Self {
            fx,
            headers: SharedHeaders::new(),
            nurse,
            doctor,
        }
    }

    fn seal(&mut self, resource: &Value, rules: &Rules) -> Value {
        let Self { fx, headers, .. } = self;
        Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
            .seal(resource, rules)
            .unwrap()
            .resource
    }

    fn open(&self, sealed: &Value, key: &DecryptionKey) -> Value {
        let mut out = sealed.clone();
        let cache = cache();
        Reader::new("reader", Some(key), &cache, &self.headers, &self.fx.sealing).open(&mut out);
        out
    }

    fn nurse_view(&self, sealed: &Value) -> Value {
        self.open(sealed, &self.nurse)
    }

    fn doctor_view(&self, sealed: &Value) -> Value {
        self.open(sealed, &self.doctor)
    }

    /// The nurse writes `client` over `stored`: merged, sealed, carried across, then checked
    /// that she can read everything new (as the gateway does).
    fn nurse_writes(
        &mut self,
        stored: &Value,
        client: &Value,
        rules: &Rules,
    ) -> Result<Value, MergeError> {
        let opened = self.nurse_view(stored);
        let merged = merge(Some(stored), Some(&opened), client)?;
        let sealed = self.seal(merged.resource(), rules);
        let written = merged.finish(sealed)?;
        let reopened = self.nurse_view(&written);
        let carried: Vec<&str> = merged.carried_paths().collect();
        if let Some(path) = unreadable_paths(&written, &reopened)
            .into_iter()
            .find(|p| !carried.contains(&p.as_str()))
        {
            return Err(MergeError::NotReadable { path });
        }
        Ok(written)
    }
}

fn rule(path: &str, policy: &str, granularity: Granularity) -> ElementRule {
    ElementRule::new(path, AccessStructure::parse(policy).unwrap(), granularity).unwrap()
}

/// The nurse reads the name and birth date; the doctor everything.
fn rules(granularity: Granularity) -> Rules {
    Rules::new([
        RuleSet::new(
            "Patient",
            vec![
                rule("Patient.name", BOTH, granularity),
                rule("Patient.birthDate", BOTH, granularity),
                rule("Patient.telecom", DOCTOR, granularity),
                rule("Patient.address", DOCTOR, granularity),
                rule("Patient.maritalStatus", DOCTOR, granularity),
                rule("Patient.contact.telecom", DOCTOR, granularity),
                rule(
                    &format!("Patient.identifier.where(system='{SSN}')"),
                    DOCTOR,
                    granularity,
                ),
            ],
            Narrative::Seal,
            Displays::Matching,
        )
        .unwrap(),
        RuleSet::new(
            "Observation",
            vec![rule("Observation.value[x]", DOCTOR, granularity)],
            Narrative::Seal,
            Displays::Matching,
        )
        .unwrap(),
    ])
    .unwrap()
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [
            {"system": "urn:mrn", "value": "MRN-1"},
            {"system": SSN, "value": "999-00-1234"}
        ],
        "name": [{"family": "Chalmers", "given": ["Peter"]}],
        "telecom": [
            {"system": "phone", "value": "(03) 5555 6473"},
            {"system": "email", "value": "peter@example.org"}
        ],
        "gender": "male",
        "birthDate": "1974-12-25",
        "address": [{"city": "PleasantVille"}],
        "maritalStatus": {"text": "married"},
        "contact": [{
            "relationship": [{"text": "wife"}],
            "telecom": [{"system": "phone", "value": "0690383372"}]
        }]
    })
}

/// What the doctor reads of `sealed`, minus its `meta`.
fn doctor_sees(world: &World, sealed: &Value) -> Value {
    let mut view = world.doctor_view(sealed);
    view.as_object_mut().unwrap().shift_remove("meta");
    view
}

/// The stored upstream JSON of `key` (placeholders and envelopes).
fn upstream(sealed: &Value, key: &str) -> String {
    serde_json::to_string(&sealed[key]).unwrap()
}

#[test]
fn the_nurse_changes_gender_on_her_masked_copy_and_every_sealed_value_stays() {
    for granularity in [Granularity::Shared, Granularity::Resource] {
        let mut world = World::new();
        let rules = rules(granularity);
        let stored = world.seal(&patient(), &rules);
        let mut copy = world.nurse_view(&stored);
        copy["gender"] = json!("female");
        let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
        for key in [
            "telecom",
            "address",
            "maritalStatus",
            "identifier",
            "contact",
        ] {
            assert_eq!(upstream(&stored, key), upstream(&written, key), "{key}");
        }
        let mut expected = patient();
        expected["gender"] = json!("female");
        assert_eq!(doctor_sees(&world, &written), expected);
    }
}

#[test]
fn a_client_that_dropped_masked_elements_deletes_nothing_it_cannot_read() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    // What a client model keeps of the masked copy: the readable elements only.
    let copy = json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:mrn", "value": "MRN-1"}],
        "name": [{"family": "Chalmers", "given": ["Peter"]}],
        "gender": "male", "birthDate": "1974-12-25",
        "contact": [{"relationship": [{"text": "wife"}]}]
    });
    let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
    assert_eq!(doctor_sees(&world, &written), patient());
}

#[test]
fn an_element_the_nurse_can_read_and_left_out_is_deleted() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    let mut copy = world.nurse_view(&stored);
    copy.as_object_mut().unwrap().shift_remove("birthDate");
    let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
    let mut expected = patient();
    expected.as_object_mut().unwrap().shift_remove("birthDate");
    assert_eq!(doctor_sees(&world, &written), expected);
}

#[test]
fn a_value_over_an_element_the_nurse_cannot_read_is_refused_naming_its_path() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    let mut copy = world.nurse_view(&stored);
    copy["maritalStatus"] = json!({"text": "divorced"});
    let refused = world.nurse_writes(&stored, &copy, &rules).unwrap_err();
    assert_eq!(
        refused,
        MergeError::Changed {
            path: "Patient.maritalStatus".into()
        }
    );
    assert_eq!(refused.status(), 403);
    assert!(!refused.to_string().contains("married"));
}

#[test]
fn a_placeholder_edited_from_masked_to_unknown_is_refused() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    let mut copy = world.nurse_view(&stored);
    copy["maritalStatus"] =
        json!({"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]});
    assert_eq!(
        world.nurse_writes(&stored, &copy, &rules).unwrap_err(),
        MergeError::Changed {
            path: "Patient.maritalStatus".into()
        }
    );
}

#[test]
fn a_new_value_where_the_rules_seal_it_from_the_writer_is_refused() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let mut bare = patient();
    for key in [
        "telecom",
        "address",
        "maritalStatus",
        "contact",
        "identifier",
    ] {
        bare.as_object_mut().unwrap().shift_remove(key);
    }
    let stored = world.seal(&bare, &rules);
    let mut copy = world.nurse_view(&stored);
    copy["telecom"] = json!([{"system": "phone", "value": "0123"}]);
    let refused = world.nurse_writes(&stored, &copy, &rules).unwrap_err();
    assert_eq!(
        refused,
        MergeError::NotReadable {
            path: "Patient.telecom[0]".into()
        }
    );
    // An SSN where none was: sealed from her too.
    let mut copy = world.nurse_view(&stored);
    copy["identifier"] = json!([{"system": SSN, "value": "123-45-6789"}]);
    assert!(matches!(
        world.nurse_writes(&stored, &copy, &rules),
        Err(MergeError::NotReadable { .. })
    ));
    // Readable: fine.
    let mut copy = world.nurse_view(&stored);
    copy["name"] = json!([{"family": "Smith"}]);
    world.nurse_writes(&stored, &copy, &rules).unwrap();
}

#[test]
fn an_unreadable_item_keeps_its_index() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    // A new MRN in the readable slot, the SSN's placeholder left out: it stays at [1].
    let mut copy = world.nurse_view(&stored);
    copy["identifier"] = json!([{"system": "urn:mrn", "value": "MRN-2"}]);
    let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
    assert_eq!(written["identifier"][1], stored["identifier"][1]);
    assert_eq!(
        doctor_sees(&world, &written)["identifier"],
        json!([{"system": "urn:mrn", "value": "MRN-2"}, {"system": SSN, "value": "999-00-1234"}])
    );
    // The MRN removed: the SSN would move to [0].
    let mut copy = world.nurse_view(&stored);
    copy["identifier"] = json!([]);
    let refused = world.nurse_writes(&stored, &copy, &rules).unwrap_err();
    assert_eq!(
        refused,
        MergeError::Moved {
            path: "Patient.identifier[1]".into()
        }
    );
    assert_eq!(refused.status(), 409);
    // The placeholder sent first: it still goes back to [1].
    let mut copy = world.nurse_view(&stored);
    let items = copy["identifier"].as_array().unwrap().clone();
    copy["identifier"] = json!([items[1], items[0]]);
    let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
    assert_eq!(written["identifier"][1], stored["identifier"][1]);
}

#[test]
fn unreadable_elements_inside_a_readable_item_are_kept_and_its_removal_refused() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    let mut copy = world.nurse_view(&stored);
    copy["contact"][0]["relationship"] = json!([{"text": "spouse"}]);
    copy["contact"][0]
        .as_object_mut()
        .unwrap()
        .shift_remove("telecom");
    let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
    assert_eq!(
        written["contact"][0]["telecom"],
        stored["contact"][0]["telecom"]
    );
    assert_eq!(
        doctor_sees(&world, &written)["contact"],
        json!([{"relationship": [{"text": "spouse"}],
                "telecom": [{"system": "phone", "value": "0690383372"}]}])
    );
    let mut copy = world.nurse_view(&stored);
    copy.as_object_mut().unwrap().shift_remove("contact");
    copy["contact"] = json!([]);
    assert!(matches!(
        world.nurse_writes(&stored, &copy, &rules),
        Err(MergeError::Moved { .. })
    ));
}

#[test]
fn a_value_x_the_nurse_cannot_read_is_carried_and_cannot_be_replaced() {
    let mut world = World::new();
    let rules = rules(Granularity::Resource);
    let observation = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "weight"}, "valueQuantity": {"value": 80, "unit": "kg"}});
    let stored = world.seal(&observation, &rules);
    let mut copy = world.nurse_view(&stored);
    copy["status"] = json!("amended");
    let written = world.nurse_writes(&stored, &copy, &rules).unwrap();
    assert_eq!(
        world.doctor_view(&written)["valueQuantity"],
        json!({"value": 80, "unit": "kg"})
    );
    let mut copy = world.nurse_view(&stored);
    copy.as_object_mut()
        .unwrap()
        .shift_remove("dataAbsentReason");
    copy["valueQuantity"] = json!({"value": 1});
    assert_eq!(
        world.nurse_writes(&stored, &copy, &rules).unwrap_err(),
        MergeError::Changed {
            path: "Observation.value[x]".into()
        }
    );
}

#[test]
fn sealed_content_not_served_is_refused_on_every_type() {
    let placeholder = json!({"extension": [{"url": SEALED_ELEMENT, "valueBase64Binary": "AAAA"}]});
    // A type no rule protects.
    let organization = json!({"resourceType": "Organization", "id": "x", "_name": placeholder});
    let refused = merge(None, None, &organization).unwrap_err();
    assert_eq!(
        refused,
        MergeError::Foreign {
            path: "Organization.name".into()
        }
    );
    assert_eq!(refused.status(), 422);
    // The MASKED label on a create.
    let labelled = json!({"resourceType": "Organization", "meta": {"security": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "MASKED"}]}});
    assert!(matches!(
        merge(None, None, &labelled),
        Err(MergeError::Foreign { .. })
    ));
    // A masked placeholder where nothing was masked for this caller.
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    let mut copy = world.nurse_view(&stored);
    copy["_gender"] = json!({"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "masked"}]});
    copy.as_object_mut().unwrap().shift_remove("gender");
    assert!(matches!(
        world.nurse_writes(&stored, &copy, &rules),
        Err(MergeError::Foreign { .. })
    ));
}

#[test]
fn the_doctor_may_change_and_delete_what_she_reads() {
    let mut world = World::new();
    let rules = rules(Granularity::Shared);
    let stored = world.seal(&patient(), &rules);
    let opened = world.doctor_view(&stored);
    let mut copy = opened.clone();
    copy.as_object_mut().unwrap().shift_remove("telecom");
    copy["maritalStatus"] = json!({"text": "divorced"});
    let merged = merge(Some(&stored), Some(&opened), &copy).unwrap();
    assert!(!merged.carries());
    assert_eq!(merged.resource(), &copy);
}

// === the property ===

/// What the nurse does to one element.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Keep,
    Drop,
    Change,
    Unknown,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        Just(Edit::Keep),
        Just(Edit::Drop),
        Just(Edit::Change),
        Just(Edit::Unknown)
    ]
}

/// The elements of the property, each with the JSON member its sealed form stands in.
const ELEMENTS: &[(&str, &str)] = &[
    ("birthDate", "_birthDate"),
    ("maritalStatus", "maritalStatus"),
    ("telecom", "telecom"),
    ("address", "address"),
    ("name", "name"),
];

fn changed(key: &str) -> Value {
    match key {
        "birthDate" => json!("2000-01-01"),
        "maritalStatus" => json!({"text": "single"}),
        "telecom" => json!([{"system": "phone", "value": "0000"}]),
        "address" => json!([{"city": "Elsewhere"}]),
        _ => json!([{"family": "Other"}]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// For random rules (who reads each element) and random edits by the nurse, an accepted
    /// write leaves every element she could not open byte-identical upstream.
    #[test]
    fn what_the_writer_cannot_open_is_byte_identical_after_any_accepted_write(
        readable in proptest::collection::vec(any::<bool>(), ELEMENTS.len()),
        edits in proptest::collection::vec(edit(), ELEMENTS.len()),
        gender in any::<bool>(),
    ) {
        let mut world = World::new();
        let rules = Rules::new([RuleSet::new(
            "Patient",
            ELEMENTS
                .iter()
                .zip(&readable)
                .map(|((name, _), r)| {
                    rule(&format!("Patient.{name}"), if *r { BOTH } else { DOCTOR }, Granularity::Shared)
                })
                .collect(),
            Narrative::Seal,
            Displays::Matching,
        )
        .unwrap()])
        .unwrap();
        let stored = world.seal(&patient(), &rules);
        let served = world.nurse_view(&stored);
        let unreadable = unreadable_paths(&stored, &served);
        let mut copy = served;
        let object = copy.as_object_mut().unwrap();
        if gender {
            object.insert("gender".into(), json!("other"));
        }
        for ((name, member), edit) in ELEMENTS.iter().zip(&edits) {
            match edit {
                Edit::Keep => {}
                Edit::Drop => {
                    object.shift_remove(*name);
                    object.shift_remove(*member);
                }
                Edit::Change => {
                    object.shift_remove(*member);
                    object.insert((*name).to_string(), changed(name));
                }
                Edit::Unknown => {
                    let dar = json!({"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]});
                    if let Some(Value::Array(items)) = object.get_mut(*member) {
                        items.iter_mut().for_each(|i| *i = dar.clone());
                    } else if object.contains_key(*member) {
                        object.insert((*member).to_string(), dar);
                    }
                }
            }
        }
        if let Ok(written) = world.nurse_writes(&stored, &copy, &rules) {
            for path in &unreadable {
                let (key, index) = locate(path);
                let member = ELEMENTS.iter().find(|(n, _)| *n == key).map_or(key, |(_, m)| m);
                let before = &stored[member];
                let after = &written[member];
                match index {
                    Some(i) => prop_assert_eq!(&before[i], &after[i], "{}", path),
                    None => prop_assert_eq!(before, after, "{}", path),
                }
            }
        }
    }
}

/// `Patient.telecom[1]` → (`telecom`, Some(1)).
fn locate(path: &str) -> (&str, Option<usize>) {
    let rest = path.strip_prefix("Patient.").unwrap();
    match rest.split_once('[') {
        Some((key, index)) => (key, Some(index.trim_end_matches(']').parse().unwrap())),
        None => (rest, None),
    }
}

/// A compound blind index pairs two elements' values (issue 16). A write that re-seals one of
/// them while carrying the other unread cannot pair the new value with the stored one, so it is
/// refused naming the element (policies rule this out: both parts of a pair share one rule's
/// readers, and such a rule may not name writers); a writer who reads both gets fresh pairs.
#[test]
fn a_compound_index_is_never_left_pairing_a_new_value_with_an_unread_one() {
    use fhirseal_envelope::BlindIndex;
    use fhirseal_seal::SearchMode;
    use fhirseal_seal::index::{Tokens, keys_of_query, leaves};
    let index = BlindIndex::new([9; 32]);
    let indexed = |path: &str, policy: &str| {
        rule(path, policy, Granularity::Shared).with_search(SearchMode::BlindIndex { bits: 64 })
    };
    let rules = Rules::new([RuleSet::new(
        "Patient",
        vec![
            indexed("Patient.name", BOTH),
            indexed("Patient.birthDate", DOCTOR).with_index_alone(false),
        ],
        Narrative::Seal,
        Displays::Keep,
    )
    .unwrap()
    .with_compound("Patient.name.family", "Patient.birthDate")
    .unwrap()])
    .unwrap();
    let mut world = World::new();
    let seal = |world: &mut World, resource: &Value| {
        let World { fx, headers, .. } = world;
        Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
            .with_blind_index(&index)
            .seal(resource, &rules)
            .unwrap()
            .resource
    };
    let pair = |family: &str| {
        Tokens::new(&index, 64)
            .compound(
                &keys_of_query(&leaves("Patient.name.family", "string"), None, family).unwrap(),
                &keys_of_query(&leaves("Patient.birthDate", "date"), None, "1974-12-25").unwrap(),
            )
            .iter()
            .map(|t| json!({"system": t.system, "code": t.code}))
            .collect::<Vec<_>>()
    };
    let stored = seal(
        &mut world,
        &json!({"resourceType": "Patient", "id": "p1",
            "name": [{"family": "Chalmers"}], "birthDate": "1974-12-25"}),
    );
    let tags = |v: &Value| v["meta"]["tag"].as_array().cloned().unwrap_or_default();
    assert!(pair("chal").iter().all(|t| tags(&stored).contains(t)));
    // The nurse reads the name but not the birth date: renaming would pair "Brown" with a date
    // she cannot read.
    let mut client = world.nurse_view(&stored);
    client["name"][0]["family"] = json!("Brown");
    let opened = world.nurse_view(&stored);
    let merged = merge(Some(&stored), Some(&opened), &client).unwrap();
    let sealed = seal(&mut world, merged.resource());
    assert_eq!(
        merged.finish(sealed).unwrap_err(),
        MergeError::Compound {
            path: "Patient.name.family".into()
        }
    );
    // The doctor reads both: the pairs are made afresh, the old ones gone.
    let mut client = world.doctor_view(&stored);
    client["name"][0]["family"] = json!("Brown");
    let opened = world.doctor_view(&stored);
    let merged = merge(Some(&stored), Some(&opened), &client).unwrap();
    let sealed = seal(&mut world, merged.resource());
    let written = merged.finish(sealed).unwrap();
    assert!(pair("brow").iter().all(|t| tags(&written).contains(t)));
    assert!(!pair("chal").iter().any(|t| tags(&written).contains(t)));
}
