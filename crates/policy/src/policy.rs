//! Loading and validating policy documents.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::{ControlFlow, Range};
use std::sync::Arc;

use fhirseal_envelope::Granularity;
use fhirseal_fhir::principal::Principal;
use fhirseal_fhir::rest::Interaction;
use fhirseal_fhir::structure::r4;
use fhirseal_fhir::{ElementPath, Members};
use fhirseal_seal::{
    DEFAULT_INDEX_BITS, Displays, ElementRule, Narrative, RuleSet, Rules, SearchMode,
};
use rshabe::access::Node;
use rshabe::{AccessStructure, Attribute};
use toml::Spanned;

use crate::consent::{
    ACTOR, CONSENT_NAMESPACE, ConsentRule, ConsentView, UNRESTRICTED, actor_attributes, consented,
};
pub use crate::document::Origin;
use crate::document::{
    RawBreakGlass, RawConsent, RawDisplays, RawFile, RawGranularity, RawNarrative, Search,
};

/// The attribute a structure uses for "the patient the record belongs to".
pub const PATIENT_SELF: &str = "patient:self";
/// What `patient:self` becomes in a record that belongs to no patient: an attribute nobody holds.
pub const NO_PATIENT: &str = "patient:none";

/// A validated policy: deny by default; roles, access rules and protection rules.
#[derive(Clone, Debug)]
pub struct Policy {
    name: String,
    version: String,
    description: Option<String>,
    roles: Vec<Role>,
    access: Vec<Access>,
    /// Shared with every [`SealingRules`] a decision hands out: a snapshot costs a count.
    protections: Arc<[Protection]>,
    break_glass: Vec<BreakGlass>,
    /// Shared like `protections`.
    consent: Arc<[ConsentRule]>,
}

/// A break-glass rule: who may assert an emergency, which attributes the emergency adds to
/// theirs, and for how long (`fhir-profiles/README.md`, "Break-glass").
#[derive(Clone, Debug)]
pub struct BreakGlass {
    /// Its name.
    pub name: String,
    /// Who may assert it: a structure over the caller's own attributes (never `patient:self`).
    pub who: AccessStructure,
    /// The attributes added to the caller's for the emergency, as written.
    pub grants: Vec<String>,
    /// How long a grant lasts from its first assertion, in seconds.
    pub max_seconds: u64,
    /// Where it was written.
    pub origin: Origin,
}

/// The longest grant a break-glass rule may give, in minutes: one day.
pub const MAX_BREAK_GLASS_MINUTES: i64 = 24 * 60;

/// A role: conditions on the caller's token facts, and the attributes they give.
#[derive(Clone, Debug)]
pub struct Role {
    /// Its name.
    pub name: String,
    fhir_user_types: Vec<String>,
    role_codes: Vec<String>,
    specialties: Vec<String>,
    organizations: Vec<String>,
    scopes: Vec<String>,
    claims: BTreeMap<String, String>,
    /// The attributes it gives (`patient:self` becomes `patient:Patient/<id>` for a patient).
    pub attributes: Vec<String>,
    /// Where it was written.
    pub origin: Origin,
}

/// An access rule: who may make which requests on which resource types at all.
#[derive(Clone, Debug)]
pub struct Access {
    /// Its name.
    pub name: String,
    /// The resource types (`None`: all).
    pub resources: Option<BTreeSet<String>>,
    /// The interactions.
    pub interactions: BTreeSet<Interaction>,
    /// Who: a structure over attributes (`patient:self` holds for the record's own patient).
    pub readers: AccessStructure,
    /// Where it was written.
    pub origin: Origin,
}

/// A protection rule: elements of one resource type sealed under a structure.
#[derive(Clone, Debug)]
pub struct Protection {
    /// Its name.
    pub name: String,
    /// The resource type.
    pub resource_type: String,
    /// The element rules, checked against R4 at load, under `readers` as written (with
    /// `patient:self` unresolved): [`Policy::rules_for`] resolves it per record.
    pub elements: Vec<ElementRule>,
    /// Who may read them (`patient:self`: the record's own patient).
    pub readers: AccessStructure,
    /// Who may also set them without being able to read them back (`patient:self`: the record's
    /// own patient); `None`: only `readers`. A write never changes or removes a stored element
    /// its writer cannot read, writer or not: this lets a writer add one.
    pub writers: Option<AccessStructure>,
    /// Header granularity.
    pub granularity: Granularity,
    /// How searches on them are answered.
    pub search: Search,
    /// Compound blind indexes over pairs of leaves of these elements.
    pub compound_indexes: Vec<[String; 2]>,
    /// Security labels the gateway sets on resources it seals under this rule.
    pub labels: Vec<Label>,
    /// Where it was written.
    pub origin: Origin,
    narrative: Option<Narrative>,
    displays: Option<Displays>,
}

/// A security label (`meta.security`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    /// Its code system.
    pub system: &'static str,
    /// Its code.
    pub code: String,
}

/// One problem in a policy, with where it is and which key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyError {
    /// The file.
    pub file: String,
    /// The line, from 1 (0: the file as a whole).
    pub line: usize,
    /// The key (`protect[2].elements`), or empty.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Every problem found in a policy, in file and line order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.key.is_empty()) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (line, true) => write!(f, "{}:{line}: {}", self.file, self.message),
            (line, false) => write!(f, "{}:{line}: {}: {}", self.file, self.key, self.message),
        }
    }
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

const CONFIDENTIALITY: (&str, &[&str]) = (
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    &["U", "L", "M", "N", "R", "V"],
);
const SENSITIVITY: (&str, &[&str]) = (
    "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    &[
        "HIV", "PSY", "ETH", "SDV", "SEX", "STD", "BH", "SUD", "MH", "GDIS", "SICKLE", "TBOO",
    ],
);

/// R4 data types with few distinct values: a blind index on an element of one of these alone
/// tells the server which resources share a value, and its frequency says which value it is
/// likely to be. Such an element is indexed only in a compound index unless the policy lists it
/// in `index-alone`.
pub const LOW_ENTROPY_TYPES: &[&str] = &["date", "dateTime", "instant", "code", "boolean"];

/// Whether `rule`'s element is of a [`LOW_ENTROPY_TYPES`] type.
pub fn low_entropy(rule: &ElementRule) -> bool {
    matches!(rule.path().element().types.as_slice(), [one] if LOW_ENTROPY_TYPES.contains(one))
}

/// The fewest bits a policy may keep of a blind-index token: fewer, and most searches would fetch
/// most of the resources of their type.
const MIN_INDEX_BITS: u8 = 8;

/// Line (from 1) of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .map_or(1, |t| t.matches('\n').count() + 1)
}

struct Checker<'t> {
    file: &'t str,
    text: &'t str,
    errors: Vec<PolicyError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, key: String, message: String) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
            key,
            message,
        });
    }

    fn origin(&self, span: &Range<usize>) -> Origin {
        Origin {
            file: self.file.to_string(),
            line: line_of(self.text, span.start),
        }
    }

    fn structure(
        &mut self,
        readers: &Spanned<String>,
        key: String,
        allow_self: bool,
    ) -> Option<AccessStructure> {
        match AccessStructure::parse(readers.get_ref()) {
            Ok(structure) => {
                if let Some(problem) = structure.leaves().iter().find_map(|a| reserved(a.as_str()))
                {
                    self.error(readers.span(), key, problem);
                    return None;
                }
                if !allow_self
                    && structure
                        .leaves()
                        .iter()
                        .any(|a| a.as_str() == PATIENT_SELF)
                {
                    self.error(
                        readers.span(),
                        key,
                        format!("`{PATIENT_SELF}` has no meaning here"),
                    );
                    return None;
                }
                Some(structure)
            }
            Err(e) => {
                self.error(
                    readers.span(),
                    key,
                    format!("`{}` is not an access structure: {e}", readers.get_ref()),
                );
                None
            }
        }
    }
}

