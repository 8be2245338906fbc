//! `shared_header_ids`: the shared headers a reader needs, found in real sealed resources, and
//! nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::collections::{HashMap, HashSet};

use crate::support::fixture::{self, ALL, Fixture, cache};
use base64::Engine as _;
use fhirseal_envelope::{Granularity, Header, HeaderId};
use fhirseal_seal::shape::{SEALED_ELEMENT, SEALED_HEADER};
use fhirseal_seal::{
    Displays, ElementRule, HeaderLookup, Narrative, OpenReport, Reader, RuleSet, Rules, SealError,
    Sealer, SharedHeaders, shared_header_ids,
};
use rshabe::AccessStructure;
use serde_json::{Value, json};

struct World {
    fx: Fixture,
    headers: SharedHeaders,
}

impl World {
    fn new() -> Self {
        Self {
            fx: Fixture::new(11),
            headers: SharedHeaders::new(),
        }
    }

    fn seal(&mut self, resource: &Value, rules: &Rules) -> Value {
        let Self { fx, headers } = self;
        Sealer::new(&fx.pp, &fx.sealing, 0, headers, &mut fx.rng)
            .seal(resource, rules)
            .unwrap()
            .resource
    }

    /// Opens `sealed` for a reader holding every attribute, handed only the headers `ids` (from
    /// the book).
    fn open(&mut self, ids: &[HeaderId], sealed: &mut Value) -> OpenReport {
        let found = Only(
            ids.iter()
                .map(|id| (*id, self.headers.header(*id).unwrap()))
                .collect(),
        );
        let key = self.fx.key(ALL, 0);
        Reader::new("full", Some(&key), &cache(), &found, &self.fx.sealing).open(sealed)
    }

    /// The ids of the headers created since the last call.
    fn created(&mut self) -> Vec<HeaderId> {
        self.headers.take_created().iter().map(Header::id).collect()
    }
}

/// Only the headers it was given: what the gateway's store hands the reader.
struct Only(HashMap<HeaderId, Header>);

impl HeaderLookup for Only {
    fn header(&self, id: HeaderId) -> Option<Header> {
        self.0.get(&id).cloned()
    }
}

/// `(type, path, structure, granularity)`, narratives neutral and displays kept, so that each
/// structure makes exactly one header.
fn rules(list: &[(&str, &str, &str, Granularity)]) -> Rules {
    let mut by_type: Vec<(&str, Vec<ElementRule>)> = Vec::new();
    for (rtype, path, policy, granularity) in list {
        let rule =
            ElementRule::new(path, AccessStructure::parse(policy).unwrap(), *granularity).unwrap();
        match by_type.iter_mut().find(|(t, _)| t == rtype) {
            Some((_, rules)) => rules.push(rule),
            None => by_type.push((rtype, vec![rule])),
        }
    }
    Rules::new(by_type.into_iter().map(|(rtype, rules)| {
        RuleSet::new(rtype, rules, Narrative::Neutral, Displays::Keep).unwrap()
    }))
    .unwrap()
}

/// A Patient's birth date sealed for physicians, an Observation's value for nurses: one shared
/// header each.
fn birth_date_and_value() -> Rules {
    rules(&[
        (
            "Patient",
            "Patient.birthDate",
            "role:physician",
            Granularity::Shared,
        ),
        (
            "Observation",
            "Observation.value[x]",
            "role:nurse",
            Granularity::Shared,
        ),
    ])
}

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": "female", "birthDate": "1980-02-03",
           "name": [{"family": "Doe", "given": ["Ann"]}]})
}

fn observation(id: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "hr"},
           "valueQuantity": {"value": 61, "unit": "/min"}})
}

fn set(ids: &[HeaderId]) -> HashSet<HeaderId> {
    ids.iter().copied().collect()
}

/// An envelope of `sealed` (the first found), as base64.
fn some_envelope(sealed: &Value) -> String {
    let text = sealed.to_string();
    let at = text.find(SEALED_ELEMENT).unwrap();
    let rest = &text[at..];
    let start = rest.find("valueBase64Binary\":\"").unwrap() + "valueBase64Binary\":\"".len();
    let end = start + rest[start..].find('"').unwrap();
    rest[start..end].to_string()
}

