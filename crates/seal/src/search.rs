//! How a search that may read sealed elements is answered: [`plan_search`] decides, parameter by
//! parameter, whether the upstream server answers it as it is, whether it becomes blind-index
//! tokens (`_tag`) that the gateway then checks on the opened candidates, whether the gateway
//! filters the candidates itself, or whether it is refused naming the parameter
//! ([`SearchRefusal`]), as the policy's rule for each element it reads says (`docs/search.md`).
//!
//! A sealed element is absent from what the server stores (it holds a masked placeholder and an
//! envelope), so a search on it sent as it is would silently find nothing, or everything with
//! `:missing`. What each R4 parameter reads is [`fhirseal_fhir::search`]'s table, and the check
//! is conservative: a parameter reads a sealed element when any path it reads equals, contains or
//! lies inside one (`Patient.telecom` sealed covers `phone`, `email` and `telecom`); a parameter
//! R4 does not define for the type is refused, since it could read anything; chains and `_has`
//! read other resources' elements and are refused. One exception, judged on the values: a token
//! search on exactly the element a rule seals only the items of one system of
//! (`Patient.identifier.where(system='…us-ssn')`), when every value names another system
//! (`identifier=urn:oid:…|MRN-4711`), reads only items in clear, so the server answers it as a
//! server holding everything in clear would. [`sealed_search_param`] is the same question for a
//! key without a value (`_sort`): only a parameter that reads no sealed element passes.

use std::collections::BTreeMap;

use fhirseal_envelope::BlindIndex;
use fhirseal_fhir::search::{ParamName, param, params_of, parse_param_name};

use crate::index::{
    BLIND_INDEX_SYSTEM, Key, LeafKind, QueryRefusal, Tag, Tokens, data_type, date_prefix,
    keys_of_query, keys_of_range, leaves,
};
use crate::rules::{ElementRule, RuleSet, Rules, SearchMode};

/// The search parameters that read, alone, a leaf paired with `leaf` in a compound index of
/// `resource_type`.
fn compound_partners(resource_type: &str, leaf: &str, rules: &Rules) -> Vec<String> {
    let Some(set) = rules.for_type(resource_type) else {
        return Vec::new();
    };
    let others: Vec<&str> = set
        .compounds()
        .iter()
        .filter_map(|c| {
            let [(a, _), (b, _)] = c.parts();
            match (a == leaf, b == leaf) {
                (true, _) => Some(b.as_str()),
                (_, true) => Some(a.as_str()),
                _ => None,
            }
        })
        .collect();
    params_of(resource_type)
        .iter()
        .filter(|d| {
            matches!(serve(resource_type, d.code, None, rules),
                Ok(Served::Index { leaves, .. }) if matches!(leaves.as_slice(), [(l, _)] if others.contains(&l.as_str())))
        })
        .map(|d| d.code.to_string())
        .collect()
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
    /// The parameter reads a blind-index element, but this value cannot be answered from the
    /// index.
    #[error("search parameter `{param}`: {reason}")]
    Index {
        /// The query key.
        param: String,
        /// Why, in fixed words.
        reason: QueryRefusal,
    },
    /// The parameter reads sealed and clear elements at once (a name whose family alone is
    /// sealed, an identifier search without a system when one system's identifiers are sealed):
    /// neither the server nor the index can answer it whole.
    #[error(
        "search parameter `{param}` reads sealed and clear elements at once: it cannot be answered; name the system of a token, or search the sealed element alone"
    )]
    Partial {
        /// The query key.
        param: String,
    },
    /// The parameter reads an element whose blind-index tokens are written only paired with
    /// another element's (a compound index): it is answered only together with a search on
    /// that element.
    #[error(
        "search parameter `{param}` reads an element indexed only together with another (a compound blind index): search it together with `{with}`"
    )]
    CompoundOnly {
        /// The query key.
        param: String,
        /// The parameters it would pair with, joined.
        with: String,
    },
    /// A `_tag` search that could read the gateway's blind-index tokens.
    #[error(
        "`{param}` may not name the gateway's blind-index systems, omit the system, or take a modifier on this resource type"
    )]
    Tag {
        /// The query key.
        param: String,
    },
}

