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
    use fhirseal_seal::search::plan_search;
    let rules = hospital();
    let patient = |name: &str, value: &str| {
        plan_search("Patient", &[(name.into(), value.into())], &rules, &[]).map(|plan| {
            assert!(
                !plan.owned(),
                "{name}={value}: the upstream answers it unchanged"
            );
        })
    };
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

/// The blind index never misses: whenever the gateway's matcher says a resource matches a search,
/// every `_tag` parameter the plan sends is satisfied by the tokens that resource was stored with.
/// (The converse is the point of truncation: tokens match more, and the matcher drops the rest.)
mod blind_index_never_misses {
    use fhirseal_envelope::BlindIndex;
    use fhirseal_fhir::matching::Criterion;
    use fhirseal_seal::index::keys_of_value;
    use fhirseal_seal::resource_tags;
    use fhirseal_seal::search::plan_search;
    use fhirseal_seal::{ElementRule, Rules, SearchMode};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const BITS: u8 = 8;

    /// Name, birth date and telecom in blind-index mode; `compound`: the birth date indexed
    /// only paired with the family name, as the shipped policies have it.
    fn rules(compound: bool) -> Rules {
        let policy = AccessStructure::parse("role:physician").unwrap();
        let rule = |path: &str| {
            ElementRule::new(path, policy.clone(), Granularity::Shared)
                .unwrap()
                .with_search(SearchMode::BlindIndex { bits: BITS })
        };
        let set = RuleSet::new(
            "Patient",
            vec![
                rule("Patient.name"),
                rule("Patient.birthDate").with_index_alone(!compound),
                rule("Patient.telecom"),
                rule("Patient.generalPractitioner"),
            ],
            Narrative::Seal,
            Displays::Keep,
        )
        .unwrap();
        let set = if compound {
            set.with_compound("Patient.name.family", "Patient.birthDate")
                .unwrap()
        } else {
            set
        };
        Rules::new([set]).unwrap()
    }

    /// The `meta.tag` codings a write stores for `patient`, as `system|code`: the sealer's own
    /// two steps, the keys of each sealed value and then the resource's tags.
    fn stored(index: &BlindIndex, rules: &Rules, patient: &Value) -> Vec<String> {
        let mut keys = Vec::new();
        for (member, path, data_type) in [
            ("name", "Patient.name", "HumanName"),
            ("birthDate", "Patient.birthDate", "date"),
            ("telecom", "Patient.telecom", "ContactPoint"),
            (
                "generalPractitioner",
                "Patient.generalPractitioner",
                "Reference",
            ),
        ] {
            if let Some(value) = patient.get(member) {
                keys_of_value(path, data_type, value, &mut keys);
            }
        }
        let set = rules.for_type("Patient").unwrap();
        resource_tags(index, set, &keys)
            .iter()
            .map(|t| t.search_value())
            .collect()
    }

    fn text() -> impl Strategy<Value = String> {
        "[A-Za-zÀÉÖüßø' -]{1,14}"
    }

    /// A date `dy` years from `year`, at a random precision.
    fn date_near(year: i32, dy: i32, m: u32, d: u32, p: u8) -> String {
        let y = year + dy;
        match p {
            0 => format!("{y:04}"),
            1 => format!("{y:04}-{m:02}"),
            _ => format!("{y:04}-{m:02}-{d:02}"),
        }
    }

    fn date_parts() -> impl Strategy<Value = (i32, u32, u32, u8)> {
        (-2i32..=2, 1u32..=12, 1u32..=28, 0u8..3)
    }

