//! Sealing rules: which elements of which resource type are sealed under which access structure,
//! checked against R4 so that a sealed resource stays one the upstream server accepts and serves.

use std::collections::BTreeMap;
use std::fmt;

use fhirseal_envelope::Granularity;
use rshabe::AccessStructure;

use fhirseal_fhir::path::ElementPath;
use fhirseal_fhir::structure::r4;

use crate::index::LeafKind;

/// One element to seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementRule {
    path: ElementPath,
    policy: AccessStructure,
    granularity: Granularity,
    search: SearchMode,
    /// Whether its blind-index tokens are written alone (`true`), or only paired with another
    /// element's in a compound index of its rule set.
    index_alone: bool,
}

/// How a search on an element is answered (a policy's `search` and `index_bits`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SearchMode {
    /// Refused, naming the parameter.
    #[default]
    Reject,
    /// From blind-index tokens written with the sealed resource (`meta.tag`), truncated to
    /// `bits`; the candidates are opened and checked ([`crate::index`]).
    BlindIndex {
        /// How many bits of each token are kept.
        bits: u8,
    },
    /// The parameter is left out of the upstream search, and the gateway checks the opened
    /// candidates.
    Filter,
}

/// The token width a blind index keeps unless the policy says otherwise: 16 bits, so that with
/// 10,000 resources about one in six searches fetches one false positive per index token.
pub const DEFAULT_INDEX_BITS: u8 = 16;

/// What happens to the narrative (`text`) of a resource in which something is sealed: it may
/// repeat any sealed value, so it is never left as it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Narrative {
    /// Sealed under the conjunction of the structures of everything sealed in the resource, with
    /// a neutral narrative in its place; readers who may see everything get the original back.
    #[default]
    Seal,
    /// Replaced by a neutral narrative for everyone, the original dropped: for narratives that
    /// clients regenerate from the data anyway. Opening then does not give the original back.
    Neutral,
}

/// What happens to `Reference.display` strings, which often copy a sealed value (a patient's
/// name in `Observation.subject.display`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Displays {
    /// Seal every display that contains a sealed string value (case-insensitively, values of
    /// three or more characters), under the conjunction of the structures of the values it
    /// repeats.
    #[default]
    Matching,
    /// Seal every display of a resource in which something is sealed.
    All,
    /// Leave displays as they are.
    Keep,
}

/// The rules for one resource type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    resource_type: String,
    elements: Vec<ElementRule>,
    narrative: Narrative,
    displays: Displays,
    compounds: Vec<Compound>,
}

/// A compound blind index: one token per pair of values of two leaves of blind-index elements
/// of one resource (`Patient.name.family` and `Patient.birthDate`), so that a search giving both
/// asks for one selective token, and a low-entropy element need not be indexed alone
/// ([`crate::index::Tokens::compound`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compound {
    parts: [(String, LeafKind); 2],
    bits: u8,
}

impl Compound {
    /// Its two leaves, and how each is indexed.
    pub fn parts(&self) -> &[(String, LeafKind); 2] {
        &self.parts
    }

    /// How many bits of each token are kept (the first part's rule's).
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// `leafA+leafB`, as in its tags' index names.
    pub fn name(&self) -> String {
        format!("{}+{}", self.parts[0].0, self.parts[1].0)
    }
}

/// The rules for every resource type that has any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    sets: BTreeMap<String, RuleSet>,
}

/// Why a rule cannot be used, naming the element.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    /// The element path (or resource type) the error is about.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot seal `{}`: {}", self.path, self.reason)
    }
}

/// Members that no rule may seal, and why.
const NEVER: &[(&str, &str)] = &[
    ("id", "the server needs the logical id"),
    (
        "meta",
        "the server needs `meta` (versions, profiles, security labels)",
    ),
    (
        "implicitRules",
        "it is a modifier that changes how the resource is read",
    ),
    (
        "language",
        "the server and readers need the resource's language to read it",
    ),
    (
        "text",
        "the narrative is handled by the rule set's `narrative` setting",
    ),
    (
        "contained",
        "contained resources are sealed by the rules of their own type",
    ),
    (
        "modifierExtension",
        "a reader that cannot see a modifier extension would misread the resource",
    ),
];

// === impl ElementRule ===

