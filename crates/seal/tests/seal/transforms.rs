//! Sealing and opening of hand-made resources: the upstream form, exact round trips, masking,
//! and tampering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod forged;

use crate::support::fixture::{self, ALL, Fixture, cache};
use base64::Engine as _;
use fhirseal_envelope::{Granularity, HeaderCache};
use fhirseal_seal::shape::{DATA_ABSENT_REASON, SEALED_ELEMENT, SEALED_HEADER};
use fhirseal_seal::{
    Displays, ElementRule, Narrative, Reader, RuleSet, Rules, SealError, Sealer, SharedHeaders,
};
use rshabe::{AccessStructure, DecryptionKey, UpdateMode};
use serde_json::{Value, json};

/// `(path, access structure, granularity)`.
type Rule<'a> = (&'a str, &'a str, Granularity);

fn rules_with(sets: &[(&str, &[Rule<'_>])], narrative: Narrative, displays: Displays) -> Rules {
    Rules::new(sets.iter().map(|(rtype, rules)| {
        let rules = rules
            .iter()
            .map(|(path, policy, g)| {
                ElementRule::new(path, AccessStructure::parse(policy).unwrap(), *g).unwrap()
            })
            .collect();
        RuleSet::new(rtype, rules, narrative, displays).unwrap()
    }))
    .unwrap()
}

fn patient_rules(granularity: Granularity) -> Rules {
    rules_with(
        &[(
            "Patient",
            &[
                ("Patient.birthDate", "role:physician", granularity),
                (
                    "Patient.name",
                    "role:physician or role:registrar",
                    granularity,
                ),
                ("Patient.telecom", "role:physician", granularity),
                ("Patient.multipleBirth[x]", "role:physician", granularity),
                (
                    "Patient.identifier.where(system='urn:oid:2.16.840.1.113883.4.1')",
                    "role:registrar",
                    granularity,
                ),
            ],
        )],
        Narrative::Seal,
        Displays::Matching,
    )
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter Chalmers, born 1974-12-25</div>"},
        "identifier": [
            {"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"},
            {"system": "urn:oid:2.16.840.1.113883.4.1", "value": "999-00-1234"}
        ],
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"], "_given": [{"id": "given-id-9"}]}
        ],
        "telecom": [{"system": "phone", "value": "(03) 5555 6473"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "multipleBirthBoolean": false,
        "contact": [{"name": {"family": "du Marché"}, "organization": {"display": "Peter's farm"}}]
    })
}

struct World {
    fx: Fixture,
    headers: SharedHeaders,
}

impl World {
    fn new() -> Self {
        Self {
            fx: Fixture::new(7),
            headers: SharedHeaders::new(),
        }
    }

    fn seal(&mut self, resource: &Value, rules: &Rules) -> Value {
        self.try_seal(resource, rules).unwrap()
    }

    fn try_seal(&mut self, resource: &Value, rules: &Rules) -> Result<Value, SealError> {
        let Self { fx, headers } = self;
        Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
            .seal(resource, rules)
            .map(|s| s.resource)
    }

    fn open(
        &self,
        sealed: &Value,
        holder: &str,
        key: Option<&DecryptionKey>,
    ) -> (Value, fhirseal_seal::OpenReport) {
        let cache = cache();
        self.open_cached(sealed, holder, key, &cache)
    }

    fn open_cached(
        &self,
        sealed: &Value,
        holder: &str,
        key: Option<&DecryptionKey>,
        cache: &HeaderCache,
    ) -> (Value, fhirseal_seal::OpenReport) {
        let mut out = sealed.clone();
        let report =
            Reader::new(holder, key, cache, &self.headers, &self.fx.sealing).open(&mut out);
        (out, report)
    }
}

fn text(value: &Value) -> String {
    serde_json::to_string(value).unwrap()
}

fn dar() -> Value {
    json!({"url": DATA_ABSENT_REASON, "valueCode": "masked"})
}

/// The data-absent-reason of a forged element.
fn dar_forged() -> Value {
    json!({"url": DATA_ABSENT_REASON, "valueCode": "error"})
}

#[test]
fn the_upstream_form_is_what_design_md_shows() {
    let mut w = World::new();
    let sealed = w.seal(&patient(), &patient_rules(Granularity::Shared));
    let s = &sealed;
    // The value goes; the companion keeps the reason and the envelope.
    assert!(s.get("birthDate").is_none());
    let ext = s["_birthDate"]["extension"].as_array().unwrap();
    assert_eq!(ext.len(), 2);
    assert_eq!(ext[0], dar());
    assert_eq!(ext[1]["url"], SEALED_ELEMENT);
    // Complex items keep only extensions, one placeholder per item.
    assert_eq!(s["name"].as_array().unwrap().len(), 2);
    assert_eq!(
        s["name"][0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["extension"]
    );
    // A choice keeps its type.
    assert!(s.get("multipleBirthBoolean").is_none());
    assert_eq!(s["_multipleBirthBoolean"]["extension"][0], dar());
    // `where` seals only the matching identifier.
    assert_eq!(s["identifier"][0]["value"], "12345");
    assert!(s["identifier"][1].get("value").is_none());
    // Untouched elements stay.
    assert_eq!(s["gender"], "male");
    // The label, the narrative, and a display that repeats a sealed name.
    assert_eq!(s["meta"]["security"][0]["code"], "MASKED");
    assert_eq!(s["text"]["status"], "generated");
    assert!(!text(&s["text"]).contains("Chalmers"));
    assert!(s["contact"][0]["organization"].get("display").is_none());
    assert_eq!(
        s["contact"][0]["organization"]["_display"]["extension"][0],
        dar()
    );
    for secret in [
        "1974-12-25",
        "Chalmers",
        "Peter",
        "5555",
        "999-00-1234",
        "birthTime",
        "given-id-9",
    ] {
        assert!(!text(s).contains(secret), "{secret} leaked");
    }
    // Shared granularity: no header in the resource; one new shared header per structure.
    assert!(!text(s).contains(SEALED_HEADER));
    assert_eq!(w.headers.take_created().len(), 3 + 1);
}

#[test]
fn a_full_reader_gets_exactly_the_original_and_others_see_it_masked() {
    for granularity in [Granularity::Shared, Granularity::Resource] {
        let mut w = World::new();
        let original = patient();
        let sealed = w.seal(&original, &patient_rules(granularity));
        if granularity == Granularity::Resource {
            assert!(text(&sealed).contains(SEALED_HEADER));
        }
        let full = w.fx.key(ALL, 0);
        let (opened, report) = w.open(&sealed, "full", Some(&full));
        assert_eq!(opened, original, "{granularity:?}");
        assert_eq!(text(&opened), text(&original), "member order is kept too");
        assert_eq!(report.masked, 0);

        // A registrar opens the name and the identifier, not the rest.
        let registrar = w.fx.key(&["role:registrar"], 0);
        let (partial, report) = w.open(&sealed, "registrar", Some(&registrar));
        assert!(report.opened >= 3 && report.masked >= 3, "{report:?}");
        assert_eq!(partial["name"], original["name"]);
        assert_eq!(partial["identifier"], original["identifier"]);
        assert_eq!(partial["_birthDate"], json!({"extension": [dar()]}));
        assert!(partial.get("birthDate").is_none());
        assert_eq!(
            partial["meta"]["security"][0]["code"], "MASKED",
            "still partly masked"
        );
        assert!(
            !text(&partial).contains(SEALED_ELEMENT) && !text(&partial).contains(SEALED_HEADER)
        );

        // No key: everything masked, nothing dropped.
        let (masked, report) = w.open(&sealed, "anonymous", None);
        assert_eq!(report.opened, 0);
        assert_eq!(
            masked["name"],
            json!([{"extension": [dar()]}, {"extension": [dar()]}])
        );
        assert_eq!(
            masked["_multipleBirthBoolean"],
            json!({"extension": [dar()]})
        );
        assert!(!text(&masked).contains(SEALED_ELEMENT));
    }
}

#[test]
fn repeating_primitives_use_parallel_arrays() {
    let mut w = World::new();
    let rules = rules_with(
        &[(
            "Patient",
            &[("Patient.name.given", "role:physician", Granularity::Shared)],
        )],
        Narrative::Seal,
        Displays::Keep,
    );
    let original = patient();
    let sealed = w.seal(&original, &rules);
    let first = &sealed["name"][0];
    assert!(
        first.get("given").is_none(),
        "all values sealed: the value array goes"
    );
    assert_eq!(first["_given"].as_array().unwrap().len(), 2);
    assert_eq!(first["family"], "Chalmers");
    let full = w.fx.key(ALL, 0);
    assert_eq!(w.open(&sealed, "full", Some(&full)).0, original);
    let (masked, _) = w.open(&sealed, "none", None);
    assert_eq!(
        masked["name"][0]["_given"],
        json!([{"extension": [dar()]}, {"extension": [dar()]}])
    );
}

#[test]
fn observation_values_use_the_native_data_absent_reason_and_keep_decimals() {
    let mut w = World::new();
    let rules = rules_with(
        &[(
            "Observation",
            &[
                (
                    "Observation.value[x]",
                    "role:physician",
                    Granularity::Shared,
                ),
                (
                    "Observation.component.value[x]",
                    "role:physician",
                    Granularity::Shared,
                ),
            ],
        )],
        Narrative::Seal,
        Displays::Matching,
    );
    let raw = r#"{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"BP"},
        "subject":{"reference":"Patient/p1"},"valueQuantity":{"value":1.50,"unit":"mmol/L"},
        "component":[{"code":{"text":"systolic"},"valueQuantity":{"value":120.0,"unit":"mmHg"}},
                     {"code":{"text":"note"},"valueString":"fine","_valueString":{"id":"x"}}]}"#;
    let original: Value = serde_json::from_str(raw).unwrap();
    let sealed = w.seal(&original, &rules);
    assert!(sealed.get("valueQuantity").is_none());
    assert_eq!(sealed["dataAbsentReason"]["coding"][0]["code"], "masked");
    assert_eq!(
        sealed["component"][1]["dataAbsentReason"]["coding"][0]["code"],
        "masked"
    );
    assert!(sealed["component"][1].get("_valueString").is_none());
    assert_eq!(sealed["subject"]["reference"], "Patient/p1");
    let full = w.fx.key(ALL, 0);
    let (opened, _) = w.open(&sealed, "full", Some(&full));
    assert_eq!(opened, original);
    let printed = text(&opened);
    assert!(
        printed.contains("1.50") && printed.contains("120.0"),
        "{printed}"
    );
    let (masked, _) = w.open(&sealed, "none", None);
    assert_eq!(
        masked["dataAbsentReason"],
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "masked", "display": "Masked"}]})
    );
}

