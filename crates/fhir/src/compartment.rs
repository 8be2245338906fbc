//! The Patient compartment (R4 CompartmentDefinition/patient): whether a resource is in one
//! patient's compartment, and the search parameter that narrows a search to it. A SMART
//! `patient/` scope reaches no further than this.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::structure::r4;

/// Whether `resource` is in the compartment of `Patient/{patient_id}`: it is that Patient, or
/// one of the references that put its type in a Patient compartment (`Observation.subject`,
/// `Observation.performer`, `Patient.link.other`, …) points at it.
///
/// A reference counts when it is relative (`Patient/123`, also with `/_history/2`) or absolute
/// under one of `bases` (the server's own base URLs, without a trailing slash). References
/// inside contained resources do not count: the container's own references decide. Resource
/// types outside the compartment (`Practitioner`, `Organization`, …) are in no patient's.
pub fn in_patient_compartment(resource: &Value, patient_id: &str, bases: &[&str]) -> bool {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return false;
    };
    if patient_id.is_empty() {
        return false;
    }
    if resource_type == "Patient" && resource.get("id").and_then(Value::as_str) == Some(patient_id)
    {
        return true;
    }
    references(resource_type).iter().any(|segments| {
        let mut found = false;
        walk(resource, segments, &mut |reference| {
            found |= points_at(reference, patient_id, bases);
        });
        found
    })
}

/// The id of the patient whose record `resource` is: a Patient's own `id`; for another type in
/// the Patient compartment, the first patient ([`referenced_patient`]) its compartment references
/// name, taken first from the reference of its [`patient_search_param`] (`Observation.subject`),
/// then `subject` or `patient`, then the others in CompartmentDefinition/patient's order. So an
/// Observation is the record of its `subject` whatever its `performer` names, and of its
/// `performer` only when its `subject` is no patient of ours. `None` for a type outside the
/// compartment, or a resource that names no patient there.
///
/// The references are the ones [`in_patient_compartment`] follows, found the same way: a record
/// is always in its patient's compartment.
pub fn record_patient<'r>(resource: &'r Value, bases: &[&str]) -> Option<&'r str> {
    let resource_type = resource.get("resourceType")?.as_str()?;
    if resource_type == "Patient" {
        return resource.get("id")?.as_str();
    }
    references(resource_type).iter().find_map(|segments| {
        let mut first = None;
        walk(resource, segments, &mut |reference| {
            if first.is_none() {
                first = referenced_patient(reference, bases);
            }
        });
        first
    })
}

/// The references that put a resource of `resource_type` in a Patient compartment, each as its
/// path's steps below the resource (`["subject"]` for `Observation.subject`), in the order
/// [`record_patient`] takes them. Worked out once for every type: a 100-entry search asks for
/// each of its entries.
fn references(resource_type: &str) -> &'static [Vec<&'static str>] {
    static REFERENCES: LazyLock<HashMap<&'static str, Vec<Vec<&'static str>>>> =
        LazyLock::new(|| {
            let r4 = r4();
            r4.compartment_types()
                .map(|resource_type| {
                    let primary = patient_search_param(resource_type);
                    let mut paths = r4.compartment_references(resource_type).to_vec();
                    // Stable: CompartmentDefinition/patient's order within each rank.
                    paths.sort_by_key(|path| {
                        let last = path.rsplit('.').next().unwrap_or_default();
                        if Some(last) == primary {
                            0
                        } else if last == "subject" || last == "patient" {
                            1
                        } else {
                            2
                        }
                    });
                    let steps = paths
                        .into_iter()
                        .map(|path| path.split('.').skip(1).collect())
                        .collect();
                    (resource_type, steps)
                })
                .collect()
        });
    REFERENCES.get(resource_type).map_or(&[], Vec::as_slice)
}

/// The search parameter to add (with the value `Patient/{id}`, or `{id}` for `_id`) so that a
/// search on `resource_type` stays in one patient's compartment: `_id` for Patient; `patient`
/// where the compartment uses it; else the first parameter the CompartmentDefinition lists
/// (`subject` for Observation). `None` for types outside the compartment: a `patient/` scope
/// cannot search them.
///
/// The narrowed search may find fewer resources than the whole compartment (an Observation whose
/// `performer`, not `subject`, is the patient): scopes only delegate, so fewer is allowed, more
/// never.
pub fn patient_search_param(resource_type: &str) -> Option<&'static str> {
    if resource_type == "Patient" {
        return Some("_id");
    }
    let params = r4().compartment_params(resource_type);
    params
        .iter()
        .find(|p| **p == "patient")
        .or_else(|| params.iter().find(|p| **p != "{def}"))
        .copied()
}

