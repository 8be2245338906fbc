//! The gateway's check that refuses a search on a sealed element (issue 7), with the general
//! hospital policy's protection rules built by hand.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhirseal_envelope::Granularity;
use fhirseal_fhir::search::RESULT_PARAMS;
use fhirseal_seal::search::{SearchRefusal, sealed_search_param, sealed_sort};
use fhirseal_seal::{Displays, ElementRule, Narrative, RuleSet, Rules};
use rshabe::AccessStructure;

fn set(resource_type: &str, paths: &[&str]) -> RuleSet {
    let policy = AccessStructure::parse("role:physician or patient:self").unwrap();
    let elements = paths
        .iter()
        .map(|p| ElementRule::new(p, policy.clone(), Granularity::Shared).unwrap())
        .collect();
    RuleSet::new(resource_type, elements, Narrative::Seal, Displays::Matching).unwrap()
}

/// The element rules of `fhir-profiles/policies/general-hospital.toml`.
fn hospital() -> Rules {
    Rules::new([
        set(
            "Patient",
            &[
                "Patient.name",
                "Patient.telecom",
                "Patient.address",
                "Patient.birthDate",
                "Patient.contact.name",
                "Patient.contact.telecom",
                "Patient.contact.address",
                "Patient.photo",
                "Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn')",
            ],
        ),
        set(
            "Observation",
            &[
                "Observation.value[x]",
                "Observation.component.value[x]",
                "Observation.interpretation",
            ],
        ),
        set(
            "Condition",
            &["Condition.code", "Condition.bodySite", "Condition.severity"],
        ),
        set("Encounter", &["Encounter.reasonCode"]),
        set(
            "MedicationRequest",
            &[
                "MedicationRequest.dosageInstruction",
                "MedicationRequest.reasonCode",
            ],
        ),
        set(
            "Practitioner",
            &["Practitioner.address", "Practitioner.birthDate"],
        ),
    ])
    .unwrap()
}

fn check(rules: &Rules, resource_type: &str, name: &str) -> Result<(), SearchRefusal> {
    sealed_search_param(resource_type, name, rules)
}

fn sealed(name: &str) -> Result<(), SearchRefusal> {
    Err(SearchRefusal::Sealed {
        param: name.to_string(),
    })
}

#[test]
fn sealed_patient_elements_refuse_their_parameters() {
    let rules = hospital();
    for name in [
        "birthdate",
        "name",
        "given",
        "family",
        "phonetic",
        "phone",
        "email",
        "telecom",
        "address",
        "address-city",
        "address-postalcode",
        // Only the SSN is sealed, but the parameter reads every identifier: refused.
        "identifier",
        // Modifiers do not change what is read.
        "name:exact",
        "name:contains",
        "birthdate:missing",
        "identifier:of-type",
        // Narrative searches: the narrative is sealed with the elements.
        "_text",
        "_content",
    ] {
        assert_eq!(
            check(&rules, "Patient", name),
            sealed(name),
            "Patient?{name}"
        );
    }
    for name in [
        "gender",
        "gender:not",
        "active",
        "language",
        "deceased",
        "death-date",
        "general-practitioner",
        "organization",
        "link",
        "_id",
        "_lastUpdated",
        "_tag",
        "_tag:not",
        "_profile",
        "_security",
        "_source",
    ] {
        assert_eq!(check(&rules, "Patient", name), Ok(()), "Patient?{name}");
    }
    assert_eq!(
        check(&rules, "Patient", "_query"),
        Err(SearchRefusal::Opaque {
            param: "_query".into()
        })
    );
    assert_eq!(check(&rules, "Practitioner", "address"), sealed("address"));
    // R4 defines no `birthdate` for Practitioner: unknown, whatever is sealed.
    assert_eq!(
        check(&rules, "Practitioner", "birthdate"),
        Err(SearchRefusal::Unknown {
            param: "birthdate".into()
        })
    );
    assert_eq!(check(&rules, "Practitioner", "name"), Ok(()));
}

