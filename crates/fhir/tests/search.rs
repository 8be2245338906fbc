//! R4 search parameters → the element paths they read, and query keys split into their parts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhirseal_fhir::ElementPath;
use fhirseal_fhir::search::{ParamName, RESULT_PARAMS, param, parse_param_name};
use fhirseal_fhir::structure::r4;

const TABLE: &str = include_str!("../../../fhir-profiles/r4/search-params.tsv");

fn paths(resource_type: &str, code: &str) -> Option<(&'static str, &'static str, String)> {
    param(resource_type, code).map(|p| (p.resource_type, p.kind, p.paths.join("|")))
}

#[test]
fn the_table_maps_parameters_to_the_elements_they_read() {
    let expect = |rt: &str, code: &str, def: &'static str, kind: &'static str, p: &str| {
        assert_eq!(
            paths(rt, code),
            Some((def, kind, p.to_string())),
            "{rt}?{code}"
        );
    };
    expect(
        "Patient",
        "birthdate",
        "Patient",
        "date",
        "Patient.birthDate",
    );
    expect("Patient", "name", "Patient", "string", "Patient.name");
    expect(
        "Patient",
        "given",
        "Patient",
        "string",
        "Patient.name.given",
    );
    expect(
        "Patient",
        "family",
        "Patient",
        "string",
        "Patient.name.family",
    );
    expect("Patient", "phonetic", "Patient", "string", "Patient.name");
    expect("Patient", "phone", "Patient", "token", "Patient.telecom");
    expect("Patient", "email", "Patient", "token", "Patient.telecom");
    expect("Patient", "gender", "Patient", "token", "Patient.gender");
    expect(
        "Patient",
        "address-city",
        "Patient",
        "string",
        "Patient.address.city",
    );
    expect(
        "Patient",
        "deceased",
        "Patient",
        "token",
        "Patient.deceased[x]",
    );
    expect(
        "Patient",
        "link",
        "Patient",
        "reference",
        "Patient.link.other",
    );
    let value = "Observation.value[x]";
    expect(
        "Observation",
        "value-quantity",
        "Observation",
        "quantity",
        value,
    );
    expect(
        "Observation",
        "subject",
        "Observation",
        "reference",
        "Observation.subject",
    );
    expect(
        "Observation",
        "patient",
        "Observation",
        "reference",
        "Observation.subject",
    );
    expect(
        "Observation",
        "code-value-quantity",
        "Observation",
        "composite",
        "Observation.code|Observation.value[x]",
    );
    expect(
        "Observation",
        "combo-code-value-quantity",
        "Observation",
        "composite",
        "Observation.code|Observation.value[x]|Observation.component.code|Observation.component.value[x]",
    );
    expect(
        "Observation",
        "combo-value-quantity",
        "Observation",
        "quantity",
        "Observation.value[x]|Observation.component.value[x]",
    );
    // R4's expression is `name | alias`, without the type: read relative to the resource.
    expect(
        "InsurancePlan",
        "name",
        "InsurancePlan",
        "string",
        "InsurancePlan.name|InsurancePlan.alias",
    );
    // Parameters of every resource, found through the base types.
    expect("Patient", "_id", "Resource", "token", "Resource.id");
    expect(
        "Observation",
        "_lastUpdated",
        "Resource",
        "date",
        "Resource.meta.lastUpdated",
    );
    expect("Patient", "_tag", "Resource", "token", "Resource.meta.tag");
    expect(
        "Patient",
        "_security",
        "Resource",
        "token",
        "Resource.meta.security",
    );
    expect(
        "Patient",
        "_profile",
        "Resource",
        "uri",
        "Resource.meta.profile",
    );
    expect(
        "Patient",
        "_text",
        "DomainResource",
        "string",
        "DomainResource.text",
    );
    expect("Patient", "_content", "Resource", "string", "Resource");
    expect("Patient", "_query", "Resource", "token", "");
    expect("Bundle", "_id", "Resource", "token", "Resource.id");
    // Bundle is no DomainResource: it has no narrative to search.
    assert_eq!(paths("Bundle", "_text"), None);
    assert_eq!(paths("Patient", "nickname"), None);
    assert_eq!(paths("Patient", "value-quantity"), None);
    assert_eq!(paths("Nothing", "_id"), None);
    assert_eq!(paths("HumanName", "_id"), None);
}

#[test]
fn every_path_in_the_table_is_an_r4_element_path() {
    let mut checked = 0;
    for line in TABLE.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "{line}");
        let (rt, code) = (cols[0], cols[1]);
        let found = param(rt, code).unwrap_or_else(|| panic!("{rt}?{code} loads"));
        assert_eq!(
            (found.resource_type, found.code, found.kind),
            (rt, code, cols[2])
        );
        for path in &found.paths {
            assert!(
                *path == rt || path.starts_with(&format!("{rt}.")),
                "{rt}?{code}: {path}"
            );
            if !r4().is_domain_resource(rt) || *path == rt {
                continue;
            }
            let parsed = ElementPath::parse(path)
                .unwrap_or_else(|e| panic!("{rt}?{code}: {path} does not parse: {e}"));
            assert_eq!(parsed.plain(), *path);
            checked += 1;
        }
    }
    assert!(checked > 1_400, "{checked} paths checked");
}

#[test]
fn result_parameters_are_told_apart() {
    for code in RESULT_PARAMS {
        assert_eq!(
            parse_param_name(code),
            ParamName::Result {
                code,
                modifier: None
            },
            "{code}"
        );
    }
    assert_eq!(
        parse_param_name("_include:iterate"),
        ParamName::Result {
            code: "_include",
            modifier: Some("iterate")
        }
    );
}

#[test]
fn query_keys_are_split_into_their_parts() {
    assert_eq!(
        parse_param_name("name"),
        ParamName::Search {
            code: "name",
            modifier: None
        }
    );
    assert_eq!(
        parse_param_name("name:exact"),
        ParamName::Search {
            code: "name",
            modifier: Some("exact")
        }
    );
    assert_eq!(
        parse_param_name("subject:Patient"),
        ParamName::Search {
            code: "subject",
            modifier: Some("Patient")
        }
    );
    assert_eq!(
        parse_param_name("subject.name"),
        ParamName::Chain {
            code: "subject",
            target: None,
            rest: "name"
        }
    );
    assert_eq!(
        parse_param_name("subject:Patient.name:exact"),
        ParamName::Chain {
            code: "subject",
            target: Some("Patient"),
            rest: "name:exact"
        }
    );
    assert_eq!(
        parse_param_name("_has:Observation:patient:code"),
        ParamName::ReverseChain {
            resource_type: "Observation",
            reference: "patient",
            rest: "code"
        }
    );
    assert_eq!(
        parse_param_name("_has:Observation:patient:_has:AuditEvent:entity:agent"),
        ParamName::ReverseChain {
            resource_type: "Observation",
            reference: "patient",
            rest: "_has:AuditEvent:entity:agent"
        }
    );
    assert_eq!(
        parse_param_name("_count"),
        ParamName::Result {
            code: "_count",
            modifier: None
        }
    );
    for name in [
        "",
        ":",
        "name:",
        ":exact",
        "name:ex act",
        "name:exact:more",
        "na$me",
        "subject.",
        ".name",
        "subject:.name",
        "subject:Pat ient.name",
        "_has:Observation:patient",
        "_has::patient:code",
        "_has:Observation::code",
        "_has:Observation:patient:",
        "naïve",
        "名前",
        "name\u{0}",
    ] {
        assert_eq!(parse_param_name(name), ParamName::Malformed, "{name:?}");
    }
}
