//! Sealed content the upstream's operator writes from the public parameters, replaces or moves
//! (issue 13): every reader, entitled or not, sees it masked and flagged as forged, never its
//! value; the honest elements beside it open as before.

use std::collections::HashMap;

use fhirseal_envelope::{Envelope, Header, HeaderId, SealingKey};
use fhirseal_seal::shape::{FHIRSEAL_CODE_SYSTEM, FORGED_CODE};
use fhirseal_seal::{HeaderLookup, OpenReport};

use super::*;

/// The forger's value.
const FORGED_BIRTH: &str = "2001-02-03";

/// The headers the upstream serves after its operator's changes: `replaced` over the genuine ones.
struct Upstream<'a> {
    genuine: &'a SharedHeaders,
    replaced: HashMap<HeaderId, Header>,
}

impl HeaderLookup for Upstream<'_> {
    fn header(&self, id: HeaderId) -> Option<Header> {
        self.replaced
            .get(&id)
            .cloned()
            .or_else(|| self.genuine.header(id))
    }
}

impl<'a> Upstream<'a> {
    fn with(genuine: &'a SharedHeaders, replaced: impl IntoIterator<Item = Header>) -> Self {
        let replaced = replaced.into_iter().map(|h| (h.id(), h)).collect();
        Self { genuine, replaced }
    }
}

/// `resource` sealed "the honest way" by someone holding only the public parameters: FHIRseal's
/// own sealer with a sealing key of its own. Returns it and the shared headers it made.
fn forge(w: &mut Readers, resource: &Value, rules: &Rules) -> (Value, Vec<Header>) {
    let fx = &mut w.w.fx;
    let own = SealingKey::generate(&mut fx.rng);
    let mut book = SharedHeaders::new();
    let sealed = Sealer::new(&fx.pp, &own, 0, &mut book, &mut fx.rng)
        .seal(resource, rules)
        .unwrap()
        .resource;
    (sealed, book.take_created())
}

/// A sealing world and its readers: one holding every attribute, a nurse (who may open none of
/// the elements forged below) and a reader without a key.
struct Readers {
    w: World,
    readers: Vec<(&'static str, Option<DecryptionKey>)>,
}

impl Readers {
    fn new() -> Self {
        let mut w = World::new();
        let readers = vec![
            ("full", Some(w.fx.key(ALL, 0))),
            ("nurse", Some(w.fx.key(&["role:nurse"], 0))),
            ("anonymous", None),
        ];
        Self { w, readers }
    }
}

fn read(
    w: &Readers,
    upstream: &dyn HeaderLookup,
    sealed: &Value,
    holder: &str,
    key: Option<&DecryptionKey>,
) -> (Value, OpenReport) {
    let cache = cache();
    let mut out = sealed.clone();
    let report = Reader::new(holder, key, &cache, upstream, &w.w.fx.sealing).open(&mut out);
    (out, report)
}

fn forged_label_count(opened: &Value) -> usize {
    opened["meta"]["security"].as_array().map_or(0, |labels| {
        labels
            .iter()
            .filter(|l| l["system"] == FHIRSEAL_CODE_SYSTEM && l["code"] == FORGED_CODE)
            .count()
    })
}

/// Checks what every reader sees of `tampered`: `_birthDate` flagged as forged, the forged value
/// nowhere, the label once; the full reader opens the name (another header) as sealed.
fn assert_birth_date_forged(w: &Readers, upstream: &dyn HeaderLookup, tampered: &Value) {
    for (holder, key) in &w.readers {
        let (opened, report) = read(w, upstream, tampered, holder, key.as_ref());
        assert!(report.forged >= 1, "{holder}: {report:?}");
        assert!(
            report
                .forged_elements
                .contains(&"Patient/p1 Patient.birthDate".to_string()),
            "{holder}: {report:?}"
        );
        assert_eq!(
            opened["_birthDate"],
            json!({"extension": [dar_forged()]}),
            "{holder}"
        );
        assert!(opened.get("birthDate").is_none(), "{holder}");
        assert!(!text(&opened).contains(FORGED_BIRTH), "{holder}");
        assert!(!text(&opened).contains(SEALED_ELEMENT), "{holder}");
        assert_eq!(forged_label_count(&opened), 1, "{holder}");
        if *holder == "full" {
            assert_eq!(opened["name"], patient()["name"]);
            assert_eq!(report.masked, 0, "{report:?}");
        }
    }
}

#[test]
fn an_element_forged_under_a_header_of_its_own_is_flagged_for_every_reader() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = r.w.seal(&patient(), &rules);
    let mut wanted = patient();
    wanted["birthDate"] = json!(FORGED_BIRTH);
    let (forged, forged_headers) = forge(&mut r, &wanted, &rules);
    let mut tampered = sealed;
    tampered["_birthDate"] = forged["_birthDate"].clone();
    let upstream = Upstream::with(&r.w.headers, forged_headers);
    assert_birth_date_forged(&r, &upstream, &tampered);
    let (_, report) = read(&r, &upstream, &tampered, "full", r.readers[0].1.as_ref());
    assert_eq!(report.forged, 1, "only the forged element: {report:?}");
}