#[test]
fn sealed_observation_values_refuse_every_value_parameter() {
    let rules = hospital();
    for name in [
        "value-quantity",
        "value-concept",
        "value-date",
        "value-string",
        "combo-value-quantity",
        "combo-value-concept",
        "component-value-quantity",
        "component-value-concept",
        "code-value-quantity",
        "code-value-concept",
        "code-value-date",
        "code-value-string",
        "combo-code-value-quantity",
        "combo-code-value-concept",
        "component-code-value-quantity",
        "value-quantity:missing",
    ] {
        assert_eq!(
            check(&rules, "Observation", name),
            sealed(name),
            "Observation?{name}"
        );
    }
    for name in [
        "code",
        "code:text",
        "combo-code",
        "component-code",
        "subject",
        "subject:Patient",
        "subject:identifier",
        "patient",
        "date",
        "status",
        "category",
        "data-absent-reason",
        "_lastUpdated",
    ] {
        assert_eq!(
            check(&rules, "Observation", name),
            Ok(()),
            "Observation?{name}"
        );
    }
    assert_eq!(check(&rules, "Condition", "code"), sealed("code"));
    assert_eq!(check(&rules, "Condition", "body-site"), sealed("body-site"));
    assert_eq!(check(&rules, "Condition", "severity"), sealed("severity"));
    assert_eq!(check(&rules, "Condition", "clinical-status"), Ok(()));
    assert_eq!(
        check(&rules, "Encounter", "reason-code"),
        sealed("reason-code")
    );
    assert_eq!(check(&rules, "Encounter", "reason-reference"), Ok(()));
}

#[test]
fn a_parameter_inside_or_around_a_sealed_element_is_refused() {
    let rules = Rules::new([set(
        "Patient",
        &["Patient.name.given", "Patient.address.city"],
    )])
    .unwrap();
    // The parameter reads the whole name: it contains the sealed given names.
    assert_eq!(check(&rules, "Patient", "name"), sealed("name"));
    assert_eq!(check(&rules, "Patient", "phonetic"), sealed("phonetic"));
    assert_eq!(check(&rules, "Patient", "given"), sealed("given"));
    assert_eq!(check(&rules, "Patient", "family"), Ok(()));
    assert_eq!(check(&rules, "Patient", "address"), sealed("address"));
    assert_eq!(
        check(&rules, "Patient", "address-city"),
        sealed("address-city")
    );
    assert_eq!(check(&rules, "Patient", "address-state"), Ok(()));
    assert_eq!(check(&rules, "Patient", "birthdate"), Ok(()));
}

#[test]
fn types_without_rules_search_freely_but_not_blindly() {
    let rules = hospital();
    assert_eq!(check(&rules, "Location", "name"), Ok(()));
    assert_eq!(check(&rules, "Location", "_text"), Ok(()));
    assert_eq!(check(&rules, "Location", "_content"), Ok(()));
    assert_eq!(check(&rules, "Location", "_query"), Ok(()));
    // A rule set that seals nothing still refuses narrative searches (it exists: any doubt denies).
    let empty =
        Rules::new([
            RuleSet::new("Location", Vec::new(), Narrative::Seal, Displays::Matching).unwrap(),
        ])
        .unwrap();
    assert_eq!(check(&empty, "Location", "_text"), sealed("_text"));
    assert_eq!(check(&empty, "Location", "name"), Ok(()));
    // Unknown parameters and chains are refused whatever the rules.
    let none = Rules::default();
    for rules in [&rules, &none] {
        for name in ["nickname", "birthDate", "_filter", "_list", "_has", "_type"] {
            assert_eq!(
                check(rules, "Patient", name),
                Err(SearchRefusal::Unknown { param: name.into() }),
                "Patient?{name}"
            );
        }
        assert_eq!(
            check(rules, "Observation", "value"),
            Err(SearchRefusal::Unknown {
                param: "value".into()
            })
        );
        assert_eq!(
            check(rules, "Nothing", "name"),
            Err(SearchRefusal::Unknown {
                param: "name".into()
            })
        );
        assert_eq!(
            check(rules, "Bundle", "_text"),
            Err(SearchRefusal::Unknown {
                param: "_text".into()
            })
        );
        for name in [
            "subject.name",
            "subject:Patient.name",
            "patient.birthdate",
            "subject.organization.name",
            "general-practitioner.name",
            "_has:Observation:patient:code",
            "_has:Observation:patient:_has:AuditEvent:entity:agent",
        ] {
            let rt = if name.starts_with("general") || name.starts_with("_has") {
                "Patient"
            } else {
                "Observation"
            };
            assert_eq!(
                check(rules, rt, name),
                Err(SearchRefusal::Chained { param: name.into() }),
                "{rt}?{name}"
            );
        }
    }
}

#[test]
fn result_parameters_read_no_element() {
    let rules = hospital();
    for code in RESULT_PARAMS {
        assert_eq!(check(&rules, "Patient", code), Ok(()), "{code}");
    }
    assert_eq!(check(&rules, "Patient", "_include:iterate"), Ok(()));
    assert_eq!(check(&rules, "Observation", "_revinclude:iterate"), Ok(()));
}

