//! The `[[break-glass]]` section: parsing, validation (every problem with its file, line and key)
//! and what an emergency gives whom, on the shipped HIV and behavioural-health policy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fhirseal_fhir::Principal;
use fhirseal_policy::{Policy, PolicyErrors};
use serde_json::{Value, json};

const HEADER: &str = r#"
[policy]
name = "break-glass test"
version = "1"
default = "deny"

[[roles]]
name = "physician"
fhir-user-type = ["Practitioner"]
role-codes = ["doctor"]
attributes = ["role:physician"]

[[roles]]
name = "nurse"
fhir-user-type = ["Practitioner"]
role-codes = ["nurse"]
attributes = ["role:nurse"]

[[access]]
name = "clinicians"
resources = ["Condition"]
interactions = ["read"]
readers = "role:physician or role:nurse"

[[protect]]
name = "diagnoses"
resource = "Condition"
elements = ["Condition.code"]
readers = "(role:physician and dept:id) or patient:self"
"#;

fn load(extra: &str) -> Result<Policy, PolicyErrors> {
    Policy::load(&[("bg.toml".into(), format!("{HEADER}{extra}"))])
}

fn errors(extra: &str) -> Vec<String> {
    load(extra)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn practitioner(code: &str) -> Principal {
    Principal::from_claims(&json!({"sub": "u", "fhirUser": "Practitioner/u",
        "practitioner_roles": [{"code": [code]}]}))
    .unwrap()
}

const RULE: &str = r#"
[[break-glass]]
name = "emergency"
who = "role:physician"
grants = ["dept:id"]
max-minutes = 60
"#;

#[test]
fn a_rule_loads_with_its_duration_and_what_it_opens() {
    let policy = load(RULE).unwrap();
    let [rule] = policy.break_glass() else {
        panic!("one rule")
    };
    assert_eq!(rule.name, "emergency");
    assert_eq!(rule.max_seconds, 3600);
    assert_eq!(rule.grants, ["dept:id"]);
    assert_eq!(rule.opens(policy.protections()), ["diagnoses"]);
}

#[test]
fn a_permitted_caller_gets_the_grants_and_anyone_else_the_reason() {
    let policy = load(RULE).unwrap();
    let emergency = policy.emergency(&practitioner("doctor")).unwrap();
    assert_eq!(emergency.rules, ["emergency"]);
    assert_eq!(emergency.added, ["dept:id"]);
    assert!(emergency.attributes.has("role:physician") && emergency.attributes.has("dept:id"));
    assert_eq!(
        emergency.attributes.because("dept:id"),
        ["break-glass emergency"]
    );
    assert_eq!(emergency.max_seconds, 3600);
    let refused = policy.emergency(&practitioner("nurse")).unwrap_err();
    assert!(
        refused.contains("`emergency` needs role:physician"),
        "{refused}"
    );
    assert!(refused.contains("role:nurse"), "{refused}");
    // Without any rule, nobody may.
    let none = load("").unwrap();
    assert!(
        none.emergency(&practitioner("doctor"))
            .unwrap_err()
            .contains("no break-glass rule")
    );
}

#[test]
fn explain_names_the_emergency_rule_that_opened_an_element() {
    let policy = load(RULE).unwrap();
    let condition: Value = json!({"resourceType": "Condition", "id": "c1",
        "subject": {"reference": "Patient/p1"}, "code": {"text": "x"}});
    let doctor = practitioner("doctor");
    let plain = policy.explain(&doctor, &condition);
    assert!(!plain.elements[0].open);
    let explained = policy.explain_emergency(&doctor, &condition).unwrap();
    let element = &explained.elements[0];
    assert!(element.open, "{}", element.why);
    assert_eq!(element.break_glass, ["emergency"]);
    assert!(
        element
            .why
            .contains("open by break-glass: emergency rule `emergency` (bg.toml:"),
        "{}",
        element.why
    );
    assert!(element.why.contains("grants dept:id"), "{}", element.why);
    assert!(
        policy
            .explain_emergency(&practitioner("nurse"), &condition)
            .is_err()
    );
}

#[test]
fn every_problem_names_its_file_line_and_key() {
    let found = errors(
        r#"
[[break-glass]]
name = "bad"
who = "patient:self or role:physician"
grants = []
max-minutes = 0

[[break-glass]]
name = "worse"
who = "role:physician and"
grants = ["patient:self", "patient:Patient/1", "dept id"]
max-minutes = 100000
"#,
    );
    let expect = [
        "bg.toml:33: break-glass[0].who: `patient:self` has no meaning here",
        "bg.toml:32: break-glass[0].grants: break-glass rule `bad` grants no attributes",
        "bg.toml:35: break-glass[0].max-minutes: max-minutes must be between 1 and 1440",
        "bg.toml:39: break-glass[1].who: `role:physician and` is not an access structure",
        "bg.toml:40: break-glass[1].grants: `patient:self` cannot be granted",
        "bg.toml:40: break-glass[1].grants: `patient:Patient/1`: `patient:` attributes",
        "bg.toml:40: break-glass[1].grants: `dept id` is not an attribute name",
        "bg.toml:41: break-glass[1].max-minutes: max-minutes must be between 1 and 1440",
    ];
    for want in expect {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "{want}\nin {found:#?}"
        );
    }
}

#[test]
fn unknown_keys_duplicate_names_and_useless_rules_are_refused() {
    let unknown = errors(
        "\n[[break-glass]]\nname = \"x\"\nwho = \"role:physician\"\ngrants = [\"dept:id\"]\nmax-minutes = 5\nopens = [\"diagnoses\"]\n",
    );
    assert!(
        unknown.iter().any(|e| e.contains("unknown field `opens`")),
        "{unknown:?}"
    );
    let twice = errors(&format!("{RULE}{RULE}"));
    assert!(
        twice.iter().any(
            |e| e.contains("break-glass.name") && e.contains("`emergency` is already the name")
        ),
        "{twice:?}"
    );
    let useless = errors(
        "\n[[break-glass]]\nname = \"useless\"\nwho = \"role:nurse\"\ngrants = [\"dept:id\"]\nmax-minutes = 5\n",
    );
    assert!(
        useless.iter().any(|e| e.starts_with("bg.toml:31: break-glass[0].grants: break-glass rule `useless` opens no protected element")),
        "{useless:?}"
    );
}

#[test]
fn the_shipped_hiv_policy_lets_physicians_break_the_glass_for_an_hour() {
    let text = include_str!("../../../fhir-profiles/policies/hiv-behavioural-health.toml");
    let policy = Policy::load(&[("hiv.toml".into(), text.into())]).unwrap();
    let [rule] = policy.break_glass() else {
        panic!("one rule")
    };
    assert_eq!(rule.max_seconds, 3600);
    assert_eq!(
        rule.opens(policy.protections()),
        [
            "HIV and psychiatric diagnoses",
            "antiretroviral and psychiatric medication",
            "viral loads and CD4 counts"
        ]
    );
    let nurse = Principal::from_claims(&json!({"sub": "n", "fhirUser": "Practitioner/n",
        "practitioner_roles": [{"code": ["nurse"]}]}))
    .unwrap();
    assert!(policy.emergency(&nurse).is_err());
}