impl ElementRule {
    /// A rule sealing `path` under `policy`, refused where sealing would break the resource for
    /// the server or its readers.
    pub fn new(
        path: &str,
        policy: AccessStructure,
        granularity: Granularity,
    ) -> Result<Self, RuleError> {
        let path = ElementPath::parse(path).map_err(|e| RuleError {
            path: e.path,
            reason: e.reason,
        })?;
        let fail = |reason: String| RuleError {
            path: path.as_str().to_string(),
            reason,
        };
        if let Some((_, why)) = NEVER.iter().find(|(name, _)| path.steps()[0].name == *name) {
            return Err(fail((*why).to_string()));
        }
        for step in path.steps() {
            if step.element.modifier {
                return Err(fail(format!(
                    "`{}` is a modifier element: a reader or server that cannot see it would misread the resource",
                    step.element.path
                )));
            }
        }
        let element = path.element();
        if element.min >= 1 {
            return Err(fail(format!(
                "`{}` is required (min {}): the resource would no longer be valid without its value",
                element.path, element.min
            )));
        }
        let plain = path.plain();
        for reference in r4().compartment_references(path.resource_type()) {
            let inside = plain.strip_prefix(reference).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with(".reference") || rest.starts_with(".identifier")
            });
            if inside {
                return Err(fail(format!(
                    "`{reference}` places the resource in a patient's compartment: the server needs it for compartment searches and access"
                )));
            }
        }
        // A complex element is replaced by a placeholder holding only extensions: its type must
        // not require members (an Extension keeps its `url`; `value[x]` with a
        // `dataAbsentReason` beside it is replaced by that instead).
        let last = &path.steps()[path.steps().len() - 1];
        let parent = element.path.rsplit_once('.').map_or("", |(p, _)| p);
        let absent_reason = last.choice
            && last.name == "value"
            && r4()
                .element(&format!("{parent}.dataAbsentReason"))
                .is_some();
        if !absent_reason {
            let contexts: Vec<&str> = if last.choice {
                element.types.clone()
            } else {
                vec![last.context]
            };
            for context in contexts {
                if context == "Extension" {
                    continue;
                }
                if let Some(required) = r4().required_members(context).first() {
                    return Err(fail(format!(
                        "its placeholder would lack the required member `{}`: seal the members you need to protect instead",
                        required.path
                    )));
                }
            }
        }
        if element.types.contains(&"Resource") {
            return Err(fail(
                "a nested resource is sealed by the rules of its own type".into(),
            ));
        }
        Ok(Self {
            path,
            policy,
            granularity,
            search: SearchMode::Reject,
            index_alone: true,
        })
    }

    /// The same rule, also writing blind-index tokens of the element's values on the resource
    /// (`search = "blind-index"` in a policy), so the gateway can offer equality search on it.
    /// Tokens show the upstream which resources share a value; that is their price.
    pub fn with_blind_index(self) -> Self {
        self.with_search(SearchMode::BlindIndex {
            bits: DEFAULT_INDEX_BITS,
        })
    }

    /// The same rule, its searches answered as `search` says.
    pub fn with_search(self, search: SearchMode) -> Self {
        Self { search, ..self }
    }

    /// The same rule, its blind-index tokens written alone or not: `false` keeps them only in
    /// the compound indexes of its rule set ([`RuleSet::with_compound`]), for an element with few
    /// distinct values (a birth date) whose tokens alone would tell the server which resources
    /// share one.
    pub fn with_index_alone(self, index_alone: bool) -> Self {
        Self {
            index_alone,
            ..self
        }
    }

    /// The same rule under another structure (for one patient's records: `patient:self`
    /// resolved). The checks of [`ElementRule::new`] do not depend on the structure, so none is
    /// run again.
    pub fn with_policy(&self, policy: AccessStructure) -> Self {
        Self {
            path: self.path.clone(),
            policy,
            granularity: self.granularity,
            search: self.search,
            index_alone: self.index_alone,
        }
    }

    /// Whether sealing writes blind-index tokens for it.
    pub fn blind_index(&self) -> bool {
        matches!(self.search, SearchMode::BlindIndex { .. })
    }

    /// Whether its blind-index tokens are written alone ([`ElementRule::with_index_alone`]).
    pub fn index_alone(&self) -> bool {
        self.index_alone
    }

    /// How searches on it are answered.
    pub fn search(&self) -> SearchMode {
        self.search
    }

    /// The element path.
    pub fn path(&self) -> &ElementPath {
        &self.path
    }

    /// The access structure a reader's attributes must satisfy.
    pub fn policy(&self) -> &AccessStructure {
        &self.policy
    }

    /// One header per resource, or one shared per structure and period.
    pub fn granularity(&self) -> Granularity {
        self.granularity
    }
}