/// `envelope` with its header id replaced by `id`.
fn with_header(envelope: &str, id: [u8; 16]) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(envelope).unwrap();
    bytes[1..17].copy_from_slice(&id);
    engine.encode(bytes)
}

fn sealed_element(envelope: &str) -> Value {
    json!({"url": SEALED_ELEMENT, "valueBase64Binary": envelope})
}

#[test]
fn a_shared_resource_names_each_of_its_headers_once() {
    let mut w = World::new();
    let r = rules(&[
        (
            "Patient",
            "Patient.birthDate",
            "role:physician",
            Granularity::Shared,
        ),
        (
            "Patient",
            "Patient.gender",
            "role:physician",
            Granularity::Shared,
        ),
        (
            "Patient",
            "Patient.name",
            "role:physician or role:nurse",
            Granularity::Shared,
        ),
    ]);
    let sealed = w.seal(&patient("p1"), &r);
    let created = w.created();
    assert_eq!(created.len(), 2, "one header per structure");
    let ids = shared_header_ids(&sealed);
    assert_eq!(ids.len(), 2, "deduplicated: {ids:?}");
    assert_eq!(set(&ids), set(&created));
}

#[test]
fn bundle_entries_at_any_depth_in_first_seen_order() {
    let mut w = World::new();
    let r = birth_date_and_value();
    let obs = w.seal(&observation("o1"), &r);
    let [obs_header] = w.created()[..] else {
        panic!()
    };
    let pat = w.seal(&patient("p1"), &r);
    let [patient_header] = w.created()[..] else {
        panic!()
    };
    let obs2 = w.seal(&observation("o2"), &r);
    assert!(
        w.created().is_empty(),
        "the same structure shares its header"
    );

    let bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": obs}, {"resource": pat}, {"resource": obs2}]});
    assert_eq!(shared_header_ids(&bundle), [obs_header, patient_header]);

    let nested = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": pat}]}},
        {"resource": obs}]});
    assert_eq!(shared_header_ids(&nested), [patient_header, obs_header]);

    // A JSON array is walked item by item, as the reader does.
    assert_eq!(
        shared_header_ids(&json!([obs, pat])),
        [obs_header, patient_header]
    );
}

#[test]
fn headers_travelling_in_the_resource_are_left_out() {
    let mut w = World::new();
    let only_local = rules(&[(
        "Patient",
        "Patient.birthDate",
        "role:physician",
        Granularity::Resource,
    )]);
    let sealed = w.seal(&patient("p1"), &only_local);
    assert!(sealed.to_string().contains(SEALED_HEADER));
    assert!(shared_header_ids(&sealed).is_empty());

    let mixed = rules(&[
        (
            "Patient",
            "Patient.birthDate",
            "role:physician",
            Granularity::Resource,
        ),
        ("Patient", "Patient.name", "role:nurse", Granularity::Shared),
    ]);
    let sealed = w.seal(&patient("p2"), &mixed);
    let created = w.created();
    assert_eq!(
        created.len(),
        1,
        "only the shared one is created for the store"
    );
    assert_eq!(shared_header_ids(&sealed), created);

    // A malformed sealed-header is not used by the reader, which then looks the envelope's
    // header up like a shared one: so it is listed.
    let mut broken = w.seal(&patient("p3"), &only_local);
    let envelope = some_envelope(&broken);
    let id = fhirseal_envelope::Envelope::from_base64(&envelope)
        .unwrap()
        .header();
    for extension in broken["extension"].as_array_mut().unwrap() {
        if extension["url"] == SEALED_HEADER {
            extension["valueBase64Binary"] = json!("AAAA");
        }
    }
    assert_eq!(shared_header_ids(&broken), [id]);
}

#[test]
fn contained_resources_are_counted_with_their_container() {
    let mut w = World::new();
    let r = rules(&[(
        "Patient",
        "Patient.birthDate",
        "role:physician",
        Granularity::Shared,
    )]);
    let original = json!({
        "resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "inline", "birthDate": "1980-01-01"}],
        "subject": {"reference": "#inline"}
    });
    let sealed = w.seal(&original, &r);
    assert_eq!(shared_header_ids(&sealed), w.created());
}