/// How one search is served: what the upstream server is asked, and what the gateway checks on
/// each opened candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchPlan {
    /// The parameters sent to the upstream server: the ones it can answer, as given, then one
    /// `_tag` for each blind-index parameter (its tokens, OR-ed).
    pub upstream: Vec<(String, String)>,
    /// The parameters the gateway checks on each opened candidate: every blind-index and
    /// filter-mode parameter, as given. Non-empty: the gateway owns `total` and paging.
    pub checked: Vec<(String, String)>,
    /// A blind-index parameter asks for no token at all (an empty date range): nothing matches.
    pub nothing: bool,
}

impl SearchPlan {
    /// Whether the gateway filters the candidates, and so owns `total` and paging.
    pub fn owned(&self) -> bool {
        !self.checked.is_empty()
    }
}

/// Plans a search of `resource_type` with `params` (search parameters only; result parameters
/// are the caller's to check): each parameter goes to the upstream as it is when it reads no
/// sealed element, becomes blind-index tokens (`_tag`) plus a check on the opened candidates when
/// every sealed element it reads is in `blind-index` mode, is only checked on the opened
/// candidates when one of them is in `filter` mode, and is refused when one is in `reject` mode
/// or the value cannot be answered (see [`SearchRefusal`]). `indexes` are the gateway's
/// blind-index keys, one per generation of its secret still searched (two while a rotation
/// re-indexes: each `_tag` then asks for the tokens of both, OR-ed); without any, a blind-index
/// parameter is refused as sealed. The gateway plans under all of them to check a search, then,
/// unless it sorts, once more under each generation alone, and asks the upstream one query per
/// generation: some upstreams answer OR-ed tokens far more slowly than one (`docs/search.md`,
/// "Rotating the secret").
///
/// A `ge`/`gt` and an `le`/`lt` value of one date parameter are planned together, as one range.
///
/// # Errors
/// The first refusal, naming its query key.
pub fn plan_search(
    resource_type: &str,
    params: &[(String, String)],
    rules: &Rules,
    indexes: &[BlindIndex],
) -> Result<SearchPlan, SearchRefusal> {
    let mut plan = SearchPlan::default();
    // Date ranges on blind-index elements, by query key: (lower, upper, leaves, bits).
    let mut ranges: BTreeMap<String, Range> = BTreeMap::new();
    // What each blind-index parameter asks for, before it becomes tokens alone or in a compound.
    let mut asked: Vec<Asked> = Vec::new();
    for (name, value) in params {
        match serve(resource_type, name, Some(value), rules)? {
            Served::Upstream => plan.upstream.push((name.clone(), value.clone())),
            Served::Filter => plan.checked.push((name.clone(), value.clone())),
            Served::Index { leaves, bits } => {
                if indexes.is_empty() {
                    return Err(SearchRefusal::Sealed {
                        param: name.clone(),
                    });
                }
                let refuse = |reason| SearchRefusal::Index {
                    param: name.clone(),
                    reason,
                };
                let (prefix, rest) = date_prefix(value);
                let dates = leaves.iter().all(|(_, k)| *k == LeafKind::Date);
                if dates && matches!(prefix, "ge" | "gt" | "le" | "lt") {
                    if value.contains(',') {
                        return Err(refuse(QueryRefusal::DatePrefix));
                    }
                    let range = ranges
                        .entry(name.split(':').next().unwrap_or_default().to_string())
                        .or_insert_with(|| Range {
                            lower: None,
                            upper: None,
                            leaves: leaves.clone(),
                            bits,
                            key: name.clone(),
                            before: false,
                        });
                    let bound = if matches!(prefix, "ge" | "gt") {
                        &mut range.lower
                    } else {
                        &mut range.upper
                    };
                    if bound.is_some() {
                        return Err(refuse(QueryRefusal::DatePrefix));
                    }
                    *bound = Some(rest.to_string());
                    if prefix == "lt" {
                        range.before = true;
                    }
                    plan.checked.push((name.clone(), value.clone()));
                    continue;
                }
                let modifier = match parse_param_name(name) {
                    ParamName::Search { modifier, .. } => modifier,
                    _ => None,
                };
                let keys = keys_of_query(&leaves, modifier, value).map_err(refuse)?;
                asked.push(Asked {
                    param: name.clone(),
                    leaves,
                    bits,
                    keys,
                });
                plan.checked.push((name.clone(), value.clone()));
            }
        }
    }
    for range in ranges.into_values() {
        let keys = keys_of_range(
            &range.leaves,
            range.lower.as_deref(),
            range.upper.as_deref(),
            range.before,
        )
        .map_err(|reason| SearchRefusal::Index {
            param: range.key.clone(),
            reason,
        })?;
        asked.push(Asked {
            param: range.key,
            leaves: range.leaves,
            bits: range.bits,
            keys,
        });
    }
    if let Some(set) = rules.for_type(resource_type)
        && !indexes.is_empty()
    {
        plan.push_asked(resource_type, &asked, set, rules, indexes)?;
    }
    let asked: usize = plan
        .upstream
        .iter()
        .filter(|(k, _)| k == "_tag")
        .map(|(_, v)| v.split(',').count())
        .sum();
    if asked > MAX_TOKENS {
        let key = plan
            .checked
            .first()
            .map_or_else(String::new, |(k, _)| k.clone());
        return Err(SearchRefusal::Index {
            param: key,
            reason: QueryRefusal::TooMany,
        });
    }
    Ok(plan)
}

