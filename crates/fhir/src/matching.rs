//! Whether one resource matches one search parameter: R4 search evaluated on clear data.
//!
//! The gateway opens the candidates of a blind-index search (tokens are truncated and collide, a
//! prefix or a year stands for more than was asked) and the resources it filters itself, and
//! keeps those that match. So a [`Criterion`] is exact or refused: what it cannot decide the way
//! a FHIR server would is an [`Unsupported`] when it is parsed, never a guess when it is applied.
//! Errors name the query key and a reason in fixed words; no value of the query or of a resource
//! is ever put in one.
//!
//! ```text
//! let criterion = Criterion::parse("Patient", "name:contains", "ann")?;
//! criterion.matches(&patient_json)
//! ```
//!
//! One criterion is one query parameter; the parameters of a search are ANDed by the caller
//! (every criterion must match), the `,`-separated values of one are ORed here.
//!
//! # What is read
//!
//! The elements a parameter reads come from R4's table ([`search::param`]): `Patient.name.family`
//! is every `family` of every `name`, arrays flattened at every step, `Resource.meta.tag` read on
//! the resource itself. The table dropped what R4's expressions filter, and this module puts it
//! back from its own small tables, checked against R4's SearchParameters (4.0.1):
//!
//! - choice elements (`value[x]`): the types R4's expression selects (`ofType(CodeableConcept)`
//!   for `value-concept`; `(value as CodeableConcept).text` as well as `valueString` for
//!   `value-string`), or, where R4 has no cast, those of the element's types that a parameter
//!   of its kind reads (`Observation.effective[x]`: dateTime, Period, instant). A parameter on a
//!   choice the table does not list is refused;
//! - `.where(resolve() is Patient)` and the like: `patient`, `practitioner`, `location`,
//!   `relatedperson` (and `EpisodeOfCare`'s `care-manager`) only match references to that type
//!   (every R4 parameter of those codes has that one target);
//! - `telecom.where(system='phone')` and `'email'`: `phone` and `email` only read the
//!   `ContactPoint`s of that system.
//!
//! Refused: parameters of kind `composite`, `special` and `uri`; `_text`, `_content`, `_filter`,
//! `_query`, `_list`, `phonetic` and `Patient`'s `deceased` (server-defined, or not a path);
//! chains and `_has`; parameters that read a `Range` (`context-quantity`, `onset-age`,
//! `probability`), `Money`, a canonical or uri reference, or a whole resource.
//!
//! # Values
//!
//! `a,b` is an OR. `\,`, `\|`, `\$` and `\\` stand for the character (R4 "Escaping Search
//! Parameters"); a `\` before anything else or at the end is refused, as is an empty value.
//!
//! # Semantics, and where they follow the upstream server
//!
//! The R4 search specification leaves some choices to the server and states others loosely. Where
//! it does, this module does what the upstream server the gateway is tested against does on clear
//! data, sekmet-fhir 0.1.1 (`sekmet/fhir/indexer.py`, `search.py`, `common.py`), so that sealing
//! an element does not change which resources a search finds. Where sekmet departs from R4 by
//! accident (SQL wildcards, a list skipped, float equality, units ignored), R4 is followed. Every
//! such place is in the table at the end.
//!
//! **string** (on `string`, `markdown`, and the `text`, `family`, `given`, `prefix`, `suffix` of a
//! HumanName and the `text`, `line`, `city`, `district`, `state`, `postalCode`, `country` of an
//! Address). Default: the value starts with the query; `:contains`: contains it. Both compare
//! *normalised* text, as sekmet does: NFKD, characters of a non-zero canonical combining class
//! dropped (accents), lower-cased (Unicode, with Greek final sigma), white space trimmed at both
//! ends (Python's `str.isspace`); white space inside is kept as is. `:exact` is equality of the
//! text as written (case- and accent-sensitive, no Unicode normalisation).
//!
//! **token**: `code` matches a Coding's `code`, any coding of a CodeableConcept, an Identifier's
//! `value`, a ContactPoint's `value`, a `code`/`string`/`id`/`uri` as written, a boolean as `true`
//! or `false`; case-sensitive. `system|code`, `|code` (no system) and `system|` (any code of the
//! system) apply to Coding, CodeableConcept and Identifier; on a parameter that reads a primitive
//! or a ContactPoint they are refused (R4: "the pipe symbol SHALL NOT be used" for ContactPoint,
//! uri and boolean; a code's system is implicit in its value set). `:not`: no value matches
//! (also when the element is absent).
//!
//! **reference**: a `reference` is read as sekmet reads it: `[base/]Type/id[/_history/v]`, with
//! `Type` an R4 resource type and `id` FHIR's id syntax; `#contained`, `urn:` and logical
//! references match nothing. The query `Type/id` (or an absolute URL ending so) matches the same
//! type and id, whatever the base; a bare `id` matches that id of any type the parameter allows.
//! `:Type` restricts to that type.
//!
//! **date** (on `date`, `dateTime`, `instant` and `Period`): every value is a range `[lo, hi)`
//! implied by its precision: `1974` is `[1974-01-01T00:00Z, 1975-01-01T00:00Z)`; a time to the
//! minute spans a minute, to the second a second, with a fraction one millisecond (sekmet's
//! choice; R4 would take the fraction's digits). A value without a zone, and every date without
//! a time, is read in UTC. A Period is `[start's lo, end's hi)`, an absent or unreadable bound
//! open (`0001-01-01T00:00:00Z` and `9999-12-31T23:59:59Z`, sekmet's bounds). With `t` the
//! target's range and `q` the query's:
//!
//! | prefix | matches when |
//! |---|---|
//! | `eq` (none) | `q.lo ≤ t.lo` and `t.hi ≤ q.hi` (the query contains the target) |
//! | `ne` | not `eq` |
//! | `gt` / `lt` | `t.hi > q.hi` / `t.lo < q.lo` |
//! | `ge` / `le` | `t.hi > q.lo` / `t.lo < q.hi` |
//! | `sa` / `eb` | `t.lo ≥ q.hi` / `t.hi ≤ q.lo` |
//!
//! `ap` is refused. Instants are compared as whole microseconds; sekmet compares float seconds,
//! which is the same comparison between 1697 and 2242, so a query date outside 1700–2239 is
//! refused. A `Timing` is not read (sekmet's tables leave it out; R4 would read its outer bounds).
//!
//! **number** and **quantity**: decimals are compared exactly, on their text (never through a
//! float). `eq` (or no prefix) matches a value in the query's implicit range, half a unit of its
//! last digit either side: `1.5` is `[1.45, 1.55)`, `100` is `[99.5, 100.5)`, `1e2` is `[50, 150)`;
//! `ne` a value outside it; `gt`, `lt`, `ge`, `le` compare with the query as written; `sa`, `eb`,
//! `ap` are refused. A quantity query is `number`, `number||code` (the quantity's `code` or `unit`
//! is `code`) or `number|system|code` (both equal); units are not converted, so another unit does
//! not match. A quantity with a `comparator` (`<5`) never matches; a `SampledData` is not read.
//!
//! A value of the wrong JSON type (a number where R4 has a string) never matches.
//!
//! # Where R4 and sekmet-fhir differ
//!
//! | question | R4 | sekmet-fhir 0.1.1 | here |
//! |---|---|---|---|
//! | string normalisation | case- and accent-insensitive, white space and punctuation left to the server | NFKD, combining marks dropped, `lower()`, `strip()` | sekmet |
//! | `%` and `_` in a string query | literal | SQL `LIKE` wildcards | R4 (literal) |
//! | HumanName `prefix`, `suffix` | searched | skipped (a list where it tests for a string) | R4 (searched) |
//! | `\|` in a token value | a literal `\|` | unescaped twice, so it splits | R4 |
//! | a `\` before another character | undefined | kept | refused |
//! | ContactPoint `system\|value` | the pipe SHALL NOT be used | system never matches | refused |
//! | token case | case-sensitive | case-sensitive | both |
//! | date `ge` / `le` | "above the query overlaps the target, or the query contains it" | `t.hi > q.lo` / `t.lo < q.hi` | sekmet |
//! | a fraction of a second | the precision of its digits | one millisecond | sekmet |
//! | a time without a zone | the server's zone | UTC | UTC |
//! | `Timing` in a date | its outer bounds | not indexed | sekmet (not read) |
//! | number `eq` / `ne` | implicit range of the query's precision | float `=` / `!=` | R4 |
//! | quantity units | compared (no conversion here) | ignored | R4 |
//! | reference base URL | the server's own base only | ignored | sekmet (ignored) |
//! | `patient:Group=…` | nothing (the parameter reads Patients) | the modifier replaces the target | R4 |
//! | `Observation` `value-string` | also `valueCodeableConcept.text` | `valueString` | R4 |
//! | `:not` on other than tokens | undefined | negates any parameter | refused |

use std::cmp::Ordering;
use std::fmt;

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;

use crate::search::{self, ParamName};
use crate::structure::{Kind, r4};

/// The members of a `HumanName` a string search reads (R4: the parameter's expression names the
/// element; servers search its strings).
pub const NAME_MEMBERS: &[&str] = &["family", "given", "text", "prefix", "suffix"];

/// The members of an `Address` a string search reads.
pub const ADDRESS_MEMBERS: &[&str] = &[
    "line",
    "city",
    "district",
    "state",
    "postalCode",
    "country",
    "text",
];

/// Why a parameter cannot be evaluated by the gateway. Each names the query key as given
/// (`name:contains`) and says why in fixed words: never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// R4 defines no such parameter on the resource type (or the type is not an R4 resource).
    #[error("search parameter `{key}`: R4 defines no such parameter on this resource type")]
    Unknown {
        /// The query key.
        key: String,
    },
    /// The parameter (or the kind of parameter) is not evaluated.
    #[error("search parameter `{key}`: {reason}")]
    Parameter {
        /// The query key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The modifier is not evaluated on this parameter.
    #[error("search parameter `{key}`: the modifier is not supported: {reason}")]
    Modifier {
        /// The query key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The value is malformed, or asks what cannot be decided exactly.
    #[error("search parameter `{key}`: the value cannot be evaluated: {reason}")]
    Value {
        /// The query key.
        key: String,
        /// Why.
        reason: &'static str,
    },
}

impl Unsupported {
    /// The query key it is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Unknown { key }
            | Self::Parameter { key, .. }
            | Self::Modifier { key, .. }
            | Self::Value { key, .. } => key,
        }
    }
}

/// The R4 kinds of search parameter a [`Criterion`] evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// `string`.
    String,
    /// `token`.
    Token,
    /// `reference`.
    Reference,
    /// `date`.
    Date,
    /// `number`.
    Number,
    /// `quantity`.
    Quantity,
}

impl ParamKind {
    /// Its name in R4 (`string`, `token`…).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Token => "token",
            Self::Reference => "reference",
            Self::Date => "date",
            Self::Number => "number",
            Self::Quantity => "quantity",
        }
    }
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The modifiers a [`Criterion`] evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    /// `:exact` on a string.
    Exact,
    /// `:contains` on a string.
    Contains,
    /// `:not` on a token.
    Not,
    /// `:[Type]` on a reference (`subject:Patient`).
    Type(&'static str),
}

/// A parsed `code[:modifier]=value` on one resource type, checked once: apply it to any number
/// of resources with [`Criterion::matches`].
#[derive(Clone, Debug)]
pub struct Criterion {
    key: String,
    resource_type: &'static str,
    code: &'static str,
    kind: ParamKind,
    modifier: Option<Modifier>,
    paths: Vec<Path>,
    test: Test,
}

