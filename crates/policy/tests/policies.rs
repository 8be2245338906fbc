//! The shipped policies load and decide as their comments say; broken policies yield their
//! error messages; decisions are deny-by-default and independent of rule and file order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::PathBuf;

use fhirseal_fhir::Principal;
use fhirseal_fhir::rest::Interaction;
use fhirseal_policy::{Decision, Policy, Request, Search};
use proptest::prelude::*;
use serde_json::{Value, json};

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fhir-profiles/policies")
}

fn shipped(name: &str) -> Policy {
    Policy::from_paths(&[policies_dir().join(name)]).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

fn principal(claims: Value) -> Principal {
    Principal::from_claims(&claims).unwrap()
}

fn physician() -> Principal {
    principal(json!({"sub": "dr", "fhirUser": "Practitioner/dr",
        "practitioner_roles": [{"code": ["doctor"], "specialty": ["394579002"], "organization": "Organization/st-mary"}]}))
}

fn nurse() -> Principal {
    principal(
        json!({"sub": "rn", "fhirUser": "Practitioner/rn", "practitioner_roles": [{"code": ["224535009"]}]}),
    )
}

fn patient(id: &str) -> Principal {
    principal(json!({"sub": id, "fhirUser": format!("Patient/{id}")}))
}

fn request(interaction: Interaction, resource_type: &str, patient: Option<&str>) -> Request {
    Request {
        interaction,
        resource_type: resource_type.into(),
        patient: patient.map(str::to_string),
        consent: Default::default(),
    }
}

fn permitted(policy: &Policy, who: &Principal, req: &Request) -> bool {
    matches!(policy.decide(who, req), Decision::Permit(_))
}

#[test]
fn every_shipped_policy_loads_and_is_evaluated() {
    let dir = std::fs::read_dir(policies_dir()).unwrap();
    let mut names: Vec<String> = dir
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "general-hospital.toml",
            "hiv-behavioural-health.toml",
            "part2-substance-use.toml",
            "research-deidentified.toml"
        ]
    );
    for name in &names {
        let policy = shipped(name);
        assert!(
            !policy.roles().is_empty()
                && !policy.access().is_empty()
                && !policy.protections().is_empty()
        );
        // Deny by default: a caller no role matches gets nothing, anywhere.
        let stranger = principal(json!({"sub": "x"}));
        for rtype in ["Patient", "Observation", "Condition", "Basic"] {
            assert!(
                !permitted(&policy, &stranger, &request(Interaction::Read, rtype, None)),
                "{name}: {rtype}"
            );
        }
    }
    assert_eq!(
        Policy::embedded_default().unwrap().name(),
        shipped("general-hospital.toml").name()
    );
}

#[test]
fn the_general_hospital_decides_as_written() {
    let policy = shipped("general-hospital.toml");
    let dr = physician();
    let held = policy.attributes(&dr);
    let attributes: Vec<&str> = held.names().collect();
    assert_eq!(
        attributes,
        [
            "org:st-mary",
            "org:st-mary/dept:cardiology",
            "role:physician"
        ]
    );

    let read_obs = request(Interaction::Read, "Observation", Some("Patient/example"));
    let Decision::Permit(o) = policy.decide(&dr, &read_obs) else {
        panic!("physicians read observations")
    };
    assert_eq!(o.access, "clinicians work with clinical records");
    let value = o
        .elements
        .iter()
        .find(|e| e.path == "Observation.value[x]")
        .unwrap();
    assert!(value.open);
    assert_eq!(value.search, Search::Filter);
    assert_eq!(
        value.readers.to_string(),
        "role:physician or role:nurse or patient:Patient/example"
    );

    // Patients read their own record only, and see their own protected elements.
    let own = patient("example");
    let Decision::Permit(o) = policy.decide(&own, &read_obs) else {
        panic!("a patient reads their own")
    };
    assert!(o.elements.iter().all(|e| e.open));
    let other = request(
        Interaction::Read,
        "Observation",
        Some("Patient/someone-else"),
    );
    let Decision::Deny(why) = policy.decide(&own, &other) else {
        panic!("not someone else's")
    };
    assert!(why.contains("patients read their own record"), "{why}");
    assert!(!permitted(
        &policy,
        &own,
        &request(Interaction::Update, "Observation", Some("Patient/example"))
    ));

    // The registration desk sees demographics and social security numbers, not results.
    let registrar = principal(
        json!({"sub": "r", "fhirUser": "Practitioner/r", "practitioner_roles": [{"code": ["registrar"]}]}),
    );
    let Decision::Permit(o) = policy.decide(
        &registrar,
        &request(Interaction::Read, "Patient", Some("Patient/example")),
    ) else {
        panic!("registrars read patients")
    };
    assert!(o.elements.iter().all(|e| e.open));
    let Decision::Deny(why) = policy.decide(&registrar, &read_obs) else {
        panic!("not results")
    };
    assert!(why.contains("role:physician or role:nurse"), "{why}");

    // Nurses: not staff private details; pharmacists: prescriptions but not diagnoses.
    let Decision::Permit(o) =
        policy.decide(&nurse(), &request(Interaction::Read, "Practitioner", None))
    else {
        panic!("nurses read practitioners")
    };
    assert!(o.elements.iter().all(|e| !e.open));
    let pharmacist = principal(
        json!({"sub": "ph", "fhirUser": "Practitioner/ph", "practitioner_roles": [{"code": ["46255001"]}]}),
    );
    assert!(permitted(
        &policy,
        &pharmacist,
        &request(Interaction::Read, "MedicationRequest", None)
    ));
    assert!(!permitted(
        &policy,
        &pharmacist,
        &request(Interaction::Read, "Condition", None)
    ));
    let hr = principal(json!({"sub": "h", "department": "human-resources"}));
    let Decision::Permit(o) = policy.decide(&hr, &request(Interaction::Read, "Practitioner", None))
    else {
        panic!("hr")
    };
    assert!(o.elements.iter().all(|e| e.open));
    let Decision::Deny(why) = policy.decide(&hr, &request(Interaction::Delete, "Patient", None))
    else {
        panic!("delete")
    };
    assert_eq!(
        why,
        "no access rule covers delete patient: denied by default"
    );
}