impl Policy {
    /// The policy in `files` (name, text), which together hold exactly one `[policy]` header.
    /// Every problem is reported, each with its file, line and key.
    pub fn load(files: &[(String, String)]) -> Result<Self, PolicyErrors> {
        let mut errors = Vec::new();
        let mut header: Option<(String, String, Option<String>)> = None;
        let mut roles = Vec::new();
        let mut access = Vec::new();
        let mut protections: Vec<Protection> = Vec::new();
        let mut break_glass: Vec<(BreakGlass, String)> = Vec::new();
        let mut consent: Vec<(ConsentRule, Vec<(String, String)>)> = Vec::new();
        for (file, text) in files {
            let raw: RawFile = match toml::from_str(text) {
                Ok(raw) => raw,
                Err(e) => {
                    errors.push(PolicyError {
                        file: file.clone(),
                        line: e.span().map_or(0, |s| line_of(text, s.start)),
                        key: String::new(),
                        message: e.message().trim().to_string(),
                    });
                    continue;
                }
            };
            let mut c = Checker {
                file,
                text,
                errors: Vec::new(),
            };
            if let Some(h) = raw.policy {
                if header.is_some() {
                    c.error(
                        h.span(),
                        "policy".into(),
                        "a second `[policy]` header: one file of a policy holds it".into(),
                    );
                }
                let h = h.into_inner();
                // The only default is deny; the document says so for its readers.
                let crate::document::RawDefault::Deny = *h.default.get_ref();
                header = Some((h.name, h.version, h.description));
            }
            for (i, role) in raw.roles.iter().enumerate() {
                if let Some(role) = check_role(&mut c, i, role) {
                    roles.push(role);
                }
            }
            for (i, rule) in raw.access.iter().enumerate() {
                if let Some(rule) = check_access(&mut c, i, rule) {
                    access.push(rule);
                }
            }
            for (i, rule) in raw.protect.iter().enumerate() {
                if let Some(rule) = check_protect(&mut c, i, rule) {
                    protections.push(rule);
                }
            }
            for (i, rule) in raw.break_glass.iter().enumerate() {
                if let Some(rule) = check_break_glass(&mut c, i, rule) {
                    break_glass.push((rule, format!("break-glass[{i}].grants")));
                }
            }
            for (i, rule) in raw.consent.iter().enumerate() {
                if let Some(rule) = check_consent(&mut c, i, rule) {
                    consent.push(rule);
                }
            }
            errors.extend(c.errors);
        }
        // Across files: names are unique per kind, and protections must not contradict.
        unique(
            &mut errors,
            roles.iter().map(|r| (&r.name, &r.origin)),
            "roles",
        );
        unique(
            &mut errors,
            access.iter().map(|r| (&r.name, &r.origin)),
            "access",
        );
        unique(
            &mut errors,
            protections.iter().map(|r| (&r.name, &r.origin)),
            "protect",
        );
        contradictions(&mut errors, &protections);
        unique(
            &mut errors,
            break_glass.iter().map(|(r, _)| (&r.name, &r.origin)),
            "break-glass",
        );
        for (rule, key) in &break_glass {
            if rule.opens(&protections).is_empty() {
                errors.push(PolicyError {
                    file: rule.origin.file.clone(),
                    line: rule.origin.line,
                    key: key.clone(),
                    message: format!(
                        "break-glass rule `{}` opens no protected element: with {} its grants satisfy no protection rule's readers that {} alone does not",
                        rule.name,
                        rule.grants.join(", "),
                        rule.who
                    ),
                });
            }
        }
        let mut break_glass: Vec<BreakGlass> = break_glass.into_iter().map(|(r, _)| r).collect();
        unique(
            &mut errors,
            consent.iter().map(|(r, _)| (&r.name, &r.origin)),
            "consent",
        );
        // A consent rule names protection rules that exist; a rule is governed by one at most.
        let mut governed: BTreeMap<&str, &str> = BTreeMap::new();
        for (rule, names) in &consent {
            for (name, key) in names {
                let error = if !protections.iter().any(|p| &p.name == name) {
                    Some(format!(
                        "consent rule `{}` names `{name}`, which is no protection rule",
                        rule.name
                    ))
                } else if let Some(other) = governed.insert(name, &rule.name)
                    && other != rule.name
                {
                    Some(format!(
                        "protection rule `{name}` is governed by consent rules `{other}` and `{}`: one at most",
                        rule.name
                    ))
                } else {
                    None
                };
                if let Some(message) = error {
                    errors.push(PolicyError {
                        file: rule.origin.file.clone(),
                        line: rule.origin.line,
                        key: key.clone(),
                        message,
                    });
                }
            }
        }
        let mut consent: Vec<ConsentRule> = consent.into_iter().map(|(r, _)| r).collect();
        let Some((name, version, description)) = header else {
            if errors.is_empty() {
                errors.push(PolicyError {
                    file: files
                        .first()
                        .map_or_else(|| "(no file)".to_string(), |f| f.0.clone()),
                    line: 0,
                    key: "policy".into(),
                    message: "no `[policy]` header (name, version, default = \"deny\") in any file"
                        .into(),
                });
            }
            return Err(sorted(errors));
        };
        if !errors.is_empty() {
            return Err(sorted(errors));
        }
        // Order-independence: everything is kept sorted by name.
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        access.sort_by(|a, b| a.name.cmp(&b.name));
        protections.sort_by(|a, b| a.name.cmp(&b.name));
        break_glass.sort_by(|a, b| a.name.cmp(&b.name));
        consent.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            name,
            version,
            description,
            roles,
            access,
            protections: protections.into(),
            break_glass,
            consent: consent.into(),
        })
    }

    /// Its break-glass rules, by name.
    pub fn break_glass(&self) -> &[BreakGlass] {
        &self.break_glass
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Its description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Its roles, by name.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Its access rules, by name.
    pub fn access(&self) -> &[Access] {
        &self.access
    }

    /// Its protection rules, by name.
    pub fn protections(&self) -> &[Protection] {
        &self.protections
    }

    /// The attributes `principal` holds: those of every role whose conditions it meets, with
    /// each hierarchical attribute's ancestors (`org:st-mary/dept:cardiology` gives
    /// `org:st-mary` too), and why.
    pub fn attributes(&self, principal: &Principal) -> Attributes {
        let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for role in self.roles.iter().filter(|r| r.matches(principal)) {
            for attribute in &role.attributes {
                let attribute = if attribute == PATIENT_SELF {
                    match principal.patient() {
                        Some(patient) => format!("patient:{patient}"),
                        None => continue,
                    }
                } else {
                    attribute.clone()
                };
                let mut prefix = String::new();
                for (i, part) in attribute.split('/').enumerate() {
                    if i > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(part);
                    // `patient:Patient/456` is one attribute, not a hierarchy.
                    if attribute.starts_with("patient:") && prefix != attribute {
                        continue;
                    }
                    let why = held.entry(prefix.clone()).or_default();
                    if !why.contains(&role.name) {
                        why.push(role.name.clone());
                    }
                }
            }
        }
        // Under consent, who the caller is (never a hierarchy: `actor:Practitioner/7` is one
        // attribute). Only for a caller some role matched: the rest hold nothing.
        if !self.consent.is_empty() && !held.is_empty() {
            let organizations = principal
                .practitioner_roles
                .iter()
                .filter_map(|r| r.organization.clone());
            for actor in actor_attributes(principal.fhir_user.as_deref(), organizations) {
                held.entry(actor).or_default().push("consent".to_string());
            }
        }
        Attributes { held }
    }

    /// [`Policy::attributes`] under the consents in force: with [`UNRESTRICTED`] unless one of
    /// the caller's `actor:` attributes is a practitioner some patient's consent denies (the key
    /// a caller is given holds exactly these). Without a `[[consent]]` rule, the same as
    /// [`Policy::attributes`].
    pub fn attributes_in(&self, principal: &Principal, view: &ConsentView) -> Attributes {
        let mut attributes = self.attributes(principal);
        if self.consent.is_empty() || attributes.is_empty() {
            return attributes;
        }
        let restricted = attributes.names().any(|a| {
            a.strip_prefix(ACTOR)
                .is_some_and(|actor| view.restricted.contains(actor))
        });
        if !restricted {
            attributes.grant(UNRESTRICTED, "consent");
        }
        attributes
    }

    /// Its consent rules, by name.
    pub fn consent_rules(&self) -> &[ConsentRule] {
        &self.consent
    }

    /// Every attribute a role of this policy gives, with each hierarchical attribute's ancestors,
    /// and [`UNRESTRICTED`] under consent, `patient:self` left out: what the gateway's own re-index identity holds, so that it opens
    /// every element some role may read (an element only `patient:self` may read stays closed to
    /// it). Sorted.
    pub fn role_attributes(&self) -> Vec<String> {
        let mut held = BTreeSet::new();
        for role in &self.roles {
            for attribute in role.attributes.iter().filter(|a| *a != PATIENT_SELF) {
                let mut prefix = String::new();
                for (i, part) in attribute.split('/').enumerate() {
                    if i > 0 {
                        prefix.push('/');
                    }
                    prefix.push_str(part);
                    held.insert(prefix.clone());
                }
            }
        }
        if !self.consent.is_empty() {
            held.insert(UNRESTRICTED.to_string());
        }
        held.into_iter().collect()
    }

    /// The sealing rules for records of `patient` (`Patient/456`; `None`: a record in no
    /// patient's compartment): each structure's `patient:self` becomes that patient's
    /// attribute.
    pub fn rules_for(&self, patient: Option<&str>) -> Rules {
        rules_for(
            &self.protections,
            &[],
            patient,
            &ConsentView::default(),
            None,
        )
    }

    /// [`Policy::rules_for`] under the consents in force for that patient (`view`,
    /// [`crate::ConsentBook::view`]): the structures of the rules a `[[consent]]` rule governs
    /// widened by the patient's permits and narrowed by their denials.
    pub fn rules_under(&self, patient: Option<&str>, view: &ConsentView) -> Rules {
        rules_for(&self.protections, &self.consent, patient, view, None)
    }

    /// The structure `protection` seals under for a record of `patient` under `view`.
    pub fn readers_under(
        &self,
        protection: &Protection,
        patient: Option<&str>,
        view: &ConsentView,
    ) -> AccessStructure {
        protection.consented(protection.readers_for(patient), &self.consent, view)
    }

    /// What a write of a record of `patient` is sealed under under the consents `view`, for the
    /// gateway's own writes that no caller's decision stands behind (sealing a patient's records
    /// again after their consent changed).
    pub fn sealing_rules_under(&self, patient: Option<&str>, view: ConsentView) -> SealingRules {
        self.sealing_rules(patient.map(str::to_string), view)
    }

    /// The sealing rules of a decision for a record of `patient`: this policy's protection
    /// rules as they stand now, shared, not copied, under the consents of the decision.
    pub(crate) fn sealing_rules(&self, patient: Option<String>, view: ConsentView) -> SealingRules {
        SealingRules {
            protections: Arc::clone(&self.protections),
            consent: Arc::clone(&self.consent),
            view,
            patient,
        }
    }
}