impl Criterion {
    /// Parses the query key `name` (`family`, `name:contains`, `subject:Patient`) with its
    /// `value` on `resource_type`, and checks that it can be evaluated exactly.
    pub fn parse(resource_type: &str, name: &str, value: &str) -> Result<Self, Unsupported> {
        let key = name.to_string();
        let param_fail = |reason| Unsupported::Parameter {
            key: key.clone(),
            reason,
        };
        let (code, modifier) = match search::parse_param_name(name) {
            ParamName::Search { code, modifier } => (code, modifier),
            ParamName::Chain { .. } => {
                return Err(param_fail("chained parameters are not evaluated"));
            }
            ParamName::ReverseChain { .. } => return Err(param_fail("`_has` is not evaluated")),
            ParamName::Result { .. } => {
                return Err(param_fail("a result parameter selects no resource"));
            }
            ParamName::Malformed => return Err(param_fail("not a well-formed parameter name")),
        };
        if let Some(reason) = lookup(REFUSED, resource_type, code) {
            return Err(param_fail(reason));
        }
        let Some(param) = search::param(resource_type, code) else {
            return Err(Unsupported::Unknown { key });
        };
        let Some(resource_type) = r4().type_name(resource_type) else {
            return Err(Unsupported::Unknown { key });
        };
        let kind = match param.kind {
            "string" => ParamKind::String,
            "token" => ParamKind::Token,
            "reference" => ParamKind::Reference,
            "date" => ParamKind::Date,
            "number" => ParamKind::Number,
            "quantity" => ParamKind::Quantity,
            "composite" => return Err(param_fail("composite parameters are not evaluated")),
            "uri" => return Err(param_fail("uri parameters are not evaluated")),
            "special" => return Err(param_fail("special parameters are not evaluated")),
            _ => return Err(param_fail("parameters of this kind are not evaluated")),
        };
        let modifier = parse_modifier(kind, modifier).map_err(|reason| Unsupported::Modifier {
            key: key.clone(),
            reason,
        })?;
        let paths =
            compile_paths(resource_type, param.code, kind, &param.paths).map_err(param_fail)?;
        let test = parse_test(resource_type, param.code, kind, modifier, &paths, value).map_err(
            |reason| Unsupported::Value {
                key: key.clone(),
                reason,
            },
        )?;
        Ok(Self {
            key,
            resource_type,
            code: param.code,
            kind,
            modifier,
            paths,
            test,
        })
    }

    /// Whether `resource` (R4 JSON) matches: some value it holds for the parameter matches one
    /// of the query's values (with `:not`, none does). A resource of another type never matches.
    pub fn matches(&self, resource: &Value) -> bool {
        if resource.get("resourceType").and_then(Value::as_str) != Some(self.resource_type) {
            return false;
        }
        let found = self.any_value(resource, |target, value| self.test.accepts(target, value));
        if self.modifier == Some(Modifier::Not) {
            !found
        } else {
            found
        }
    }