#[test]
fn malformed_keys_are_refused_as_such() {
    let rules = hospital();
    for name in ["", "name:", "subject.", "_has:Observation:patient", "naïve"] {
        assert_eq!(
            check(&rules, "Patient", name),
            Err(SearchRefusal::Malformed { param: name.into() }),
            "{name:?}"
        );
    }
}

#[test]
fn sorting_by_a_sealed_parameter_is_refused() {
    let rules = hospital();
    assert_eq!(
        sealed_sort("Patient", "gender,-_lastUpdated", &rules),
        Ok(())
    );
    assert_eq!(
        sealed_sort("Patient", "gender,-birthdate", &rules),
        sealed("birthdate")
    );
    assert_eq!(
        sealed_sort("Observation", "-value-quantity", &rules),
        sealed("value-quantity")
    );
    assert_eq!(
        sealed_sort("Patient", "nickname", &rules),
        Err(SearchRefusal::Unknown {
            param: "nickname".into()
        })
    );
    assert_eq!(
        sealed_sort("Observation", "subject.name", &rules),
        Err(SearchRefusal::Chained {
            param: "subject.name".into()
        })
    );
    assert_eq!(
        sealed_sort("Patient", "", &rules),
        Err(SearchRefusal::Malformed {
            param: String::new()
        })
    );
    assert_eq!(
        sealed_sort("Patient", "_count", &rules),
        Err(SearchRefusal::Malformed {
            param: "_count".into()
        })
    );
}

#[test]
fn refusals_name_the_parameter_and_say_why() {
    let rules = hospital();
    let message = |rt: &str, name: &str| check(&rules, rt, name).err().map(|e| e.to_string());
    assert_eq!(
        message("Patient", "birthdate").as_deref(),
        Some(
            "search parameter `birthdate` reads an element that is sealed for this resource type: the server cannot search it"
        )
    );
    assert_eq!(
        message("Patient", "nickname").as_deref(),
        Some("`nickname` is not a search parameter of this resource type")
    );
    assert!(
        message("Observation", "subject.name")
            .is_some_and(|m| m.starts_with("chained search `subject.name` is refused"))
    );
    assert!(
        message("Patient", "_query")
            .is_some_and(|m| m.contains("`_query`") && m.contains("sealed elements"))
    );
    assert!(message("Patient", "na$me").is_some_and(|m| m.contains("`na$me`")));
}

/// Only the SSN items of `Patient.identifier` are sealed: an `identifier` search whose every value
/// names another system reads only items in clear and passes; one without a system, of the SSN
/// system, with a modifier or an escape is refused, and so is every other parameter on a sealed
/// element, whatever its value (issue 16, "Element filters in rules").
#[test]
fn an_identifier_search_of_another_system_than_the_sealed_one_passes() {
    use fhirseal_seal::search::sealed_search;
    let rules = hospital();
    let patient = |name: &str, value: &str| sealed_search("Patient", name, value, &rules);
    let mrn = "urn:oid:2.16.840.1.113883.19.5|MRN-4711";
    assert_eq!(patient("identifier", mrn), Ok(()));
    assert_eq!(
        patient("identifier", &format!("{mrn},urn:oid:1.2.3|X-1")),
        Ok(())
    );
    // The system alone (`system|`) names the system too.
    assert_eq!(
        patient("identifier", "urn:oid:2.16.840.1.113883.19.5|"),
        Ok(())
    );
    let ssn = "http://hl7.org/fhir/sid/us-ssn";
    for (name, value) in [
        ("identifier", "MRN-4711"),
        ("identifier", "|MRN-4711"),
        ("identifier", &format!("{ssn}|999-00-1234") as &str),
        ("identifier", &format!("{mrn},{ssn}|999-00-1234")),
        ("identifier", &format!("{mrn},999-00-1234")),
        ("identifier", "urn:oid:1.2\\|3|x"),
        ("identifier:of-type", &format!("{ssn}|SS|999")),
        ("identifier:not", mrn),
        ("identifier:text", "MRN"),
        // Sealed without a filter: no value passes.
        ("telecom", "phone|555-0100"),
        ("phone", "http://x|555-0100"),
        ("family", "urn:oid:1.2.3|x"),
    ] {
        assert_eq!(
            patient(name, value),
            Err(SearchRefusal::Sealed {
                param: name.to_string()
            }),
            "{name}={value}"
        );
    }
    // Without its value the parameter stays refused.
    assert_eq!(check(&rules, "Patient", "identifier"), sealed("identifier"));
}