    /// A query close to `value`: a prefix of it, case changed, or another value.
    fn near(value: &str, cut: usize, upper: bool) -> String {
        let prefix: String = value.chars().take(cut.max(1)).collect();
        if upper { prefix.to_uppercase() } else { prefix }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn whatever_matches_carries_the_asked_tokens(
            family in text(),
            given in text(),
            phone in "[0-9-]{3,10}",
            year in 1900i32..2030,
            birth_parts in date_parts(),
            cut in 1usize..16,
            upper in any::<bool>(),
            asked_parts in date_parts(),
            other_parts in date_parts(),
            which in 0u8..14,
            gp in "[a-c]{1,2}",
            gp_type in prop::sample::select(vec!["Practitioner", "Organization", "PractitionerRole"]),
            gp_base in prop::sample::select(vec!["", "http://other.example/fhir/", "#", "urn:uuid:"]),
            compound in any::<bool>(),
        ) {
            let date = |(dy, m, d, p): (i32, u32, u32, u8), shift: bool| {
                date_near(year, if shift { dy } else { 0 }, m, d, p)
            };
            let birth = date(birth_parts, false);
            let asked_date = date(asked_parts, asked_parts.0.abs() < 1);
            let other_date = date(other_parts, true);
            let index = BlindIndex::new([4; 32]);
            let patient = json!({"resourceType": "Patient", "id": "p",
                "name": [{"family": family, "given": [given]}],
                "telecom": [{"system": "phone", "value": phone}],
                "birthDate": birth,
                "generalPractitioner": [{"reference": format!("{gp_base}{gp_type}/{gp}")}]});
            let (lo, hi) = if asked_date <= other_date {
                (asked_date.clone(), other_date)
            } else {
                (other_date, asked_date.clone())
            };
            let query: Vec<(String, String)> = match which {
                0 => vec![("family".into(), near(&family, cut, upper))],
                1 => vec![("given".into(), near(&given, cut, upper))],
                2 => vec![("name".into(), near(&given, cut, upper))],
                3 => vec![("family:exact".into(), if upper { family.to_uppercase() } else { family })],
                4 => vec![("birthdate".into(), birth.chars().take(cut.max(4)).collect())],
                5 => vec![("birthdate".into(), asked_date)],
                6 => vec![("birthdate".into(), format!("ge{lo}")), ("birthdate".into(), format!("lt{hi}"))],
                7 => vec![("birthdate".into(), format!("gt{lo}")), ("birthdate".into(), format!("le{hi}"))],
                8 => vec![("phone".into(), phone), ("family".into(), near(&family, cut, upper))],
                // The compound index's searches: the family with a date, a range, or `:exact`.
                9 => vec![("family".into(), near(&family, cut, upper)), ("birthdate".into(), asked_date)],
                10 => vec![("birthdate".into(), format!("ge{lo}")), ("family".into(), near(&family, cut, upper)), ("birthdate".into(), format!("lt{hi}"))],
                11 => vec![("family:exact".into(), family), ("birthdate".into(), birth.chars().take(cut.max(4)).collect())],
                // References: `Type/id`, a URL ending so, a bare id, `:Type` with an id.
                12 => vec![("general-practitioner".into(), if upper { format!("http://x/fhir/{gp_type}/{gp}") } else { gp })],
                _ => vec![(format!("general-practitioner:{}", if upper { "Practitioner" } else { gp_type }), gp)],
            };
            let rules = rules(compound);
            let planned = plan_search("Patient", &query, &rules, std::slice::from_ref(&index));
            // With the compound, a birth date is answered only beside a family search.
            let dated = query.iter().any(|(k, _)| k == "birthdate");
            let named = query.iter().any(|(k, _)| k.starts_with("family"));
            if compound && dated && !named {
                // Refused; by the compound rule wherever the index alone would have answered.
                let alone = plan_search("Patient", &query, &self::rules(false), std::slice::from_ref(&index));
                prop_assert!(
                    alone.is_err() || matches!(planned, Err(SearchRefusal::CompoundOnly { ref param, ref with }) if param == "birthdate" && with == "family"),
                    "{:?}: {:?}", query, planned
                );
                prop_assert!(planned.is_err(), "{:?}: {:?}", query, planned);
                return Ok(());
            }
            let Ok(plan) = planned else {
                return Ok(());
            };
            let criteria: Result<Vec<Criterion>, _> = plan
                .checked
                .iter()
                .map(|(k, v)| Criterion::parse("Patient", k, v))
                .collect();
            let Ok(criteria) = criteria else { return Ok(()) };
            if !criteria.iter().all(|c| c.matches(&patient)) {
                return Ok(());
            }
            prop_assert!(!plan.nothing, "{query:?}: planned as matching nothing");
            let stored = stored(&index, &rules, &patient);
            for (key, asked) in &plan.upstream {
                prop_assert_eq!(key, "_tag");
                prop_assert!(
                    asked.split(',').any(|t| stored.contains(&t.to_string())),
                    "{:?} matches {} but its tokens miss", query, patient
                );
            }
        }
    }