    /// The query key as given (`name:contains`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The resource type it applies to.
    pub fn resource_type(&self) -> &'static str {
        self.resource_type
    }

    /// The parameter's code (`name`).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The parameter's R4 kind.
    pub fn kind(&self) -> ParamKind {
        self.kind
    }

    /// The modifier, if any.
    pub fn modifier(&self) -> Option<Modifier> {
        self.modifier
    }

    /// Whether `accept` holds for some value the resource holds for the parameter.
    fn any_value(&self, resource: &Value, mut accept: impl FnMut(Target, &Value) -> bool) -> bool {
        for path in &self.paths {
            let mut nodes: Vec<&Value> = vec![resource];
            for step in &path.steps {
                nodes = nodes
                    .iter()
                    .filter_map(|node| node.get(step.as_str()))
                    .flat_map(items)
                    .collect();
            }
            for leaf in &path.leaves {
                for node in &nodes {
                    let Some(value) = node.get(leaf.member.as_str()) else {
                        continue;
                    };
                    if items(value).any(|item| accept(leaf.target, item)) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// The items of a JSON value: an array's (nulls skipped), or the value itself.
fn items(value: &Value) -> impl Iterator<Item = &Value> {
    let all = match value {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    all.iter().filter(|item| !item.is_null())
}

// ------------------------------------------------------------------------------------------------
// The tables R4's expressions need beyond `search-params.tsv`. `*` stands for every type.

/// Parameters refused whatever their kind, with why.
const REFUSED: &[(&str, &str, &str)] = &[
    ("*", "_text", "a search of the narrative is server-defined"),
    (
        "*",
        "_content",
        "a search of the whole resource is server-defined",
    ),
    ("*", "_filter", "`_filter` expressions are not evaluated"),
    ("*", "_query", "named queries are server-defined"),
    ("*", "_list", "`_list` depends on other resources"),
    ("*", "phonetic", "phonetic matching is server-defined"),
    (
        "Patient",
        "deceased",
        "R4 evaluates it with an expression that is not an element path",
    ),
];

/// The types R4's expression selects of a choice element, by parameter (`ofType(…)`; without a
/// cast, those of the element's types that the parameter's kind reads). `CodeableConcept.text`
/// is the text of a CodeableConcept. A parameter that reads a choice element not listed here is
/// refused.
const CHOICES: &[(&str, &str, &[&str])] = &[
    ("*", "context", &["CodeableConcept"]),
    ("*", "context-quantity", &["Quantity", "Range"]),
    ("CarePlan", "activity-date", &["Timing", "Period"]),
    (
        "ChargeItem",
        "occurrence",
        &["dateTime", "Period", "Timing"],
    ),
    ("CommunicationRequest", "occurrence", &["dateTime"]),
    ("Composition", "related-id", &["Identifier"]),
    ("Composition", "related-ref", &["Reference"]),
    ("ConceptMap", "source", &["canonical"]),
    ("ConceptMap", "source-uri", &["uri"]),
    ("ConceptMap", "target", &["canonical"]),
    ("ConceptMap", "target-uri", &["uri"]),
    ("Condition", "abatement-age", &["Age", "Range"]),
    ("Condition", "abatement-date", &["dateTime", "Period"]),
    ("Condition", "abatement-string", &["string"]),
    ("Condition", "onset-age", &["Age", "Range"]),
    ("Condition", "onset-date", &["dateTime", "Period"]),
    ("Condition", "onset-info", &["string"]),
    ("Consent", "source-reference", &["Reference"]),
    ("DetectedIssue", "identified", &["dateTime", "Period"]),
    ("DeviceRequest", "code", &["CodeableConcept"]),
    ("DeviceRequest", "device", &["Reference"]),
    ("DeviceRequest", "event-date", &["dateTime", "Period"]),
    ("DiagnosticReport", "date", &["dateTime", "Period"]),
    ("Goal", "start-date", &["date"]),
    ("Goal", "target-date", &["date"]),
    ("Group", "value", &["CodeableConcept", "boolean"]),
    ("Immunization", "date", &["dateTime"]),
    ("Media", "created", &["dateTime", "Period"]),
    ("Medication", "ingredient", &["Reference"]),
    ("Medication", "ingredient-code", &["CodeableConcept"]),
    ("MedicationAdministration", "code", &["CodeableConcept"]),
    (
        "MedicationAdministration",
        "effective-time",
        &["dateTime", "Period"],
    ),
    ("MedicationAdministration", "medication", &["Reference"]),
    ("MedicationDispense", "code", &["CodeableConcept"]),
    ("MedicationDispense", "medication", &["Reference"]),
    ("MedicationKnowledge", "ingredient", &["Reference"]),
    (
        "MedicationKnowledge",
        "ingredient-code",
        &["CodeableConcept"],
    ),
    ("MedicationRequest", "code", &["CodeableConcept"]),
    ("MedicationRequest", "medication", &["Reference"]),
    ("MedicationStatement", "code", &["CodeableConcept"]),
    ("MedicationStatement", "effective", &["dateTime", "Period"]),
    ("MedicationStatement", "medication", &["Reference"]),
    ("MessageDefinition", "event", &["Coding", "uri"]),
    ("MessageHeader", "event", &["Coding", "uri"]),
    ("Observation", "combo-value-concept", &["CodeableConcept"]),
    (
        "Observation",
        "combo-value-quantity",
        &["Quantity", "SampledData"],
    ),
    (
        "Observation",
        "component-value-concept",
        &["CodeableConcept"],
    ),
    (
        "Observation",
        "component-value-quantity",
        &["Quantity", "SampledData"],
    ),
    (
        "Observation",
        "date",
        &["dateTime", "Period", "Timing", "instant"],
    ),
    ("Observation", "value-concept", &["CodeableConcept"]),
    ("Observation", "value-date", &["dateTime", "Period"]),
    (
        "Observation",
        "value-quantity",
        &["Quantity", "SampledData"],
    ),
    (
        "Observation",
        "value-string",
        &["string", "CodeableConcept.text"],
    ),
    ("Patient", "death-date", &["dateTime"]),
    ("PlanDefinition", "definition", &["canonical", "uri"]),
    ("Procedure", "date", &["dateTime", "Period"]),
    ("Provenance", "when", &["dateTime"]),
    ("RiskAssessment", "date", &["dateTime"]),
    ("RiskAssessment", "probability", &["decimal", "Range"]),
    (
        "ServiceRequest",
        "occurrence",
        &["dateTime", "Period", "Timing"],
    ),
    ("Specimen", "collected", &["dateTime", "Period"]),
    ("Substance", "code", &["CodeableConcept"]),
    ("Substance", "substance-reference", &["Reference"]),
];

/// Reference parameters whose R4 expression keeps only references to one type
/// (`Observation.subject.where(resolve() is Patient)`). Every R4 parameter of these codes has
/// that type as its only target, so the restriction holds on every type.
const REFERENCE_TARGETS: &[(&str, &str, &str)] = &[
    ("*", "patient", "Patient"),
    ("*", "practitioner", "Practitioner"),
    ("*", "location", "Location"),
    ("*", "relatedperson", "RelatedPerson"),
    ("EpisodeOfCare", "care-manager", "Practitioner"),
];

/// Token parameters that read only the ContactPoints of one system
/// (`Patient.telecom.where(system='phone')`).
const TELECOM_SYSTEMS: &[(&str, &str, &str)] = &[("*", "phone", "phone"), ("*", "email", "email")];

/// The entry of `table` for `code` on `resource_type`, a type's own before `*`.
fn lookup<T: Copy>(table: &[(&str, &str, T)], resource_type: &str, code: &str) -> Option<T> {
    let find = |rt: &str| {
        table
            .iter()
            .find(|(t, c, _)| *t == rt && *c == code)
            .map(|(_, _, v)| *v)
    };
    find(resource_type).or_else(|| find("*"))
}

// ------------------------------------------------------------------------------------------------
// Paths.

/// One path of a parameter, compiled: the members to walk, then the members read at its end
/// (one, or one per type of a choice) and how to read each.
#[derive(Clone, Debug)]
struct Path {
    steps: Vec<String>,
    leaves: Vec<Leaf>,
}

/// A member read at the end of a path.
#[derive(Clone, Debug)]
struct Leaf {
    member: String,
    target: Target,
}

/// How a value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A `string` or `markdown`.
    Text,
    /// A HumanName's string members.
    HumanName,
    /// An Address's string members.
    Address,
    /// A CodeableConcept's `text`.
    ConceptText,
    /// A Coding.
    Coding,
    /// A CodeableConcept's codings.
    Concept,
    /// An Identifier.
    Identifier,
    /// A ContactPoint, of one system if given.
    ContactPoint(Option<&'static str>),
    /// A `code`, `string`, `id` or `uri` read as a token.
    Code,
    /// A `boolean`.
    Boolean,
    /// A Reference.
    Reference,
    /// A `date`, `dateTime` or `instant`.
    Date,
    /// A Period.
    Period,
    /// A Quantity (or Age, Duration…).
    Quantity,
    /// A `decimal` or an integer.
    Number,
}

/// How a parameter of `kind` reads a value of R4 type `ty`.
enum Reading {
    Read(Target),
    /// Not read (documented: R4 defines no match, or sekmet does not index it).
    Skip,
    Refuse(&'static str),
}

fn reading(kind: ParamKind, ty: &str) -> Reading {
    use Reading::{Read, Refuse, Skip};
    let other = "it reads an element of a type this kind of parameter is not evaluated on";
    match kind {
        ParamKind::String => match ty {
            "string" | "markdown" => Read(Target::Text),
            "HumanName" => Read(Target::HumanName),
            "Address" => Read(Target::Address),
            "CodeableConcept.text" => Read(Target::ConceptText),
            _ => Refuse(other),
        },
        ParamKind::Token => match ty {
            "Coding" => Read(Target::Coding),
            "CodeableConcept" => Read(Target::Concept),
            "Identifier" => Read(Target::Identifier),
            "ContactPoint" => Read(Target::ContactPoint(None)),
            "code" | "string" | "id" | "uri" | "System.String" => Read(Target::Code),
            "boolean" => Read(Target::Boolean),
            _ => Refuse(other),
        },
        ParamKind::Reference => match ty {
            "Reference" => Read(Target::Reference),
            "canonical" | "uri" | "url" => {
                Refuse("it reads canonical or uri references, which are not evaluated")
            }
            _ => Refuse(other),
        },
        ParamKind::Date => match ty {
            "date" | "dateTime" | "instant" => Read(Target::Date),
            "Period" => Read(Target::Period),
            "Timing" => Skip,
            _ => Refuse(other),
        },
        ParamKind::Quantity => match ty {
            "Quantity" | "Age" | "Count" | "Distance" | "Duration" | "SimpleQuantity"
            | "MoneyQuantity" => Read(Target::Quantity),
            "SampledData" => Skip,
            "Range" => Refuse("it reads ranges, which are not evaluated"),
            "Money" => Refuse("it reads Money, which is not evaluated"),
            _ => Refuse(other),
        },
        ParamKind::Number => match ty {
            "decimal" | "integer" | "positiveInt" | "unsignedInt" => Read(Target::Number),
            "Range" => Refuse("it reads ranges, which are not evaluated"),
            _ => Refuse(other),
        },
    }
}

/// Compiles the table's paths of parameter `code` of kind `kind` on `resource_type`.
fn compile_paths(
    resource_type: &str,
    code: &str,
    kind: ParamKind,
    table_paths: &[&str],
) -> Result<Vec<Path>, &'static str> {
    let r4 = r4();
    let unknown = "its R4 path is not one the gateway can follow";
    if table_paths.is_empty() {
        return Err("R4 gives it no element path");
    }
    let telecom = if kind == ParamKind::Token {
        lookup(TELECOM_SYSTEMS, resource_type, code)
    } else {
        None
    };
    let mut paths = Vec::new();
    for text in table_paths {
        let mut segments = text.split('.');
        let Some(mut context) = segments.next().and_then(|t| r4.type_name(t)) else {
            return Err(unknown);
        };
        let segments: Vec<&str> = segments.collect();
        let Some((last, middle)) = segments.split_last() else {
            return Err("it reads the whole resource");
        };
        let mut steps = Vec::new();
        for segment in middle {
            let Some(child) = r4.child(context, segment) else {
                return Err(unknown);
            };
            context = child.context;
            steps.push((*segment).to_string());
        }
        // The members read at the end, each with its R4 type.
        let mut typed: Vec<(String, &str)> = Vec::new();
        if let Some(base) = last.strip_suffix("[x]") {
            let Some(element) = r4.element(&format!("{context}.{last}")) else {
                return Err(unknown);
            };
            let Some(types) = lookup(CHOICES, resource_type, code) else {
                return Err("it reads a choice element the gateway has no R4 type list for");
            };
            for ty in types {
                let chosen = ty.split('.').next().unwrap_or(ty);
                if !element.types.contains(&chosen) {
                    return Err(unknown);
                }
                typed.push((format!("{base}{}", upper_first(chosen)), ty));
            }
        } else {
            let Some(child) = r4.child(context, last) else {
                return Err(unknown);
            };
            typed.push(((*last).to_string(), child.context));
        }
        let mut leaves = Vec::new();
        for (member, ty) in typed {
            let target = match reading(kind, ty) {
                Reading::Read(target) => target,
                Reading::Skip => continue,
                Reading::Refuse(reason) => return Err(reason),
            };
            let target = match (telecom, target) {
                (None, target) => target,
                (Some(system), Target::ContactPoint(None)) => Target::ContactPoint(Some(system)),
                (Some(_), _) => return Err(unknown),
            };
            leaves.push(Leaf { member, target });
        }
        paths.push(Path { steps, leaves });
    }
    Ok(paths)
}

/// `dateTime` → `DateTime`: a choice type as it ends a JSON member's name.
fn upper_first(ty: &str) -> String {
    let mut chars = ty.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn parse_modifier(
    kind: ParamKind,
    modifier: Option<&str>,
) -> Result<Option<Modifier>, &'static str> {
    let Some(modifier) = modifier else {
        return Ok(None);
    };
    match (kind, modifier) {
        (_, "missing") => Err("`:missing` is not evaluated here"),
        (ParamKind::String, "exact") => Ok(Some(Modifier::Exact)),
        (ParamKind::String, "contains") => Ok(Some(Modifier::Contains)),
        (ParamKind::Token, "not") => Ok(Some(Modifier::Not)),
        (ParamKind::Token, "text" | "in" | "not-in" | "below" | "above" | "of-type") => {
            Err("it needs terminology or text search")
        }
        (ParamKind::Reference, "identifier") => Err("`:identifier` is not evaluated"),
        (ParamKind::Reference, ty) if ty.starts_with(|c: char| c.is_ascii_uppercase()) => {
            match r4().type_name(ty) {
                Some(ty)
                    if r4().kind(ty) == Some(Kind::Resource)
                        && ty != "Resource"
                        && ty != "DomainResource" =>
                {
                    Ok(Some(Modifier::Type(ty)))
                }
                _ => Err("not an R4 resource type"),
            }
        }
        _ => Err("not one this kind of parameter takes"),
    }
}

// ------------------------------------------------------------------------------------------------
// Values.

/// What a criterion tests each value against.
#[derive(Clone, Debug)]
enum Test {
    String {
        mode: StringMode,
        /// Normalised ([`fold`]) for `StartsWith` and `Contains`, as written for `Exact`.
        values: Vec<String>,
    },
    Token(Vec<TokenValue>),
    Reference {
        /// Only references to this type (R4's `resolve() is`, and `:Type`); two that differ
        /// match nothing.
        types: Vec<&'static str>,
        values: Vec<ReferenceValue>,
    },
    Date(Vec<(Prefix, Span)>),
    Number(Vec<NumberValue>),
    Quantity(Vec<(NumberValue, UnitQuery)>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StringMode {
    StartsWith,
    Contains,
    Exact,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenValue {
    /// `code`.
    Code(String),
    /// `|code`.
    NoSystem(String),
    /// `system|`.
    System(String),
    /// `system|code`.
    SystemCode(String, String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ReferenceValue {
    /// `Type/id` (or a URL ending so).
    Typed(&'static str, String),
    /// A bare id (or anything else: then it matches nothing).
    Id(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct NumberValue {
    prefix: Prefix,
    value: Decimal,
    /// `[lo, hi)`: the implicit range of the value's precision.
    lo: Decimal,
    hi: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum UnitQuery {
    Any,
    /// `||code`: the quantity's `code` or `unit`.
    CodeOrUnit(String),
    /// `|system|code`.
    SystemCode(String, String),
}

fn parse_test(
    resource_type: &str,
    code: &str,
    kind: ParamKind,
    modifier: Option<Modifier>,
    paths: &[Path],
    value: &str,
) -> Result<Test, &'static str> {
    let items = split_value(value)?;
    if items.iter().any(|parts| parts.iter().all(String::is_empty)) {
        return Err("an empty value");
    }
    let single = |parts: &[String]| -> Result<String, &'static str> {
        match parts {
            [one] => Ok(one.clone()),
            _ => Err("an unescaped `|` in a value of this kind"),
        }
    };
    match kind {
        ParamKind::String => {
            let mode = match modifier {
                Some(Modifier::Exact) => StringMode::Exact,
                Some(Modifier::Contains) => StringMode::Contains,
                _ => StringMode::StartsWith,
            };
            let mut values = Vec::new();
            for parts in &items {
                // A `|` has no meaning in a string: escaped or not, it is the character.
                let text = parts.join("|");
                let text = if mode == StringMode::Exact {
                    text
                } else {
                    fold(&text)
                };
                if text.is_empty() {
                    return Err("a value that is empty once white space is trimmed");
                }
                values.push(text);
            }
            Ok(Test::String { mode, values })
        }
        ParamKind::Token => {
            let mut values = Vec::new();
            for parts in &items {
                values.push(match parts.as_slice() {
                    [code] => TokenValue::Code(code.clone()),
                    [system, code] if system.is_empty() => TokenValue::NoSystem(code.clone()),
                    [system, code] if code.is_empty() => TokenValue::System(system.clone()),
                    [system, code] => TokenValue::SystemCode(system.clone(), code.clone()),
                    _ => return Err("more than one unescaped `|` in a token"),
                });
            }
            let systemless = paths.iter().flat_map(|p| &p.leaves).any(|leaf| {
                matches!(
                    leaf.target,
                    Target::Code | Target::Boolean | Target::ContactPoint(_)
                )
            });
            if systemless && values.iter().any(|v| !matches!(v, TokenValue::Code(_))) {
                return Err("a `|` on a parameter whose elements have no system");
            }
            Ok(Test::Token(values))
        }
        ParamKind::Reference => {
            let mut types = Vec::new();
            if let Some(ty) = lookup(REFERENCE_TARGETS, resource_type, code) {
                types.push(ty);
            }
            if let Some(Modifier::Type(ty)) = modifier {
                types.push(ty);
            }
            let mut values = Vec::new();
            for parts in &items {
                let text = single(parts)?;
                values.push(match parse_reference(&text) {
                    Some((ty, id)) => ReferenceValue::Typed(ty, id.to_string()),
                    None => ReferenceValue::Id(text),
                });
            }
            Ok(Test::Reference { types, values })
        }
        ParamKind::Date => {
            let mut values = Vec::new();
            for parts in &items {
                let text = single(parts)?;
                let (prefix, rest) = split_prefix(&text)?;
                let span = date_span(rest).ok_or("not a FHIR date, dateTime or instant")?;
                if span.lo < QUERY_FROM || span.hi > QUERY_UNTIL {
                    return Err("a date outside the years 1700 to 2239");
                }
                values.push((prefix, span));
            }
            Ok(Test::Date(values))
        }
        ParamKind::Number => {
            let mut values = Vec::new();
            for parts in &items {
                values.push(number_value(&single(parts)?)?);
            }
            Ok(Test::Number(values))
        }
        ParamKind::Quantity => {
            let mut values = Vec::new();
            for parts in &items {
                let (number, unit) = match parts.as_slice() {
                    [number] => (number, UnitQuery::Any),
                    [_, _, code] if code.is_empty() => {
                        return Err("a quantity with a system but no code");
                    }
                    [number, system, code] if system.is_empty() => {
                        (number, UnitQuery::CodeOrUnit(code.clone()))
                    }
                    [number, system, code] => {
                        (number, UnitQuery::SystemCode(system.clone(), code.clone()))
                    }
                    _ => {
                        return Err(
                            "a quantity is `number`, `number||code` or `number|system|code`",
                        );
                    }
                };
                values.push((number_value(number)?, unit));
            }
            Ok(Test::Quantity(values))
        }
    }
}

/// Splits a search value into its `,`-separated alternatives, each split at its unescaped `|`,
/// with R4's escapes (`\,`, `\|`, `\$`, `\\`) resolved.
fn split_value(value: &str) -> Result<Vec<Vec<String>>, &'static str> {
    let mut items = Vec::new();
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (',' | '|' | '$' | '\\')) => part.push(escaped),
                _ => return Err("a `\\` that escapes none of `,` `|` `$` `\\`"),
            },
            ',' => {
                parts.push(std::mem::take(&mut part));
                items.push(std::mem::take(&mut parts));
            }
            '|' => parts.push(std::mem::take(&mut part)),
            c => part.push(c),
        }
    }
    parts.push(part);
    items.push(parts);
    Ok(items)
}

/// A date or number value's prefix and the rest, as sekmet splits them: a known prefix followed
/// by a digit, `-`, `+` or `.`. `ap` is refused.
fn split_prefix(text: &str) -> Result<(Prefix, &str), &'static str> {
    let (Some(head), Some(rest)) = (text.get(..2), text.get(2..)) else {
        return Ok((Prefix::Eq, text));
    };
    let starts_value = rest
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'));
    if !starts_value {
        return Ok((Prefix::Eq, text));
    }
    let prefix = match head {
        "eq" => Prefix::Eq,
        "ne" => Prefix::Ne,
        "gt" => Prefix::Gt,
        "lt" => Prefix::Lt,
        "ge" => Prefix::Ge,
        "le" => Prefix::Le,
        "sa" => Prefix::Sa,
        "eb" => Prefix::Eb,
        "ap" => return Err("the `ap` prefix is server-defined"),
        _ => return Ok((Prefix::Eq, text)),
    };
    Ok((prefix, rest))
}

fn number_value(text: &str) -> Result<NumberValue, &'static str> {
    let (prefix, rest) = split_prefix(text)?;
    if matches!(prefix, Prefix::Sa | Prefix::Eb) {
        return Err("`sa` and `eb` are not evaluated on numbers");
    }
    let number = parse_number(rest).ok_or("not a decimal number")?;
    let (lo, hi) = number.implicit_range();
    Ok(NumberValue {
        prefix,
        value: number.value,
        lo,
        hi,
    })
}

impl Test {
    fn accepts(&self, target: Target, value: &Value) -> bool {
        match self {
            Self::String { mode, values } => string_accepts(*mode, values, target, value),
            Self::Token(values) => values.iter().any(|v| token_accepts(v, target, value)),
            Self::Reference { types, values } => reference_accepts(types, values, target, value),
            Self::Date(values) => {
                let Some(span) = target_span(target, value) else {
                    return false;
                };
                values
                    .iter()
                    .any(|(prefix, q)| date_accepts(*prefix, *q, span))
            }
            Self::Number(values) => {
                if target != Target::Number {
                    return false;
                }
                let Some(number) = json_decimal(value) else {
                    return false;
                };
                values.iter().any(|q| q.accepts(&number))
            }
            Self::Quantity(values) => {
                if target != Target::Quantity || !value.is_object() {
                    return false;
                }
                // A quantity with a comparator (`<5`) is not a value to compare.
                if value.get("comparator").is_some_and(|c| !c.is_null()) {
                    return false;
                }
                let Some(number) = value.get("value").and_then(json_decimal) else {
                    return false;
                };
                values
                    .iter()
                    .any(|(q, unit)| q.accepts(&number) && unit.accepts(value))
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// string

/// sekmet's `norm`: NFKD, characters of a non-zero canonical combining class dropped,
/// lower-cased, white space trimmed (Python's `str.isspace`).
fn fold(text: &str) -> String {
    let stripped: String = text
        .nfkd()
        .filter(|c| canonical_combining_class(*c) == 0)
        .collect();
    stripped
        .to_lowercase()
        .trim_matches(is_python_space)
        .to_string()
}

/// Python's `str.isspace`: Unicode white space and the separators U+001C to U+001F.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn string_accepts(mode: StringMode, values: &[String], target: Target, value: &Value) -> bool {
    let check = |text: &str| match mode {
        StringMode::Exact => values.iter().any(|q| q == text),
        StringMode::StartsWith => {
            let folded = fold(text);
            values.iter().any(|q| folded.starts_with(q.as_str()))
        }
        StringMode::Contains => {
            let folded = fold(text);
            values.iter().any(|q| folded.contains(q.as_str()))
        }
    };
    let members: &[&str] = match target {
        Target::Text => return value.as_str().is_some_and(check),
        Target::ConceptText => &["text"],
        Target::HumanName => NAME_MEMBERS,
        Target::Address => ADDRESS_MEMBERS,
        _ => return false,
    };
    members.iter().any(|member| {
        value
            .get(*member)
            .is_some_and(|v| items(v).filter_map(Value::as_str).any(check))
    })
}

// ------------------------------------------------------------------------------------------------
// token

fn token_accepts(query: &TokenValue, target: Target, value: &Value) -> bool {
    match target {
        Target::Coding => system_code_accepts(query, value, "code"),
        Target::Concept => value
            .get("coding")
            .is_some_and(|codings| items(codings).any(|c| system_code_accepts(query, c, "code"))),
        Target::Identifier => system_code_accepts(query, value, "value"),
        Target::ContactPoint(system) => {
            let TokenValue::Code(code) = query else {
                return false;
            };
            let of_system = system.is_none_or(|s| str_member(value, "system") == Some(s));
            of_system && str_member(value, "value") == Some(code.as_str())
        }
        Target::Code => matches!(query, TokenValue::Code(code) if value.as_str() == Some(code)),
        Target::Boolean => match (query, value) {
            (TokenValue::Code(code), Value::Bool(b)) => code == if *b { "true" } else { "false" },
            _ => false,
        },
        _ => false,
    }
}

/// A Coding (`code_member` = `code`) or an Identifier (`value`) against a token.
fn system_code_accepts(query: &TokenValue, value: &Value, code_member: &str) -> bool {
    let code = str_member(value, code_member);
    // sekmet reads a `null` system as none, and any other non-string as a system no query names.
    let system = value.get("system").filter(|s| !s.is_null());
    let system_is = |s: &str| system.and_then(Value::as_str) == Some(s);
    match query {
        TokenValue::Code(c) => code == Some(c.as_str()),
        TokenValue::NoSystem(c) => system.is_none() && code == Some(c.as_str()),
        TokenValue::System(s) => system_is(s),
        TokenValue::SystemCode(s, c) => system_is(s) && code == Some(c.as_str()),
    }
}

fn str_member<'a>(value: &'a Value, member: &str) -> Option<&'a str> {
    value.get(member).and_then(Value::as_str)
}

// ------------------------------------------------------------------------------------------------
// reference

fn reference_accepts(
    types: &[&'static str],
    values: &[ReferenceValue],
    target: Target,
    value: &Value,
) -> bool {
    if target != Target::Reference {
        return false;
    }
    let Some((ty, id)) = str_member(value, "reference").and_then(parse_reference) else {
        return false;
    };
    if types.iter().any(|t| *t != ty) {
        return false;
    }
    values.iter().any(|q| match q {
        ReferenceValue::Typed(qt, qid) => *qt == ty && qid == id,
        ReferenceValue::Id(qid) => qid == id,
    })
}

/// A literal reference's type and id, as sekmet's `parse_reference` reads it:
/// `[base/]Type/id[/_history/version]` with `Type` an R4 resource type and `id` of FHIR's id
/// syntax; `None` for `#contained`, `urn:…` and anything else. (The blind index reads references
/// with it too, so that its tokens hold what this matcher compares.)
pub fn parse_reference(text: &str) -> Option<(&'static str, &str)> {
    if text.is_empty() || text.starts_with("urn:") || text.starts_with('#') {
        return None;
    }
    // Python's `$` also matches before a final newline; the base may hold no other newline.
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.contains('\n') {
        return None;
    }
    let segments: Vec<&str> = body.split('/').collect();
    // The regular expression's lazy base tries the longest rest first, then the whole text.
    let rests = (1..segments.len())
        .filter_map(|k| segments.get(k..))
        .chain(std::iter::once(segments.as_slice()));
    for rest in rests {
        let (ty, id) = match rest {
            [ty, id] => (*ty, *id),
            [ty, id, history, version] if *history == "_history" && !version.is_empty() => {
                (*ty, *id)
            }
            _ => continue,
        };
        if !is_type_name(ty) || !is_reference_id(id) {
            continue;
        }
        let ty = r4()
            .type_name(ty)
            .filter(|t| r4().kind(t) == Some(Kind::Resource))
            .filter(|t| *t != "Resource" && *t != "DomainResource")?;
        return Some((ty, id));
    }
    None
}

/// `[A-Za-z0-9\-.]{1,64}` (sekmet's; R4's id syntax, `.` and `..` included).
fn is_reference_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `[A-Z][A-Za-z]+`.
fn is_type_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_uppercase())
        && text.len() >= 2
        && bytes.all(|b| b.is_ascii_alphabetic())
}

// ------------------------------------------------------------------------------------------------
// date

/// A time range `[lo, hi)` in microseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    lo: i64,
    hi: i64,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
/// sekmet's open bounds of a Period: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
const OPEN_START: i64 = -62_135_596_800_000_000;
const OPEN_END: i64 = 253_402_300_799_000_000;
/// The query dates decided exactly: between 1700-01-01T00:00Z and 2240-01-01T00:00Z every
/// microsecond is a distinct float second, as sekmet compares them.
const QUERY_FROM: i64 = -8_520_336_000_000_000;
const QUERY_UNTIL: i64 = 8_520_336_000_000_000;

/// The range of a date, dateTime or instant, as sekmet's `date_range` reads it (see the module
/// documentation); `None` for what it does not read, or cannot (a year 9999 whose end would be
/// in 10000).
/// The instants a FHIR `date`, `dateTime` or `instant` covers, in microseconds since
/// 1970-01-01T00:00:00Z: `[start, end)` (`2026-12-04` covers that whole UTC day; a time without an
/// offset is read as UTC). `None` for anything that is not one, as the matcher reads dates.
pub fn date_range_micros(text: &str) -> Option<(i64, i64)> {
    date_span(text).map(|span| (span.lo, span.hi))
}

fn date_span(text: &str) -> Option<Span> {
    let text = text.trim_matches(is_python_space);
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.digits(4)?;
    let (mut month, mut day, mut time, mut offset) = (None, None, None, 0);
    if p.eat(b'-') {
        month = Some(p.digits(2)?);
        if p.eat(b'-') {
            day = Some(p.digits(2)?);
            if p.eat(b'T') {
                let hour = p.digits(2)?;
                if !p.eat(b':') {
                    return None;
                }
                let minute = p.digits(2)?;
                let (mut second, mut fraction) = (None, None);
                if p.eat(b':') {
                    second = Some(p.digits(2)?);
                    if p.eat(b'.') {
                        fraction = Some(p.fraction()?);
                    }
                }
                if !p.eat(b'Z')
                    && let Some(sign) = p.sign()
                {
                    let hours = p.digits(2)?;
                    if !p.eat(b':') {
                        return None;
                    }
                    let minutes = p.digits(2)?;
                    // Python's `timezone` takes any offset strictly within a day.
                    let total = hours * 60 + minutes;
                    if total >= 24 * 60 {
                        return None;
                    }
                    offset = sign * total * 60_000_000;
                }
                time = Some((hour, minute, second, fraction));
            }
        }
    }
    if p.at != p.bytes.len() || !(1..=9999).contains(&year) {
        return None;
    }
    let (lo, hi) = match (month, day, time) {
        (None, _, _) => (civil_micros(year, 1, 1), civil_micros(year + 1, 1, 1)),
        (Some(month), None, _) => {
            let lo = civil_micros(year, month, 1);
            (lo, lo + days_in_month(year, month)? * MICROS_PER_DAY)
        }
        (Some(month), Some(day), None) => {
            let lo = checked_day(year, month, day)?;
            (lo, lo + MICROS_PER_DAY)
        }
        (Some(month), Some(day), Some((hour, minute, second, fraction))) => {
            if hour > 23 || minute > 59 || second.is_some_and(|s| s > 59) {
                return None;
            }
            let micro = fraction.unwrap_or(0);
            if micro >= 1_000_000 {
                return None;
            }
            let lo = checked_day(year, month, day)?
                + ((hour * 60 + minute) * 60 + second.unwrap_or(0)) * 1_000_000
                + micro;
            let step = match (second, fraction) {
                (_, Some(_)) => 1_000,
                (Some(_), None) => 1_000_000,
                (None, None) => 60_000_000,
            };
            (lo, lo + step)
        }
    };
    // Python's datetime ends with 9999-12-31T23:59:59.999999, local time.
    if hi >= civil_micros(10_000, 1, 1) {
        return None;
    }
    Some(Span {
        lo: lo - offset,
        hi: hi - offset,
    })
}

/// A byte cursor for [`date_span`].
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.bytes.get(self.at) == Some(&byte);
        if hit {
            self.at += 1;
        }
        hit
    }

    /// `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<i64> {
        let digits = self.bytes.get(self.at..self.at + n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += n;
        Some(
            digits
                .iter()
                .fold(0, |acc, d| acc * 10 + i64::from(d - b'0')),
        )
    }

    /// `+` → 1, `-` → -1.
    fn sign(&mut self) -> Option<i64> {
        if self.eat(b'+') {
            Some(1)
        } else if self.eat(b'-') {
            Some(-1)
        } else {
            None
        }
    }

    /// The digits after a `.`, as microseconds the way sekmet takes them:
    /// `int(float(".digits") * 1_000_000)`.
    fn fraction(&mut self) -> Option<i64> {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let digits = std::str::from_utf8(self.bytes.get(start..self.at)?).ok()?;
        if digits.is_empty() {
            return None;
        }
        let seconds: f64 = format!("0.{digits}").parse().ok()?;
        // Truncation towards zero, as Python's `int`; the product is at most 1e6.
        Some((seconds * 1_000_000.0) as i64)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> Option<i64> {
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => return None,
    })
}

/// The start of a valid calendar day, in microseconds.
fn checked_day(year: i64, month: i64, day: i64) -> Option<i64> {
    if day < 1 || day > days_in_month(year, month)? {
        return None;
    }
    Some(civil_micros(year, month, day))
}

/// Microseconds from 1970-01-01 to the start of a proleptic Gregorian day (H. Hinnant's
/// `days_from_civil`).
fn civil_micros(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era - 719_468) * MICROS_PER_DAY
}

/// A target value's range: a date string, or a Period with a `start` or an `end` member.
fn target_span(target: Target, value: &Value) -> Option<Span> {
    match target {
        Target::Date => value.as_str().and_then(date_span),
        Target::Period => {
            if value.get("start").is_none() && value.get("end").is_none() {
                return None;
            }
            let bound = |member| str_member(value, member).and_then(date_span);
            Some(Span {
                lo: bound("start").map_or(OPEN_START, |s| s.lo),
                hi: bound("end").map_or(OPEN_END, |s| s.hi),
            })
        }
        _ => None,
    }
}

fn date_accepts(prefix: Prefix, q: Span, t: Span) -> bool {
    match prefix {
        Prefix::Eq => t.lo >= q.lo && t.hi <= q.hi,
        Prefix::Ne => !(t.lo >= q.lo && t.hi <= q.hi),
        Prefix::Gt => t.hi > q.hi,
        Prefix::Lt => t.lo < q.lo,
        Prefix::Ge => t.hi > q.lo,
        Prefix::Le => t.lo < q.hi,
        Prefix::Sa => t.lo >= q.hi,
        Prefix::Eb => t.hi <= q.lo,
    }
}

// ------------------------------------------------------------------------------------------------
// number and quantity

/// An exact decimal: `digits × 10^exp`, negative if `negative`. `digits` has no leading or
/// trailing zero; zero has no digits and is never negative.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exp: i64,
}

/// A number as written: its value, and the power of ten of its last written digit (`1.50` → -2,
/// `1e2` → 2), for the implicit range.
struct Written {
    value: Decimal,
    negative: bool,
    /// Every written digit, leading zeros dropped (`0` for zero).
    mantissa: Vec<u8>,
    last: i64,
}

/// Exponents beyond this are refused in queries and never match in resources.
const MAX_EXPONENT: i64 = 1_000_000_000;

impl Decimal {
    fn new(negative: bool, digits: &[u8], exp: i64) -> Self {
        let start = digits.iter().position(|d| *d != 0).unwrap_or(digits.len());
        let end = digits
            .iter()
            .rposition(|d| *d != 0)
            .map_or(start, |i| i + 1);
        let kept = digits.get(start..end).unwrap_or_default().to_vec();
        let trailing = i64::try_from(digits.len() - end.max(start)).unwrap_or(0);
        Self {
            negative: negative && !kept.is_empty(),
            exp: if kept.is_empty() { 0 } else { exp + trailing },
            digits: kept,
        }
    }

    /// The power of ten just above the leading digit (`digits.len() + exp`).
    fn magnitude(&self) -> i64 {
        i64::try_from(self.digits.len()).unwrap_or(i64::MAX / 2) + self.exp
    }

    fn cmp_abs(&self, other: &Self) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            // Same magnitude: the digits, left-aligned, decide (no trailing zeros).
            (false, false) => self
                .magnitude()
                .cmp(&other.magnitude())
                .then_with(|| self.digits.cmp(&other.digits)),
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Written {
    /// `[value − ½·10^last, value + ½·10^last)`.
    fn implicit_range(&self) -> (Decimal, Decimal) {
        // With M the written digits, value = ±M·10^last and the bounds are (10M ∓ 5)·10^(last-1).
        let mut plus = self.mantissa.clone();
        plus.push(5);
        let minus = match decrement(&self.mantissa) {
            Some(mut below) => {
                below.push(5);
                (false, below)
            }
            // M = 0: 10M − 5 = −5.
            None => (true, vec![5]),
        };
        let exp = self.last - 1;
        let up = Decimal::new(false, &plus, exp);
        let down = Decimal::new(minus.0, &minus.1, exp);
        if self.negative {
            // −(10M + 5), −(10M − 5).
            let mut lo = up;
            lo.negative = true;
            let mut hi = down;
            hi.negative = !hi.negative && !hi.digits.is_empty();
            (lo, hi)
        } else {
            (down, up)
        }
    }
}

/// `digits − 1`, for digits of a positive integer; `None` for zero.
fn decrement(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.iter().all(|d| *d == 0) {
        return None;
    }
    let mut out = digits.to_vec();
    for d in out.iter_mut().rev() {
        if *d == 0 {
            *d = 9;
        } else {
            *d -= 1;
            break;
        }
    }
    Some(out)
}

/// `[+-]digits[.digits][(e|E)[+-]digits]`.
fn parse_number(text: &str) -> Option<Written> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            at = 1;
            true
        }
        Some(b'+') => {
            at = 1;
            false
        }
        _ => false,
    };
    let run = |at: usize| {
        bytes.get(at..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let int_len = run(at);
    if int_len == 0 {
        return None;
    }
    let mut digits: Vec<u8> = bytes
        .get(at..at + int_len)?
        .iter()
        .map(|b| b - b'0')
        .collect();
    at += int_len;
    let mut frac_len = 0;
    if bytes.get(at) == Some(&b'.') {
        frac_len = run(at + 1);
        if frac_len == 0 {
            return None;
        }
        digits.extend(
            bytes
                .get(at + 1..at + 1 + frac_len)?
                .iter()
                .map(|b| b - b'0'),
        );
        at += 1 + frac_len;
    }
    let mut exp: i64 = 0;
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        let exp_negative = match bytes.get(at) {
            Some(b'-') => {
                at += 1;
                true
            }
            Some(b'+') => {
                at += 1;
                false
            }
            _ => false,
        };
        let exp_len = run(at);
        if exp_len == 0 {
            return None;
        }
        for b in bytes.get(at..at + exp_len)? {
            exp = exp.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
            if exp > MAX_EXPONENT {
                return None;
            }
        }
        at += exp_len;
        if exp_negative {
            exp = -exp;
        }
    }
    if at != bytes.len() {
        return None;
    }
    let last = exp - i64::try_from(frac_len).ok()?;
    let value = Decimal::new(negative, &digits, last);
    let start = digits
        .iter()
        .position(|d| *d != 0)
        .unwrap_or(digits.len() - 1);
    Some(Written {
        negative: value.negative,
        value,
        mantissa: digits.get(start..).unwrap_or_default().to_vec(),
        last,
    })
}