#[test]
fn contained_resources_are_sealed_by_their_own_rules_and_bound_to_the_container() {
    let mut w = World::new();
    let rules = patient_rules(Granularity::Shared);
    let original = json!({
        "resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "inline", "birthDate": "1980-01-01"}],
        "subject": {"reference": "#inline"}
    });
    let sealed = w.seal(&original, &rules);
    assert!(sealed["contained"][0].get("birthDate").is_none());
    assert!(
        sealed["contained"][0].get("meta").is_none(),
        "dom-5: no labels on contained resources"
    );
    assert_eq!(sealed["meta"]["security"][0]["code"], "MASKED");
    let full = w.fx.key(ALL, 0);
    assert_eq!(w.open(&sealed, "full", Some(&full)).0, original);
    // The same contained resource under another container does not open.
    let mut moved = sealed;
    moved["id"] = json!("o2");
    let (opened, report) = w.open(&moved, "full", Some(&full));
    assert_eq!(report.opened, 0);
    assert!(opened["contained"][0].get("birthDate").is_none());
}

#[test]
fn neutral_narratives_and_kept_displays() {
    let mut w = World::new();
    let rules = rules_with(
        &[(
            "Patient",
            &[("Patient.name", "role:physician", Granularity::Shared)],
        )],
        Narrative::Neutral,
        Displays::Keep,
    );
    let sealed = w.seal(&patient(), &rules);
    assert_eq!(
        sealed["contact"][0]["organization"]["display"],
        "Peter's farm"
    );
    let full = w.fx.key(ALL, 0);
    let (opened, _) = w.open(&sealed, "full", Some(&full));
    assert_eq!(opened["name"], patient()["name"]);
    assert_eq!(
        opened["text"]["div"],
        fhirseal_seal::shape::NEUTRAL_DIV,
        "a neutral narrative is not restored"
    );
}