/// The sealing rules `protections` give records of `patient` under `consent` and `view`
/// ([`Policy::rules_under`]); with `only`, the rules of those resource types alone.
fn rules_for(
    protections: &[Protection],
    consent: &[ConsentRule],
    patient: Option<&str>,
    view: &ConsentView,
    only: Option<&BTreeSet<&str>>,
) -> Rules {
    let mut by_type: BTreeMap<&str, TypeRules> = BTreeMap::new();
    let wanted = |p: &Protection| only.is_none_or(|types| types.contains(p.resource_type.as_str()));
    for protection in protections.iter().filter(|p| wanted(p)) {
        let entry = by_type.entry(&protection.resource_type).or_default();
        let readers = protection.consented(protection.readers_for(patient), consent, view);
        for rule in &protection.elements {
            entry.0.push(rule.with_policy(readers.clone()));
        }
        entry.3.extend(protection.compound_indexes.iter().cloned());
        entry.1 = entry.1.or(protection.narrative);
        entry.2 = entry.2.or(protection.displays);
    }
    let sets =
        by_type
            .into_iter()
            .filter_map(|(rtype, (rules, narrative, displays, compounds))| {
                let set = RuleSet::new(
                    rtype,
                    rules,
                    narrative.unwrap_or_default(),
                    displays.unwrap_or_default(),
                )
                .ok()?;
                // Checked when the policy loaded ([`check_protect`]).
                compounds
                    .iter()
                    .try_fold(set, |set, [a, b]| set.with_compound(a, b))
                    .ok()
            });
    Rules::new(sets).unwrap_or_default()
}

impl Policy {
    /// The sealing rules for `resource` as written: [`Policy::rules_for`] its record's patient,
    /// and, when the policy protects `Patient.name`, a rule sealing every `display` of a
    /// reference to a Patient (`Encounter.subject.display`, `Observation.performer.display`)
    /// under the readers of that patient's name. Clients copy names into displays; in a resource
    /// with nothing else sealed, the display would otherwise reach the upstream server in clear.
    ///
    /// Displays of references to several patients at one path are sealed under the structure
    /// without any `patient:self` (only the roles may read them). Displays inside extensions
    /// and contained resources are left to the resource's `displays` setting.
    ///
    /// # Errors
    /// A [`fhirseal_seal::RuleError`] naming the path when a display cannot be given a rule
    /// there (the caller refuses the write: failing closed).
    pub fn rules_for_resource(
        &self,
        resource: &serde_json::Value,
        patient: Option<&str>,
    ) -> Result<Rules, fhirseal_seal::RuleError> {
        rules_for_resource(
            &self.protections,
            &[],
            resource,
            patient,
            &ConsentView::default(),
        )
    }
}

/// [`Policy::rules_for_resource`] under `protections`, `consent` and `view`.
fn rules_for_resource(
    protections: &[Protection],
    consent: &[ConsentRule],
    resource: &serde_json::Value,
    patient: Option<&str>,
    view: &ConsentView,
) -> Result<Rules, fhirseal_seal::RuleError> {
    let types = types_sealed_with(resource);
    let rules = rules_for(protections, consent, patient, view, types.as_ref());
    let Some(resource_type) = resource.get("resourceType").and_then(|v| v.as_str()) else {
        return Ok(rules);
    };
    let Some(names) = protections.iter().find(|p| {
        p.resource_type == "Patient"
            && p.elements
                .iter()
                .any(|e| e.path().plain() == "Patient.name")
    }) else {
        return Ok(rules);
    };
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let _ = patient_displays(resource, &mut resource_type.to_string(), &mut |path, id| {
        found
            .entry(path.to_string())
            .or_default()
            .insert(format!("Patient/{id}"));
        ControlFlow::Continue(())
    });
    if found.is_empty() {
        return Ok(rules);
    }
    let existing = rules.for_type(resource_type);
    let mut elements: Vec<ElementRule> = existing
        .map(|set| set.elements().to_vec())
        .unwrap_or_default();
    for (path, patients) in found {
        let single = (patients.len() == 1)
            .then(|| patients.iter().next().map(String::as_str))
            .flatten();
        let rule = ElementRule::new(&path, names.readers_for(single), names.granularity)?;
        if elements.iter().any(|e| e.path().overlaps(rule.path())) {
            continue;
        }
        elements.push(rule);
    }
    let set = RuleSet::new(
        resource_type,
        elements,
        existing.map(RuleSet::narrative).unwrap_or_default(),
        existing.map(RuleSet::displays).unwrap_or_default(),
    )?;
    // The display rules join the type's rules; its compound indexes stay.
    let set = existing
        .map(RuleSet::compounds)
        .unwrap_or_default()
        .iter()
        .try_fold(set, |set, c| {
            let [(a, _), (b, _)] = c.parts();
            set.with_compound(a, b)
        })?;
    let others = rules
        .sets()
        .filter(|s| s.resource_type() != resource_type)
        .cloned()
        .collect::<Vec<_>>();
    Rules::new(others.into_iter().chain(std::iter::once(set)))
}