/// A JSON number's exact value, from its text (`arbitrary_precision`).
fn json_decimal(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(number) => parse_number(&number.to_string()).map(|w| w.value),
        _ => None,
    }
}

impl NumberValue {
    fn accepts(&self, t: &Decimal) -> bool {
        let in_range = *t >= self.lo && *t < self.hi;
        match self.prefix {
            Prefix::Eq => in_range,
            Prefix::Ne => !in_range,
            Prefix::Gt => *t > self.value,
            Prefix::Lt => *t < self.value,
            Prefix::Ge => *t >= self.value,
            Prefix::Le => *t <= self.value,
            // Refused when parsed.
            Prefix::Sa | Prefix::Eb => false,
        }
    }
}

impl UnitQuery {
    fn accepts(&self, quantity: &Value) -> bool {
        match self {
            Self::Any => true,
            Self::CodeOrUnit(code) => {
                str_member(quantity, "code") == Some(code)
                    || str_member(quantity, "unit") == Some(code)
            }
            Self::SystemCode(system, code) => {
                str_member(quantity, "system") == Some(system)
                    && str_member(quantity, "code") == Some(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    /// Whether `name=value` on the resource's type matches it; panics if refused.
    fn hit(res: &Value, name: &str, value: &str) -> bool {
        let ty = res["resourceType"].as_str().unwrap();
        match Criterion::parse(ty, name, value) {
            Ok(c) => c.matches(res),
            Err(e) => panic!("{name}={value} refused: {e}"),
        }
    }

    fn refused(ty: &str, name: &str, value: &str) -> Unsupported {
        match Criterion::parse(ty, name, value) {
            Ok(c) => panic!("{name}={value} parsed: {c:?}"),
            Err(e) => e,
        }
    }

    fn patient() -> Value {
        resource(
            r#"{"resourceType": "Patient", "id": "p1",
                "identifier": [{"system": "urn:oid:1.2.3", "value": "MRN-1"},
                               {"value": "NOSYS"}],
                "name": [{"family": "Ševčík", "given": ["Anna", "Marie"], "prefix": ["Dr."]},
                         {"text": "  Ann  Smith ", "suffix": ["Jr"]}],
                "telecom": [{"system": "phone", "value": "555-1234"},
                            {"system": "email", "value": "anna@example.org"}],
                "gender": "female", "active": true, "birthDate": "1974-12-25",
                "address": [{"line": ["1 Main St"], "city": "Zürich", "postalCode": "8001"}],
                "generalPractitioner": [{"reference": "Practitioner/dr1"}],
                "managingOrganization": {"reference": "http://other.example/fhir/Organization/o1/_history/3"},
                "meta": {"lastUpdated": "2026-11-28T02:11:18.380Z",
                         "tag": [{"system": "urn:t", "code": "a"}]}}"#,
        )
    }

    #[test]
    fn strings_match_prefixes_without_case_or_accents() {
        let p = patient();
        assert!(hit(&p, "family", "sev"));
        assert!(hit(&p, "family", "ŠEVČ"));
        assert!(hit(&p, "family", "Ševčík"));
        assert!(!hit(&p, "family", "evc"));
        assert!(hit(&p, "given", "mar"));
        assert!(hit(&p, "name", "anna"));
        assert!(hit(&p, "name", "dr."), "HumanName.prefix is searched");
        assert!(hit(&p, "name", "jr"), "HumanName.suffix is searched");
        assert!(
            hit(&p, "name", " ann  smith"),
            "trimmed, inner white space kept"
        );
        assert!(
            !hit(&p, "name", "ann smith"),
            "inner white space is not collapsed"
        );
        assert!(hit(&p, "address", "zur"));
        assert!(hit(&p, "address", "1 main"));
        assert!(hit(&p, "address-city", "ZÜRICH"));
        assert!(!hit(&p, "address-city", "main"));
        assert!(hit(&p, "address-postalcode", "80"));
        assert!(!hit(&p, "family", "smith"));
    }

    #[test]
    fn string_modifiers() {
        let p = patient();
        assert!(hit(&p, "family:exact", "Ševčík"));
        assert!(!hit(&p, "family:exact", "ševčík"));
        assert!(!hit(&p, "family:exact", "Sevcik"));
        assert!(!hit(&p, "family:exact", "Šev"));
        assert!(hit(&p, "family:contains", "VČ"));
        assert!(hit(&p, "family:contains", "cik"));
        assert!(!hit(&p, "family:contains", "x"));
        assert!(hit(&p, "name:contains", "smi"));
        assert!(hit(&p, "name:exact", "  Ann  Smith "));
        // `%` and `_` are characters, not wildcards.
        assert!(!hit(&p, "family", "s_v"));
        assert!(!hit(&p, "family:contains", "%"));
        let named = resource(r#"{"resourceType": "Patient", "name": [{"family": "a_b%c"}]}"#);
        assert!(hit(&named, "family", "A_B%"));
        assert!(!hit(&named, "family", "axb"));
    }

    #[test]
    fn greek_final_sigma_folds_as_python_lowercases() {
        let p = resource(r#"{"resourceType": "Patient", "name": [{"family": "ΟΔΟΣ"}]}"#);
        assert!(hit(&p, "family", "οδος"));
        assert!(hit(&p, "family", "ΟΔΟΣ"));
        assert_eq!(fold("ΟΔΟΣ"), "οδος");
        assert_eq!(fold("İ"), "i");
        assert_eq!(fold("\u{1c} Ab \u{1f}"), "ab");
    }

    #[test]
    fn or_lists_and_escapes() {
        let p = patient();
        assert!(hit(&p, "family", "xyz,sev"));
        assert!(!hit(&p, "family", "xyz,abc"));
        assert!(hit(&p, "gender", "male,female"));
        let odd = resource(
            r#"{"resourceType": "Patient", "name": [{"family": "a,b|c$d\\e"}],
                "identifier": [{"system": "s|x", "value": "v,1"}]}"#,
        );
        assert!(hit(&odd, "family:exact", r"a\,b\|c\$d\\e"));
        assert!(
            hit(&odd, "family:exact", r"a\,b|c\$d\\e"),
            "a bare `|` in a string is literal"
        );
        assert!(
            !hit(&odd, "family:exact", r"a,b|c$d\\e"),
            "an unescaped `,` splits"
        );
        assert!(hit(&odd, "identifier", r"s\|x|v\,1"));
        assert!(hit(&odd, "identifier", r"v\,1"));
        assert!(matches!(
            Criterion::parse("Patient", "identifier", r"s|x|v\,1"),
            Err(Unsupported::Value { .. })
        ));
        assert_eq!(
            split_value(r"a\,b,c\|d|e\\").ok(),
            Some(vec![
                vec!["a,b".to_string()],
                vec!["c|d".to_string(), "e\\".to_string()]
            ])
        );
        for bad in [r"a\b", "a\\", r"\n", "", "a,,b", ",", "a,"] {
            assert!(
                matches!(refused("Patient", "family", bad), Unsupported::Value { .. }),
                "{bad}"
            );
        }
        assert!(matches!(
            refused("Patient", "family", "  "),
            Unsupported::Value { .. }
        ));
    }

    #[test]
    fn tokens() {
        let p = patient();
        assert!(hit(&p, "identifier", "MRN-1"));
        assert!(hit(&p, "identifier", "urn:oid:1.2.3|MRN-1"));
        assert!(hit(&p, "identifier", "urn:oid:1.2.3|"));
        assert!(!hit(&p, "identifier", "urn:oid:9|MRN-1"));
        assert!(!hit(&p, "identifier", "|MRN-1"), "MRN-1 has a system");
        assert!(hit(&p, "identifier", "|NOSYS"));
        assert!(!hit(&p, "identifier", "mrn-1"), "tokens are case-sensitive");
        assert!(hit(&p, "gender", "female"));
        assert!(!hit(&p, "gender", "Female"));
        assert!(hit(&p, "active", "true"));
        assert!(!hit(&p, "active", "false"));
        assert!(hit(&p, "telecom", "555-1234"));
        assert!(hit(&p, "phone", "555-1234"));
        assert!(!hit(&p, "email", "555-1234"));
        assert!(hit(&p, "email", "anna@example.org"));
        assert!(!hit(&p, "phone", "anna@example.org"));
        assert!(hit(&p, "_id", "p1"));
        assert!(hit(&p, "_tag", "urn:t|a"));
        assert!(!hit(&p, "_tag", "urn:t|b"));
        let obs = resource(
            r#"{"resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"},
                                    {"code": "local"}], "text": "Glucose"},
                "valueString": "true"}"#,
        );
        assert!(hit(&obs, "code", "1234-5"));
        assert!(hit(&obs, "code", "http://loinc.org|1234-5"));
        assert!(hit(&obs, "code", "http://loinc.org|"));
        assert!(hit(&obs, "code", "|local"));
        assert!(!hit(&obs, "code", "|1234-5"));
        assert!(!hit(&obs, "code", "Glucose"), "the text is not a code");
        assert!(
            !hit(&obs, "value-concept", "true"),
            "valueString is not a CodeableConcept"
        );
    }

    #[test]
    fn token_not() {
        let p = patient();
        assert!(!hit(&p, "gender:not", "female"));
        assert!(hit(&p, "gender:not", "male"));
        assert!(!hit(&p, "gender:not", "male,female"));
        assert!(!hit(&p, "identifier:not", "MRN-1"));
        assert!(hit(&p, "identifier:not", "MRN-2"));
        let bare = resource(r#"{"resourceType": "Patient"}"#);
        assert!(hit(&bare, "gender:not", "female"), "no value matches");
        assert!(!hit(&bare, "gender", "female"));
    }

    #[test]
    fn token_systems_on_elements_without_one_are_refused() {
        for (name, value) in [
            ("gender", "http://hl7.org/fhir/administrative-gender|female"),
            ("gender", "|female"),
            ("active", "|true"),
            ("telecom", "phone|555-1234"),
            ("phone", "|555-1234"),
            ("_id", "x|p1"),
        ] {
            assert!(
                matches!(refused("Patient", name, value), Unsupported::Value { .. }),
                "{name}={value}"
            );
        }
    }

    #[test]
    fn references() {
        let p = patient();
        assert!(hit(&p, "general-practitioner", "Practitioner/dr1"));
        assert!(hit(&p, "general-practitioner", "dr1"));
        assert!(hit(&p, "general-practitioner:Practitioner", "dr1"));
        assert!(!hit(&p, "general-practitioner:Organization", "dr1"));
        assert!(!hit(&p, "general-practitioner", "Organization/dr1"));
        assert!(hit(
            &p,
            "general-practitioner",
            "https://example.org/fhir/Practitioner/dr1"
        ));
        assert!(
            hit(&p, "organization", "Organization/o1"),
            "base and version ignored"
        );
        assert!(hit(&p, "organization", "o1"));
        assert!(!hit(&p, "organization", "o2"));
        let obs = resource(
            r##"{"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Group/g1"},
                "performer": [{"reference": "#contained"}, {"reference": "urn:uuid:1"},
                              {"reference": "Practitioner/x_y"}]}"##,
        );
        assert!(hit(&obs, "subject", "Group/g1"));
        assert!(hit(&obs, "subject", "g1"));
        assert!(
            !hit(&obs, "patient", "g1"),
            "`patient` reads Patient references only"
        );
        assert!(!hit(&obs, "patient", "Group/g1"));
        assert!(!hit(&obs, "patient:Group", "g1"));
        assert!(!hit(&obs, "performer", "contained"));
        assert!(!hit(&obs, "performer", "#contained"));
        assert!(!hit(&obs, "performer", "urn:uuid:1"));
        assert!(!hit(&obs, "performer", "x_y"), "not a FHIR id");
        let mine = resource(
            r#"{"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": "Patient/p1"}}"#,
        );
        assert!(hit(&mine, "patient", "p1"));
        assert!(hit(&mine, "patient", "Patient/p1"));
        assert!(hit(&mine, "subject:Patient", "p1"));
        assert!(!hit(&mine, "subject:Group", "p1"));
        assert_eq!(
            parse_reference("Patient/1/_history/2"),
            Some(("Patient", "1"))
        );
        assert_eq!(parse_reference("a/b/Patient/1"), Some(("Patient", "1")));
        assert_eq!(parse_reference("Patient/1\n"), Some(("Patient", "1")));
        assert_eq!(parse_reference("Nothing/1"), None);
        assert_eq!(parse_reference("Resource/1"), None);
        assert_eq!(parse_reference("Patient"), None);
        assert_eq!(parse_reference("/Patient/1"), Some(("Patient", "1")));
    }

    #[test]
    fn dates_at_each_precision() {
        let p = patient(); // birthDate 1974-12-25
        for (value, expect) in [
            ("1974", true),
            ("1974-12", true),
            ("1974-12-25", true),
            ("1975", false),
            ("1974-11", false),
            ("1974-12-24", false),
            ("1974-12-25T10:00:00Z", false),
            ("ne1974", false),
            ("ne1975", true),
            ("gt1974-12-24", true),
            ("gt1974-12-25", false),
            ("ge1974-12-25", true),
            ("ge1974-12-26", false),
            ("lt1974-12-26", true),
            ("lt1974-12-25", false),
            ("le1974-12-25", true),
            ("le1974-12-24", false),
            ("sa1974-12-24", true),
            ("sa1974-12", false),
            ("eb1974-12-26", true),
            ("eb1974-12-25", false),
            ("1974,1980", true),
            ("1980,1990", false),
            ("eq1974-12-25", true),
        ] {
            assert_eq!(hit(&p, "birthdate", value), expect, "birthdate={value}");
        }
    }

    #[test]
    fn date_boundaries_of_months_years_and_seconds() {
        let born = |date: &str| {
            resource(&format!(
                r#"{{"resourceType": "Patient", "birthDate": "{date}"}}"#
            ))
        };
        // The last day of a month is in it, the first of the next is not.
        assert!(hit(&born("2024-02-29"), "birthdate", "2024-02"));
        assert!(!hit(&born("2024-03-01"), "birthdate", "2024-02"));
        assert!(hit(&born("2023-12-31"), "birthdate", "2023"));
        assert!(!hit(&born("2024-01-01"), "birthdate", "2023"));
        assert!(hit(&born("2024-01-01"), "birthdate", "gt2023"));
        assert!(!hit(&born("2023-12-31"), "birthdate", "gt2023"));
        assert!(hit(&born("2022-12-31"), "birthdate", "lt2023"));
        assert!(!hit(&born("2023-01-01"), "birthdate", "lt2023"));
        // A value less precise than the query is not contained in it, but overlaps it.
        assert!(!hit(&born("2023"), "birthdate", "2023-06"));
        assert!(hit(&born("2023"), "birthdate", "ge2023-06"));
        assert!(hit(&born("2023"), "birthdate", "le2023-06"));
        assert!(hit(&born("2023"), "birthdate", "ne2023-06"));
        // Not a date, or a date no calendar has: never matches.
        assert!(!hit(&born("2023-02-29"), "birthdate", "2023"));
        assert!(!hit(&born("bad"), "birthdate", "2023"));

        let at = |instant: &str| {
            resource(&format!(
                r#"{{"resourceType": "Observation", "status": "final", "code": {{}},
                    "effectiveDateTime": "{instant}"}}"#
            ))
        };
        let obs = at("2020-06-30T23:59:59Z");
        assert!(hit(&obs, "date", "2020-06-30"));
        assert!(hit(&obs, "date", "2020-06-30T23:59:59Z"));
        assert!(!hit(&obs, "date", "2020-06-30T23:59:58Z"));
        assert!(hit(&obs, "date", "2020-06-30T23:59Z"), "minute precision");
        assert!(hit(&obs, "date", "lt2020-07-01T00:00:00Z"));
        assert!(!hit(&obs, "date", "gt2020-06-30T23:59:59Z"));
        assert!(hit(&obs, "date", "ge2020-06-30T23:59:59Z"));
        assert!(hit(&obs, "date", "eb2020-07-01T00:00:00Z"));
        // Zones: 23:59:59Z is 01:59:59 at +02:00 on July 1st.
        assert!(hit(&obs, "date", "2020-07-01T01:59:59+02:00"));
        assert!(!hit(&obs, "date", "2020-07-01"), "a date is read in UTC");
        let zoned = at("2020-07-01T01:30:00+02:00");
        assert!(hit(&zoned, "date", "2020-06-30"));
        assert!(hit(&zoned, "date", "2020-06-30T23:30:00Z"));
        // No zone: UTC.
        assert!(hit(
            &at("2020-06-30T23:30:00"),
            "date",
            "2020-06-30T23:30:00Z"
        ));
        // A fraction spans a millisecond.
        let fine = at("2020-06-30T23:59:59.5Z");
        assert!(hit(&fine, "date", "2020-06-30T23:59:59Z"));
        assert!(hit(&fine, "date", "2020-06-30T23:59:59.500Z"));
        assert!(!hit(&fine, "date", "2020-06-30T23:59:59.501Z"));
        assert!(hit(&fine, "date", "gt2020-06-30T23:59:59.499Z"));
        assert!(!hit(&fine, "date", "gt2020-06-30T23:59:59.5Z"));
        // Instants of `_lastUpdated`.
        let p = patient();
        assert!(hit(&p, "_lastUpdated", "2026-11-28"));
        assert!(hit(&p, "_lastUpdated", "ge2026-11-28T02:11:18Z"));
        assert!(
            !hit(&p, "_lastUpdated", "gt2026-11-28T02:11:18Z"),
            "its end is not above 18s's"
        );
        assert!(hit(&p, "_lastUpdated", "gt2026-11-28T02:11:17Z"));
        assert!(hit(&p, "_lastUpdated", "lt2026-11-28T02:11:19Z"));
        assert!(!hit(&p, "_lastUpdated", "2026-11-28T02:11:18.381Z"));
    }

    #[test]
    fn periods_and_open_bounds() {
        let enc = |period: &str| {
            resource(&format!(
                r#"{{"resourceType": "Encounter", "status": "finished", "class": {{}},
                    "period": {period}}}"#
            ))
        };
        let closed = enc(r#"{"start": "2020-01-10", "end": "2020-01-20"}"#);
        assert!(hit(&closed, "date", "2020-01"));
        assert!(!hit(&closed, "date", "2020-01-15"));
        assert!(hit(&closed, "date", "ge2020-01-20"));
        assert!(!hit(&closed, "date", "ge2020-01-21"));
        assert!(hit(&closed, "date", "le2020-01-10"));
        assert!(!hit(&closed, "date", "le2020-01-09"));
        assert!(hit(&closed, "date", "gt2020-01-19"));
        assert!(!hit(&closed, "date", "gt2020-01-20"));
        let open = enc(r#"{"start": "2020-01-10"}"#);
        assert!(!hit(&open, "date", "2020"));
        assert!(hit(&open, "date", "gt2239"));
        assert!(!hit(&open, "date", "lt2020-01-10"));
        let ended = enc(r#"{"end": "2020-01-10"}"#);
        assert!(hit(&ended, "date", "lt1700"));
        assert!(!hit(&ended, "date", "gt2020-01-10"));
        let neither = enc("{}");
        assert!(!hit(&neither, "date", "ne2020"));
        let nulls = enc(r#"{"start": null}"#);
        assert!(
            hit(&nulls, "date", "gt2020"),
            "a present but empty bound is open"
        );
    }

    #[test]
    fn choice_elements_read_their_cast_types_only() {
        let obs = |value: &str| {
            resource(&format!(
                r#"{{"resourceType": "Observation", "status": "final", "code": {{}}, {value}}}"#
            ))
        };
        let text = obs(r#""valueString": "High blood pressure""#);
        assert!(hit(&text, "value-string", "high"));
        let concept =
            obs(r#""valueCodeableConcept": {"text": "Hypertension", "coding": [{"code": "h"}]}"#);
        assert!(hit(&concept, "value-string", "hyper"));
        assert!(hit(&concept, "value-concept", "h"));
        assert!(!hit(&text, "value-concept", "High blood pressure"));
        let when = obs(r#""valueDateTime": "2020-01-01""#);
        assert!(
            !hit(&when, "value-string", "2020"),
            "a dateTime is not a string"
        );
        assert!(hit(&when, "value-date", "2020"));
        let timing = obs(r#""effectiveTiming": {"event": ["2020-01-01"]}"#);
        assert!(!hit(&timing, "date", "2020"), "a Timing is not read");
        let instant = obs(r#""effectiveInstant": "2020-01-01T00:00:00.000Z""#);
        assert!(hit(&instant, "date", "2020"));
    }

    #[test]
    fn numbers_use_the_implicit_range() {
        let seq = |value: &str| {
            resource(&format!(
                r#"{{"resourceType": "ChargeItem", "status": "billed", "code": {{}},
                    "subject": {{}}, "factorOverride": {value}}}"#
            ))
        };
        for (target, query, expect) in [
            ("1.5", "1.5", true),
            ("1.45", "1.5", true),
            ("1.549999", "1.5", true),
            ("1.55", "1.5", false),
            ("1.4499", "1.5", false),
            ("1.50", "1.5", true),
            ("1.52", "1.50", false),
            ("100", "1e2", true),
            ("50", "1e2", true),
            ("150", "1e2", false),
            ("99.5", "100", true),
            ("100.5", "100", false),
            ("0", "0", true),
            ("0.4", "0", true),
            ("-0.5", "0", true),
            ("0.5", "0", false),
            ("-1.5", "-1.5", true),
            ("-1.55", "-1.5", true),
            ("-1.45", "-1.5", false),
            ("1.5", "ne1.5", false),
            ("1.6", "ne1.5", true),
            ("1.5", "gt1.49", true),
            ("1.5", "gt1.5", false),
            ("1.5", "ge1.50", true),
            ("1.5", "lt1.5", false),
            ("-2", "lt-1", true),
            ("1.5", "le1.5", true),
            ("1e-3", "0.001", true),
            ("12345678901234567890.123", "12345678901234567890.123", true),
            (
                "12345678901234567890.124",
                "12345678901234567890.123",
                false,
            ),
            (
                "12345678901234567890.123",
                "gt12345678901234567890.1229",
                true,
            ),
        ] {
            assert_eq!(
                hit(&seq(target), "factor-override", query),
                expect,
                "{target} against {query}"
            );
        }
        assert!(
            !hit(&seq(r#""1.5""#), "factor-override", "1.5"),
            "a string is not a number"
        );
    }

    #[test]
    fn quantities() {
        let obs = resource(
            r#"{"resourceType": "Observation", "status": "final", "code": {},
                "valueQuantity": {"value": 5.40, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
                "component": [{"code": {}, "valueQuantity": {"value": 7, "unit": "kg", "code": "kg"}},
                              {"code": {}, "valueQuantity": {"value": 3, "comparator": "<"}}]}"#,
        );
        assert!(hit(&obs, "value-quantity", "5.4"));
        assert!(hit(
            &obs,
            "value-quantity",
            "5.4|http://unitsofmeasure.org|mg"
        ));
        assert!(hit(&obs, "value-quantity", "5.4||mg"));
        assert!(
            !hit(&obs, "value-quantity", "5.4||kg"),
            "units are not converted"
        );
        assert!(!hit(&obs, "value-quantity", "5.4|http://other|mg"));
        assert!(!hit(&obs, "value-quantity", "5.5"));
        assert!(hit(
            &obs,
            "value-quantity",
            "gt5|http://unitsofmeasure.org|mg"
        ));
        assert!(hit(&obs, "value-quantity", "le5.4"));
        assert!(!hit(&obs, "value-quantity", "lt5.4"));
        assert!(hit(&obs, "component-value-quantity", "7||kg"));
        assert!(hit(&obs, "combo-value-quantity", "7"));
        assert!(
            !hit(&obs, "component-value-quantity", "3"),
            "a comparator is not compared"
        );
        assert!(!hit(&obs, "component-value-quantity", "lt4"));
        for bad in [
            "5.4|mg", "5.4|s|", "5.4|||mg", "ap5", "sa5", "five", "5..4", "1e", ".5",
        ] {
            assert!(
                matches!(
                    refused("Observation", "value-quantity", bad),
                    Unsupported::Value { .. }
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn decimals_compare_exactly() {
        let d = |t: &str| parse_number(t).map(|w| w.value).unwrap();
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("-0"), d("0"));
        assert_eq!(d("1e2"), d("100"));
        assert_eq!(d("0.001"), d("1E-3"));
        assert!(d("0.1") < d("0.10000000000000000001"));
        assert!(d("-1") < d("-0.5"));
        assert!(d("-1") < d("0"));
        assert!(d("9") < d("10"));
        assert!(d("1e1000") > d("9e999"));
        let range = |t: &str| {
            let (lo, hi) = parse_number(t).unwrap().implicit_range();
            (lo, hi)
        };
        assert_eq!(range("1.5"), (d("1.45"), d("1.55")));
        assert_eq!(range("100"), (d("99.5"), d("100.5")));
        assert_eq!(range("0"), (d("-0.5"), d("0.5")));
        assert_eq!(range("-1.5"), (d("-1.55"), d("-1.45")));
        assert_eq!(range("10"), (d("9.5"), d("10.5")));
        assert_eq!(range("1e2"), (d("50"), d("150")));
        assert_eq!(range("0.010"), (d("0.0095"), d("0.0105")));
        assert!(parse_number("1e9999999999").is_none());
        assert!(parse_number("").is_none());
        assert!(parse_number("-").is_none());
        assert!(parse_number("1.").is_none());
    }

    #[test]
    fn date_parsing_follows_sekmet() {
        let span = |t: &str| date_span(t).map(|s| (s.lo, s.hi));
        let at = |y, m, d| civil_micros(y, m, d);
        assert_eq!(span("1970"), Some((0, at(1971, 1, 1))));
        assert_eq!(span(" 1970-01 "), Some((0, at(1970, 2, 1))));
        assert_eq!(span("1970-01-01T00:00Z"), Some((0, 60_000_000)));
        assert_eq!(span("1970-01-01T01:00:00+01:00"), Some((0, 1_000_000)));
        assert_eq!(span("1970-01-01T00:00:00.5"), Some((500_000, 501_000)));
        assert_eq!(span("1970-01-01T00:00:00.29Z"), Some((290_000, 291_000)));
        assert_eq!(span("1970-01-01T00:00:00.0000019Z"), Some((1, 1_001)));
        assert_eq!(
            civil_micros(2000, 3, 1) - civil_micros(2000, 2, 1),
            29 * MICROS_PER_DAY
        );
        assert_eq!(
            civil_micros(1900, 3, 1) - civil_micros(1900, 2, 1),
            28 * MICROS_PER_DAY
        );
        assert_eq!(civil_micros(1, 1, 1), OPEN_START);
        assert_eq!(civil_micros(1700, 1, 1), QUERY_FROM);
        assert_eq!(civil_micros(2240, 1, 1), QUERY_UNTIL);
        for bad in [
            "",
            "197",
            "1970-1",
            "1970-13",
            "1970-00",
            "1970-02-30",
            "1970-01-01T24:00:00Z",
            "1970-01-01T10:60:00Z",
            "1970-01-01T10:00:60Z",
            "1970-01-01T10Z",
            "1970-01-01Z",
            "1970-01-01T10:00:00+24:00",
            "1970-01-01T10:00:00+0100",
            "1970-01-01T10:00:00.Z",
            "1970-01-01T00:00:00.9999999999999999999Z",
            "0000",
            "9999",
            "9999-12",
            "9999-12-31",
            "١٩٧٠",
            "1970-01-01T00:00:00Zx",
        ] {
            assert_eq!(span(bad), None, "{bad}");
        }
        assert!(span("9999-11").is_some());
        assert!(
            span("1970-01-01T10:00:00+05:75").is_some(),
            "minutes as Python adds them"
        );
    }

    #[test]
    fn refusals() {
        let parameter =
            |ty: &str, name: &str| matches!(refused(ty, name, "x"), Unsupported::Parameter { .. });
        assert!(parameter("Patient", "_text"));
        assert!(parameter("Patient", "_content"));
        assert!(parameter("Patient", "_filter"));
        assert!(parameter("Patient", "_query"));
        assert!(parameter("Patient", "phonetic"));
        assert!(parameter("Patient", "deceased"));
        assert!(parameter("Patient", "_profile"), "uri");
        assert!(parameter("Observation", "code-value-quantity"), "composite");
        assert!(parameter("Patient", "general-practitioner.name"), "chain");
        assert!(parameter("Patient", "_has:Observation:patient:code"));
        assert!(parameter("Patient", "_count"));
        assert!(parameter("Patient", "name:"));
        assert!(parameter("Condition", "onset-age"), "Range");
        assert!(parameter("Library", "context-quantity"), "Range");
        assert!(parameter("RiskAssessment", "probability"), "Range");
        assert!(parameter("Invoice", "totalnet"), "Money");
        assert!(parameter("PlanDefinition", "depends-on"), "canonical");
        assert!(parameter("ConceptMap", "source"), "canonical");
        assert!(parameter("Bundle", "composition"), "a whole resource");
        let unknown =
            |ty: &str, name: &str| matches!(refused(ty, name, "x"), Unsupported::Unknown { .. });
        assert!(unknown("Patient", "nonsense"));
        assert!(unknown("Nothing", "name"));
        assert!(unknown("HumanName", "family"));
        let modifier =
            |ty: &str, name: &str| matches!(refused(ty, name, "x"), Unsupported::Modifier { .. });
        for name in [
            "name:missing",
            "name:text",
            "name:not",
            "gender:text",
            "gender:in",
            "gender:below",
            "gender:above",
            "identifier:of-type",
            "gender:missing",
            "general-practitioner:identifier",
            "general-practitioner:Nothing",
            "general-practitioner:Resource",
            "birthdate:not",
            "birthdate:exact",
        ] {
            assert!(modifier("Patient", name), "{name}");
        }
        assert!(matches!(
            refused("Patient", "birthdate", "ap2020"),
            Unsupported::Value { .. }
        ));
        assert!(matches!(
            refused("Patient", "birthdate", "1650"),
            Unsupported::Value { .. }
        ));
        assert!(matches!(
            refused("Patient", "birthdate", "2020|x"),
            Unsupported::Value { .. }
        ));
        assert!(matches!(
            refused("Patient", "general-practitioner", "Practitioner/1|2"),
            Unsupported::Value { .. }
        ));
    }

    #[test]
    fn errors_never_hold_the_value() {
        let secret = "Zq9SecretValue";
        let cases = [
            ("Patient", "family", format!(r"{secret}\x")),
            ("Patient", "family", format!("{secret},")),
            ("Patient", "gender", format!("{secret}|{secret}|{secret}")),
            ("Patient", "gender", format!("|{secret}")),
            ("Patient", "birthdate", secret.to_string()),
            ("Patient", "birthdate", format!("ap{secret}")),
            ("Patient", "general-practitioner", format!("{secret}|x")),
            ("Observation", "value-quantity", format!("{secret}|x|y")),
            ("Observation", "value-quantity", format!("1|{secret}|")),
            ("ChargeItem", "factor-override", secret.to_string()),
            ("Patient", "phonetic", secret.to_string()),
            ("Patient", "name:text", secret.to_string()),
            ("Patient", "_text", secret.to_string()),
            ("Patient", "nonsense", secret.to_string()),
        ];
        for (ty, name, value) in &cases {
            let error = refused(ty, name, value);
            let text = error.to_string();
            assert!(!text.contains(secret), "{text}");
            assert!(text.contains(*name), "{text}");
            assert_eq!(error.key(), *name);
        }
    }

    #[test]
    fn accessors_and_other_types() {
        let c = Criterion::parse("Patient", "name:contains", "an").unwrap();
        assert_eq!(
            (c.key(), c.code(), c.kind(), c.modifier(), c.resource_type()),
            (
                "name:contains",
                "name",
                ParamKind::String,
                Some(Modifier::Contains),
                "Patient"
            )
        );
        assert_eq!(c.kind().to_string(), "string");
        let practitioner =
            resource(r#"{"resourceType": "Practitioner", "name": [{"family": "Ann"}]}"#);
        assert!(!c.matches(&practitioner), "another type never matches");
        assert!(!c.matches(&Value::Null));
        let s = Criterion::parse("Observation", "subject:Patient", "1").unwrap();
        assert_eq!(s.modifier(), Some(Modifier::Type("Patient")));
    }

    #[test]
    fn odd_json_never_panics_and_never_matches() {
        let odd = resource(
            r#"{"resourceType": "Patient", "name": "Ann", "birthDate": 1974,
                "identifier": {"system": 5, "value": ["x"]}, "gender": ["female", null],
                "telecom": [null, 3, {"system": "phone", "value": 555}],
                "generalPractitioner": {"reference": 5},
                "active": "true", "address": [[{"city": "Bern"}]]}"#,
        );
        assert!(!hit(&odd, "name", "ann"));
        assert!(!hit(&odd, "birthdate", "1974"));
        assert!(!hit(&odd, "identifier", "x"));
        assert!(hit(&odd, "gender", "female"), "arrays are flattened");
        assert!(!hit(&odd, "phone", "555"));
        assert!(!hit(&odd, "general-practitioner", "5"));
        assert!(!hit(&odd, "active", "true"));
        assert!(!hit(&odd, "address-city", "bern"));
    }

    /// Every parameter R4 defines on every type parses or is refused, and what parses never
    /// panics on a resource.
    #[test]
    fn every_r4_parameter_parses_or_is_refused() {
        let table = include_str!("../../../fhir-profiles/r4/search-params.tsv");
        let samples = ["x", "1", "2020", "1|s|c", "s|c", "Patient/1"];
        let mut evaluated = 0;
        for line in table
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let mut cols = line.split('\t');
            let (Some(ty), Some(code)) = (cols.next(), cols.next()) else {
                continue;
            };
            let types: Vec<&str> = if ty == "Resource" || ty == "DomainResource" {
                vec!["Patient", "Observation"]
            } else {
                vec![ty]
            };
            for ty in types {
                let res = resource(&format!(r#"{{"resourceType": "{ty}"}}"#));
                for sample in samples {
                    match Criterion::parse(ty, code, sample) {
                        Ok(c) => {
                            evaluated += 1;
                            let _ = c.matches(&res);
                        }
                        // Every choice element of R4's table is in `CHOICES`, and every path
                        // can be followed.
                        Err(Unsupported::Parameter { reason, .. }) => assert!(
                            !reason.contains("no R4 type list") && !reason.contains("R4 path"),
                            "{ty}.{code}: {reason}"
                        ),
                        Err(_) => {}
                    }
                }
            }
        }
        assert!(evaluated > 1000, "{evaluated}");
    }

    /// The choice table names only types R4 defines for the element.
    #[test]
    fn choice_table_is_r4() {
        for (ty, code, _) in CHOICES {
            let types: Vec<&str> = if *ty == "*" {
                vec!["Library", "ValueSet", "PlanDefinition"]
            } else {
                vec![ty]
            };
            for ty in types {
                let param = search::param(ty, code);
                assert!(param.is_some(), "{ty}.{code}");
                let refused_for_path = compile_paths(
                    ty,
                    code,
                    match param.map(|p| p.kind) {
                        Some("token") => ParamKind::Token,
                        Some("string") => ParamKind::String,
                        Some("date") => ParamKind::Date,
                        Some("number") => ParamKind::Number,
                        Some("quantity") => ParamKind::Quantity,
                        _ => ParamKind::Reference,
                    },
                    param.map(|p| p.paths.as_slice()).unwrap_or_default(),
                )
                .err();
                assert_ne!(
                    refused_for_path,
                    Some("its R4 path is not one the gateway can follow"),
                    "{ty}.{code}"
                );
            }
        }
    }
}