/// The most tokens one search may ask for: more would make an upstream URL longer than servers
/// take (each is about 90 characters).
pub const MAX_TOKENS: usize = 256;

/// What one blind-index parameter (or one date range) asks for.
struct Asked {
    /// The query key, for a refusal.
    param: String,
    leaves: Vec<(String, LeafKind)>,
    bits: u8,
    keys: Vec<Key>,
}

impl SearchPlan {
    /// One `_tag` per compound index whose two leaves are each what one parameter reads (the
    /// pairs of their keys, and beside it the keys alone of a part also indexed alone), then one
    /// per remaining parameter (its keys alone). A remaining
    /// parameter that reads a leaf not indexed alone is refused, naming the parameters that
    /// would pair with it.
    fn push_asked(
        &mut self,
        resource_type: &str,
        asked: &[Asked],
        set: &RuleSet,
        rules: &Rules,
        indexes: &[BlindIndex],
    ) -> Result<(), SearchRefusal> {
        // The tags `make` gives under every generation searched, for one `_tag` (an OR).
        let under_each = |bits: u8, make: &dyn Fn(Tokens<'_>) -> Vec<Tag>| -> Vec<Tag> {
            indexes
                .iter()
                .flat_map(|index| make(Tokens::new(index, bits)))
                .collect()
        };
        let mut paired = vec![false; asked.len()];
        for compound in set.compounds() {
            let [(a, _), (b, _)] = compound.parts();
            let alone_on = |leaf: &str, paired: &[bool]| {
                asked.iter().enumerate().position(|(i, q)| {
                    !paired[i] && matches!(q.leaves.as_slice(), [(l, _)] if l == leaf)
                })
            };
            if let (Some(i), Some(j)) = (alone_on(a, &paired), alone_on(b, &paired)) {
                paired[i] = true;
                paired[j] = true;
                self.push_tags(under_each(compound.bits(), &|t| {
                    t.compound(&asked[i].keys, &asked[j].keys)
                }));
                // A part also indexed alone asks for its own tokens too: a pair token is one of
                // many a resource stores, so at the same width it collides more often than two
                // tokens ANDed; both together keep the candidates few.
                for q in [&asked[i], &asked[j]] {
                    if q.leaves
                        .iter()
                        .all(|(leaf, _)| set.index_leaf(leaf).is_some_and(|(r, _)| r.index_alone()))
                    {
                        self.push_tags(under_each(q.bits, &|t| t.tags(&q.keys)));
                    }
                }
            }
        }
        for (q, _) in asked.iter().zip(&paired).filter(|(_, paired)| !**paired) {
            let lone = q
                .leaves
                .iter()
                .find(|(leaf, _)| !set.index_leaf(leaf).is_some_and(|(r, _)| r.index_alone()));
            if let Some((leaf, _)) = lone {
                return Err(SearchRefusal::CompoundOnly {
                    param: q.param.clone(),
                    with: compound_partners(resource_type, leaf, rules).join("`, `"),
                });
            }
            self.push_tags(under_each(q.bits, &|t| t.tags(&q.keys)));
        }
        Ok(())
    }