#[test]
fn refusals_name_the_problem_and_never_the_value() {
    let mut w = World::new();
    let rules = patient_rules(Granularity::Shared);
    let mut no_id = patient();
    no_id.as_object_mut().unwrap().remove("id");
    assert!(matches!(
        w.try_seal(&no_id, &rules),
        Err(SealError::NoId { .. })
    ));
    let sealed = w.seal(&patient(), &rules);
    assert!(matches!(
        w.try_seal(&sealed, &rules),
        Err(SealError::AlreadySealed { .. })
    ));
    let mut wrong_shape = patient();
    wrong_shape["name"] = json!({"family": "CANARY-shape"});
    let err = w.try_seal(&wrong_shape, &rules).unwrap_err().to_string();
    assert_eq!(err, "Patient.name repeats in R4 but is not an array");
    assert!(matches!(
        w.try_seal(&json!([1]), &rules),
        Err(SealError::NotAResource)
    ));
    // A resource with nothing to seal goes through untouched, with or without an id.
    let other = json!({"resourceType": "Device", "status": "active"});
    assert_eq!(w.seal(&other, &rules), other);
}

#[test]
fn bundles_are_sealed_entry_by_entry_and_transaction_entries_bind_to_their_full_url() {
    let mut w = World::new();
    let rules = patient_rules(Granularity::Shared);
    let mut new_patient = patient();
    new_patient.as_object_mut().unwrap().remove("id");
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": new_patient,
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "http://example.org/fhir/Patient/p1", "resource": patient(),
             "request": {"method": "PUT", "url": "Patient/p1"}},
            {"resource": {"resourceType": "Basic", "code": {"text": "untouched"}}, "request": {"method": "POST", "url": "Basic"}}
        ]
    });
    let sealed = w.seal(&bundle, &rules);
    assert!(sealed["entry"][0]["resource"].get("birthDate").is_none());
    assert!(sealed["entry"][1]["resource"].get("birthDate").is_none());
    let full = w.fx.key(ALL, 0);
    let (opened, report) = w.open(&sealed, "full", Some(&full));
    assert_eq!(opened, bundle);
    assert_eq!(report.masked, 0);
    // Swapping the entries' fullUrls breaks the binding of the entry without an id.
    let mut swapped = sealed;
    swapped["entry"][0]["fullUrl"] = json!("urn:uuid:00000000-0000-4000-8000-000000000000");
    let (_, report) = w.open(&swapped, "full", Some(&full));
    assert!(report.forged > 0, "{report:?}");
}

