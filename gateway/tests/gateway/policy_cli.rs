//! `fhirseal policy …` run as a real process, as a compliance officer would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{failed, succeeded};

fn fhirseal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhirseal"))
        .arg("policy")
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    succeeded(&args, fhirseal(args))
}

fn fails(args: &[&str]) -> (i32, String) {
    failed(&args, fhirseal(args))
}

fn policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fhir-profiles/policies")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

const PATIENT: &str = r#"{"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01",
  "name": [{"family": "Chalmers"}], "gender": "male"}"#;

#[test]
fn check_validates_every_shipped_policy_and_names_each_problem() {
    for name in [
        "general-hospital.toml",
        "part2-substance-use.toml",
        "hiv-behavioural-health.toml",
        "research-deidentified.toml",
    ] {
        let path = policies().join(name);
        let out = ok(&["check", path.to_str().unwrap()]);
        assert!(
            out.contains("is valid") && out.contains("everything else is denied"),
            "{out}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[policy]\nname = \"x\"\nversion = \"1\"\ndefault = \"deny\"\n[[protect]]\nname = \"p\"\nresource = \"Observation\"\nelements = [\"Observation.status\"]\nreaders = \"a\"\n",
    );
    let (code, err) = fails(&["check", &bad]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml:8: protect[0].elements: `Observation.status` is a modifier element"),
        "{err}"
    );
    let (code, err) = fails(&["check", "/nonexistent/policy.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("/nonexistent/policy.toml: cannot be read"),
        "{err}"
    );
    let (code, _) = fails(&["check"]);
    assert_eq!(code, 64);
}

#[test]
fn attributes_and_explain_answer_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let nurse = write(
        dir.path(),
        "nurse.json",
        r#"{"sub": "n", "fhirUser": "Practitioner/n", "practitioner_roles": [{"code": ["nurse"]}]}"#,
    );
    let hr = write(
        dir.path(),
        "hr.json",
        r#"{"sub": "h", "department": "human-resources"}"#,
    );
    let resource = write(dir.path(), "patient.json", PATIENT);

    let out = ok(&["attributes", "--claims", &nurse]);
    assert_eq!(
        out.trim(),
        "org:st-mary  (role nurse)\nrole:nurse  (role nurse)"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&["attributes", "--claims", &hr, "--json"])).unwrap();
    assert_eq!(
        listed[1]["attribute"], "org:st-mary/dept:hr",
        "with its parent first: {listed}"
    );
    assert_eq!(listed[0]["attribute"], "org:st-mary");

    // With the embedded default policy a nurse reads demographics; HR may not read patients.
    let out = ok(&["explain", "--claims", &nurse, "--resource", &resource]);
    assert!(
        out.contains("read: permitted by access rule `clinicians work with clinical records`"),
        "{out}"
    );
    assert!(
        out.contains("Patient.birthDate: open: rule `demographics`"),
        "{out}"
    );
    let explained: serde_json::Value = serde_json::from_str(&ok(&[
        "explain",
        "--claims",
        &hr,
        "--resource",
        &resource,
        "--json",
    ]))
    .unwrap();
    assert_eq!(explained["read"]["permitted"], false);
    assert!(
        explained["elements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["open"] == false)
    );
    assert_eq!(explained["elements"].as_array().unwrap().len(), 2);

    // Under the research policy a researcher sees the record but not who it is.
    let researcher = write(
        dir.path(),
        "r.json",
        r#"{"sub": "r", "scope": "user/*.rs", "department": "research"}"#,
    );
    let research = policies().join("research-deidentified.toml");
    let out = ok(&[
        "explain",
        "--policy",
        research.to_str().unwrap(),
        "--claims",
        &researcher,
        "--resource",
        &resource,
    ]);
    assert!(
        out.contains("Patient.name[0]: masked: rule `direct identifiers`"),
        "{out}"
    );

    let not_claims = write(dir.path(), "bad.json", r#"{"fhirUser": "Practitioner/x"}"#);
    let (code, err) = fails(&["attributes", "--claims", &not_claims]);
    assert_eq!(code, 1);
    assert!(err.contains("claims: `sub` is required"), "{err}");
    let not_json = write(dir.path(), "bad2.json", "{");
    let (_, err) = fails(&["explain", "--claims", &nurse, "--resource", &not_json]);
    assert!(err.contains("bad2.json: not JSON"), "{err}");
}

#[test]
fn explain_searches_says_how_each_search_on_a_protected_element_is_answered() {
    let out = ok(&["explain", "--searches"]);
    let line = |start: &str| {
        out.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start} in:\n{out}"))
            .to_string()
    };
    assert!(line("Patient?family:").contains("blind-index: `_tag` tokens of Patient.name.family"));
    assert!(line("Patient?family:").contains("together with `birthdate`: one compound token"));
    assert!(line("Patient?birthdate:").contains("blind-index only together with `family`"));
    assert!(line("Patient?identifier:").contains("other systems go to the upstream"));
    assert!(line("Patient?address-use:").contains("refused"));
    assert!(line("Patient?phonetic:").contains("refused"));
    assert!(line("Observation?value-quantity:").starts_with("Observation?value-quantity: filter"));
    assert!(line("Observation?code-value-quantity:").contains("refused"));
    assert!(line("Practitioner?address:").contains("refused"));
    // What no rule seals is not listed: the upstream answers it.
    assert!(!out.contains("Patient?gender:"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["--json", "explain", "--searches"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|row| row["type"] == "Patient"
                && row["parameter"] == "birthdate"
                && row["answered"].as_str().unwrap().starts_with("blind-index"))
    );
    let (_, err) = fails(&["explain"]);
    assert!(
        err.contains("--claims") && err.contains("--resource"),
        "{err}"
    );
}

#[test]
fn check_warns_on_a_low_entropy_element_indexed_alone_and_bounds_index_bits() {
    // The shipped policy pairs the birth date with the family name: nothing to warn about.
    let path = policies().join("general-hospital.toml");
    let out = ok(&["check", path.to_str().unwrap()]);
    assert!(!out.contains("warning"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    // Indexed alone because the policy says so: valid, with a warning.
    let alone = write(
        dir.path(),
        "alone.toml",
        "[policy]\nname = \"x\"\nversion = \"1\"\ndefault = \"deny\"\n[[protect]]\nname = \"demographics\"\nresource = \"Patient\"\nelements = [\"Patient.name\", \"Patient.birthDate\"]\nreaders = \"a\"\nsearch = \"blind-index\"\nindex-alone = [\"Patient.birthDate\"]\n",
    );
    let out = ok(&["check", &alone]);
    assert!(
        out.contains("warning: protect \"demographics\": `Patient.birthDate` is indexed alone"),
        "{out}"
    );
    let rule = |extra: &str| {
        format!(
            "[policy]\nname = \"x\"\nversion = \"1\"\ndefault = \"deny\"\n[[protect]]\nname = \"p\"\nresource = \"Patient\"\nelements = [\"Patient.name\"]\nreaders = \"a\"\n{extra}\n"
        )
    };
    let fine = write(
        dir.path(),
        "fine.toml",
        &rule("search = \"blind-index\"\nindex-bits = 24"),
    );
    let out = ok(&["check", &fine]);
    assert!(!out.contains("warning"), "{out}");
    for (name, extra, want) in [
        (
            "narrow.toml",
            "search = \"blind-index\"\nindex-bits = 4",
            "index-bits must be between 8 and 64",
        ),
        (
            "wide.toml",
            "search = \"blind-index\"\nindex-bits = 65",
            "index-bits must be between 8 and 64",
        ),
        (
            "filter.toml",
            "search = \"filter\"\nindex-bits = 16",
            "applies to search = \"blind-index\" only",
        ),
    ] {
        let bad = write(dir.path(), name, &rule(extra));
        let (code, err) = fails(&["check", &bad]);
        assert_eq!(code, 1);
        assert!(
            err.contains("protect[0].index-bits") && err.contains(want),
            "{err}"
        );
    }
}

/// A sealed Reference can be blind-indexed (its `Type/id` and its id): `check` accepts it and
/// `explain --searches` says how its parameter is answered.
#[test]
fn a_blind_indexed_reference_is_valid_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write(
        dir.path(),
        "gp.toml",
        "[policy]\nname = \"x\"\nversion = \"1\"\ndefault = \"deny\"\n[[protect]]\nname = \"care team\"\nresource = \"Patient\"\nelements = [\"Patient.generalPractitioner\"]\nreaders = \"a\"\nsearch = \"blind-index\"\n",
    );
    let out = ok(&["check", &policy]);
    assert!(
        out.contains("is valid") && !out.contains("warning"),
        "{out}"
    );
    let out = ok(&["explain", "--searches", "--policy", &policy]);
    assert!(
        out.contains(
            "Patient?general-practitioner: blind-index: `_tag` tokens of Patient.generalPractitioner"
        ),
        "{out}"
    );
}

#[test]
fn check_lists_break_glass_rules_and_explain_names_the_one_that_opened_an_element() {
    let hiv = policies().join("hiv-behavioural-health.toml");
    let hiv = hiv.to_str().unwrap();
    let out = ok(&["check", hiv]);
    assert!(
        out.contains("break-glass `emergency physicians`: role:physician may, for at most 60 minutes; grants org:st-mary/dept:infectious-disease; opens rules HIV and psychiatric diagnoses, antiretroviral and psychiatric medication, viral loads and CD4 counts"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let condition = write(
        dir.path(),
        "condition.json",
        r#"{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"text": "x"}}"#,
    );
    let doctor = write(
        dir.path(),
        "doctor.json",
        r#"{"sub": "d", "fhirUser": "Practitioner/d", "practitioner_roles": [{"code": ["doctor"]}]}"#,
    );
    let nurse = write(
        dir.path(),
        "nurse.json",
        r#"{"sub": "n", "fhirUser": "Practitioner/n", "practitioner_roles": [{"code": ["nurse"]}]}"#,
    );
    let args = |claims: &str, break_glass: bool| {
        let mut args = vec![
            "explain".to_string(),
            "--policy".into(),
            hiv.into(),
            "--claims".into(),
            claims.into(),
            "--resource".into(),
            condition.clone(),
        ];
        if break_glass {
            args.push("--break-glass".into());
        }
        args
    };
    let plain = args(&doctor, false);
    let plain = ok(&plain.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(plain.contains("Condition.code: masked"), "{plain}");
    let broken = args(&doctor, true);
    let broken = ok(&broken.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        broken.contains(
            "Condition.code: open by break-glass: emergency rule `emergency physicians` ("
        ) && broken.contains("grants org:st-mary/dept:infectious-disease"),
        "{broken}"
    );
    let refused = args(&nurse, true);
    let (code, err) = fails(&refused.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1);
    assert!(
        err.contains("break-glass refused: no break-glass rule lets you break the glass"),
        "{err}"
    );
}

#[test]
fn explain_names_the_consent_that_opened_or_masked_an_element() {
    let part2 = policies().join("part2-substance-use.toml");
    let part2 = part2.to_str().unwrap();
    let out = ok(&["check", part2]);
    assert!(out.contains("consent `Part 2 written consent`"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let condition = write(
        dir.path(),
        "condition.json",
        r#"{"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
            "code": {"text": "x"}}"#,
    );
    let consent = |name: &str, kind: &str, actor: &str| {
        write(
            dir.path(),
            name,
            &format!(
                r#"{{"resourceType": "Consent", "id": "{name}", "status": "active",
                "scope": {{"coding": [{{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}}]}},
                "patient": {{"reference": "Patient/p1"}},
                "provision": {{"type": "{kind}", "actor": [{{"reference": {{"reference": "{actor}"}}}}]}}}}"#
            ),
        )
    };
    let permit = consent("k1", "permit", "Organization/east-clinic");
    let deny = consent("k2", "deny", "Practitioner/dr-a");
    let team = consent("k3", "permit", "CareTeam/t");
    let east = write(
        dir.path(),
        "east.json",
        r#"{"sub": "e", "fhirUser": "Practitioner/dr-east",
            "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/east-clinic"}]}"#,
    );
    let dr_a = write(
        dir.path(),
        "dr-a.json",
        r#"{"sub": "a", "fhirUser": "Practitioner/dr-a",
            "practitioner_roles": [{"code": ["doctor"], "organization": "Organization/st-mary-sud-programme"}]}"#,
    );
    let explain = |claims: &str, consents: &[&str]| {
        let mut args = vec![
            "explain",
            "--policy",
            part2,
            "--claims",
            claims,
            "--resource",
            &condition,
        ];
        for c in consents {
            args.push("--consent");
            args.push(c);
        }
        ok(&args)
    };
    assert!(explain(&east, &[]).contains("Condition.code: masked"));
    let opened = explain(&east, &[&permit]);
    assert!(
        opened.contains("Condition.code: open by consent: Consent/k1 permits Organization/east-clinic under consent rule `Part 2 written consent` ("),
        "{opened}"
    );
    assert!(explain(&dr_a, &[]).contains("Condition.code: open"));
    let masked = explain(&dr_a, &[&permit, &deny]);
    assert!(
        masked.contains("Condition.code: masked by consent: Consent/k2 denies Practitioner/dr-a"),
        "{masked}"
    );
    let (code, err) = fails(&[
        "explain",
        "--policy",
        part2,
        "--claims",
        &east,
        "--resource",
        &condition,
        "--consent",
        &team,
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("this Consent cannot be enforced: Consent.provision.actor[0].reference"),
        "{err}"
    );
}