    fn push_tags(&mut self, tags: Vec<Tag>) {
        if tags.is_empty() {
            self.nothing = true;
            return;
        }
        let value = tags
            .iter()
            .map(Tag::search_value)
            .collect::<Vec<_>>()
            .join(",");
        self.upstream.push(("_tag".into(), value));
    }
}

struct Range {
    lower: Option<String>,
    upper: Option<String>,
    leaves: Vec<(String, LeafKind)>,
    bits: u8,
    key: String,
    /// The upper bound is `lt`.
    before: bool,
}

/// How the search parameters of `resource_type` that read a sealed element are answered under
/// `rules`, for `policy explain --searches`: each parameter's code and, in fixed words, how.
/// Parameters that read no sealed element (the upstream answers them) are left out.
pub fn served_searches(resource_type: &str, rules: &Rules) -> Vec<(&'static str, String)> {
    let Some(set) = rules.for_type(resource_type) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for definition in params_of(resource_type) {
        let code = definition.code;
        // A rule keeping only one system's items: say how a value of that system is answered.
        let filtered = set.elements().iter().find_map(|r| {
            let system = system_filter(r.path())?;
            let plain = r.path().plain();
            definition
                .paths
                .iter()
                .any(|p| rebase(p, definition.resource_type, resource_type) == plain)
                .then(|| system.to_string())
        });
        let probe = match (definition.kind, &filtered) {
            ("token", Some(system)) => Some(format!("{system}|x")),
            _ => None,
        };
        // What the gateway's matcher cannot decide exactly is refused when the search comes.
        let sample = probe.clone().unwrap_or_else(|| {
            match definition.kind {
                "date" => "2000-01-01",
                "number" | "quantity" => "1",
                "reference" => "Patient/x",
                _ => "ab",
            }
            .to_string()
        });
        let checkable = fhirseal_fhir::matching::Criterion::parse(resource_type, code, &sample);
        let how = match serve(resource_type, code, probe.as_deref(), rules) {
            Ok(Served::Filter | Served::Index { .. }) if checkable.is_err() => {
                let reason = checkable.err().map(|e| e.to_string()).unwrap_or_default();
                format!("refused: the gateway cannot check it on opened resources ({reason})")
            }
            Ok(Served::Upstream) => continue,
            Ok(Served::Filter) => {
                "filter: left out of the upstream search; the gateway opens the candidates and checks them"
                    .to_string()
            }
            Ok(Served::Index { leaves, bits }) => {
                let list: Vec<String> = leaves.iter().map(|(leaf, _)| leaf.clone()).collect();
                let mut how = format!(
                    "blind-index: `_tag` tokens of {} ({bits} bits), candidates opened and checked",
                    list.join(", ")
                );
                if let Some(system) = &filtered {
                    how.push_str(&format!(
                        "; values of system {system} only, other systems go to the upstream as they are"
                    ));
                }
                if let [(leaf, _)] = leaves.as_slice() {
                    let partners = compound_partners(resource_type, leaf, rules);
                    let alone = set.index_leaf(leaf).is_some_and(|(r, _)| r.index_alone());
                    if !alone {
                        how = format!(
                            "blind-index only together with `{}`: one compound `_tag` token per pair ({bits} bits), candidates opened and checked; alone: refused (the element is not indexed alone)",
                            partners.join("`, `")
                        );
                    } else if !partners.is_empty() {
                        how.push_str(&format!(
                            "; together with `{}`: one compound token per pair instead",
                            partners.join("`, `")
                        ));
                    }
                }
                how
            }
            Err(refusal) => format!("refused: {refusal}"),
        };
        out.push((code, how));
    }
    out
}

