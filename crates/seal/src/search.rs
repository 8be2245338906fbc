//! Whether a search reads a sealed element, so that the gateway can refuse a search the upstream
//! server cannot answer.
//!
//! A sealed element is absent from what the server stores (it holds a masked placeholder and an
//! envelope), so a search on it would silently find nothing, or everything with `:missing`.
//! [`sealed_search_param`] tells the gateway, for one query key, whether the parameter reads an
//! element that a rule seals; the gateway then answers 400 naming the parameter, or serves it
//! another way (blind index, filtering), as the policy says. What each R4 parameter reads is
//! [`fhirseal_fhir::search`]'s table.
//!
//! The check is conservative: a parameter is refused when any path it reads equals, contains or
//! lies inside a sealed element (`Patient.telecom` sealed refuses `phone`, `email` and
//! `telecom`); a parameter R4 does not define for the type is refused, since it could read
//! anything; chains and `_has` read other resources' elements and are refused. One exception,
//! judged on the values ([`sealed_search`]): a token search on exactly the element a rule seals
//! only the items of one system of (`Patient.identifier.where(system='…us-ssn')`), when every
//! value names another system (`identifier=urn:oid:…|MRN-4711`), reads only items in clear, so the
//! server answers it as a server holding everything in clear would.

use fhirseal_fhir::search::{ParamName, param, parse_param_name};

use crate::rules::Rules;

/// Why a query key cannot be passed to the upstream server. Each variant names the key as
/// given, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SearchRefusal {
    /// The parameter reads an element sealed for this resource type (or the narrative, which is
    /// sealed with it): the server holds no value to search.
    #[error(
        "search parameter `{param}` reads an element that is sealed for this resource type: the server cannot search it"
    )]
    Sealed {
        /// The query key.
        param: String,
    },
    /// R4 defines no such parameter for this resource type: it could read anything.
    #[error("`{param}` is not a search parameter of this resource type")]
    Unknown {
        /// The query key.
        param: String,
    },
    /// A chain or reverse chain (`_has`): it reads elements of other resources, which may be
    /// sealed.
    #[error(
        "chained search `{param}` is refused: it reads elements of other resources, which may be sealed"
    )]
    Chained {
        /// The query key.
        param: String,
    },
    /// The parameter has no expression saying what it reads (`_query`), and this resource type
    /// has sealed elements.
    #[error(
        "search parameter `{param}` may read any element, and this resource type has sealed elements"
    )]
    Opaque {
        /// The query key.
        param: String,
    },
    /// The key is not a well-formed parameter name.
    #[error("`{param}` is not a well-formed search parameter name")]
    Malformed {
        /// The query key.
        param: String,
    },
}

/// The gateway's check for one query key of a search on `resource_type`: `Ok` when the
/// parameter reads no element that `rules` seal for that type.
///
/// Result parameters are always fine. A search parameter is refused with
/// [`SearchRefusal::Sealed`] when any path it reads equals, contains or lies inside the path of
/// an element rule for the type (compared without `where` filters: any overlap refuses), and
/// `_text`/`_content` whenever the type has a rule set, since the narrative is sealed with the
/// elements. A parameter R4 does not define for the type is [`SearchRefusal::Unknown`], a chain
/// or `_has` [`SearchRefusal::Chained`], a parameter without an expression
/// [`SearchRefusal::Opaque`] when the type has a rule set. The modifier does not change what is
/// read, so `name:exact` is judged as `name`.
pub fn sealed_search_param(
    resource_type: &str,
    name: &str,
    rules: &Rules,
) -> Result<(), SearchRefusal> {
    check(resource_type, name, None, rules)
}

/// [`sealed_search_param`] for one query key and its value (`identifier` and
/// `urn:oid:…|MRN-4711,urn:oid:…|MRN-4712`): the same refusals, except that a token parameter
/// without a modifier that reads exactly an element a rule seals only the items of one system of
/// (`Patient.identifier.where(system='http://hl7.org/fhir/sid/us-ssn')`) passes when every value
/// of the list names a system, and not that one: the items it can match are all in clear. A
/// value without a system, or of the sealed system, or holding an escape (`\`), is refused.
pub fn sealed_search(
    resource_type: &str,
    name: &str,
    value: &str,
    rules: &Rules,
) -> Result<(), SearchRefusal> {
    check(resource_type, name, Some(value), rules)
}