/// The resource types whose rules sealing `resource` can use: its own and those of its
/// contained resources, at any depth, as the sealer enters them. Building the rules of these
/// types alone is a fifth of a create's sealing (`BENCHMARKS.md`, issue 18's fourth round).
/// `None`, all types, for a Bundle (its entries are of any type) or anything without a type.
fn types_sealed_with(resource: &serde_json::Value) -> Option<BTreeSet<&str>> {
    fn add<'v>(
        object: &'v serde_json::Map<String, serde_json::Value>,
        types: &mut BTreeSet<&'v str>,
    ) -> Option<()> {
        let resource_type = object.member("resourceType")?.as_str()?;
        if resource_type == "Bundle" {
            return None;
        }
        types.insert(resource_type);
        if let Some(serde_json::Value::Array(contained)) = object.member("contained") {
            for inner in contained.iter().filter_map(serde_json::Value::as_object) {
                add(inner, types)?;
            }
        }
        Some(())
    }
    let mut types = BTreeSet::new();
    add(resource.as_object()?, &mut types)?;
    Some(types)
}

impl Policy {
    /// The sealing rules the read path checks a stored `resource` (in its upstream form)
    /// against, so that a value in clear where sealing would have put a placeholder is withheld
    /// as forged (`docs/authenticity.md`): `base`, this policy's [`Policy::rules_for`] resolved
    /// once by the caller (a check needs paths, and paths do not depend on the patient), and,
    /// only when `resource` holds a `display` of a reference to a Patient in clear, the display
    /// rules [`Policy::rules_for_resource`] would have sealed it under. A display where no rule
    /// can be given (the write would have been refused) leaves `base`.
    pub fn rules_to_check<'r>(
        &self,
        base: &'r Rules,
        resource: &serde_json::Map<String, serde_json::Value>,
    ) -> Cow<'r, Rules> {
        let Some(resource_type) = resource.get("resourceType").and_then(|v| v.as_str()) else {
            return Cow::Borrowed(base);
        };
        // Any one display is enough to resolve the rules as sealing would.
        let mut path = String::with_capacity(64);
        path.push_str(resource_type);
        let any = patient_displays_in(resource, &mut path, &mut |_, _| ControlFlow::Break(()));
        if any.is_continue() {
            return Cow::Borrowed(base);
        }
        let resource = serde_json::Value::Object(resource.clone());
        self.rules_for_resource(&resource, None)
            .map_or(Cow::Borrowed(base), Cow::Owned)
    }
}

/// Calls `found` with the element path (`Encounter.subject.display`) of each `display` of a
/// reference to a Patient in `value`, whose path is `path` (restored on return), and the id of
/// the patient it names (`123` for `Patient/123`), until `found` breaks; extensions and contained
/// resources are not entered. Allocates nothing but the room `path` grows by, and looks at each
/// member of each object once: it runs on every resource of every answer
/// ([`Policy::rules_to_check`]).
fn patient_displays(
    value: &serde_json::Value,
    path: &mut String,
    found: &mut dyn FnMut(&str, &str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    use serde_json::Value;
    match value {
        Value::Object(object) => patient_displays_in(object, path, found),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| patient_displays(item, path, found)),
        _ => ControlFlow::Continue(()),
    }
}

/// [`patient_displays`] in an object: its members first, then the object itself when it is a
/// reference to a Patient with a `display` string.
fn patient_displays_in(
    object: &serde_json::Map<String, serde_json::Value>,
    path: &mut String,
    found: &mut dyn FnMut(&str, &str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let (mut reference, mut display) = (None, false);
    let len = path.len();
    for (key, child) in object {
        match key.as_str() {
            "reference" => reference = child.as_str(),
            "display" => display = child.is_string(),
            _ => {}
        }
        if matches!(
            key.as_str(),
            "extension" | "modifierExtension" | "contained" | "resourceType"
        ) || key.starts_with('_')
            || !(child.is_object() || child.is_array())
        {
            continue;
        }
        path.push('.');
        path.push_str(key);
        let flow = patient_displays(child, path, found);
        path.truncate(len);
        flow?;
    }
    if let (Some(reference), true) = (reference, display) {
        let mut parts = reference.rsplit('/');
        if let (Some(id), Some("Patient")) = (parts.next(), parts.next())
            && !id.is_empty()
        {
            path.push_str(".display");
            let flow = found(path, id);
            path.truncate(len);
            flow?;
        }
    }
    ControlFlow::Continue(())
}

impl Role {
    /// Whether `principal` meets every condition (an empty list is no condition; a list is met
    /// when any of its values is).
    pub fn matches(&self, principal: &Principal) -> bool {
        fn any_of<'h>(wanted: &[String], have: impl IntoIterator<Item = &'h str>) -> bool {
            wanted.is_empty() || have.into_iter().any(|h| wanted.iter().any(|w| w == h))
        }
        let roles = &principal.practitioner_roles;
        any_of(&self.fhir_user_types, principal.fhir_user_type())
            && any_of(
                &self.role_codes,
                roles
                    .iter()
                    .flat_map(|r| r.codes.iter().map(String::as_str)),
            )
            && any_of(
                &self.specialties,
                roles
                    .iter()
                    .flat_map(|r| r.specialties.iter().map(String::as_str)),
            )
            && any_of(
                &self.organizations,
                roles.iter().filter_map(|r| r.organization.as_deref()),
            )
            && any_of(&self.scopes, principal.scopes.iter().map(String::as_str))
            && self
                .claims
                .iter()
                .all(|(claim, value)| match principal.claims.get(claim) {
                    Some(serde_json::Value::String(s)) => s == value,
                    Some(serde_json::Value::Array(items)) => {
                        items.iter().any(|i| i.as_str() == Some(value))
                    }
                    Some(serde_json::Value::Bool(b)) => b.to_string() == *value,
                    _ => false,
                })
    }
}

impl Protection {
    /// The codes of its security labels.
    pub fn label_codes(&self) -> Vec<&str> {
        self.labels.iter().map(|l| l.code.as_str()).collect()
    }

    /// `readers` (its structure for a record) under the consents `view` of that record's
    /// patient, for the consent `rules` governing it.
    fn consented(
        &self,
        readers: AccessStructure,
        rules: &[ConsentRule],
        view: &ConsentView,
    ) -> AccessStructure {
        if view.patient.is_empty() {
            return readers;
        }
        let labels = self.label_codes();
        consented(
            readers,
            (&self.name, &self.resource_type, &labels),
            rules,
            view,
        )
    }

    /// Its structure for a record of `patient`.
    pub fn readers_for(&self, patient: Option<&str>) -> AccessStructure {
        let patient = patient.map_or_else(|| NO_PATIENT.to_string(), |p| format!("patient:{p}"));
        substitute(&self.readers, &patient)
    }

    /// Its writers' structure for a record of `patient`, if it has one.
    pub fn writers_for(&self, patient: Option<&str>) -> Option<AccessStructure> {
        let patient = patient.map_or_else(|| NO_PATIENT.to_string(), |p| format!("patient:{p}"));
        self.writers.as_ref().map(|w| substitute(w, &patient))
    }

