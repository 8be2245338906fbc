//! What scopes let through on real resources: the patient compartment for reads and writes,
//! search narrowing, granular scopes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhirseal_fhir::rest::Interaction;
use fhirseal_smart::{ClaimNames, Narrowing, Refusal, TokenContext};
use serde_json::{Value, json};

fn caller(scope: &str, patient: Option<&str>) -> TokenContext {
    let mut claims = json!({"sub": "u1", "fhirUser": "Practitioner/7", "scope": scope});
    if let Some(p) = patient {
        claims["patient"] = Value::String(p.into());
    }
    TokenContext::from_claims(&claims, &ClaimNames::default()).unwrap()
}

fn obs(subject: &str) -> Value {
    json!({"resourceType": "Observation", "id": "o1", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": subject}})
}

const BASES: &[&str] = &["https://gw.example/fhir"];

#[test]
fn a_patient_scope_reads_only_its_patients_compartment() {
    let me = caller(
        "launch/patient patient/Observation.rs patient/Patient.r",
        Some("123"),
    );
    assert_eq!(me.patient_id(), Some("123"));
    for (interaction, resource) in [
        (Interaction::Read, obs("Patient/123")),
        (
            Interaction::Vread,
            obs("https://gw.example/fhir/Patient/123/_history/2"),
        ),
        (
            Interaction::Read,
            json!({"resourceType": "Patient", "id": "123"}),
        ),
    ] {
        assert_eq!(me.check_resource(interaction, &resource, BASES), Ok(()));
    }
    for resource in [
        obs("Patient/124"),
        obs("https://elsewhere.example/Patient/123"),
        json!({"resourceType": "Patient", "id": "124"}),
    ] {
        assert_eq!(
            me.check_resource(Interaction::Read, &resource, BASES),
            Err(Refusal::OtherPatient)
        );
    }
    // Types in no patient's compartment are out of a patient/ scope's reach, even with `*`.
    let star = caller("patient/*.rs", Some("123"));
    assert_eq!(
        star.check_resource(
            Interaction::Read,
            &json!({"resourceType": "Organization", "id": "1"}),
            BASES
        ),
        Err(Refusal::OtherPatient)
    );
}

#[test]
fn a_scope_without_the_interaction_refuses_it() {
    let me = caller("patient/Observation.rs", Some("123"));
    for interaction in [
        Interaction::Create,
        Interaction::Update,
        Interaction::Patch,
        Interaction::Delete,
    ] {
        assert_eq!(
            me.check_resource(interaction, &obs("Patient/123"), BASES),
            Err(Refusal::ScopeMissing {
                interaction,
                resource_type: "Observation".into()
            })
        );
    }
    assert!(matches!(
        me.check_resource(
            Interaction::Read,
            &json!({"resourceType": "Condition", "subject": {"reference": "Patient/123"}}),
            BASES
        ),
        Err(Refusal::ScopeMissing { .. })
    ));
    // No resourceType at all: no scope covers it.
    assert!(matches!(
        me.check_resource(Interaction::Read, &json!({"id": "1"}), BASES),
        Err(Refusal::ScopeMissing { .. })
    ));
}

#[test]
fn user_scopes_are_not_narrowed_and_the_wider_scope_wins() {
    let doctor = caller("user/Observation.cruds", None);
    assert_eq!(
        doctor.check_resource(Interaction::Update, &obs("Patient/9"), BASES),
        Ok(())
    );
    assert_eq!(
        doctor.search_narrowing("Observation"),
        Ok(vec![Narrowing { params: vec![] }])
    );
    let both = caller("patient/Observation.rs user/Observation.rs", Some("1"));
    assert_eq!(
        both.check_resource(Interaction::Read, &obs("Patient/9"), BASES),
        Ok(())
    );
}

#[test]
fn searches_are_narrowed_to_the_compartment_and_the_granular_query() {
    let me = caller(
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory patient/Patient.rs patient/Condition.s",
        Some("123"),
    );
    assert_eq!(
        me.search_narrowing("Observation"),
        Ok(vec![Narrowing {
            params: vec![
                ("subject".into(), "Patient/123".into()),
                (
                    "category".into(),
                    "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".into()
                ),
            ]
        }])
    );
    assert_eq!(
        me.search_narrowing("Patient"),
        Ok(vec![Narrowing {
            params: vec![("_id".into(), "123".into())]
        }])
    );
    assert_eq!(
        me.search_narrowing("Condition"),
        Ok(vec![Narrowing {
            params: vec![("patient".into(), "Patient/123".into())]
        }])
    );
    assert!(matches!(
        me.search_narrowing("Encounter"),
        Err(Refusal::ScopeMissing { .. })
    ));
    let star = caller("patient/*.s", Some("123"));
    assert_eq!(
        star.search_narrowing("Practitioner"),
        Err(Refusal::OutsideCompartment {
            resource_type: "Practitioner".into()
        })
    );
    // A granular scope alone does not read single resources: its restriction is a search.
    assert_eq!(
        me.check_resource(Interaction::Read, &obs("Patient/123"), BASES),
        Err(Refusal::GranularOnly)
    );
}
