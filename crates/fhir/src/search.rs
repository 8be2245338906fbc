//! R4 search parameters and the elements they read.
//!
//! The parameters come from `fhir-profiles/r4/search-params.tsv`, generated from R4's
//! SearchParameters by `fhir-profiles/scripts/gen_r4_facts.py`: for each resource type and
//! parameter code, the member paths its FHIRPath expression reads (`Patient.name.given`,
//! `Observation.value[x]`), with filters, casts and `resolve()` dropped, so that a path is never
//! narrower than what the parameter reads. Parameters of every resource (`_id`, `_lastUpdated`,
//! `_tag`…) are listed under `Resource` and `DomainResource`.
//!
//! What a search on a sealed element is refused for is the sealing side's question, asked of
//! this table: `fhirseal_seal::search::sealed_search_param`.

use std::collections::HashMap;
use std::sync::LazyLock;

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

/// Parses the parameter table now instead of on the first search that needs it (about a
/// millisecond of the first search after a start otherwise): for a server to call as it starts.
pub fn load_now() {
    LazyLock::force(&PARAMS);
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

/// Every R4 search parameter of `resource_type`: its own, then those of every `DomainResource`
/// (if it is one) and every `Resource` it does not redefine, by code. Empty for a type that is
/// not an R4 resource type.
pub fn params_of(resource_type: &str) -> Vec<&'static SearchParam> {
    if r4().kind(resource_type) != Some(Kind::Resource) {
        return Vec::new();
    }
    let mut codes: Vec<&'static str> = Vec::new();
    let mut defining = vec![resource_type];
    if r4().is_domain_resource(resource_type) {
        defining.push("DomainResource");
    }
    defining.push("Resource");
    for t in defining {
        if let Some(params) = PARAMS.get(t) {
            codes.extend(params.keys().copied());
        }
    }
    codes.sort_unstable();
    codes.dedup();
    codes
        .into_iter()
        .filter_map(|code| param(resource_type, code))
        .collect()
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

/// ASCII letters, digits, `-` and `_`, at least one.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