#[test]
fn malformed_envelopes_and_stray_places_are_skipped() {
    let mut w = World::new();
    let r = rules(&[(
        "Patient",
        "Patient.birthDate",
        "role:physician",
        Granularity::Shared,
    )]);
    let mut sealed = w.seal(&patient("p1"), &r);
    let created = w.created();
    let envelope = some_envelope(&sealed);
    let truncated = &envelope[..40];
    let unknown = with_header(&envelope, [0xab; 16]);
    let mut version = base64::engine::general_purpose::STANDARD
        .decode(&envelope)
        .unwrap();
    version[0] = 9;
    let version = base64::engine::general_purpose::STANDARD.encode(version);
    sealed["name"] = json!([
        {"extension": [sealed_element("!!! not base64")]},
        {"extension": [sealed_element(truncated)]},
        {"extension": [sealed_element(&version)]},
        {"extension": [{"url": SEALED_ELEMENT, "valueString": unknown}]},
        {"extension": [sealed_element(&unknown)]},
    ]);
    let unknown_id = HeaderId::from_bytes([0xab; 16]);
    assert_eq!(
        shared_header_ids(&sealed),
        [created[0], unknown_id],
        "only well-formed envelopes, in document order"
    );

    // Where sealing never writes in a Bundle (its own members, an entry's search/request/
    // response), envelopes are masked by the reader, never opened: not listed.
    let stray = with_header(&envelope, [0xcd; 16]);
    let bundle = json!({"resourceType": "Bundle", "type": "searchset",
    "extension": [sealed_element(&stray)],
    "entry": [
        {"search": {"extension": [sealed_element(&stray)]}, "resource": patient("plain")},
        {"response": {"status": "200", "outcome": {"resourceType": "OperationOutcome",
            "extension": [sealed_element(&stray)]}}},
        "not an entry",
        {"resource": "not a resource"}
    ]});
    assert!(shared_header_ids(&bundle).is_empty());

    for junk in [
        json!(null),
        json!("Patient"),
        json!(12),
        json!({"resourceType": "Bundle", "entry": {"resource": patient("p")}}),
        json!({"resourceType": "Bundle", "entry": [[{"resource": patient("p")}]]}),
    ] {
        assert!(shared_header_ids(&junk).is_empty(), "{junk}");
    }
}

#[test]
fn the_listed_headers_are_all_a_reader_needs() {
    let mut w = World::new();
    let r = fixture::rules();
    let condition = json!({"resourceType": "Condition", "id": "c1",
        "subject": {"reference": "Patient/p1"}, "code": {"text": "angina"}});
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient("p1")}, {"resource": observation("o1")}, {"resource": condition}]});
    let sealed = w.seal(&bundle, &r);
    let ids = shared_header_ids(&sealed);
    assert_eq!(set(&ids), set(&w.created()));
    let mut opened = sealed.clone();
    let report = w.open(&ids, &mut opened);
    assert_eq!(opened, bundle);
    assert_eq!(report.masked, 0);
    assert!(report.opened > 0);

    // Without them, the shared elements stay masked.
    let mut masked = sealed;
    let report = w.open(&[], &mut masked);
    assert!(report.masked > 0);
    assert_ne!(masked, bundle);
}