#[test]
fn a_header_replaced_upstream_flags_every_element_under_it() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = r.w.seal(&patient(), &rules);
    let id = Envelope::from_base64(&envelope_at(&sealed, "/_birthDate"))
        .unwrap()
        .header();
    let genuine = r.w.headers.header(id).unwrap().to_bytes();
    // The forger's header for the same structure, under the genuine id...
    let (_, forged_headers) = forge(&mut r, &patient(), &rules);
    let policy =
        r.w.headers
            .header(id)
            .unwrap()
            .ciphertext()
            .policy()
            .clone();
    let own = forged_headers
        .iter()
        .find(|h| *h.ciphertext().policy() == policy)
        .unwrap()
        .to_bytes();
    let same_id = [&own[..1], &genuine[1..17], &own[17..]].concat();
    // ...and the genuine header written back as version 1 (no tag).
    let v1 = [&[1u8][..], &genuine[1..18], &genuine[50..]].concat();
    for replacement in [same_id, v1] {
        let header = Header::from_bytes(&replacement).unwrap();
        assert_eq!(header.id(), id);
        let upstream = Upstream::with(&r.w.headers, [header]);
        assert_birth_date_forged(&r, &upstream, &sealed);
    }
}

#[test]
fn an_envelope_transplanted_from_another_patient_is_flagged_for_every_reader() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = r.w.seal(&patient(), &rules);
    let mut other = patient();
    other["id"] = json!("p2");
    other["birthDate"] = json!(FORGED_BIRTH);
    let p2 = r.w.seal(&other, &rules);
    let mut tampered = sealed;
    set_envelope(
        &mut tampered,
        "/_birthDate",
        &envelope_at(&p2, "/_birthDate"),
    );
    let upstream = Upstream::with(&r.w.headers, []);
    assert_birth_date_forged(&r, &upstream, &tampered);
}

#[test]
fn a_version_1_envelope_is_flagged_for_every_reader() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = r.w.seal(&patient(), &rules);
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(envelope_at(&sealed, "/_birthDate")).unwrap();
    let v1 = [&[1u8][..], &bytes[1..105], &bytes[121..]].concat();
    let mut tampered = sealed;
    set_envelope(&mut tampered, "/_birthDate", &b64.encode(v1));
    let upstream = Upstream::with(&r.w.headers, []);
    assert_birth_date_forged(&r, &upstream, &tampered);
}

#[test]
fn a_swapped_header_ciphertext_is_forged_for_the_entitled_and_masked_for_others() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = r.w.seal(&patient(), &rules);
    let id = Envelope::from_base64(&envelope_at(&sealed, "/_birthDate"))
        .unwrap()
        .header();
    let genuine = r.w.headers.header(id).unwrap();
    let fx = &mut r.w.fx;
    let (ciphertext, _) =
        rshabe::encrypt(&fx.pp, genuine.ciphertext().policy(), 0, &mut fx.rng).unwrap();
    let swapped = [&genuine.to_bytes()[..50], &ciphertext.to_bytes()[..]].concat();
    let upstream = Upstream::with(&r.w.headers, [Header::from_bytes(&swapped).unwrap()]);
    let (opened, report) = read(&r, &upstream, &sealed, "full", r.readers[0].1.as_ref());
    assert!(report.forged >= 1 && report.masked == 0, "{report:?}");
    assert_eq!(opened["_birthDate"], json!({"extension": [dar_forged()]}));
    assert_eq!(opened["name"], patient()["name"]);
    // Its tag verifies (the public update rewrites group elements): whoever may not open it
    // cannot tell, and sees it masked.
    let (opened, report) = read(&r, &upstream, &sealed, "nurse", r.readers[1].1.as_ref());
    assert_eq!(report.forged, 0, "{report:?}");
    assert_eq!(opened["_birthDate"], json!({"extension": [dar()]}));
}

