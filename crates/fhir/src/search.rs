//! R4 search parameters and the elements they read, so that the gateway can refuse a search the
//! upstream server cannot answer because the element it reads is sealed.
//!
//! A sealed element is absent from what the server stores (it holds a masked placeholder and an
//! envelope), so a search on it would silently find nothing, or everything with `:missing`.
//! [`sealed_search_param`] tells the gateway, for one query key, whether the parameter reads an
//! element that a rule seals; the gateway then answers 400 naming the parameter, or serves it
//! another way (blind index, filtering), as the policy says.
//!
//! The parameters come from `fhir-profiles/r4/search-params.tsv`, generated from R4's
//! SearchParameters by `fhir-profiles/scripts/gen_r4_facts.py`: for each resource type and
//! parameter code, the member paths its FHIRPath expression reads (`Patient.name.given`,
//! `Observation.value[x]`), with filters, casts and `resolve()` dropped, so that a path is never
//! narrower than what the parameter reads. Parameters of every resource (`_id`, `_lastUpdated`,
//! `_tag`…) are listed under `Resource` and `DomainResource`.
//!
//! The check is conservative: a parameter is refused when any path it reads equals, contains or
//! lies inside a sealed element, whatever the rule's `where` filter (`Patient.telecom` sealed
//! refuses `phone`, `email` and `telecom`); a parameter R4 does not define for the type is
//! refused, since it could read anything; chains and `_has` read other resources' elements and
//! are refused.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::rules::Rules;
use crate::structure::{Kind, r4};

const SEARCH_PARAMS: &str = include_str!("../../../fhir-profiles/r4/search-params.tsv");

/// The parameters that shape a search's result and read no element of the resources searched
/// (R4 search, "Modifying Search Results"; `_format` and `_pretty` of every interaction; the
/// paging parameters of common servers).
pub const RESULT_PARAMS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_elements",
    "_summary",
    "_total",
    "_contained",
    "_containedType",
    "_format",
    "_pretty",
    "_offset",
    "_page",
];

/// One R4 search parameter of one resource type (or of every resource, under `Resource` and
/// `DomainResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchParam {
    /// The type that defines it: a resource type, `DomainResource` or `Resource`.
    pub resource_type: &'static str,
    /// Its code, the query key without modifier (`birthdate`, `value-quantity`, `_id`).
    pub code: &'static str,
    /// Its R4 type (`string`, `token`, `reference`, `date`, `quantity`, `composite`…).
    pub kind: &'static str,
    /// The member paths its expression reads, starting with [`SearchParam::resource_type`]
    /// (`Patient.name.given`, `Observation.value[x]`, `Resource.meta.tag`); a bare type name
    /// reads the whole resource. Empty when R4 gives it no usable expression (`_query`).
    pub paths: Vec<&'static str>,
}

/// A query key, split into its parts (R4 search: modifiers, chained and reverse-chained
/// parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamName<'a> {
    /// A result parameter ([`RESULT_PARAMS`]), possibly with a modifier (`_include:iterate`).
    Result {
        /// Its code (`_count`).
        code: &'a str,
        /// The text after `:`, if any.
        modifier: Option<&'a str>,
    },
    /// A search parameter, possibly with a modifier (`name:exact`, `subject:Patient`,
    /// `code:text`).
    Search {
        /// Its code (`name`).
        code: &'a str,
        /// The text after `:`, if any.
        modifier: Option<&'a str>,
    },
    /// A chained parameter: `subject.name`, `subject:Patient.name`, `subject.organization.name`.
    Chain {
        /// The reference parameter it starts from (`subject`).
        code: &'a str,
        /// The target type given as a modifier (`Patient` in `subject:Patient.name`).
        target: Option<&'a str>,
        /// What follows the first `.` (`name`, `organization.name`).
        rest: &'a str,
    },
    /// A reverse chain: `_has:Observation:patient:code`.
    ReverseChain {
        /// The type of the resources that refer to this one (`Observation`).
        resource_type: &'a str,
        /// Their reference parameter (`patient`).
        reference: &'a str,
        /// Their parameter, possibly chained or itself `_has:…` (`code`).
        rest: &'a str,
    },
    /// Not a well-formed parameter name (empty, an empty part, or characters no parameter
    /// name has).
    Malformed,
}

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