    /// Whether `other` seals what this rule seals, as this rule does: everything but where
    /// each was written.
    fn seals_like(&self, other: &Self) -> bool {
        self.name == other.name
            && self.resource_type == other.resource_type
            && self.elements == other.elements
            && self.readers == other.readers
            && self.granularity == other.granularity
            && self.search == other.search
            && self.labels == other.labels
            && self.narrative == other.narrative
            && self.displays == other.displays
    }
}

/// What a permitted request's writes are sealed under: the protection rules of the policy that
/// permitted it, as they stood at the decision, and the patient whose record the decision was
/// about. The gateway seals from these ([`SealingRules::for_resource`]), never from a second
/// look at the policy, so the decision and the sealing cannot disagree, whatever policy is in
/// force by the time the write is sealed. Cheap to clone: the rules are shared, not copied.
#[derive(Clone)]
pub struct SealingRules {
    protections: Arc<[Protection]>,
    consent: Arc<[ConsentRule]>,
    view: ConsentView,
    patient: Option<String>,
}

impl SealingRules {
    /// The protection rule named `name`, as it stood at the decision.
    pub(crate) fn protection(&self, name: &str) -> Option<&Protection> {
        self.protections.iter().find(|p| p.name == name)
    }

    /// The patient whose record the decision was about (`Patient/456`), if any.
    pub fn patient(&self) -> Option<&str> {
        self.patient.as_deref()
    }

    /// The sealing rules for `resource`, a record of the decision's patient:
    /// [`Policy::rules_for_resource`] of the policy the decision was made by.
    ///
    /// # Errors
    /// As [`Policy::rules_for_resource`]: a display that cannot be given a rule where it is.
    pub fn for_resource(
        &self,
        resource: &serde_json::Value,
    ) -> Result<Rules, fhirseal_seal::RuleError> {
        rules_for_resource(
            &self.protections,
            &self.consent,
            resource,
            self.patient.as_deref(),
            &self.view,
        )
    }
}

impl PartialEq for SealingRules {
    /// The same patient, and protection rules that seal alike (where each was written aside):
    /// two decisions whose writes would be sealed the same way.
    fn eq(&self, other: &Self) -> bool {
        self.patient == other.patient
            && self.view == other.view
            && self.consent.len() == other.consent.len()
            && self
                .consent
                .iter()
                .zip(other.consent.iter())
                .all(|(a, b)| a.governs_like(b))
            && self.protections.len() == other.protections.len()
            && self
                .protections
                .iter()
                .zip(other.protections.iter())
                .all(|(a, b)| a.seals_like(b))
    }
}

impl fmt::Debug for SealingRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingRules")
            .field("patient", &self.patient)
            .field("protections", &self.protections.len())
            .finish()
    }
}

/// One resource type's element rules and its narrative and display settings, while building.
type TypeRules = (
    Vec<ElementRule>,
    Option<Narrative>,
    Option<Displays>,
    Vec<[String; 2]>,
);

/// `structure` with `patient:self` replaced by `patient`.
pub(crate) fn substitute(structure: &AccessStructure, patient: &str) -> AccessStructure {
    fn walk(node: &Node, patient: &str) -> Node {
        match node {
            Node::Leaf(a) if a.as_str() == PATIENT_SELF => {
                Attribute::new(patient).map_or_else(|_| node.clone(), Node::Leaf)
            }
            Node::Leaf(_) => node.clone(),
            Node::Gate {
                threshold,
                children,
            } => Node::Gate {
                threshold: *threshold,
                children: children.iter().map(|c| walk(c, patient)).collect(),
            },
        }
    }
    AccessStructure::from_node(walk(structure.root(), patient))
        .unwrap_or_else(|_| structure.clone())
}

/// The attributes a principal holds, each with the roles that gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    held: BTreeMap<String, Vec<String>>,
}

impl Attributes {
    /// Whether it holds `attribute`.
    pub fn has(&self, attribute: &str) -> bool {
        self.held.contains_key(attribute)
    }

    /// The attributes, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.held.keys().map(String::as_str)
    }

    /// The roles that gave `attribute`.
    pub fn because(&self, attribute: &str) -> &[String] {
        self.held.get(attribute).map_or(&[], Vec::as_slice)
    }

    /// Whether they satisfy `structure`.
    pub fn satisfy(&self, structure: &AccessStructure) -> bool {
        structure.is_satisfied_by(&|a: &Attribute| self.has(a.as_str()))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Adds `attribute`, with each hierarchical attribute's ancestors, given by `because`.
    pub(crate) fn grant(&mut self, attribute: &str, because: &str) {
        for prefix in with_ancestors(attribute) {
            let why = self.held.entry(prefix).or_default();
            if !why.iter().any(|w| w == because) {
                why.push(because.to_string());
            }
        }
    }
}

/// `attribute` and each of its hierarchical ancestors (`org:a/dept:b` → `org:a`, `org:a/dept:b`).
fn with_ancestors(attribute: &str) -> Vec<String> {
    let mut prefix = String::new();
    let mut out = Vec::new();
    for (i, part) in attribute.split('/').enumerate() {
        if i > 0 {
            prefix.push('/');
        }
        prefix.push_str(part);
        out.push(prefix.clone());
    }
    out
}

impl BreakGlass {
    /// The protection rules of `protections` (names, sorted) whose readers, for a record of no
    /// patient, a caller holding the attributes of `who` and the grants satisfies and one
    /// holding only those of `who` does not: what this rule is there to open. (A caller holds
    /// some of `who`'s attributes, maybe not all: `explain` says what opens for one caller.)
    pub fn opens<'p>(&self, protections: &'p [Protection]) -> Vec<&'p str> {
        let mut own = Attributes::default();
        for leaf in self.who.leaves() {
            own.grant(leaf.as_str(), "who");
        }
        let mut granted = own.clone();
        for attribute in &self.grants {
            granted.grant(attribute, &self.name);
        }
        let mut names: Vec<&str> = protections
            .iter()
            .filter(|p| {
                let readers = p.readers_for(None);
                granted.satisfy(&readers) && !own.satisfy(&readers)
            })
            .map(|p| p.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

fn sorted(mut errors: Vec<PolicyError>) -> PolicyErrors {
    errors.sort();
    errors.dedup();
    PolicyErrors(errors)
}

fn unique<'a>(
    errors: &mut Vec<PolicyError>,
    items: impl Iterator<Item = (&'a String, &'a Origin)>,
    kind: &str,
) {
    let mut seen: BTreeMap<&String, &Origin> = BTreeMap::new();
    let mut items: Vec<_> = items.collect();
    items.sort_by(|a, b| a.1.cmp(b.1));
    for (name, origin) in items {
        if let Some(first) = seen.get(name) {
            errors.push(PolicyError {
                file: origin.file.clone(),
                line: origin.line,
                key: format!("{kind}.name"),
                message: format!(
                    "`{name}` is already the name of the {kind} rule at {}:{}",
                    first.file, first.line
                ),
            });
        } else {
            seen.insert(name, origin);
        }
    }
}