/// `needed_headers` finds in one walk what `shared_header_ids` and `carries_headers` find in
/// two, wherever a header sits: on a resource's root, in a contained resource, in a Bundle's own
/// members, an entry's other members, a nested Bundle, or in what is no Bundle entry at all.
#[test]
fn one_walk_finds_the_ids_and_any_carried_header_as_two_would() {
    let mut w = World::new();
    let local = rules(&[(
        "Patient",
        "Patient.birthDate",
        "role:physician",
        Granularity::Resource,
    )]);
    let shared = rules(&[(
        "Patient",
        "Patient.birthDate",
        "role:physician",
        Granularity::Shared,
    )]);
    let carrying = w.seal(&patient("p1"), &local);
    let plain_sealed = w.seal(&patient("p2"), &shared);
    let header = carrying["extension"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"] == SEALED_HEADER)
        .unwrap()
        .clone();
    let contained = json!({"resourceType": "Observation", "id": "o1",
        "contained": [carrying], "subject": {"reference": "#p1"}});
    let bundle = |entries: Value, extra: Value| {
        let mut b = json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let values = [
        json!(null),
        json!("text"),
        plain_sealed.clone(),
        carrying.clone(),
        contained,
        json!([plain_sealed, carrying]),
        bundle(json!([{"resource": plain_sealed}]), json!({})),
        bundle(json!([{"resource": carrying}]), json!({})),
        bundle(
            json!([{"resource": plain_sealed}]),
            json!({"meta": {"extension": [header]}}),
        ),
        bundle(
            json!([{"resource": plain_sealed,
                "response": {"outcome": {"resourceType": "OperationOutcome",
                    "extension": [header]}}}]),
            json!({}),
        ),
        bundle(json!([{"search": {"extension": [header]}}]), json!({})),
        bundle(json!([header]), json!({})),
        bundle(json!([[{"resource": carrying}]]), json!({})),
        bundle(json!({"resource": carrying}), json!({})),
        bundle(
            json!([{"resource": bundle(json!([{"resource": carrying}]), json!({}))}]),
            json!({}),
        ),
        bundle(json!([{"resource": plain_sealed}]), header),
    ];
    let mut carried = 0;
    for value in &values {
        let needed = fhirseal_seal::needed_headers(value);
        assert_eq!(needed.ids, shared_header_ids(value), "{value}");
        assert_eq!(
            needed.carried,
            fhirseal_seal::shape::carries_headers(value),
            "{value}"
        );
        carried += usize::from(needed.carried);
    }
    // Every value carries a header but null, the text, the shared-only resource and its Bundle.
    assert_eq!(carried, values.len() - 4);
}

/// A sealer over known headers only seals under the headers the book holds, exactly as one that
/// may make headers would, and refuses (making nothing) what needs another header: a structure
/// without one of its period, a period the book has none of, a resource granularity.
#[test]
fn a_sealer_over_known_headers_makes_none_and_seals_as_the_growing_one_does() {
    let mut w = World::new();
    let shared = birth_date_and_value();
    let own = rules(&[(
        "Patient",
        "Patient.birthDate",
        "role:physician",
        Granularity::Resource,
    )]);
    let known_only = |w: &mut World, resource: &Value, rules: &Rules, period: u64| {
        let World { fx, headers } = w;
        Sealer::known_headers_only(&fx.pp, &fx.sealing, period, headers, &mut fx.rng)
            .seal(resource, rules)
    };
    // An empty book: nothing to seal under, nothing made.
    let refused = known_only(&mut w, &patient("p1"), &shared, 0);
    assert!(
        matches!(refused, Err(SealError::HeaderNeeded)),
        "{refused:?}"
    );
    assert!(w.created().is_empty());

    // Once the growing sealer made the Patient's header, the Patient seals without a new one,
    // under it; the Observation's structure still has none.
    let grown = w.seal(&patient("p0"), &shared);
    let made = w.created();
    assert_eq!(made.len(), 1);
    let sealed = known_only(&mut w, &patient("p1"), &shared, 0).unwrap();
    assert_eq!(set(&shared_header_ids(&sealed.resource)), set(&made));
    assert_eq!(sealed.elements, 1);
    assert!(w.created().is_empty());
    let refused = known_only(&mut w, &observation("o1"), &shared, 0);
    assert!(
        matches!(refused, Err(SealError::HeaderNeeded)),
        "{refused:?}"
    );
    // Nor for a later period, nor for a resource's own header.
    let refused = known_only(&mut w, &patient("p1"), &shared, 1);
    assert!(
        matches!(refused, Err(SealError::HeaderNeeded)),
        "{refused:?}"
    );
    let refused = known_only(&mut w, &patient("p1"), &own, 0);
    assert!(
        matches!(refused, Err(SealError::HeaderNeeded)),
        "{refused:?}"
    );
    assert!(w.created().is_empty());

    // What it sealed opens as the growing sealer's does.
    for (mut sealed, id) in [(grown, "p0"), (sealed.resource, "p1")] {
        let report = w.open(&made, &mut sealed);
        assert_eq!(sealed, patient(id));
        assert_eq!((report.opened, report.masked, report.forged), (1, 0, 0));
    }
}