/// The parameters by defining type and code, parsed on first use (about 1,700).
static PARAMS: LazyLock<HashMap<&'static str, HashMap<&'static str, SearchParam>>> =
    LazyLock::new(load);

fn load() -> HashMap<&'static str, HashMap<&'static str, SearchParam>> {
    let mut params: HashMap<&'static str, HashMap<&'static str, SearchParam>> = HashMap::new();
    let rows = SEARCH_PARAMS
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    for line in rows {
        let mut cols = line.split('\t');
        let (Some(resource_type), Some(code), Some(kind), Some(paths)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        let paths = paths
            .split('|')
            .filter(|p| !p.is_empty() && *p != "-")
            .collect();
        params.entry(resource_type).or_default().insert(
            code,
            SearchParam {
                resource_type,
                code,
                kind,
                paths,
            },
        );
    }
    params
}

/// The R4 search parameter `code` of `resource_type`: the type's own, else one of every
/// `DomainResource` (`_text`) if it is one, else one of every `Resource` (`_id`,
/// `_lastUpdated`). `None` for a parameter R4 does not define there, or a type that is not an
/// R4 resource type.
pub fn param(resource_type: &str, code: &str) -> Option<&'static SearchParam> {
    if r4().kind(resource_type) != Some(Kind::Resource) {
        return None;
    }
    let find = |defining: &str| PARAMS.get(defining).and_then(|p| p.get(code));
    find(resource_type)
        .or_else(|| {
            r4().is_domain_resource(resource_type)
                .then(|| find("DomainResource"))
                .flatten()
        })
        .or_else(|| find("Resource"))
}

/// Splits a query key into code, modifier, chain or reverse chain.
///
/// `name:exact` → [`ParamName::Search`] with modifier `exact`; `subject:Patient.name` →
/// [`ParamName::Chain`]; `_has:Observation:patient:code` → [`ParamName::ReverseChain`];
/// `_include:iterate` → [`ParamName::Result`]. Codes and modifiers are made of ASCII letters,
/// digits, `-` and `_`; anything else is [`ParamName::Malformed`].
pub fn parse_param_name(name: &str) -> ParamName<'_> {
    if let Some(rest) = name.strip_prefix("_has:") {
        let mut parts = rest.splitn(3, ':');
        return match (parts.next(), parts.next(), parts.next()) {
            (Some(resource_type), Some(reference), Some(rest))
                if is_token(resource_type) && is_token(reference) && !rest.is_empty() =>
            {
                ParamName::ReverseChain {
                    resource_type,
                    reference,
                    rest,
                }
            }
            _ => ParamName::Malformed,
        };
    }
    if let Some((head, rest)) = name.split_once('.') {
        let (code, target) = match head.split_once(':') {
            Some((code, target)) => (code, Some(target)),
            None => (head, None),
        };
        if !is_token(code) || target.is_some_and(|t| !is_token(t)) || rest.is_empty() {
            return ParamName::Malformed;
        }
        return ParamName::Chain { code, target, rest };
    }
    let (code, modifier) = match name.split_once(':') {
        Some((code, modifier)) => (code, Some(modifier)),
        None => (name, None),
    };
    if !is_token(code) || modifier.is_some_and(|m| !is_token(m)) {
        return ParamName::Malformed;
    }
    if RESULT_PARAMS.contains(&code) {
        ParamName::Result { code, modifier }
    } else {
        ParamName::Search { code, modifier }
    }
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
    let key = || name.to_string();
    let code = match parse_param_name(name) {
        ParamName::Result { .. } => return Ok(()),
        ParamName::Search { code, .. } => code,
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
    let sealed: Vec<String> = set.elements().iter().map(|r| r.path().plain()).collect();
    for path in &definition.paths {
        let path = rebase(path, definition.resource_type, resource_type);
        if sealed.iter().any(|s| overlaps(&path, s)) {
            return Err(SearchRefusal::Sealed { param: key() });
        }
    }
    Ok(())
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

/// ASCII letters, digits, `-` and `_`, at least one.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