fn contradictions(errors: &mut Vec<PolicyError>, protections: &[Protection]) {
    let mut all: Vec<(&Protection, &ElementPath)> = protections
        .iter()
        .flat_map(|p| p.elements.iter().map(move |e| (p, e.path())))
        .collect();
    all.sort_by(|a, b| (&a.0.origin, a.1.as_str()).cmp(&(&b.0.origin, b.1.as_str())));
    for (i, (p, path)) in all.iter().enumerate() {
        if let Some((q, other)) = all[..i].iter().find(|(_, o)| o.overlaps(path)) {
            errors.push(PolicyError {
                file: p.origin.file.clone(),
                line: p.origin.line,
                key: "protect.elements".into(),
                message: format!(
                    "`{path}` (rule `{}`) overlaps `{other}` (rule `{}` at {}:{}): one element would be sealed twice, possibly for different readers",
                    p.name, q.name, q.origin.file, q.origin.line
                ),
            });
        }
    }
    // Narrative and display settings hold for a whole resource type: two rules must agree.
    let mut by_origin: Vec<&Protection> = protections.iter().collect();
    by_origin.sort_by(|a, b| a.origin.cmp(&b.origin));
    for (i, p) in by_origin.iter().enumerate() {
        for q in by_origin[..i]
            .iter()
            .filter(|q| q.resource_type == p.resource_type)
        {
            for (mine, theirs, what) in [
                (
                    p.narrative.map(|n| format!("{n:?}")),
                    q.narrative.map(|n| format!("{n:?}")),
                    "narrative",
                ),
                (
                    p.displays.map(|d| format!("{d:?}")),
                    q.displays.map(|d| format!("{d:?}")),
                    "displays",
                ),
            ] {
                if let (Some(mine), Some(theirs)) = (mine, theirs)
                    && mine != theirs
                {
                    errors.push(PolicyError {
                        file: p.origin.file.clone(),
                        line: p.origin.line,
                        key: format!("protect.{what}"),
                        message: format!(
                            "rule `{}` says {what} = {mine} for {}, rule `{}` ({}:{}) says {theirs}",
                            p.name, p.resource_type, q.name, q.origin.file, q.origin.line
                        ),
                    });
                }
            }
        }
    }
}

fn check_role(
    c: &mut Checker<'_>,
    i: usize,
    role: &Spanned<crate::document::RawRole>,
) -> Option<Role> {
    let origin = c.origin(&role.span());
    let role = role.get_ref();
    let before = c.errors.len();
    for ty in &role.fhir_user_type {
        if r4().kind(ty.get_ref()) != Some(fhirseal_fhir::structure::Kind::Resource) {
            c.error(
                ty.span(),
                format!("roles[{i}].fhir-user-type"),
                format!("`{}` is not an R4 resource type", ty.get_ref()),
            );
        }
    }
    if role.attributes.is_empty() {
        c.error(
            role.name.span(),
            format!("roles[{i}].attributes"),
            format!("role `{}` gives no attributes", role.name.get_ref()),
        );
    }
    for attribute in &role.attributes {
        if let Some(problem) = attribute_problem(attribute.get_ref()) {
            c.error(attribute.span(), format!("roles[{i}].attributes"), problem);
        }
    }
    (c.errors.len() == before).then(|| Role {
        name: role.name.get_ref().clone(),
        fhir_user_types: role
            .fhir_user_type
            .iter()
            .map(|t| t.get_ref().clone())
            .collect(),
        role_codes: role.role_codes.clone(),
        specialties: role.specialties.clone(),
        organizations: role.organizations.clone(),
        scopes: role.scopes.clone(),
        claims: role.claims.clone(),
        attributes: role
            .attributes
            .iter()
            .map(|a| a.get_ref().clone())
            .collect(),
        origin,
    })
}

/// Why `text` is not the policy's to give or name: the consent attributes are the gateway's own
/// (`docs/consent.md`).
fn reserved(text: &str) -> Option<String> {
    (text.starts_with(ACTOR) || text.starts_with(CONSENT_NAMESPACE)).then(|| {
        format!(
            "`{text}`: `{ACTOR}` and `{CONSENT_NAMESPACE}` attributes are the gateway's own \
             (patient consent, docs/consent.md): a policy neither gives nor names them"
        )
    })
}

/// Why `text` cannot be an attribute a policy gives, if it cannot.
fn attribute_problem(text: &str) -> Option<String> {
    if let Some(problem) = reserved(text) {
        Some(problem)
    } else if text != PATIENT_SELF && text.starts_with("patient:") {
        Some(format!(
            "`{text}`: `patient:` attributes are given only through `{PATIENT_SELF}`"
        ))
    } else if let Err(e) = Attribute::new(text) {
        Some(format!("`{text}` is not an attribute name: {e}"))
    } else if !text
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || "_:./@#+-".contains(ch))
    {
        Some(format!(
            "`{text}` is not an attribute name: use letters, digits and _ : . / @ # + - only"
        ))
    } else {
        None
    }
}

fn check_consent(
    c: &mut Checker<'_>,
    i: usize,
    rule: &Spanned<RawConsent>,
) -> Option<(ConsentRule, Vec<(String, String)>)> {
    let before = c.errors.len();
    let origin = c.origin(&rule.span());
    let raw = rule.get_ref();
    if raw.rules.is_empty() {
        c.error(
            raw.name.span(),
            format!("consent[{i}].rules"),
            format!(
                "consent rule `{}` governs no protection rule",
                raw.name.get_ref()
            ),
        );
    }
    let permit = raw
        .permit
        .as_ref()
        .and_then(|p| c.structure(p, format!("consent[{i}].permit"), false));
    let deny = raw.deny.as_ref().is_some_and(|d| *d.get_ref());
    if raw.permit.is_none() && !deny {
        c.error(
            raw.name.span(),
            format!("consent[{i}]"),
            format!(
                "consent rule `{}` neither widens (`permit = \"…\"`) nor narrows (`deny = true`)",
                raw.name.get_ref()
            ),
        );
    }
    (c.errors.len() == before).then(|| {
        (
            ConsentRule {
                name: raw.name.get_ref().clone(),
                rules: raw.rules.iter().map(|r| r.get_ref().clone()).collect(),
                permit,
                deny,
                origin,
            },
            raw.rules
                .iter()
                .map(|r| (r.get_ref().clone(), format!("consent[{i}].rules")))
                .collect(),
        )
    })
}

fn check_break_glass(
    c: &mut Checker<'_>,
    i: usize,
    rule: &Spanned<RawBreakGlass>,
) -> Option<BreakGlass> {
    let origin = c.origin(&rule.span());
    let rule = rule.get_ref();
    let before = c.errors.len();
    let who = c.structure(&rule.who, format!("break-glass[{i}].who"), false);
    if rule.grants.is_empty() {
        c.error(
            rule.name.span(),
            format!("break-glass[{i}].grants"),
            format!(
                "break-glass rule `{}` grants no attributes",
                rule.name.get_ref()
            ),
        );
    }
    for attribute in &rule.grants {
        let text = attribute.get_ref();
        let problem = if text == PATIENT_SELF {
            Some(format!(
                "`{PATIENT_SELF}` cannot be granted: an emergency never makes a caller the patient"
            ))
        } else {
            attribute_problem(text)
        };
        if let Some(problem) = problem {
            c.error(
                attribute.span(),
                format!("break-glass[{i}].grants"),
                problem,
            );
        }
    }
    let minutes = *rule.max_minutes.get_ref();
    if !(1..=MAX_BREAK_GLASS_MINUTES).contains(&minutes) {
        c.error(
            rule.max_minutes.span(),
            format!("break-glass[{i}].max-minutes"),
            format!(
                "max-minutes must be between 1 and {MAX_BREAK_GLASS_MINUTES} (one day): an emergency grant is bounded"
            ),
        );
    }
    if c.errors.len() != before {
        return None;
    }
    Some(BreakGlass {
        name: rule.name.get_ref().clone(),
        who: who?,
        grants: rule.grants.iter().map(|g| g.get_ref().clone()).collect(),
        max_seconds: u64::try_from(minutes).ok()?.saturating_mul(60),
        origin,
    })
}