    /// With the compound index, `family` and `birthdate` ask for their pair tokens and, beside
    /// them (ANDed), the family's own tokens: the date alone is never asked for.
    #[test]
    fn a_family_and_a_birth_date_ask_for_pairs_and_the_family_alone() {
        let index = BlindIndex::new([4; 32]);
        let query = vec![
            ("family".to_string(), "smi".to_string()),
            ("birthdate".to_string(), "1974-12".to_string()),
        ];
        let plan = plan_search(
            "Patient",
            &query,
            &rules(true),
            std::slice::from_ref(&index),
        )
        .unwrap();
        let tags: Vec<&str> = plan
            .upstream
            .iter()
            .filter(|(k, _)| k == "_tag")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(tags.len(), 2, "{tags:?}");
        assert!(tags[0].contains("/Patient.name.family+Patient.birthDate/prefix+month|"));
        assert!(tags[1].contains("/Patient.name.family/prefix|"));
        assert!(!tags.iter().any(|t| t.contains("/Patient.birthDate/")));
        assert_eq!(plan.checked, query);
    }

    /// While a rotation re-indexes, two generations of the secret are searched: each `_tag`
    /// asks for the tokens of both (an OR), so a resource still under the old generation and one
    /// already under the new are both found; each generation's tokens live under a system of
    /// their own.
    #[test]
    fn two_generations_are_asked_for_in_one_tag_each() {
        let old = BlindIndex::new([4; 32]);
        let new = BlindIndex::of_generation([9; 32], std::num::NonZeroU32::new(2).unwrap());
        let query = vec![
            ("family".to_string(), "smi".to_string()),
            ("birthdate".to_string(), "1974-12".to_string()),
        ];
        let rules = rules(true);
        let both = [new, old];
        let plan = plan_search("Patient", &query, &rules, &both).unwrap();
        let alone = plan_search("Patient", &query, &rules, &both[1..]).unwrap();
        assert_eq!(plan.upstream.len(), alone.upstream.len());
        let patient = json!({"resourceType": "Patient", "id": "p",
            "name": [{"family": "Smith"}], "birthDate": "1974-12-25"});
        for index in &both {
            let stored = stored(index, &rules, &patient);
            assert!(!stored.is_empty());
            for (key, asked) in &plan.upstream {
                assert_eq!(key, "_tag");
                assert!(
                    asked.split(',').any(|t| stored.contains(&t.to_string())),
                    "generation {}: {asked} misses {stored:?}",
                    index.generation()
                );
            }
        }
        for ((_, asked), (_, only_old)) in plan.upstream.iter().zip(&alone.upstream) {
            let (new_tags, old_tags): (Vec<&str>, Vec<&str>) = asked
                .split(',')
                .partition(|t| t.starts_with("https://fhirseal.dev/fhir/blind-index/g2/Patient."));
            assert_eq!(old_tags.join(","), *only_old);
            assert_eq!(new_tags.len(), old_tags.len(), "{asked}");
        }
    }

    /// A search asking for more tokens than an upstream URL holds is refused by name.
    #[test]
    fn too_many_tokens_are_refused_naming_the_parameter() {
        let index = BlindIndex::new([4; 32]);
        let many: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
        // `name` asks for the tokens of five leaves per value (at 8 bits, at most 256 each).
        let query = vec![("name".to_string(), many.join(","))];
        let refused = plan_search(
            "Patient",
            &query,
            &rules(false),
            std::slice::from_ref(&index),
        )
        .unwrap_err();
        assert!(refused.to_string().contains("`name`"), "{refused}");
        assert!(refused.to_string().contains("too many"), "{refused}");
        let few = vec![("name".to_string(), many[..40].join(","))];
        assert!(plan_search("Patient", &few, &rules(false), std::slice::from_ref(&index)).is_ok());
    }

    /// The property above is not vacuous: the queries it makes do match, often.
    #[test]
    fn prefix_queries_of_the_stored_value_match() {
        let patient = json!({"resourceType": "Patient", "id": "p",
            "name": [{"family": "Müller-Lüdenscheidt", "given": ["Zoë"]}], "birthDate": "1974-12-25",
            "generalPractitioner": [{"reference": "http://other.example/fhir/Practitioner/ab"}]});
        for (key, value) in [
            ("general-practitioner", "ab"),
            ("general-practitioner", "http://x/fhir/Practitioner/ab"),
            ("general-practitioner:Practitioner", "ab"),
            ("family", "mull"),
            ("family", "MÜLLER-LÜDENSCHEIDT"),
            ("given", "zo"),
            ("birthdate", "1974-12"),
        ] {
            let c = Criterion::parse("Patient", key, value).unwrap();
            assert!(c.matches(&patient), "{key}={value}");
        }
    }
}