fn check(
    resource_type: &str,
    name: &str,
    value: Option<&str>,
    rules: &Rules,
) -> Result<(), SearchRefusal> {
    let key = || name.to_string();
    let (code, modifier) = match parse_param_name(name) {
        ParamName::Result { .. } => return Ok(()),
        ParamName::Search { code, modifier } => (code, modifier),
        ParamName::Chain { .. } | ParamName::ReverseChain { .. } => {
            return Err(SearchRefusal::Chained { param: key() });
        }
        ParamName::Malformed => return Err(SearchRefusal::Malformed { param: key() }),
    };
    let Some(definition) = param(resource_type, code) else {
        return Err(SearchRefusal::Unknown { param: key() });
    };
    let Some(set) = rules.for_type(resource_type) else {
        return Ok(());
    };
    if matches!(code, "_text" | "_content") {
        return Err(SearchRefusal::Sealed { param: key() });
    }
    if definition.paths.is_empty() {
        return Err(SearchRefusal::Opaque { param: key() });
    }
    // A token search without a modifier, by its values: the systems it names.
    let systems = value
        .filter(|_| definition.kind == "token" && modifier.is_none())
        .and_then(systems);
    for path in &definition.paths {
        let path = rebase(path, definition.resource_type, resource_type);
        for rule in set.elements() {
            let sealed = rule.path().plain();
            if !overlaps(&path, &sealed) {
                continue;
            }
            // Exactly the element whose items of one system are sealed, and only other systems
            // asked for: the sealed items cannot match.
            let other_systems = match (&systems, system_filter(rule.path())) {
                (Some(systems), Some(filtered)) if path == sealed => {
                    systems.iter().all(|s| *s != filtered)
                }
                _ => false,
            };
            if !other_systems {
                return Err(SearchRefusal::Sealed { param: key() });
            }
        }
    }
    Ok(())
}

/// The systems a token search's value names (`a|x,b|y`: `a` and `b`), or `None` when one of its
/// values names none (`x`, `|x`) or the value holds an escape.
fn systems(value: &str) -> Option<Vec<&str>> {
    if value.contains('\\') {
        return None;
    }
    value
        .split(',')
        .map(|item| match item.split_once('|') {
            Some((system, _)) if !system.is_empty() => Some(system),
            _ => None,
        })
        .collect()
}

/// The system a rule's path keeps the items of, when its last step is `where(system='…')`.
fn system_filter(path: &fhirseal_fhir::path::ElementPath) -> Option<&str> {
    let last = path.steps().last()?;
    let filter = last.filter.as_ref()?;
    (filter.member == "system").then_some(filter.value.as_str())
}

/// The check for the value of `_sort` (`birthdate,-name`): each parameter it sorts by must pass
/// [`sealed_search_param`], since the server cannot order resources by a value it does not
/// hold; the refusal names the `_sort` entry.
pub fn sealed_sort(resource_type: &str, value: &str, rules: &Rules) -> Result<(), SearchRefusal> {
    for entry in value.split(',') {
        let key = entry.strip_prefix('-').unwrap_or(entry);
        match parse_param_name(key) {
            ParamName::Search { .. } => sealed_search_param(resource_type, key, rules)?,
            ParamName::Chain { .. } | ParamName::ReverseChain { .. } => {
                return Err(SearchRefusal::Chained {
                    param: entry.to_string(),
                });
            }
            ParamName::Result { .. } | ParamName::Malformed => {
                return Err(SearchRefusal::Malformed {
                    param: entry.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// `Resource.meta.tag` read on a `Patient` is `Patient.meta.tag`.
fn rebase(path: &str, defining: &str, resource_type: &str) -> String {
    match path.strip_prefix(defining) {
        Some(rest) if rest.is_empty() || rest.starts_with('.') => format!("{resource_type}{rest}"),
        _ => path.to_string(),
    }
}

/// Whether one path equals the other or lies inside it (at a member boundary).
fn overlaps(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    };
    within(a, b) || within(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_overlap_at_member_boundaries() {
        assert!(overlaps("Patient.name", "Patient.name"));
        assert!(overlaps("Patient.name.given", "Patient.name"));
        assert!(overlaps("Patient.name", "Patient.name.given"));
        assert!(overlaps("Patient", "Patient.birthDate"));
        assert!(!overlaps("Patient.name", "Patient.nameX"));
        assert!(!overlaps("Patient.birthDate", "Patient.name"));
        assert!(overlaps("Observation.value[x]", "Observation.value[x]"));
        assert!(!overlaps(
            "Observation.value[x]",
            "Observation.component.value[x]"
        ));
    }

    #[test]
    fn paths_of_every_resource_are_rebased() {
        assert_eq!(
            rebase("Resource.meta.tag", "Resource", "Patient"),
            "Patient.meta.tag"
        );
        assert_eq!(rebase("Resource", "Resource", "Patient"), "Patient");
        assert_eq!(
            rebase("DomainResource.text", "DomainResource", "Observation"),
            "Observation.text"
        );
        assert_eq!(rebase("Patient.name", "Patient", "Patient"), "Patient.name");
    }
}