/// How one parameter is served.
enum Served {
    Upstream,
    Filter,
    Index {
        leaves: Vec<(String, LeafKind)>,
        bits: u8,
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
    match serve(resource_type, name, None, rules)? {
        Served::Upstream => Ok(()),
        Served::Filter | Served::Index { .. } => Err(SearchRefusal::Sealed {
            param: name.to_string(),
        }),
    }
}

/// Where one parameter is answered: see [`plan_search`].
fn serve(
    resource_type: &str,
    name: &str,
    value: Option<&str>,
    rules: &Rules,
) -> Result<Served, SearchRefusal> {
    let key = || name.to_string();
    let (code, modifier) = match parse_param_name(name) {
        ParamName::Result { .. } => return Ok(Served::Upstream),
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
        return Ok(Served::Upstream);
    };
    if matches!(code, "_text" | "_content") {
        return Err(SearchRefusal::Sealed { param: key() });
    }
    if definition.paths.is_empty() {
        return Err(SearchRefusal::Opaque { param: key() });
    }
    // `_tag` reads `meta.tag`, where the tokens are: only searches for other systems' tags.
    if code == "_tag" && set.elements().iter().any(ElementRule::blind_index) {
        let own = |item: &str| matches!(item.split_once('|'), Some((system, _)) if !system.is_empty() && !system.starts_with(BLIND_INDEX_SYSTEM));
        let fine =
            modifier.is_none() && value.is_some_and(|v| !v.contains('\\') && v.split(',').all(own));
        if !fine {
            return Err(SearchRefusal::Tag { param: key() });
        }
        return Ok(Served::Upstream);
    }
    // A token search without a modifier, by its values: the systems it names.
    let systems = value
        .filter(|_| definition.kind == "token" && modifier.is_none())
        .and_then(systems);
    let mut sealing: Vec<&ElementRule> = Vec::new();
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
                sealing.push(rule);
            }
        }
    }
    if sealing.is_empty() {
        return Ok(Served::Upstream);
    }
    if sealing.iter().any(|r| r.search() == SearchMode::Reject) {
        return Err(SearchRefusal::Sealed { param: key() });
    }
    // Whether an element is absent, or holds no such value, is not decided on what a caller
    // could not open: refused rather than answered from masked values.
    if matches!(modifier, Some("missing" | "not")) {
        return Err(SearchRefusal::Sealed { param: key() });
    }
    if sealing.iter().any(|r| r.search() == SearchMode::Filter) {
        return Ok(Served::Filter);
    }
    // Every sealed element it reads is blind-indexed: each path the parameter reads must lie
    // within one (or be one), with every item of it sealed.
    let mut all = Vec::new();
    let mut bits = None;
    for path in &definition.paths {
        let path = rebase(path, definition.resource_type, resource_type);
        let covering = sealing.iter().find(|r| {
            let sealed = r.path().plain();
            path.strip_prefix(sealed.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        });
        let Some(rule) = covering else {
            return Err(SearchRefusal::Partial { param: key() });
        };
        if let Some(filtered) = system_filter(rule.path()) {
            // Only the items of one system are sealed: every value must name that system.
            let only_sealed = systems
                .as_ref()
                .is_some_and(|systems| systems.iter().all(|s| *s == filtered));
            if !only_sealed {
                return Err(SearchRefusal::Partial { param: key() });
            }
        }
        let SearchMode::BlindIndex { bits: rule_bits } = rule.search() else {
            return Err(SearchRefusal::Sealed { param: key() });
        };
        if bits.is_some_and(|b| b != rule_bits) {
            return Err(SearchRefusal::Partial { param: key() });
        }
        bits = Some(rule_bits);
        // Only what a write indexed can be asked for (`address-use` reads `Address.use`, which
        // is not indexed).
        let sealed = rule.path().plain();
        let written = data_type(&sealed)
            .map(|t| leaves(&sealed, t))
            .unwrap_or_default();
        let found = data_type(&path)
            .map(|t| leaves(&path, t))
            .unwrap_or_default();
        if found.is_empty() || found.iter().any(|leaf| !written.contains(leaf)) {
            return Err(SearchRefusal::Index {
                param: key(),
                reason: QueryRefusal::NotIndexed,
            });
        }
        all.extend(found);
    }
    // Every leaf must be of the kind of search the parameter does.
    let want = match definition.kind {
        "string" => LeafKind::String,
        "token" => LeafKind::Token,
        "date" => LeafKind::Date,
        "reference" => LeafKind::Reference,
        _ => {
            return Err(SearchRefusal::Index {
                param: key(),
                reason: QueryRefusal::NotIndexed,
            });
        }
    };
    if all.iter().any(|(_, k)| *k != want) {
        return Err(SearchRefusal::Index {
            param: key(),
            reason: QueryRefusal::NotIndexed,
        });
    }
    Ok(Served::Index {
        leaves: all,
        bits: bits.unwrap_or(crate::rules::DEFAULT_INDEX_BITS),
    })
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