#[test]
fn the_special_category_policies_decide_as_written() {
    // 42 CFR Part 2: programme staff read SUD diagnoses, other clinicians see them masked.
    let part2 = shipped("part2-substance-use.toml");
    let programme_dr = principal(json!({"sub": "d", "fhirUser": "Practitioner/d",
        "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/st-mary-sud-programme"}]}));
    let read = request(Interaction::Read, "Condition", Some("Patient/p"));
    let Decision::Permit(o) = part2.decide(&programme_dr, &read) else {
        panic!("programme physician")
    };
    assert!(o.elements.iter().all(|e| e.open));
    assert_eq!(
        o.labels.iter().map(|l| l.code.as_str()).collect::<Vec<_>>(),
        ["SUD", "R"]
    );
    let Decision::Permit(o) = part2.decide(&physician(), &read) else {
        panic!("hospital physician sees the record exists")
    };
    assert!(o.elements.iter().all(|e| !e.open));

    // HIV: infectious-disease physicians read viral loads; a cardiologist does not.
    let hiv = shipped("hiv-behavioural-health.toml");
    let id_dr = principal(json!({"sub": "i", "fhirUser": "Practitioner/i",
        "practitioner_roles": [{"code": ["doctor"], "specialty": ["394807007"]}]}));
    let obs = request(Interaction::Read, "Observation", Some("Patient/p"));
    let Decision::Permit(o) = hiv.decide(&id_dr, &obs) else {
        panic!()
    };
    assert!(o.elements.iter().all(|e| e.open));
    let Decision::Permit(o) = hiv.decide(&physician(), &obs) else {
        panic!()
    };
    assert!(o.elements.iter().all(|e| !e.open));

    // Research: researchers read, never open identifiers, never write.
    let research = shipped("research-deidentified.toml");
    let researcher =
        principal(json!({"sub": "s", "scope": "openid user/*.rs", "department": "research"}));
    let Decision::Permit(o) =
        research.decide(&researcher, &request(Interaction::Search, "Patient", None))
    else {
        panic!()
    };
    assert!(o.elements.iter().all(|e| !e.open));
    assert!(!permitted(
        &research,
        &researcher,
        &request(Interaction::Update, "Patient", None)
    ));
    let no_scope = principal(json!({"sub": "s", "department": "research"}));
    assert!(!permitted(
        &research,
        &no_scope,
        &request(Interaction::Read, "Patient", None)
    ));
}