// === impl RuleSet ===

impl RuleSet {
    /// The rules for `resource_type`; refuses rules for another type and overlapping rules (one
    /// element inside another, or the same element twice), which would contradict each other.
    pub fn new(
        resource_type: &str,
        elements: Vec<ElementRule>,
        narrative: Narrative,
        displays: Displays,
    ) -> Result<Self, RuleError> {
        if !r4().is_domain_resource(resource_type) {
            return Err(RuleError {
                path: resource_type.to_string(),
                reason: "not an R4 resource type whose elements can be sealed".into(),
            });
        }
        for (i, rule) in elements.iter().enumerate() {
            if rule.path.resource_type() != resource_type {
                return Err(RuleError {
                    path: rule.path.to_string(),
                    reason: format!("the rule is listed under `{resource_type}`"),
                });
            }
            if let Some(other) = elements[..i].iter().find(|o| o.path.overlaps(&rule.path)) {
                return Err(RuleError {
                    path: rule.path.to_string(),
                    reason: format!(
                        "it overlaps `{}`: one element would be sealed twice, possibly under different structures",
                        other.path
                    ),
                });
            }
        }
        Ok(Self {
            resource_type: resource_type.to_string(),
            elements,
            narrative,
            displays,
            compounds: Vec::new(),
        })
    }

    /// The same rules with a compound index over the leaves `a` and `b`: each a leaf
    /// ([`crate::index::leaves`]) of a blind-index rule of this set without a `where` filter,
    /// the two different.
    ///
    /// # Errors
    /// A [`RuleError`] naming the leaf that is not one.
    pub fn with_compound(mut self, a: &str, b: &str) -> Result<Self, RuleError> {
        let part = |leaf: &str| -> Result<(String, LeafKind, u8), RuleError> {
            let fail = |reason: &str| RuleError {
                path: leaf.to_string(),
                reason: reason.to_string(),
            };
            let (rule, kind) = self
                .index_leaf(leaf)
                .ok_or_else(|| fail("a compound index part must be a leaf (a member a search reads, such as `Patient.name.family`) of an element sealed with search = \"blind-index\""))?;
            if rule.path().steps().iter().any(|s| s.filter.is_some()) {
                return Err(fail(
                    "a compound index part cannot be an element kept only in part (`where(…)`)",
                ));
            }
            let SearchMode::BlindIndex { bits } = rule.search() else {
                return Err(fail("its element is not in blind-index mode"));
            };
            Ok((leaf.to_string(), kind, bits))
        };
        let (a, kind_a, bits) = part(a)?;
        let (b, kind_b, _) = part(b)?;
        if a == b {
            return Err(RuleError {
                path: a,
                reason: "a compound index needs two different leaves".into(),
            });
        }
        let compound = Compound {
            parts: [(a, kind_a), (b, kind_b)],
            bits,
        };
        if !self.compounds.contains(&compound) {
            self.compounds.push(compound);
        }
        Ok(self)
    }

    /// The compound indexes ([`RuleSet::with_compound`]).
    pub fn compounds(&self) -> &[Compound] {
        &self.compounds
    }