/// Calls `found` with the `reference` string of every Reference at `segments` below `value`, in
/// document order.
fn walk<'r>(value: &'r Value, segments: &[&str], found: &mut dyn FnMut(&'r str)) {
    match value {
        Value::Array(items) => {
            for item in items {
                walk(item, segments, found);
            }
        }
        Value::Object(object) => match segments.split_first() {
            None => {
                if let Some(reference) = object.get("reference").and_then(Value::as_str) {
                    found(reference);
                }
            }
            Some((first, rest)) => {
                if let Some(base) = first.strip_suffix("[x]") {
                    if let Some(child) = object.get(&format!("{base}Reference")) {
                        walk(child, rest, found);
                    }
                } else if let Some(child) = object.get(*first) {
                    walk(child, rest, found);
                }
            }
        },
        _ => {}
    }
}

/// Whether `reference` names `Patient/{patient_id}` ([`referenced_patient`]).
fn points_at(reference: &str, patient_id: &str, bases: &[&str]) -> bool {
    referenced_patient(reference, bases) == Some(patient_id)
}

/// The id of the Patient `reference` names, the one rule for the scopes (the compartment) and
/// the policy (whose record a resource is): a relative reference (`Patient/123`, also with
/// `/_history/2`), or an absolute one under one of `bases` (the gateway's own base and the
/// upstream's, without a trailing slash). An absolute reference to another server
/// (`http://other.example/fhir/Patient/123`) names no patient of ours: `None`, as for a
/// reference to another type, a contained one (`#p1`) or a malformed one.
pub fn referenced_patient<'a>(reference: &'a str, bases: &[&str]) -> Option<&'a str> {
    let relative = if reference.starts_with("Patient/") {
        reference
    } else {
        bases.iter().find_map(|base| {
            reference
                .strip_prefix(base.trim_end_matches('/'))
                .and_then(|r| r.strip_prefix('/'))
        })?
    };
    let rest = relative.strip_prefix("Patient/")?;
    let id = match rest.split_once('/') {
        Some((id, history)) if history.starts_with("_history/") => id,
        Some(_) => return None,
        None => rest,
    };
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BASE: &[&str] = &["https://fhir.example.org/r4"];

    #[test]
    fn a_patient_is_in_its_own_compartment_only() {
        let p = json!({"resourceType": "Patient", "id": "123"});
        assert!(in_patient_compartment(&p, "123", BASE));
        assert!(!in_patient_compartment(&p, "12", BASE));
        let linked = json!({"resourceType": "Patient", "id": "9",
            "link": [{"other": {"reference": "Patient/123"}, "type": "seealso"}]});
        assert!(in_patient_compartment(&linked, "123", BASE));
    }

    #[test]
    fn references_count_relative_versioned_and_under_our_bases() {
        for reference in [
            "Patient/123",
            "Patient/123/_history/4",
            "https://fhir.example.org/r4/Patient/123",
        ] {
            let o = json!({"resourceType": "Observation", "subject": {"reference": reference}});
            assert!(in_patient_compartment(&o, "123", BASE), "{reference}");
        }
        for reference in [
            "Patient/1234",
            "Patient/12",
            "Group/123",
            "https://elsewhere.example/Patient/123",
            "https://fhir.example.org/r4x/Patient/123",
            "Patient/123/foo",
            "#p1",
        ] {
            let o = json!({"resourceType": "Observation", "subject": {"reference": reference}});
            assert!(!in_patient_compartment(&o, "123", BASE), "{reference}");
        }
    }

    #[test]
    fn a_reference_names_our_patient_relatively_or_under_our_bases_only() {
        let bases = &["https://gw.example/fhir", "http://upstream:8080/fhir/"];
        for (reference, want) in [
            ("Patient/x", Some("x")),
            ("Patient/x/_history/2", Some("x")),
            ("https://gw.example/fhir/Patient/x", Some("x")),
            ("http://upstream:8080/fhir/Patient/x", Some("x")),
            ("http://upstream:8080/fhir/Patient/x/_history/1", Some("x")),
            ("http://other.example/fhir/Patient/x", None),
            ("https://gw.example/fhirx/Patient/x", None),
            ("https://gw.example/fhir/Group/x", None),
            ("Group/x", None),
            ("Patient/", None),
            ("Patient/x/y", None),
            ("#p1", None),
            ("", None),
        ] {
            assert_eq!(referenced_patient(reference, bases), want, "{reference}");
        }
        assert_eq!(
            referenced_patient("https://gw.example/fhir/Patient/x", &[]),
            None
        );
    }

    #[test]
    fn any_compartment_reference_counts_but_contained_ones_do_not() {
        let performer = json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/1"},
            "performer": [{"reference": "Practitioner/7"}, {"reference": "Patient/123"}]});
        assert!(in_patient_compartment(&performer, "123", &[]));
        let contained = json!({"resourceType": "Observation",
            "subject": {"reference": "#c"},
            "contained": [{"resourceType": "Observation", "id": "c",
                "subject": {"reference": "Patient/123"}}]});
        assert!(!in_patient_compartment(&contained, "123", &[]));
        let encounter = json!({"resourceType": "Encounter",
            "participant": [{"individual": {"reference": "Patient/123"}}]});
        assert_eq!(
            in_patient_compartment(&encounter, "123", &[]),
            r4().compartment_references("Encounter")
                .contains(&"Encounter.participant.individual")
        );
        let outside = json!({"resourceType": "Practitioner", "id": "123"});
        assert!(!in_patient_compartment(&outside, "123", &[]));
        assert!(!in_patient_compartment(&json!({"id": "123"}), "123", &[]));
        assert!(!in_patient_compartment(&json!("Patient/123"), "123", &[]));
        assert!(!in_patient_compartment(&performer, "", &[]));
    }

    /// Every type of the compartment, with a different patient at each of its compartment
    /// references: the record is the primary reference's patient, else `subject`'s or
    /// `patient`'s, else the first reference's in CompartmentDefinition/patient's order; and a
    /// record is always in its patient's compartment.
    #[test]
    fn a_record_is_its_primary_references_patient_for_every_type() {
        let r4 = r4();
        let mut types: Vec<_> = r4.compartment_types().collect();
        types.sort_unstable();
        assert!(types.len() > 50, "{types:?}");
        for resource_type in types {
            let paths = r4.compartment_references(resource_type);
            let mut resource = json!({"resourceType": resource_type});
            for (i, path) in paths.iter().enumerate() {
                let mut at = &mut resource;
                for step in path.split('.').skip(1) {
                    at = at
                        .as_object_mut()
                        .unwrap()
                        .entry(step)
                        .or_insert_with(|| json!({}));
                }
                at["reference"] = json!(format!("Patient/p{i}"));
            }
            let last = |path: &&'static str| path.rsplit('.').next().unwrap_or_default();
            let primary = patient_search_param(resource_type);
            let want = paths
                .iter()
                .position(|p| Some(last(p)) == primary)
                .or_else(|| {
                    paths
                        .iter()
                        .position(|p| matches!(last(p), "subject" | "patient"))
                })
                .unwrap_or(0);
            let got = record_patient(&resource, &[]);
            if resource_type == "Patient" {
                assert_eq!(got, None, "a Patient without an id");
                continue;
            }
            assert_eq!(
                got,
                Some(&*format!("p{want}")),
                "{resource_type}: {paths:?}"
            );
            assert!(in_patient_compartment(&resource, got.unwrap(), &[]));
        }
    }

    #[test]
    fn a_record_names_a_later_reference_only_when_the_first_is_no_patient_of_ours() {
        let bases = &["https://gw.example/fhir"];
        let observation = |subject: &str| {
            json!({"resourceType": "Observation", "subject": {"reference": subject},
                "performer": [{"reference": "Practitioner/7"}, {"reference": "Patient/b"},
                    {"reference": "Patient/c"}]})
        };
        assert_eq!(record_patient(&observation("Patient/a"), bases), Some("a"));
        assert_eq!(
            record_patient(&observation("https://gw.example/fhir/Patient/a"), bases),
            Some("a")
        );
        for subject in ["Group/g", "http://other.example/fhir/Patient/a", "#c", ""] {
            assert_eq!(
                record_patient(&observation(subject), bases),
                Some("b"),
                "{subject}"
            );
        }
        let patient = json!({"resourceType": "Patient", "id": "a",
            "link": [{"other": {"reference": "Patient/b"}}]});
        assert_eq!(record_patient(&patient, bases), Some("a"));
        for none in [
            json!({"resourceType": "Observation", "subject": {"reference": "Group/g"}}),
            json!({"resourceType": "Observation", "subject": "Patient/a"}),
            json!({"resourceType": "Practitioner", "id": "a"}),
            json!({"resourceType": "NoSuchType", "subject": {"reference": "Patient/a"}}),
            json!({"resourceType": "Patient"}),
            json!({"subject": {"reference": "Patient/a"}}),
            json!(["Patient/a"]),
        ] {
            assert_eq!(record_patient(&none, bases), None, "{none}");
        }
    }

    #[test]
    fn searches_narrow_by_the_compartment_parameter() {
        assert_eq!(patient_search_param("Patient"), Some("_id"));
        assert_eq!(patient_search_param("Observation"), Some("subject"));
        assert_eq!(patient_search_param("Condition"), Some("patient"));
        assert_eq!(patient_search_param("Encounter"), Some("subject"));
        assert_eq!(patient_search_param("Practitioner"), None);
        assert_eq!(patient_search_param("NoSuchType"), None);
    }
}