/// The base64 of the sealed-element extension at `pointer` (a JSON pointer to the placeholder).
fn envelope_at(sealed: &Value, pointer: &str) -> String {
    sealed
        .pointer(pointer)
        .and_then(|p| p["extension"].as_array())
        .and_then(|e| e.iter().find(|x| x["url"] == SEALED_ELEMENT))
        .map(|x| x["valueBase64Binary"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no envelope at {pointer}"))
}

fn set_envelope(sealed: &mut Value, pointer: &str, envelope: &str) {
    let ext = sealed.pointer_mut(pointer).unwrap()["extension"]
        .as_array_mut()
        .unwrap();
    for x in ext.iter_mut().filter(|x| x["url"] == SEALED_ELEMENT) {
        x["valueBase64Binary"] = json!(envelope);
    }
}

#[test]
fn moved_envelopes_do_not_open() {
    let mut w = World::new();
    let rules = rules_with(
        &[
            (
                "Patient",
                &[
                    ("Patient.birthDate", "role:physician", Granularity::Shared),
                    ("Patient.name", "role:physician", Granularity::Shared),
                ],
            ),
            (
                "Practitioner",
                &[(
                    "Practitioner.birthDate",
                    "role:physician",
                    Granularity::Shared,
                )],
            ),
        ],
        Narrative::Seal,
        Displays::Keep,
    );
    let full = w.fx.key(ALL, 0);
    let p1 = w.seal(&patient(), &rules);
    let mut p2_original = patient();
    p2_original["id"] = json!("p2");
    let p2 = w.seal(&p2_original, &rules);
    let birth = envelope_at(&p1, "/_birthDate");

    // Sanity: unmodified, both open.
    assert_eq!(w.open(&p1, "full", Some(&full)).1.masked, 0);

    // To another element of the same resource.
    let mut moved = p1.clone();
    set_envelope(&mut moved, "/name/0", &birth);
    let (opened, report) = w.open(&moved, "full", Some(&full));
    assert_eq!((report.masked, report.forged), (0, 1));
    assert_eq!(report.forged_elements, ["Patient/p1 Patient.name[0]"]);
    assert_eq!(opened["name"][0], json!({"extension": [dar_forged()]}));
    // Between items of one element.
    let mut swapped = p1.clone();
    let second = envelope_at(&p1, "/name/1");
    set_envelope(&mut swapped, "/name/0", &second);
    assert_eq!(w.open(&swapped, "full", Some(&full)).1.forged, 1);
    // To another resource of the same type.
    let mut other = p2;
    set_envelope(&mut other, "/_birthDate", &birth);
    assert_eq!(w.open(&other, "full", Some(&full)).1.forged, 1);
    // To the same id under another resource type.
    let mut practitioner =
        json!({"resourceType": "Practitioner", "id": "p1", "birthDate": "1960-01-01"});
    practitioner = w.seal(&practitioner, &rules);
    set_envelope(&mut practitioner, "/_birthDate", &birth);
    assert_eq!(w.open(&practitioner, "full", Some(&full)).1.forged, 1);
    // The whole resource under another id.
    let mut renamed = p1.clone();
    renamed["id"] = json!("p3");
    let (_, report) = w.open(&renamed, "full", Some(&full));
    assert_eq!(report.opened, 0);
    assert!(report.forged > 0 && report.masked == 0, "{report:?}");
    // To another structure: the same element sealed under another policy's header.
    let strict = rules_with(
        &[(
            "Patient",
            &[(
                "Patient.birthDate",
                "role:physician and role:admin",
                Granularity::Shared,
            )],
        )],
        Narrative::Seal,
        Displays::Keep,
    );
    let p1_strict = w.seal(&patient(), &strict);
    let mut restructured = p1;
    set_envelope(
        &mut restructured,
        "/_birthDate",
        &envelope_at(&p1_strict, "/_birthDate"),
    );
    let physician = w.fx.key(&["role:physician"], 0);
    let (opened, _) = w.open(&restructured, "physician", Some(&physician));
    assert!(
        opened.get("birthDate").is_none(),
        "a physician without role:admin must not read it"
    );
}

#[test]
fn every_flipped_byte_and_truncation_is_refused() {
    let mut w = World::new();
    let rules = rules_with(
        &[(
            "Patient",
            &[("Patient.birthDate", "role:physician", Granularity::Resource)],
        )],
        Narrative::Seal,
        Displays::Keep,
    );
    let sealed = w.seal(&patient(), &rules);
    let full = w.fx.key(ALL, 0);
    let cache = cache();
    assert_eq!(
        w.open_cached(&sealed, "full", Some(&full), &cache).1.masked,
        0
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(envelope_at(&sealed, "/_birthDate")).unwrap();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut flipped = bytes.clone();
            flipped[i] ^= bit;
            let mut tampered = sealed.clone();
            set_envelope(&mut tampered, "/_birthDate", &b64.encode(&flipped));
            let (opened, report) = w.open_cached(&tampered, "full", Some(&full), &cache);
            // A changed header id names a header nobody has: masked. Anything else is forged.
            let expected = if (1..17).contains(&i) { (1, 0) } else { (0, 1) };
            assert_eq!(
                (report.masked, report.forged),
                expected,
                "byte {i} bit {bit:#x}"
            );
            assert!(opened.get("birthDate").is_none());
        }
    }
    for cut in [1, bytes.len() / 2, bytes.len() - 1] {
        let mut tampered = sealed.clone();
        set_envelope(&mut tampered, "/_birthDate", &b64.encode(&bytes[..cut]));
        assert_eq!(w.open(&tampered, "full", Some(&full)).1.forged, 1);
    }
    let mut not_base64 = sealed.clone();
    set_envelope(&mut not_base64, "/_birthDate", "%%%");
    assert_eq!(w.open(&not_base64, "full", Some(&full)).1.forged, 1);

    // A truncated header in the resource: nothing under it opens.
    let mut truncated = sealed;
    let header = truncated["extension"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|x| x["url"] == SEALED_HEADER)
        .unwrap();
    let header_bytes = b64
        .decode(header["valueBase64Binary"].as_str().unwrap())
        .unwrap();
    header["valueBase64Binary"] = json!(b64.encode(&header_bytes[..header_bytes.len() - 10]));
    let (opened, report) = w.open(&truncated, "fresh-holder", Some(&full));
    assert_eq!(
        report.opened, 0,
        "neither the birth date nor the narrative sealed with it opens"
    );
    assert_eq!(report.forged, 2, "{report:?}");
    assert!(!text(&opened).contains(SEALED_HEADER));
}

/// The headers `w` made so far, moved to period 1 by the public ciphertext update.
fn moved_to_period_1(w: &mut World) -> SharedHeaders {
    let mut moved_on = SharedHeaders::new();
    for header in w.headers.take_created() {
        let header = header
            .update(&w.fx.pp, 1, UpdateMode::Minimal, &mut w.fx.rng)
            .unwrap();
        moved_on.insert(header, None);
    }
    moved_on
}

#[test]
fn headers_moved_to_a_later_period_refuse_earlier_keys() {
    let mut w = World::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = w.seal(&patient(), &rules);
    let full_now = w.fx.key(ALL, 0);
    let full_next = w.fx.key(ALL, 1);
    // A header of period t opens with keys of period t and later ("policy ∧ time ≥ t").
    assert_eq!(w.open(&sealed, "now", Some(&full_now)).1.masked, 0);
    assert_eq!(w.open(&sealed, "next", Some(&full_next)).1.masked, 0);
    // After the public ciphertext update the same envelopes open with period-1 keys only.
    let moved_on = moved_to_period_1(&mut w);
    let cache = cache();
    let mut out = sealed.clone();
    let report =
        Reader::new("next", Some(&full_next), &cache, &moved_on, &w.fx.sealing).open(&mut out);
    assert_eq!((report.masked, out), (0, patient()));
    let mut out = sealed.clone();
    let report =
        Reader::new("now", Some(&full_now), &cache, &moved_on, &w.fx.sealing).open(&mut out);
    assert_eq!(report.opened, 0, "a stale-period key is refused");

    // Nor does a header key cached while the header was at period 0: the warm path keeps the
    // scheme's rule. And a reader without a key gets nothing from the cache.
    let warm = fixture::cache();
    let mut out = sealed.clone();
    let report =
        Reader::new("now", Some(&full_now), &warm, &w.headers, &w.fx.sealing).open(&mut out);
    assert_eq!(report.masked, 0);
    let mut out = sealed.clone();
    let report =
        Reader::new("now", Some(&full_now), &warm, &moved_on, &w.fx.sealing).open(&mut out);
    assert_eq!(
        report.opened, 0,
        "a cached key does not open a header moved past its period"
    );
    let mut out = sealed;
    let report = Reader::new("now", None, &warm, &w.headers, &w.fx.sealing).open(&mut out);
    assert_eq!(report.opened, 0, "no key, no cache");
}

/// A header a key could not open is remembered for that key's period only: the next read masks
/// without attribute-based decryption, and the same holder's key of a later period opens it.
#[test]
fn a_header_a_key_could_not_open_is_remembered_for_that_period_only() {
    let mut w = World::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = w.seal(&patient(), &rules);
    let ids = fhirseal_seal::shared_header_ids(&sealed);
    assert!(!ids.is_empty());
    let moved_on = moved_to_period_1(&mut w);
    let (now, next) = (w.fx.key(ALL, 0), w.fx.key(ALL, 1));
    let cache = cache();
    let at = std::time::Instant::now();
    let open = |key: &DecryptionKey| {
        let mut out = sealed.clone();
        let report = Reader::new("u", Some(key), &cache, &moved_on, &w.fx.sealing).open(&mut out);
        (report.opened, report.masked, out)
    };
    // Period 0 against headers of period 1: nothing opens, and the cache says so, for period 0.
    let (opened, masked, _) = open(&now);
    assert_eq!(opened, 0);
    assert!(masked > 0);
    for id in &ids {
        assert!(cache.is_unopenable("u", *id, 0, at), "{id:?}");
        assert!(!cache.is_unopenable("u", *id, 1, at));
        assert!(cache.get("u", *id, at).is_none());
    }
    assert_eq!(open(&now).0, 0, "still nothing, from the cache");
    // The same holder's key of period 1 is not turned away by what period 0 could not do.
    let (opened, masked, out) = open(&next);
    assert_eq!((opened > 0, masked, out), (true, 0, patient()));
    for id in &ids {
        assert!(cache.get("u", *id, at).is_some());
        assert!(!cache.is_unopenable("u", *id, 0, at));
    }
    // A key whose attributes do not satisfy the structures: remembered, and masked again.
    let nobody = w.fx.key(&["role:nobody"], 1);
    let mut out = sealed.clone();
    let first = Reader::new("n", Some(&nobody), &cache, &moved_on, &w.fx.sealing).open(&mut out);
    assert_eq!(first.opened, 0);
    assert!(ids.iter().all(|id| cache.is_unopenable("n", *id, 1, at)));
    let mut again = sealed.clone();
    let second = Reader::new("n", Some(&nobody), &cache, &moved_on, &w.fx.sealing).open(&mut again);
    assert_eq!(
        (second.opened, second.masked, &again),
        (0, first.masked, &out)
    );
}

#[test]
fn blind_index_tokens_let_the_gateway_search_and_never_reach_readers() {
    use fhirseal_envelope::BlindIndex;
    use fhirseal_seal::index::BLIND_INDEX_SYSTEM;
    use fhirseal_seal::search::plan_search;
    let mut w = World::new();
    let policy = AccessStructure::parse("role:registrar").unwrap();
    let rules = Rules::new([RuleSet::new(
        "Patient",
        vec![
            ElementRule::new("Patient.identifier", policy.clone(), Granularity::Shared)
                .unwrap()
                .with_blind_index(),
            ElementRule::new("Patient.birthDate", policy.clone(), Granularity::Shared)
                .unwrap()
                .with_blind_index(),
            ElementRule::new("Patient.name", policy, Granularity::Shared)
                .unwrap()
                .with_blind_index(),
        ],
        Narrative::Seal,
        Displays::Keep,
    )
    .unwrap()])
    .unwrap();
    let index = BlindIndex::new([9; 32]);
    let seal = |w: &mut World, resource: &Value| {
        let World { fx, headers } = w;
        Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
            .with_blind_index(&index)
            .seal(resource, &rules)
            .map(|s| s.resource)
    };
    let sealed = seal(&mut w, &patient()).unwrap();
    let tokens: Vec<String> = sealed["meta"]["tag"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["system"]
                .as_str()
                .unwrap()
                .starts_with(BLIND_INDEX_SYSTEM)
        })
        .map(|t| {
            format!(
                "{}|{}",
                t["system"].as_str().unwrap(),
                t["code"].as_str().unwrap()
            )
        })
        .collect();
    assert!(!tokens.is_empty());
    assert!(
        sealed
            .get("extension")
            .is_none_or(|e| !text(e).contains("blind"))
    );
    // What the gateway asks the server for `?identifier=urn:oid:…|12345`, `?birthdate=1974-12-25`,
    // `?family=chal` and `?given=pet` is on the resource: one of each `_tag` OR list.
    for (name, value) in [
        ("identifier", "urn:oid:1.2.36.146.595.217.0.1|12345"),
        ("identifier", "12345"),
        ("birthdate", "1974-12-25"),
        ("birthdate", "1974"),
        ("family", "chal"),
        ("family", "CHALMERS"),
        ("given", "pet"),
        ("name", "jim"),
    ] {
        let plan = plan_search(
            "Patient",
            &[(name.to_string(), value.to_string())],
            &rules,
            std::slice::from_ref(&index),
        )
        .unwrap();
        assert_eq!(plan.checked, vec![(name.to_string(), value.to_string())]);
        let (key, asked) = &plan.upstream[0];
        assert_eq!(key, "_tag");
        assert!(
            asked.split(',').any(|t| tokens.contains(&t.to_string())),
            "{name}={value}"
        );
    }
    // The same value in another resource gives the same token; another value another one.
    let mut other = patient();
    other["id"] = json!("p2");
    other["birthDate"] = json!("1980-01-01");
    let other = seal(&mut w, &other).unwrap();
    let ask = |name: &str, value: &str| {
        plan_search(
            "Patient",
            &[(name.into(), value.into())],
            &rules,
            std::slice::from_ref(&index),
        )
        .unwrap()
        .upstream[0]
            .1
            .clone()
    };
    let other_tags = text(&other["meta"]);
    let code = |asked: String| asked.rsplit('|').next().unwrap().to_string();
    assert!(other_tags.contains(&code(ask("identifier", "12345"))));
    assert!(!other_tags.contains(&code(ask("birthdate", "1974-12-25"))));
    // Readers never see tokens, whatever their key.
    let full = w.fx.key(ALL, 0);
    let (opened, _) = w.open(&sealed, "full", Some(&full));
    assert_eq!(opened, patient());
    let (masked, _) = w.open(&sealed, "none", None);
    assert!(!text(&masked).contains(BLIND_INDEX_SYSTEM));
    // A rule that asks for tokens without a secret is refused; so is input carrying tokens.
    let World { fx, headers } = &mut w;
    let err = Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
        .seal(&patient(), &rules)
        .unwrap_err();
    assert!(err.to_string().contains("no blind-index secret"), "{err}");
    let mut forged = patient();
    forged["meta"] = json!({"tag": [{"system": format!("{BLIND_INDEX_SYSTEM}Patient.birthDate/day"), "code": "00"}]});
    assert!(matches!(
        seal(&mut w, &forged),
        Err(SealError::AlreadySealed { .. })
    ));
}