/// A policy whose social security numbers are read by the registrar and the patient, and also
/// set (unread) by `writers`, when given.
fn ssn_policy(writers: Option<&str>) -> Policy {
    let writers = writers.map_or_else(String::new, |w| format!("writers = \"{w}\"\n"));
    let text = format!(
        "{HEADER}
[[roles]]
name = \"nurse\"
role-codes = [\"nurse\"]
attributes = [\"role:nurse\"]

[[roles]]
name = \"registrar\"
role-codes = [\"registrar\"]
attributes = [\"role:registrar\"]

[[roles]]
name = \"patient\"
fhir-user-type = [\"Patient\"]
attributes = [\"role:patient\", \"patient:self\"]

[[access]]
name = \"everyone writes patients\"
resources = [\"Patient\"]
interactions = [\"read\", \"create\", \"update\"]
readers = \"role:nurse or role:registrar or role:patient\"

[[protect]]
name = \"names\"
resource = \"Patient\"
elements = [\"Patient.name\"]
readers = \"role:nurse or role:registrar or patient:self\"

[[protect]]
name = \"ssn\"
resource = \"Patient\"
elements = [\"Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn')\"]
readers = \"role:registrar or patient:self\"
{writers}"
    );
    Policy::load(&[("ssn.toml".into(), text)]).unwrap_or_else(|e| panic!("{e}"))
}

fn obligations(policy: &Policy, who: &Principal, patient: &str) -> fhirseal_policy::Obligations {
    match policy.decide(who, &request(Interaction::Create, "Patient", Some(patient))) {
        Decision::Permit(obligations) => obligations,
        Decision::Deny(why) => panic!("{why}"),
    }
}

#[test]
fn writers_may_set_what_they_cannot_read_and_only_where_their_rule_says() {
    let nurse = principal(json!({"sub": "rn", "fhirUser": "Practitioner/rn",
        "practitioner_roles": [{"code": ["nurse"]}]}));
    let registrar = principal(json!({"sub": "desk", "fhirUser": "Practitioner/desk",
        "practitioner_roles": [{"code": ["registrar"]}]}));
    let resource = json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": "urn:mrn", "value": "1"},
                       {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"}],
        "name": [{"family": "X"}]});

    // Without `writers`: nobody may set an element unread.
    let plain = ssn_policy(None);
    let decided = obligations(&plain, &nurse, "Patient/p1");
    assert!(
        decided
            .elements
            .iter()
            .all(|e| e.writers.is_none() && !e.write)
    );
    assert!(decided.writable_paths(&resource).is_empty());

    // With `writers = "role:nurse"`: the nurse may set the SSN (only it), the registrar reads it.
    let policy = ssn_policy(Some("role:nurse"));
    let decided = obligations(&policy, &nurse, "Patient/p1");
    let ssn = decided.elements.iter().find(|e| e.rule == "ssn").unwrap();
    assert!(ssn.write && !ssn.open);
    assert_eq!(ssn.writers.as_ref().unwrap().to_string(), "role:nurse");
    let names = decided.elements.iter().find(|e| e.rule == "names").unwrap();
    assert!(names.writers.is_none() && !names.write && names.open);
    assert_eq!(decided.writable_paths(&resource), ["Patient.identifier[1]"]);
    let desk = obligations(&policy, &registrar, "Patient/p1");
    assert!(desk.elements.iter().all(|e| !e.write));
    assert!(desk.writable_paths(&resource).is_empty());
    // `writers` changes who may write, not how anything is sealed.
    assert_eq!(
        decided.sealing,
        obligations(&plain, &nurse, "Patient/p1").sealing
    );

    // `patient:self` in `writers` is the record's own patient.
    let own = ssn_policy(Some("patient:self"));
    assert!(
        obligations(&own, &patient("p1"), "Patient/p1")
            .elements
            .iter()
            .any(|e| e.rule == "ssn" && e.write)
    );
    assert!(
        obligations(&own, &patient("p2"), "Patient/p1")
            .elements
            .iter()
            .all(|e| !e.write)
    );

    // `explain` says who may set it unread.
    let explained = policy.explain(&nurse, &resource);
    let line = explained
        .elements
        .iter()
        .find(|e| e.path == "Patient.identifier[1]")
        .unwrap();
    let (write, words) = line.write.clone().unwrap();
    assert!(write && !line.open, "{words}");
    assert!(
        explained
            .to_string()
            .contains("write: may set it without reading it: rule `ssn` lets role:nurse"),
        "{explained}"
    );
    let desk = policy.explain(&registrar, &resource);
    assert!(
        desk.to_string()
            .contains("write: may set it only if it may read it"),
        "{desk}"
    );
    assert!(
        explained
            .elements
            .iter()
            .filter(|e| e.path.starts_with("Patient.name"))
            .all(|e| e.write.is_none())
    );
}

/// A compound index pairs two leaves of one rule; the low-entropy element in it is indexed only
/// there, unless `index-alone` lists it (issue 16).
#[test]
fn compound_indexes_and_index_alone_reach_the_sealing_rules() {
    let base = format!(
        "{HEADER}[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\", \"Patient.gender\"]\nreaders = \"x\"\nsearch = \"blind-index\"\n"
    );
    let compound = format!(
        "{base}compound-indexes = [[\"Patient.name.family\", \"Patient.birthDate\"], [\"Patient.name.given\", \"Patient.gender\"]]\n"
    );
    let policy = Policy::load(&[("c.toml".into(), compound)]).unwrap();
    let rules = policy.rules_for(Some("Patient/p1"));
    let set = rules.for_type("Patient").unwrap();
    let names: Vec<String> = set.compounds().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "Patient.name.family+Patient.birthDate",
            "Patient.name.given+Patient.gender"
        ]
    );
    let alone = |path: &str| {
        set.elements()
            .iter()
            .find(|e| e.path().plain() == path)
            .unwrap()
            .index_alone()
    };
    assert!(alone("Patient.name"));
    assert!(!alone("Patient.birthDate"));
    assert!(!alone("Patient.gender"));
    // Listed in index-alone: indexed alone, the leakage accepted, still paired where named.
    let accepted = format!(
        "{base}compound-indexes = [[\"Patient.name.family\", \"Patient.birthDate\"]]\nindex-alone = [\"Patient.birthDate\", \"Patient.gender\"]\n"
    );
    let policy = Policy::load(&[("a.toml".into(), accepted)]).unwrap();
    let rules = policy.rules_for(None);
    let set = rules.for_type("Patient").unwrap();
    assert_eq!(set.compounds().len(), 1);
    assert!(set.elements().iter().all(|e| e.index_alone()));
    // The shipped policies pair the birth date with the family name.
    let hospital = Policy::embedded_default().unwrap();
    let rules = hospital.rules_for(None);
    let set = rules.for_type("Patient").unwrap();
    assert_eq!(
        set.compounds()[0].name(),
        "Patient.name.family+Patient.birthDate"
    );
}

fn load_error(text: &str) -> String {
    Policy::load(&[("broken.toml".to_string(), text.to_string())])
        .unwrap_err()
        .to_string()
}

const HEADER: &str = "[policy]\nname = \"t\"\nversion = \"1\"\ndefault = \"deny\"\n";

#[test]
fn each_broken_policy_yields_its_error_message() {
    let cases: &[(&str, &str)] = &[
        (
            "[policy]\nname = \"t\"\nversion = \"1\"\ndefault = \"permit\"\n",
            "broken.toml:4: unknown variant `permit`, expected `deny`",
        ),
        (
            "[policy]\nname = \"t\"\nversion = \"1\"\n",
            "broken.toml:1: missing field `default`",
        ),
        ("", "broken.toml: no `[policy]` header"),
        (
            "[[roles]]\nname = \"r\"\nattributes = [\"a\"]\ncolour = \"red\"\n",
            "broken.toml:4: unknown field `colour`",
        ),
        (
            "[[roles]]\nname = \"r\"\nattributes = []\n",
            "broken.toml:2: roles[0].attributes: role `r` gives no attributes",
        ),
        (
            "[[roles]]\nname = \"r\"\nfhir-user-type = [\"Doctor\"]\nattributes = [\"a\"]\n",
            "broken.toml:3: roles[0].fhir-user-type: `Doctor` is not an R4 resource type",
        ),
        (
            "[[roles]]\nname = \"r\"\nattributes = [\"patient:Patient/1\"]\n",
            "roles[0].attributes: `patient:Patient/1`: `patient:` attributes are given only through `patient:self`",
        ),
        (
            "[[roles]]\nname = \"r\"\nattributes = [\"two words\"]\n",
            "roles[0].attributes: `two words` is not an attribute name",
        ),
        (
            "[[access]]\nname = \"a\"\nresources = [\"Patient\"]\ninteractions = [\"read\"]\nreaders = \"role:x and\"\n",
            "broken.toml:5: access[0].readers: `role:x and` is not an access structure",
        ),
        (
            "[[access]]\nname = \"a\"\nresources = [\"Patients\"]\ninteractions = [\"read\"]\nreaders = \"x\"\n",
            "broken.toml:3: access[0].resources: `Patients` is not an R4 resource type",
        ),
        (
            "[[access]]\nname = \"a\"\nresources = [\"Patient\"]\ninteractions = [\"destroy\"]\nreaders = \"x\"\n",
            "broken.toml:4: unknown variant `destroy`",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.nickname\"]\nreaders = \"x\"\n",
            "broken.toml:4: protect[0].elements: R4 defines no element `Patient.nickname`",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Observation.code\"]\nreaders = \"x\"\n",
            "`Observation.code` is not an element of Patient",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.id\"]\nreaders = \"x\"\n",
            "protect[0].elements: the server needs the logical id",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Observation\"\nelements = [\"Observation.status\"]\nreaders = \"x\"\n",
            "`Observation.status` is a modifier element",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Observation\"\nelements = [\"Observation.code\"]\nreaders = \"x\"\n",
            "`Observation.code` is required (min 1)",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Observation\"\nelements = [\"Observation.subject\"]\nreaders = \"x\"\n",
            "`Observation.subject` places the resource in a patient's compartment",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Observation\"\nelements = [\"Observation.value[x]\"]\nreaders = \"x\"\nsearch = \"blind-index\"\n",
            "protect[0].search: type mismatch: `Observation.value[x]` is Quantity",
        ),
        // Compound indexes (issue 16): a low-entropy element is never indexed alone unless the
        // policy says so.
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\n",
            "broken.toml:4: protect[0].elements: `Patient.birthDate` has few distinct values (date): indexed alone",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"filter\"\ncompound-indexes = [[\"Patient.name.family\", \"Patient.birthDate\"]]\n",
            "broken.toml:7: protect[0].compound-indexes[0]: compound-indexes applies to search = \"blind-index\" only",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\ncompound-indexes = [[\"Patient.name.family\"]]\n",
            "protect[0].compound-indexes[0]: a compound index pairs exactly two leaves",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\ncompound-indexes = [[\"Patient.name.family\", \"Patient.birthDate\"], [\"Patient.name.use\", \"Patient.birthDate\"]]\n",
            "protect[0].compound-indexes[1]: `Patient.name.use`: a compound index part must be a leaf",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\ncompound-indexes = [[\"Patient.gender\", \"Patient.birthDate\"]]\n",
            "protect[0].compound-indexes[0]: `Patient.gender`: a compound index part must be a leaf",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\ncompound-indexes = [[\"Patient.birthDate\", \"Patient.birthDate\"]]\n",
            "protect[0].compound-indexes[0]: `Patient.birthDate`: a compound index needs two different leaves",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\nwriters = \"role:desk\"\ncompound-indexes = [[\"Patient.name.family\", \"Patient.birthDate\"]]\n",
            "protect[0].compound-indexes[0]: compound-indexes cannot be combined with writers",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"x\"\nsearch = \"blind-index\"\nindex-alone = [\"Patient.gender\"]\n",
            "protect[0].index-alone: `Patient.gender` is not one of this rule's elements",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\"]\nreaders = \"x\"\nwriters = \"role:desk or\"\n",
            "broken.toml:6: protect[0].writers: `role:desk or` is not an access structure",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\"]\nreaders = \"x\"\nwriters = [\"role:desk\"]\n",
            "broken.toml:6: invalid type: sequence, expected a string",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\"]\nreaders = \"x\"\nlabels = [\"SECRET\"]\n",
            "protect[0].labels: `SECRET` is neither a confidentiality code",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\"]\nreaders = \"x\"\n[[protect]]\nname = \"q\"\nresource = \"Patient\"\nelements = [\"Patient.name.given\"]\nreaders = \"y\"\n",
            "broken.toml:6: protect.elements: `Patient.name.given` (rule `q`) overlaps `Patient.name` (rule `p` at broken.toml:1)",
        ),
        (
            "[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\"]\nreaders = \"x\"\nnarrative = \"seal\"\n[[protect]]\nname = \"q\"\nresource = \"Patient\"\nelements = [\"Patient.birthDate\"]\nreaders = \"y\"\nnarrative = \"neutral\"\n",
            "broken.toml:7: protect.narrative: rule `q` says narrative = Neutral for Patient, rule `p` (broken.toml:1) says Seal",
        ),
        (
            "[[roles]]\nname = \"r\"\nattributes = [\"a\"]\n[[roles]]\nname = \"r\"\nattributes = [\"b\"]\n",
            "broken.toml:4: roles.name: `r` is already the name of the roles rule at broken.toml:1",
        ),
    ];
    for (body, expected) in cases {
        let text = if body.starts_with("[policy]") || body.is_empty() {
            body.to_string()
        } else {
            format!("{HEADER}{body}")
        };
        let got = load_error(&text);
        // The header adds four lines in front of the bodies written without one.
        let expected = if body.starts_with("[policy]") || body.is_empty() {
            expected.to_string()
        } else {
            shift_lines(expected, 4)
        };
        assert!(got.contains(&expected), "expected `{expected}` in:\n{got}");
    }
    // Every problem is reported, not just the first.
    let many = load_error(&format!(
        "{HEADER}[[roles]]\nname = \"r\"\nattributes = [\"two words\", \"patient:x\"]\n"
    ));
    assert_eq!(many.lines().count(), 2, "{many}");
    // Two headers across files.
    let two = Policy::load(&[
        ("a.toml".into(), HEADER.into()),
        ("b.toml".into(), HEADER.into()),
    ])
    .unwrap_err();
    assert!(
        two.to_string()
            .contains("b.toml:1: policy: a second `[policy]` header"),
        "{two}"
    );
}

/// Every `broken.toml:N` → `broken.toml:N+by`.
fn shift_lines(text: &str, by: usize) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("broken.toml:") {
        let (head, tail) = rest.split_at(at + "broken.toml:".len());
        out.push_str(head);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<usize>() {
            out.push_str(&(n + by).to_string());
        }
        rest = &tail[digits.len()..];
    }
    out.push_str(rest);
    out
}

// === property tests ===

const TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "MedicationRequest",
    "Practitioner",
    "Basic",
];
const INTERACTIONS: &[Interaction] = &[
    Interaction::Read,
    Interaction::Vread,
    Interaction::Search,
    Interaction::History,
    Interaction::Create,
    Interaction::Update,
    Interaction::Patch,
    Interaction::Delete,
];

fn any_principal() -> impl Strategy<Value = Principal> {
    let user = prop_oneof![
        Just(None),
        Just(Some("Practitioner/a".to_string())),
        Just(Some("Patient/example".to_string())),
        Just(Some("Patient/other".to_string())),
        Just(Some("RelatedPerson/r".to_string())),
    ];
    let codes = proptest::sample::subsequence(
        vec![
            "doctor",
            "nurse",
            "registrar",
            "pharmacist",
            "46255001",
            "224584007",
            "counsellor",
            "x",
        ],
        0..3,
    );
    let specialties =
        proptest::sample::subsequence(vec!["394579002", "394807007", "394587001", "1"], 0..2);
    let organization = prop_oneof![
        Just(None),
        Just(Some("Organization/st-mary-sud-programme")),
        Just(Some("Organization/o"))
    ];
    let scopes = proptest::sample::subsequence(
        vec!["user/*.rs", "user/*.read", "patient/*.rs", "openid"],
        0..3,
    );
    let department = prop_oneof![
        Just(None),
        Just(Some("research")),
        Just(Some("human-resources"))
    ];
    (user, codes, specialties, organization, scopes, department).prop_map(|(user, codes, specialties, organization, scopes, department)| {
        let mut claims = json!({"sub": "s", "scope": scopes.join(" "),
            "practitioner_roles": [{"code": codes, "specialty": specialties, "organization": organization}]});
        if let Some(user) = user {
            claims["fhirUser"] = json!(user);
        }
        if let Some(d) = department {
            claims["department"] = json!(d);
        }
        Principal::from_claims(&claims).unwrap()
    })
}

fn any_request() -> impl Strategy<Value = Request> {
    (
        proptest::sample::select(INTERACTIONS.to_vec()),
        proptest::sample::select(TYPES.to_vec()),
        prop_oneof![
            Just(None),
            Just(Some("Patient/example")),
            Just(Some("Patient/other"))
        ],
    )
        .prop_map(|(i, t, p)| request(i, t, p))
}

const SHIPPED: &[&str] = &[
    "general-hospital.toml",
    "hiv-behavioural-health.toml",
    "part2-substance-use.toml",
    "research-deidentified.toml",
];

/// The same policy, its `[[roles]]`, `[[access]]` and `[[protect]]` tables shuffled by `seed`
/// and dealt into `files` files.
fn shuffled(text: &str, seed: u64, files: usize) -> Vec<(String, String)> {
    let table: toml::Table = toml::from_str(text).unwrap();
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out: Vec<toml::Table> = (0..files).map(|_| toml::Table::new()).collect();
    out[(next() as usize) % files].insert("policy".into(), table["policy"].clone());
    for kind in ["roles", "access", "protect", "break-glass", "consent"] {
        let mut items = table
            .get(kind)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        for i in (1..items.len()).rev() {
            items.swap(i, (next() as usize) % (i + 1));
        }
        for item in items {
            let file = &mut out[(next() as usize) % files];
            let list = file
                .entry(kind)
                .or_insert_with(|| toml::Value::Array(Vec::new()));
            list.as_array_mut().unwrap().push(item);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, t)| (format!("part-{i}.toml"), toml::to_string(&t).unwrap()))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Nothing is permitted unless an access rule covering the resource type and interaction has
    /// a structure the caller's attributes satisfy (checked here by a separate evaluation).
    #[test]
    fn no_request_is_permitted_unless_a_rule_permits_it(who in any_principal(), req in any_request(), which in 0..SHIPPED.len()) {
        let policy = shipped(SHIPPED[which]);
        let attributes = policy.attributes(&who);
        let patient_attr = req.patient.as_ref().map_or_else(|| "patient:none".to_string(), |p| format!("patient:{p}"));
        let allowed_by_some_rule = policy.access().iter().any(|a| {
            a.interactions.contains(&req.interaction)
                && a.resources.as_ref().is_none_or(|r| r.contains(&req.resource_type))
                && a.readers.is_satisfied_by(&|attr: &rshabe::Attribute| {
                    let name = if attr.as_str() == "patient:self" { patient_attr.as_str() } else { attr.as_str() };
                    attributes.has(name)
                })
        });
        let decision = policy.decide(&who, &req);
        prop_assert_eq!(matches!(decision, Decision::Permit(_)), allowed_by_some_rule);
        // And an empty policy denies everything.
        let empty = Policy::load(&[("e.toml".into(), HEADER.into())]).unwrap();
        prop_assert!(matches!(empty.decide(&who, &req), Decision::Deny(_)));
    }

    /// Shuffling rules within files, or splitting a policy across files, changes no decision.
    #[test]
    fn decisions_do_not_depend_on_rule_or_file_order(
        seed in any::<u64>(), files in 1usize..4, which in 0..SHIPPED.len(),
        who in any_principal(), req in any_request(),
    ) {
        let text = std::fs::read_to_string(policies_dir().join(SHIPPED[which])).unwrap();
        let original = shipped(SHIPPED[which]);
        let reordered = Policy::load(&shuffled(&text, seed, files)).unwrap();
        prop_assert_eq!(original.decide(&who, &req), reordered.decide(&who, &req));
        prop_assert_eq!(original.attributes(&who), reordered.attributes(&who));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text, and any mutation of a shipped policy, loads or is refused with errors that
    /// name the file: never a panic.
    #[test]
    fn no_policy_text_makes_it_panic(junk in "\\PC{0,200}", cut in 0usize..4000, insert in "[\\[\\]=\"a-z.\\n ]{0,12}") {
        let _ = Policy::load(&[("junk.toml".into(), junk)]);
        let text = std::fs::read_to_string(policies_dir().join("general-hospital.toml")).unwrap();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        if let Err(errors) = Policy::load(&[("mutated.toml".into(), mutated)]) {
            prop_assert!(!errors.0.is_empty());
            prop_assert!(errors.0.iter().all(|e| e.file == "mutated.toml"));
        }
    }

    /// Any claims JSON gives a principal or says what is wrong.
    #[test]
    fn no_claims_make_it_panic(sub in proptest::option::of("[a-z]{1,5}"), user in proptest::option::of("[A-Za-z/]{0,12}"), roles in proptest::option::of(0u8..3)) {
        let mut claims = json!({});
        if let Some(sub) = sub { claims["sub"] = json!(sub); }
        if let Some(user) = user { claims["fhirUser"] = json!(user); }
        match roles {
            Some(0) => claims["practitioner_roles"] = json!("x"),
            Some(1) => claims["practitioner_roles"] = json!([{"code": 5}]),
            Some(_) => claims["practitioner_roles"] = json!([{"code": ["a"], "organization": ["o"]}]),
            None => {}
        }
        if let Ok(who) = Principal::from_claims(&claims) {
            let policy = shipped("general-hospital.toml");
            let _ = policy.decide(&who, &request(Interaction::Read, "Patient", None));
        }
    }
}

/// Under the Part 2 policy's `[[consent]]` rule: a permit widens the governed rules' structures
/// for that patient only, a deny narrows them, keys carry identity attributes of bounded number,
/// and a denied practitioner loses `consent:unrestricted`.
#[test]
fn consent_widens_and_narrows_only_the_rules_it_governs() {
    use fhirseal_policy::{ConsentBook, ConsentRecord};
    let policy = shipped("part2-substance-use.toml");
    let consent = |id: &str, patient: &str, provision: Value| {
        let resource = json!({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "patient": {"reference": patient},
            "provision": provision,
        });
        ConsentRecord::from_fhir(&resource, id, &[]).unwrap()
    };
    let mut book = ConsentBook::new();
    book.insert(consent(
        "c1",
        "Patient/p1",
        json!({"type": "deny", "provision": [{"type": "permit",
            "actor": [{"reference": {"reference": "Organization/east-clinic"}}]}]}),
    ));
    book.insert(consent(
        "c2",
        "Patient/p2",
        json!({"type": "deny", "actor": [{"reference": {"reference": "Practitioner/dr-a"}}]}),
    ));
    let now = 1_800_000_000_000_000;
    let east = Principal::from_claims(&json!({"sub": "e", "fhirUser": "Practitioner/dr-e",
        "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/east-clinic"}]}))
    .unwrap();
    let dr_a = Principal::from_claims(&json!({"sub": "a", "fhirUser": "Practitioner/dr-a",
        "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/st-mary-sud-programme"}]}))
    .unwrap();
    let structure = |patient: &str, rule: &str| {
        let protection = policy
            .protections()
            .iter()
            .find(|p| p.name == rule)
            .unwrap();
        policy.readers_under(protection, Some(patient), &book.view(Some(patient), now))
    };
    let opens = |who: &Principal, patient: &str, rule: &str| {
        policy
            .attributes_in(who, &book.view(Some(patient), now))
            .satisfy(&structure(patient, rule))
    };
    // The clinic's clinician opens p1's SUD diagnoses (governed), not p2's, and not p1's
    // contact details (not governed).
    assert!(opens(&east, "Patient/p1", "SUD diagnoses"));
    assert!(!opens(&east, "Patient/p2", "SUD diagnoses"));
    assert!(!opens(
        &east,
        "Patient/p1",
        "programme patients' contact details"
    ));
    assert!(
        structure("Patient/p1", "SUD diagnoses")
            .to_string()
            .contains("actor:Organization/east-clinic")
    );
    // The programme physician opens p1's, not p2's (who denies her), and her key lacks the
    // unrestricted attribute.
    assert!(opens(&dr_a, "Patient/p1", "SUD diagnoses"));
    assert!(!opens(&dr_a, "Patient/p2", "SUD diagnoses"));
    let held = policy.attributes_in(&dr_a, &book.view(None, now));
    assert!(held.has("actor:Practitioner/dr-a"));
    assert!(!held.has("consent:unrestricted"));
    let held = policy.attributes_in(&east, &book.view(None, now));
    assert!(held.has("consent:unrestricted") && held.has("actor:Organization/east-clinic"));
    // Bounded keys: a hundred more consenting patients add nothing to a clinician's attributes.
    let before = held.names().count();
    for i in 0..100 {
        book.insert(consent(
            &format!("m{i}"),
            &format!("Patient/m{i}"),
            json!({"type": "permit", "actor": [{"reference": {"reference": "Organization/east-clinic"}}]}),
        ));
    }
    assert_eq!(
        policy
            .attributes_in(&east, &book.view(None, now))
            .names()
            .count(),
        before
    );
    // Decisions follow: the obligation says open for the consented clinic's clinician.
    let decision = policy.decide(
        &east,
        &Request {
            interaction: Interaction::Read,
            resource_type: "Condition".into(),
            patient: Some("Patient/p1".into()),
            consent: book.view(Some("Patient/p1"), now),
        },
    );
    let Decision::Permit(obligations) = decision else {
        panic!("{decision:?}")
    };
    assert!(obligations.elements.iter().all(|e| e.open));
    // Without consent rules nothing changes: no identity attributes.
    let hospital = shipped("general-hospital.toml");
    assert!(
        hospital
            .attributes_in(&east, &book.view(None, now))
            .names()
            .all(|a| !a.starts_with("actor:") && !a.starts_with("consent:"))
    );
}

#[test]
fn consent_rules_are_checked_and_the_consent_attributes_reserved() {
    let load = |body: &str| {
        Policy::load(&[("c.toml".into(), format!("{HEADER}{body}"))])
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let protect = "[[roles]]\nname = \"r\"\nattributes = [\"role:x\"]\n\
                   [[protect]]\nname = \"p\"\nresource = \"Condition\"\nelements = [\"Condition.code\"]\nreaders = \"role:x\"\n";
    let error = load(&format!(
        "{protect}[[consent]]\nname = \"c\"\nrules = [\"nope\"]\ndeny = true\n"
    ));
    assert!(
        error.contains("consent[0].rules") && error.contains("no protection rule"),
        "{error}"
    );
    let error = load(&format!(
        "{protect}[[consent]]\nname = \"c\"\nrules = [\"p\"]\n"
    ));
    assert!(error.contains("neither widens"), "{error}");
    let error = load(&format!(
        "{protect}[[consent]]\nname = \"c\"\nrules = [\"p\"]\npermit = \"consent:unrestricted\"\n"
    ));
    assert!(
        error.contains("consent[0].permit") && error.contains("gateway's own"),
        "{error}"
    );
    let error = load("[[roles]]\nname = \"r\"\nattributes = [\"actor:Practitioner/x\"]\n");
    assert!(
        error.contains("roles[0].attributes") && error.contains("gateway's own"),
        "{error}"
    );
    let error = load(&format!(
        "{protect}[[consent]]\nname = \"a\"\nrules = [\"p\"]\ndeny = true\n[[consent]]\nname = \"b\"\nrules = [\"p\"]\ndeny = true\n"
    ));
    assert!(error.contains("one at most"), "{error}");
}