#[test]
fn a_resource_forged_whole_with_its_own_headers_opens_nothing() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Resource);
    let mut wanted = patient();
    wanted["birthDate"] = json!(FORGED_BIRTH);
    let (forged, _) = forge(&mut r, &wanted, &rules);
    let upstream = Upstream::with(&r.w.headers, []);
    for (holder, key) in &r.readers {
        let (opened, report) = read(&r, &upstream, &forged, holder, key.as_ref());
        assert_eq!(
            (report.opened, report.masked),
            (0, 0),
            "{holder}: {report:?}"
        );
        assert!(report.forged >= 5, "{holder}: {report:?}");
        assert!(!text(&opened).contains(FORGED_BIRTH), "{holder}");
        assert_eq!(forged_label_count(&opened), 1, "{holder}");
    }
}

#[test]
fn only_the_gateway_says_what_is_forged() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let mut sealed = r.w.seal(&patient(), &rules);
    sealed["meta"]["security"]
        .as_array_mut()
        .unwrap()
        .push(json!({"system": FHIRSEAL_CODE_SYSTEM, "code": FORGED_CODE}));
    let full = r.w.fx.key(ALL, 0);
    let (opened, report) = r.w.open(&sealed, "full", Some(&full));
    assert_eq!(report.forged, 0);
    assert_eq!(
        opened,
        patient(),
        "the upstream's label is gone with the seal's"
    );
}

// --- Plaintext where the rules say sealed (issue 13) ---------------------------------------

/// `sealed` read by every reader with the rules checked.
fn read_checked(
    w: &Readers,
    sealed: &Value,
    rules: &Rules,
) -> Vec<(&'static str, Value, OpenReport)> {
    let upstream = Upstream::with(&w.w.headers, []);
    w.readers
        .iter()
        .map(|(holder, key)| {
            let cache = cache();
            let mut out = sealed.clone();
            let report = Reader::new(holder, key.as_ref(), &cache, &upstream, &w.w.fx.sealing)
                .with_rules(rules)
                .open(&mut out);
            (*holder, out, report)
        })
        .collect()
}

fn forged_paths(report: &OpenReport) -> Vec<&str> {
    report.forged_elements.iter().map(String::as_str).collect()
}