/// Every node of the tree, as JSON pointers.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(object) => {
            for (k, v) in object {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn no_input_from_the_upstream_or_a_client_makes_it_panic_or_leak() {
    use rand_core::{RngCore, SeedableRng};
    let mut w = World::new();
    let rules = patient_rules(Granularity::Resource);
    // A resource, or the same resource in a Bundle (odd rounds).
    let bundle_of = |r: Value| json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"fullUrl": "urn:uuid:1", "resource": r, "search": {"mode": "match"}}]});
    let originals = [patient(), bundle_of(patient())];
    let sealed_forms = [w.seal(&originals[0], &rules), w.seal(&originals[1], &rules)];
    let full = w.fx.key(ALL, 0);
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    let replacements = [
        json!(null),
        json!(7),
        json!("x"),
        json!(true),
        json!([]),
        json!({}),
        json!([null]),
        json!([{"extension": [{"url": SEALED_ELEMENT, "valueBase64Binary": "AQ=="}]}]),
        json!({"extension": "not an array"}),
        json!({"extension": [{"url": SEALED_ELEMENT, "valueBase64Binary": 5}]}),
    ];
    let targets: Vec<Vec<String>> = sealed_forms
        .iter()
        .map(|s| {
            let mut t = Vec::new();
            pointers(s, String::new(), &mut t);
            t
        })
        .collect();
    let cache = cache();
    for round in 0..1500 {
        let which = round % 2;
        let (original, sealed, targets) =
            (&originals[which], &sealed_forms[which], &targets[which]);
        let mut mutated = sealed.clone();
        for _ in 0..=(round % 3) {
            let at = &targets[rng.next_u32() as usize % targets.len()];
            if let Some(node) = mutated.pointer_mut(at) {
                *node = replacements[rng.next_u32() as usize % replacements.len()].clone();
            }
        }
        // Opening never panics, never hands out an envelope or a header, and never
        // restores a value the reader's key does not open.
        let mut opened = mutated.clone();
        Reader::new("full", Some(&full), &cache, &w.headers, &w.fx.sealing).open(&mut opened);
        let printed = text(&opened);
        assert!(
            !printed.contains(SEALED_ELEMENT) && !printed.contains(SEALED_HEADER),
            "round {round}: {printed}"
        );
        let mut anonymous = mutated.clone();
        Reader::new("anonymous", None, &cache, &w.headers, &w.fx.sealing).open(&mut anonymous);
        assert!(!text(&anonymous).contains("1974-12-25"), "round {round}");
        // Sealing arbitrary input either works or says why; it never panics.
        let mut input = original.clone();
        let at = &targets[rng.next_u32() as usize % targets.len()];
        if let Some(node) = input.pointer_mut(at) {
            *node = replacements[rng.next_u32() as usize % replacements.len()].clone();
        }
        // (A resource of another type has no rules here: what it may carry is the policy's
        // decision, deny by default, not the transform's.)
        let kind = match which {
            0 => &input["resourceType"],
            _ if input["resourceType"] == "Bundle" => {
                &input["entry"][0]["resource"]["resourceType"]
            }
            _ => &input["resourceType"],
        };
        if let Ok(sealed_input) = w.try_seal(&input, &rules)
            && kind == "Patient"
        {
            assert!(
                !text(&sealed_input).contains("1974-12-25"),
                "{}\n{}",
                text(&input),
                text(&sealed_input)
            );
        }
    }
}