fn check_access(
    c: &mut Checker<'_>,
    i: usize,
    rule: &Spanned<crate::document::RawAccess>,
) -> Option<Access> {
    let origin = c.origin(&rule.span());
    let rule = rule.get_ref();
    let before = c.errors.len();
    let mut resources = BTreeSet::new();
    let mut all = false;
    for resource in &rule.resources {
        let name = resource.get_ref();
        if name == "*" {
            all = true;
        } else if r4().kind(name) != Some(fhirseal_fhir::structure::Kind::Resource)
            || !r4().is_domain_resource(name) && name != "Bundle"
        {
            c.error(
                resource.span(),
                format!("access[{i}].resources"),
                format!("`{name}` is not an R4 resource type"),
            );
        } else {
            resources.insert(name.clone());
        }
    }
    if rule.resources.is_empty() || rule.interactions.is_empty() {
        c.error(
            rule.name.span(),
            format!("access[{i}]"),
            "an access rule needs resources and interactions".into(),
        );
    }
    let readers = c.structure(&rule.readers, format!("access[{i}].readers"), true);
    if c.errors.len() != before {
        return None;
    }
    Some(Access {
        name: rule.name.get_ref().clone(),
        resources: (!all).then_some(resources),
        interactions: rule.interactions.iter().copied().collect(),
        readers: readers?,
        origin,
    })
}