    /// The blind-index rule whose element holds `leaf` (`Patient.name.family` is a leaf of
    /// `Patient.name`), and how that leaf is indexed.
    pub fn index_leaf(&self, leaf: &str) -> Option<(&ElementRule, LeafKind)> {
        self.elements
            .iter()
            .filter(|r| r.blind_index())
            .find_map(|rule| {
                let plain = rule.path().plain();
                let inside = leaf
                    .strip_prefix(plain.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
                if !inside {
                    return None;
                }
                let data_type = crate::index::data_type(&plain)?;
                crate::index::leaves(&plain, data_type)
                    .into_iter()
                    .find(|(l, _)| l == leaf)
                    .map(|(_, kind)| (rule, kind))
            })
    }

    /// The resource type.
    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    /// The element rules, in the order given.
    pub fn elements(&self) -> &[ElementRule] {
        &self.elements
    }

    /// The narrative setting.
    pub fn narrative(&self) -> Narrative {
        self.narrative
    }

    /// The display setting.
    pub fn displays(&self) -> Displays {
        self.displays
    }
}

// === impl Rules ===

impl Rules {
    /// Rules from rule sets, at most one per resource type.
    pub fn new(sets: impl IntoIterator<Item = RuleSet>) -> Result<Self, RuleError> {
        let mut rules = Self::default();
        for set in sets {
            if rules.sets.contains_key(&set.resource_type) {
                return Err(RuleError {
                    path: set.resource_type,
                    reason: "two rule sets for one resource type".into(),
                });
            }
            rules.sets.insert(set.resource_type.clone(), set);
        }
        Ok(rules)
    }

    /// The rules for `resource_type`, if any.
    pub fn for_type(&self, resource_type: &str) -> Option<&RuleSet> {
        self.sets.get(resource_type)
    }

    /// Every rule set, by resource type.
    pub fn sets(&self) -> impl Iterator<Item = &RuleSet> {
        self.sets.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str) -> Result<ElementRule, RuleError> {
        let policy = AccessStructure::parse("role:physician").map_err(|e| RuleError {
            path: path.into(),
            reason: e.to_string(),
        })?;
        ElementRule::new(path, policy, Granularity::Shared)
    }

    fn refusal(path: &str) -> String {
        rule(path).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn what_the_server_needs_is_refused_with_the_reason() {
        assert!(refusal("Patient.id").contains("logical id"));
        assert!(refusal("Patient.meta").contains("needs `meta`"));
        assert!(refusal("Patient.text").contains("narrative"));
        assert!(refusal("Patient.contained").contains("own type"));
        assert!(refusal("Patient.active").contains("modifier element"));
        assert!(refusal("Observation.status").contains("modifier"));
        assert!(refusal("Observation.code").contains("required (min 1)"));
        assert!(refusal("Observation.subject").contains("patient's compartment"));
        assert!(refusal("Observation.subject.reference").contains("patient's compartment"));
        assert!(refusal("Observation.performer").contains("patient's compartment"));
        assert!(refusal("Patient.link.other").contains("modifier"));
        assert!(refusal("Patient.nickname").contains("R4 defines no element"));
        assert!(
            refusal("Patient.communication")
                .contains("required member `Patient.communication.language`")
        );
        assert!(refusal("Condition.note").contains("required member `Annotation.text`"));
    }

    #[test]
    fn sealable_elements_are_accepted() {
        for path in [
            "Patient.birthDate",
            "Patient.name",
            "Patient.telecom",
            "Patient.address",
            "Observation.value[x]",
            "Observation.subject.display",
            "Condition.code",
            "Patient.identifier.where(system='urn:oid:1.2.3')",
            "Patient.extension.where(url='http://hl7.org/fhir/us/core/StructureDefinition/us-core-race')",
        ] {
            assert!(rule(path).is_ok(), "{path}: {}", refusal(path));
        }
    }

    #[test]
    fn contradicting_rules_are_refused() {
        let (Ok(name), Ok(given), Ok(birth)) = (
            rule("Patient.name"),
            rule("Patient.name.given"),
            rule("Patient.birthDate"),
        ) else {
            panic!("rules build");
        };
        let err = RuleSet::new(
            "Patient",
            vec![name.clone(), birth.clone(), given],
            Narrative::Seal,
            Displays::Matching,
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "cannot seal `Patient.name.given`: it overlaps `Patient.name`: one element would be sealed twice, possibly under different structures"
            )
        );
        let twice = RuleSet::new(
            "Patient",
            vec![birth.clone(), birth.clone()],
            Narrative::Seal,
            Displays::Matching,
        );
        assert!(twice.is_err());
        let wrong_type = RuleSet::new(
            "Observation",
            vec![birth.clone()],
            Narrative::Seal,
            Displays::Matching,
        );
        assert!(wrong_type.is_err());
        let Ok(set) = RuleSet::new(
            "Patient",
            vec![name, birth],
            Narrative::Seal,
            Displays::Matching,
        ) else {
            panic!("a valid set");
        };
        assert!(Rules::new([set.clone(), set]).is_err());
    }
}