#[test]
fn stored_resources_move_to_a_later_period_in_place_and_old_keys_stop_opening() {
    use fhirseal_seal::{HeaderUpdate, UpdateError, update_headers};
    let mut w = World::new();
    let rules = patient_rules(Granularity::Resource);
    let one = w.seal(&patient(), &rules);
    let mut two = patient();
    two["id"] = json!("p2");
    let two = w.seal(&two, &rules);
    // As the upstream stores them in a search result: headers inside Bundle entries.
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": one}, {"resource": two}]});
    let headers = text(&bundle).matches(SEALED_HEADER).count();
    assert!(
        headers >= 2,
        "resource granularity puts headers in the resources"
    );
    let old_key = w.fx.key(ALL, 0);
    let new_key = w.fx.key(ALL, 1);

    let report =
        update_headers(&mut bundle, &w.fx.pp, 1, UpdateMode::Minimal, &mut w.fx.rng).unwrap();
    assert_eq!(
        report,
        HeaderUpdate {
            moved: headers,
            current: 0
        }
    );
    // Run again (a resumed job): nothing moves, nothing changes.
    let before = bundle.clone();
    let again =
        update_headers(&mut bundle, &w.fx.pp, 1, UpdateMode::Minimal, &mut w.fx.rng).unwrap();
    assert_eq!(
        again,
        HeaderUpdate {
            moved: 0,
            current: headers
        }
    );
    assert_eq!(bundle, before);

    for (i, id) in ["p1", "p2"].iter().enumerate() {
        let stored = &bundle["entry"][i]["resource"];
        let (opened, report) = w.open(stored, "new", Some(&new_key));
        assert_eq!(report.masked, 0, "{id}");
        let mut expected = patient();
        expected["id"] = json!(id);
        assert_eq!(opened, expected);
        // A copy of a period-0 key opens nothing of the updated resource.
        let (masked, report) = w.open(stored, "old", Some(&old_key));
        assert_eq!(report.opened, 0, "{id}");
        assert!(!text(&masked).contains("1974-12-25"));
    }

    // A header that cannot be read refuses the whole resource, which stays as it was.
    let mut broken = bundle.clone();
    broken["entry"][1]["resource"]["extension"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .filter(|e| e["url"] == SEALED_HEADER)
        .for_each(|e| e["valueBase64Binary"] = json!("AAAA"));
    let untouched = broken.clone();
    let err =
        update_headers(&mut broken, &w.fx.pp, 2, UpdateMode::Minimal, &mut w.fx.rng).unwrap_err();
    assert!(
        matches!(&err, UpdateError::Malformed { location } if location.starts_with("entry[1].resource.extension[")),
        "{err}"
    );
    assert_eq!(broken, untouched);
}

/// Every R4 complex data type with a `url` child, from the structure facts.
fn types_with_url() -> Vec<String> {
    let facts = fhirseal_fhir::structure::r4();
    include_str!("../../../../fhir-profiles/r4/elements.tsv")
        .lines()
        .filter_map(|line| line.split('\t').next()?.strip_suffix(".url"))
        // `MetadataResource` is an abstract resource the facts list among the complex types.
        .filter(|ty| !ty.contains('.') && *ty != "MetadataResource")
        .filter(|ty| facts.kind(ty) == Some(fhirseal_fhir::structure::Kind::Complex))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_sealed_element_keeps_no_url_in_clear_unless_it_is_an_extension() {
    const CANARY: &str = "http://canary.example/url-7d1f";
    let types = types_with_url();
    // Each type with a `url` child and an element of that type that a rule seals.
    let cases = [("Attachment", "Patient", "photo")];
    // A RelatedArtifact cannot be sealed whole (its placeholder would lack `type`): no
    // placeholder of it exists to keep a url; its `url` is sealed as a member, a primitive.
    let unsealable = [("RelatedArtifact", "ResearchStudy.relatedArtifact")];
    for (ty, path) in unsealable {
        let policy = AccessStructure::parse("role:physician").unwrap();
        assert!(
            ElementRule::new(path, policy, Granularity::Shared).is_err(),
            "{ty}"
        );
    }
    for ty in &types {
        assert!(
            ty == "Extension"
                || cases.iter().any(|(t, ..)| t == ty)
                || unsealable.iter().any(|(t, _)| t == ty),
            "{ty} has a url child: add it to the canary cases"
        );
    }
    assert!(types.iter().any(|t| t == "Attachment"), "{types:?}");
    for (ty, rtype, element) in cases {
        let mut w = World::new();
        let path = format!("{rtype}.{element}");
        let rules = rules_with(
            &[(
                rtype,
                &[(path.as_str(), "role:physician", Granularity::Shared)],
            )],
            Narrative::Seal,
            Displays::Matching,
        );
        let original = json!({
            "resourceType": rtype,
            "id": "c1",
            "status": "active",
            element: [{"url": CANARY, "title": "canary"}]
        });
        let sealed = w.seal(&original, &rules);
        assert!(!text(&sealed).contains(CANARY), "{ty}: {sealed}");
        assert!(!text(&sealed).contains("canary\""), "{ty}: {sealed}");
        let full = w.fx.key(ALL, 0);
        let (opened, _) = w.open(&sealed, "full", Some(&full));
        assert_eq!(opened[element], original[element], "{ty}");
    }
}