fn check_protect(
    c: &mut Checker<'_>,
    i: usize,
    rule: &Spanned<crate::document::RawProtect>,
) -> Option<Protection> {
    let origin = c.origin(&rule.span());
    let rule = rule.get_ref();
    let before = c.errors.len();
    let resource_type = rule.resource.get_ref();
    if !r4().is_domain_resource(resource_type) {
        c.error(
            rule.resource.span(),
            format!("protect[{i}].resource"),
            format!("`{resource_type}` is not an R4 resource type whose elements can be sealed"),
        );
        return None;
    }
    let readers = c.structure(&rule.readers, format!("protect[{i}].readers"), true)?;
    let writers = match &rule.writers {
        Some(writers) => Some(c.structure(writers, format!("protect[{i}].writers"), true)?),
        None => None,
    };
    let granularity = match rule.granularity {
        Some(RawGranularity::Resource) => Granularity::Resource,
        Some(RawGranularity::Shared) | None => Granularity::Shared,
    };
    let search = rule.search.unwrap_or_default();
    let index_bits = match &rule.index_bits {
        None => DEFAULT_INDEX_BITS,
        Some(bits) if search != Search::BlindIndex => {
            c.error(
                bits.span(),
                format!("protect[{i}].index-bits"),
                "index-bits applies to search = \"blind-index\" only".into(),
            );
            DEFAULT_INDEX_BITS
        }
        Some(bits) => match u8::try_from(*bits.get_ref()) {
            Ok(b @ MIN_INDEX_BITS..=64) => b,
            _ => {
                c.error(
                    bits.span(),
                    format!("protect[{i}].index-bits"),
                    format!(
                        "index-bits must be between {MIN_INDEX_BITS} and 64 (fewer bits: more false positives for the gateway to drop, less for the server to learn)"
                    ),
                );
                DEFAULT_INDEX_BITS
            }
        },
    };
    if rule.elements.is_empty() {
        c.error(
            rule.name.span(),
            format!("protect[{i}].elements"),
            "a protection rule needs elements".into(),
        );
    }
    // Compound indexes and elements indexed alone (`search = "blind-index"` only).
    let mut compounds: Vec<(usize, Range<usize>, [String; 2])> = Vec::new();
    for (k, pair) in rule.compound_indexes.iter().enumerate() {
        let key = format!("protect[{i}].compound-indexes[{k}]");
        if search != Search::BlindIndex {
            c.error(
                pair.span(),
                key,
                "compound-indexes applies to search = \"blind-index\" only".into(),
            );
            continue;
        }
        if rule.writers.is_some() {
            c.error(
                pair.span(),
                key,
                "compound-indexes cannot be combined with writers: a writer who cannot read one element of a pair could set the other, and no token could pair the new value with the one it cannot read".into(),
            );
            continue;
        }
        match pair.get_ref().as_slice() {
            [a, b] => compounds.push((k, pair.span(), [a.get_ref().clone(), b.get_ref().clone()])),
            _ => c.error(
                pair.span(),
                key,
                "a compound index pairs exactly two leaves, such as [\"Patient.name.family\", \"Patient.birthDate\"]".into(),
            ),
        }
    }
    let mut alone_listed: Vec<&str> = Vec::new();
    for listed in &rule.index_alone {
        let key = format!("protect[{i}].index-alone");
        if search != Search::BlindIndex {
            c.error(
                listed.span(),
                key,
                "index-alone applies to search = \"blind-index\" only".into(),
            );
        } else if !rule
            .elements
            .iter()
            .any(|e| e.get_ref() == listed.get_ref())
        {
            c.error(
                listed.span(),
                key,
                format!("`{}` is not one of this rule's elements", listed.get_ref()),
            );
        } else {
            alone_listed.push(listed.get_ref());
        }
    }
    let mut elements = Vec::new();
    for element in &rule.elements {
        let text = element.get_ref();
        let key = format!("protect[{i}].elements");
        let path = match ElementPath::parse(text) {
            Ok(path) => path,
            Err(e) => {
                c.error(element.span(), key, e.reason.clone());
                continue;
            }
        };
        if path.resource_type() != resource_type {
            c.error(
                element.span(),
                key,
                format!("`{text}` is not an element of {resource_type}, the rule's resource"),
            );
            continue;
        }
        // The fhir crate's checks: id, meta, modifiers, required, compartment references,
        // placeholders that would lack required members.
        let rule = match ElementRule::new(text, readers.clone(), granularity) {
            Ok(rule) => rule,
            Err(e) => {
                c.error(element.span(), key, e.reason);
                continue;
            }
        };
        if search == Search::BlindIndex {
            let types = &path.element().types;
            let indexable = match types.as_slice() {
                [one] => fhirseal_seal::index::indexable(one),
                _ => false,
            };
            if !indexable {
                c.error(
                    element.span(),
                    format!("protect[{i}].search"),
                    format!("type mismatch: `{text}` is {}, which a blind index cannot hold (it indexes one of: string, markdown, code, id, uri, url, canonical, oid, uuid, boolean, date, dateTime, instant, Identifier, Coding, CodeableConcept, ContactPoint, HumanName, Address, Reference); use search = \"filter\" or \"reject\"", types.join(" | ")),
                );
                continue;
            }
        }
        let mut rule = rule.with_search(match search {
            Search::BlindIndex => SearchMode::BlindIndex { bits: index_bits },
            Search::Filter => SearchMode::Filter,
            Search::Reject => SearchMode::Reject,
        });
        // An element of few distinct values is indexed only in its compound indexes, unless
        // the policy accepts what its tokens alone would show.
        if search == Search::BlindIndex
            && low_entropy(&rule)
            && !alone_listed.contains(&text.as_str())
        {
            let plain = rule.path().plain();
            let paired = compounds
                .iter()
                .flat_map(|(_, _, parts)| parts)
                .any(|leaf| {
                    leaf.strip_prefix(plain.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
                });
            if !paired {
                c.error(
                    element.span(),
                    key,
                    format!("`{text}` has few distinct values ({}): indexed alone, its blind-index tokens would tell the server which resources share a value and how many do; pair it with another element in `compound-indexes`, or list it in `index-alone` to accept that (docs/search.md, \"Leakage\")", rule.path().element().types.join(" | ")),
                );
                continue;
            }
            rule = rule.with_index_alone(false);
        }
        elements.push(rule);
    }
    // Each compound index must pair two leaves of this rule's blind-index elements.
    if c.errors.len() == before
        && !compounds.is_empty()
        && let Ok(set) = RuleSet::new(
            resource_type,
            elements.clone(),
            Narrative::default(),
            Displays::default(),
        )
    {
        let mut set = set;
        for (k, span, [a, b]) in &compounds {
            match set.clone().with_compound(a, b) {
                Ok(with) => set = with,
                Err(e) => c.error(
                    span.clone(),
                    format!("protect[{i}].compound-indexes[{k}]"),
                    format!("`{}`: {}", e.path, e.reason),
                ),
            }
        }
    }
    let mut labels = Vec::new();
    for label in &rule.labels {
        let code = label.get_ref();
        let found = [CONFIDENTIALITY, SENSITIVITY]
            .iter()
            .find(|(_, codes)| codes.contains(&code.as_str()))
            .map(|(system, _)| *system);
        match found {
            Some(system) => labels.push(Label { system, code: code.clone() }),
            None => c.error(
                label.span(),
                format!("protect[{i}].labels"),
                format!("`{code}` is neither a confidentiality code (U, L, M, N, R, V) nor a sensitivity code ({})", SENSITIVITY.1.join(", ")),
            ),
        }
    }
    (c.errors.len() == before).then(|| Protection {
        name: rule.name.get_ref().clone(),
        resource_type: resource_type.clone(),
        elements,
        readers,
        writers,
        granularity,
        search,
        compound_indexes: compounds.into_iter().map(|(_, _, parts)| parts).collect(),
        labels,
        origin,
        narrative: rule.narrative.as_ref().map(|n| match n.get_ref() {
            RawNarrative::Seal => Narrative::Seal,
            RawNarrative::Neutral => Narrative::Neutral,
        }),
        displays: rule.displays.as_ref().map(|d| match d.get_ref() {
            RawDisplays::Matching => Displays::Matching,
            RawDisplays::All => Displays::All,
            RawDisplays::Keep => Displays::Keep,
        }),
    })
}

#[cfg(test)]
mod display_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn displays_of_references_to_patients_get_the_name_readers() {
        let policy = Policy::embedded_default().unwrap();
        let encounter = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": "Patient/p1", "display": "Ada Lovelace"},
            "participant": [{"individual": {"reference": "Practitioner/d1", "display": "Dr Who"}}]});
        let rules = policy
            .rules_for_resource(&encounter, Some("Patient/p1"))
            .unwrap();
        let set = rules.for_type("Encounter").unwrap();
        let display = set
            .elements()
            .iter()
            .find(|e| e.path().plain() == "Encounter.subject.display")
            .unwrap();
        assert!(
            display.policy().to_string().contains("patient:Patient/p1"),
            "{}",
            display.policy()
        );
        // A practitioner's display is not a patient's name.
        assert!(
            !set.elements()
                .iter()
                .any(|e| e.path().plain().contains("individual"))
        );
        // The policy's own rules for the type are kept.
        assert!(
            set.elements()
                .iter()
                .any(|e| e.path().plain() == "Encounter.reasonCode")
        );
    }

    #[test]
    fn displays_naming_several_patients_at_one_path_are_for_roles_only() {
        let policy = Policy::embedded_default().unwrap();
        let observation = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/a"},
            "performer": [{"reference": "Patient/a", "display": "A"},
                          {"reference": "Patient/b", "display": "B"}]});
        let rules = policy
            .rules_for_resource(&observation, Some("Patient/a"))
            .unwrap();
        let rule = rules
            .for_type("Observation")
            .unwrap()
            .elements()
            .iter()
            .find(|e| e.path().plain() == "Observation.performer.display")
            .unwrap()
            .clone();
        assert!(
            !rule.policy().to_string().contains("patient:Patient/"),
            "{}",
            rule.policy()
        );
    }

    /// The read path's check resolves the rules again for a resource with a display of a
    /// reference to a Patient in clear (here the second of a list, its members in either order),
    /// and for nothing else: not for a practitioner's display, a reference without one, a display
    /// that is not a string or a reference with no id. One in an extension, a primitive's `_`
    /// companion or a contained resource is not looked for, and no rule could seal it there:
    /// either way the check keeps the policy's rules.
    #[test]
    fn rules_to_check_resolve_again_only_for_a_patients_display() {
        let policy = Policy::embedded_default().unwrap();
        let base = policy.rules_for(None);
        let check = |resource: serde_json::Value| {
            let object = resource.as_object().unwrap().clone();
            match policy.rules_to_check(&base, &object) {
                Cow::Borrowed(rules) => {
                    assert!(std::ptr::eq(rules, &base));
                    None
                }
                Cow::Owned(rules) => Some(rules),
            }
        };
        let encounter = |participant: serde_json::Value| {
            json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
                "subject": {"reference": "Patient/p1"}, "participant": participant})
        };
        let display = "Encounter.participant.individual.display";
        let resolved = check(encounter(json!([
            {"individual": {"reference": "Practitioner/d1", "display": "Dr Who"}},
            {"individual": {"display": "Ada", "reference": "Patient/p2"}}])))
        .unwrap();
        assert!(
            resolved
                .for_type("Encounter")
                .unwrap()
                .elements()
                .iter()
                .any(|e| e.path().plain() == display),
            "{display}"
        );
        for unchanged in [
            encounter(json!([{"individual": {"reference": "Practitioner/d1", "display": "Dr"}}])),
            encounter(json!([{"individual": {"reference": "Patient/p2"}}])),
            encounter(json!([{"individual": {"reference": "Patient/p2", "display": 7}}])),
            encounter(json!([{"individual": {"reference": "Patient/", "display": "Ada"}}])),
            encounter(json!([{"extension": [{"url": "x",
                "valueReference": {"reference": "Patient/p2", "display": "Ada"}}]}])),
            encounter(json!([{"_individual": {"reference": "Patient/p2", "display": "Ada"}}])),
            json!({"resourceType": "Observation", "contained": [{"resourceType": "Encounter",
                "subject": {"reference": "Patient/p2", "display": "Ada"}}]}),
            json!({"subject": {"reference": "Patient/p2", "display": "Ada"}}),
        ] {
            assert!(check(unchanged.clone()).is_none(), "{unchanged}");
        }
    }

    /// The types of the sets in `rules`.
    fn types(rules: &Rules) -> Vec<&str> {
        rules.sets().map(RuleSet::resource_type).collect()
    }

    #[test]
    fn a_resource_without_patient_displays_keeps_the_policys_rules() {
        let policy = Policy::embedded_default().unwrap();
        let observation = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/a"}});
        let rules = policy
            .rules_for_resource(&observation, Some("Patient/a"))
            .unwrap();
        assert_eq!(types(&rules), ["Observation"]);
        assert_eq!(
            rules.for_type("Observation"),
            policy.rules_for(Some("Patient/a")).for_type("Observation")
        );
    }

    #[test]
    fn a_resource_gets_the_rules_of_its_own_and_its_contained_types_as_the_policy_has_them() {
        let policy = Policy::embedded_default().unwrap();
        let all = policy.rules_for(Some("Patient/a"));
        assert!(types(&all).len() > 3, "{:?}", types(&all));
        let observation = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "#p"},
            "contained": [{"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01",
                "contained": [{"resourceType": "Condition", "id": "c"}]},
                {"resourceType": "Basic"}]});
        let rules = policy
            .rules_for_resource(&observation, Some("Patient/a"))
            .unwrap();
        assert_eq!(types(&rules), ["Condition", "Observation", "Patient"]);
        for set in rules.sets() {
            assert_eq!(Some(set), all.for_type(set.resource_type()));
        }
        // A Bundle's entries, or a contained resource of no type, may be of any type: all rules.
        for resource in [
            json!({"resourceType": "Bundle", "type": "collection"}),
            json!({"resourceType": "Observation", "contained": [{"id": "x"}]}),
            json!({"resourceType": "Observation", "contained": [{"resourceType": "Bundle"}]}),
            json!({"id": "no type"}),
        ] {
            let rules = policy
                .rules_for_resource(&resource, Some("Patient/a"))
                .unwrap();
            assert_eq!(rules, all, "{resource}");
        }
    }
}