#[test]
fn plaintext_in_sealed_patient_slots_is_forged_for_every_reader() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let mut tampered = r.w.seal(&patient(), &rules);
    // The operator writes values in clear where placeholders were: a primitive beside its
    // placeholder, a complex item, a whole repeating element, and the narrative.
    tampered["birthDate"] = json!(FORGED_BIRTH);
    tampered["name"][1] = json!({"family": "Forger"});
    tampered["telecom"] = json!([{"system": "phone", "value": "000-FORGED"}]);
    tampered["text"] = json!({"status": "generated",
        "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">FORGED narrative</div>"});
    for (holder, opened, report) in read_checked(&r, &tampered, &rules) {
        assert_eq!(
            forged_paths(&report),
            [
                "Patient/p1 Patient.birthDate",
                "Patient/p1 Patient.name[1]",
                "Patient/p1 Patient.telecom[0]",
                "Patient/p1 Patient.text",
            ],
            "{holder}"
        );
        let printed = text(&opened);
        for never in [FORGED_BIRTH, "Forger", "000-FORGED", "FORGED narrative"] {
            assert!(!printed.contains(never), "{holder}: {printed}");
        }
        assert!(opened.get("birthDate").is_none(), "{holder}");
        let placeholder = json!({"extension": [dar_forged()]});
        assert_eq!(opened["_birthDate"], placeholder, "{holder}");
        assert_eq!(opened["name"][1], placeholder, "{holder}");
        assert_eq!(opened["telecom"][0], placeholder, "{holder}");
        assert_eq!(
            opened["text"]["extension"],
            json!([dar_forged()]),
            "{holder}"
        );
        assert_eq!(forged_label_count(&opened), 1, "{holder}");
        // The honest element beside them still opens for whoever may.
        if holder == "full" {
            assert_eq!(opened["name"][0], patient()["name"][0]);
            assert_eq!(opened["identifier"], patient()["identifier"]);
        }
    }
}

#[test]
fn a_plaintext_observation_value_is_forged_and_its_dataabsentreason_coded_error() {
    let mut r = Readers::new();
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
                    "Observation.interpretation",
                    "role:physician",
                    Granularity::Shared,
                ),
            ],
        )],
        Narrative::Seal,
        Displays::All,
    );
    let original = json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "glucose"}, "subject": {"reference": "Patient/p1", "display": "Peter"},
        "valueQuantity": {"value": 5.5, "unit": "mmol/L"},
        "interpretation": [{"text": "normal"}]});
    let sealed = r.w.seal(&original, &rules);
    // The stored value replaced by one in clear (its placeholder taken away), and a display.
    let mut tampered = sealed.clone();
    tampered
        .as_object_mut()
        .unwrap()
        .shift_remove("dataAbsentReason");
    tampered["valueQuantity"] = json!({"value": 99.9, "unit": "mmol/L"});
    tampered["subject"]["display"] = json!("Forged Name");
    for (holder, opened, report) in read_checked(&r, &tampered, &rules) {
        assert_eq!(
            forged_paths(&report),
            [
                "Observation/o1 Observation.value[x]",
                "Observation/o1 Observation.subject.display",
            ],
            "{holder}"
        );
        assert!(opened.get("valueQuantity").is_none(), "{holder}");
        assert_eq!(
            opened["dataAbsentReason"]["coding"][0]["code"], "error",
            "{holder}"
        );
        assert_eq!(
            opened["subject"]["_display"],
            json!({"extension": [dar_forged()]})
        );
        assert!(!text(&opened).contains("99.9") && !text(&opened).contains("Forged Name"));
        if holder == "full" {
            assert_eq!(opened["interpretation"], original["interpretation"]);
        }
    }
    // Untouched, the same resource reads as before: nothing is flagged.
    for (holder, _, report) in read_checked(&r, &sealed, &rules) {
        assert_eq!(report.forged, 0, "{holder}: {report:?}");
    }
}

#[test]
fn what_the_rules_do_not_seal_stays_in_clear_and_is_not_flagged() {
    let mut r = Readers::new();
    let rules = patient_rules(Granularity::Shared);
    let sealed = r.w.seal(&patient(), &rules);
    let mut tampered = sealed;
    tampered["gender"] = json!("female");
    tampered["identifier"][0]["value"] = json!("changed-mrn");
    tampered["contact"][0]["name"] = json!({"family": "Someone"});
    for (holder, opened, report) in read_checked(&r, &tampered, &rules) {
        assert_eq!(report.forged, 0, "{holder}: {report:?}");
        assert_eq!(forged_label_count(&opened), 0, "{holder}");
        assert_eq!(opened["gender"], "female", "{holder}");
        assert_eq!(opened["identifier"][0]["value"], "changed-mrn", "{holder}");
        assert_eq!(
            opened["contact"][0]["name"]["family"], "Someone",
            "{holder}"
        );
    }
    // A resource whose type has no rules, and one without anything sealed, are left alone.
    let plain = json!({"resourceType": "Patient", "id": "p9", "gender": "male",
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"}});
    let organization = json!({"resourceType": "Organization", "id": "o", "name": "St Mary"});
    for resource in [plain, organization] {
        for (holder, opened, report) in read_checked(&r, &resource, &rules) {
            assert_eq!(report, OpenReport::default(), "{holder}");
            assert_eq!(opened, resource, "{holder}");
        }
    }
}
