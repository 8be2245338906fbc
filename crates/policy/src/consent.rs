//! Patient consent: FHIR R4 `Consent` resources (scope `patient-privacy`) as the policy honours
//! them, and what they do to the access structures a patient's records are sealed under
//! (`docs/consent.md`).
//!
//! Consent changes structures, never the size of keys:
//!
//! - Under a policy with a `[[consent]]` rule every caller's key holds its identity attributes:
//!   `actor:<fhirUser>` (`actor:Practitioner/7`) and `actor:Organization/<id>` for each
//!   organization of its PractitionerRoles, and, unless some patient's consent denies it,
//!   [`UNRESTRICTED`]. A clinician's key is the same size whether one patient or ten thousand
//!   consent to them.
//! - A **permit** provision naming actors `A1 … An` widens the structure of each rule the
//!   policy lets consent widen, for that patient's records only:
//!   `readers or (permit-condition and (actor:A1 or … or actor:An))`.
//! - A **deny** provision naming Practitioner `D` narrows each rule the policy lets consent
//!   narrow: `… and (consent:unrestricted or actor:R1 or … or actor:Rk)`, where `R1 … Rk` are the
//!   practitioners some *other* patient denies and this one does not (the restricted set). `D`'s
//!   key loses [`UNRESTRICTED`] (the keyring re-issues it and revokes the old one), so after the
//!   records are sealed again and the period's ciphertext update, a copy of `D`'s old key opens
//!   nothing of them.
//!
//! Everything here is pure: the clock is a parameter ([`ConsentBook::view`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fhirseal_fhir::matching::{date_range_micros, parse_reference};
use rshabe::access::Node;
use rshabe::{AccessStructure, Attribute};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::Origin;

/// The namespace of the identity attributes consent is written over.
pub const ACTOR: &str = "actor:";
/// The attribute every caller holds unless some patient's consent denies it.
pub const UNRESTRICTED: &str = "consent:unrestricted";
/// The namespace of consent's own attributes.
pub const CONSENT_NAMESPACE: &str = "consent:";
/// The code system of `Consent.scope`.
pub const SCOPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
/// The one scope enforced.
pub const PRIVACY_SCOPE: &str = "patient-privacy";
/// How deep provisions may nest.
const MAX_DEPTH: usize = 4;
/// How many provisions one consent may hold, nested ones included.
const MAX_PROVISIONS: usize = 64;
/// How many actors one provision may name.
const MAX_ACTORS: usize = 64;

/// `[[consent]]`: which protection rules a patient's consent may widen (`permit`) or narrow
/// (`deny`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentRule {
    /// Its name.
    pub name: String,
    /// The protection rules it governs, by name.
    pub rules: BTreeSet<String>,
    /// What an actor a permit names must also satisfy (`role:clinician`); `None`: permits do
    /// not widen these rules.
    pub permit: Option<AccessStructure>,
    /// Whether deny provisions narrow these rules.
    pub deny: bool,
    /// Where it was written.
    pub origin: Origin,
}

impl ConsentRule {
    /// Whether `other` governs what this rule governs, as it does: all but where each was
    /// written.
    pub(crate) fn governs_like(&self, other: &Self) -> bool {
        self.name == other.name
            && self.rules == other.rules
            && self.permit == other.permit
            && self.deny == other.deny
    }
}

/// Permit or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The actors may read.
    Permit,
    /// The actors may not read.
    Deny,
}

/// One provision of a consent that names actors, as it is enforced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provision {
    /// Permit or deny.
    pub kind: Kind,
    /// `Practitioner/7`, `Organization/east-clinic`: relative references.
    pub actors: Vec<String>,
    /// The resource types it is limited to (empty: all).
    #[serde(default)]
    pub classes: Vec<String>,
    /// The security label codes it is limited to (empty: all).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The purposes of use it is limited to, as written. The gateway cannot tie a key to a
    /// purpose: a permit limited to purposes is **not honoured**, a deny limited to purposes is
    /// honoured for every purpose (fail closed both ways).
    #[serde(default)]
    pub purposes: Vec<String>,
    /// When it begins, microseconds since the epoch (`None`: already).
    #[serde(default)]
    pub start: Option<i64>,
    /// When it ends, exclusive (`None`: never).
    #[serde(default)]
    pub end: Option<i64>,
}

/// A `Consent` as the gateway recorded it in the trusted zone (the authority), after checking it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// `Consent/<id>`.
    pub id: String,
    /// `Patient/<id>`.
    pub patient: String,
    /// `status = active` (anything else, or a deleted Consent: nothing of it is in force).
    pub active: bool,
    /// Its provisions that name actors.
    pub provisions: Vec<Provision>,
}

/// Why a `Consent` cannot be enforced as written: where (a FHIRPath-like path) and why. Never a
/// value of the resource beyond codes and references.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConsentError {
    /// Where.
    pub path: String,
    /// Why.
    pub message: String,
}

fn refuse(path: impl Into<String>, message: impl Into<String>) -> ConsentError {
    ConsentError {
        path: path.into(),
        message: message.into(),
    }
}

impl ConsentRecord {
    /// Reads a `Consent` (`id` is the logical id it is stored under): refused unless its scope is
    /// `patient-privacy`, it names its patient, and every provision naming actors can be enforced
    /// (see `docs/consent.md`: actors are Practitioners or Organizations, deny names
    /// Practitioners only, nested provisions say their `type`).
    ///
    /// # Errors
    /// What cannot be enforced, and where.
    pub fn from_fhir(resource: &Value, id: &str, bases: &[&str]) -> Result<Self, ConsentError> {
        if resource.get("resourceType").and_then(Value::as_str) != Some("Consent") {
            return Err(refuse("resourceType", "a Consent is expected"));
        }
        let scoped = resource
            .pointer("/scope/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| {
                c.get("system").and_then(Value::as_str) == Some(SCOPE_SYSTEM)
                    && c.get("code").and_then(Value::as_str) == Some(PRIVACY_SCOPE)
            });
        if !scoped {
            return Err(refuse(
                "Consent.scope",
                format!(
                    "only `{PRIVACY_SCOPE}` consents ({SCOPE_SYSTEM}) are enforced by the gateway"
                ),
            ));
        }
        let patient = resource
            .pointer("/patient/reference")
            .and_then(Value::as_str)
            .and_then(|r| relative(r, bases))
            .filter(|(ty, _)| *ty == "Patient")
            .map(|(ty, id)| format!("{ty}/{id}"))
            .ok_or_else(|| {
                refuse(
                    "Consent.patient",
                    "a reference to the Patient whose consent this is is required",
                )
            })?;
        let active = resource.get("status").and_then(Value::as_str) == Some("active");
        let mut provisions = Vec::new();
        if let Some(root) = resource.get("provision") {
            walk(
                root,
                "Consent.provision",
                &Inherited::default(),
                0,
                bases,
                &mut provisions,
            )?;
        }
        if provisions.len() > MAX_PROVISIONS {
            return Err(refuse(
                "Consent.provision",
                format!("at most {MAX_PROVISIONS} provisions naming actors are enforced"),
            ));
        }
        Ok(Self {
            id: format!("Consent/{id}"),
            patient,
            active,
            provisions,
        })
    }

    /// The record of a deleted `Consent`: nothing of it is in force.
    pub fn withdrawn(id: &str, patient: &str) -> Self {
        Self {
            id: format!("Consent/{id}"),
            patient: patient.to_string(),
            active: false,
            provisions: Vec::new(),
        }
    }
}

/// What a nested provision takes from the ones around it.
#[derive(Clone, Default)]
struct Inherited {
    kind: Option<Kind>,
    classes: Vec<String>,
    labels: Vec<String>,
    purposes: Vec<String>,
    start: Option<i64>,
    end: Option<i64>,
}

fn walk(
    provision: &Value,
    path: &str,
    outer: &Inherited,
    depth: usize,
    bases: &[&str],
    out: &mut Vec<Provision>,
) -> Result<(), ConsentError> {
    if depth >= MAX_DEPTH {
        return Err(refuse(
            path,
            format!("provisions nested more than {MAX_DEPTH} deep are not enforced"),
        ));
    }
    let kind = match provision.get("type").and_then(Value::as_str) {
        Some("permit") => Some(Kind::Permit),
        Some("deny") => Some(Kind::Deny),
        Some(other) => {
            return Err(refuse(
                format!("{path}.type"),
                format!("`{other}` is not permit or deny"),
            ));
        }
        None => None,
    };
    let codes = |key: &str| -> Vec<String> {
        provision
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("code").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    };
    let narrow = |own: Vec<String>, outer: &[String]| {
        if own.is_empty() { outer.to_vec() } else { own }
    };
    let (mut start, mut end) = (outer.start, outer.end);
    if let Some(period) = provision.get("period") {
        for (key, bound) in [("start", true), ("end", false)] {
            let Some(text) = period.get(key) else {
                continue;
            };
            let (lo, hi) = text.as_str().and_then(date_range_micros).ok_or_else(|| {
                refuse(
                    format!("{path}.period.{key}"),
                    "not a FHIR dateTime".to_string(),
                )
            })?;
            if bound {
                start = Some(start.map_or(lo, |s| s.max(lo)));
            } else {
                end = Some(end.map_or(hi, |e| e.min(hi)));
            }
        }
    }
    let here = Inherited {
        kind: kind.or(outer.kind),
        classes: narrow(codes("class"), &outer.classes),
        labels: narrow(codes("securityLabel"), &outer.labels),
        purposes: narrow(codes("purpose"), &outer.purposes),
        start,
        end,
    };
    let actors = provision.get("actor").and_then(Value::as_array);
    if let Some(actors) = actors.filter(|a| !a.is_empty()) {
        let Some(kind) = kind.or(if depth == 0 { None } else { outer.kind }) else {
            return Err(refuse(
                format!("{path}.type"),
                "a provision that names actors must say permit or deny",
            ));
        };
        if actors.len() > MAX_ACTORS {
            return Err(refuse(
                format!("{path}.actor"),
                format!("at most {MAX_ACTORS} actors per provision are enforced"),
            ));
        }
        let mut named = Vec::new();
        for (i, actor) in actors.iter().enumerate() {
            let at = format!("{path}.actor[{i}].reference");
            let reference = actor
                .pointer("/reference/reference")
                .and_then(Value::as_str)
                .ok_or_else(|| refuse(&at, "an actor must be a literal reference"))?;
            let (ty, id) = relative(reference, bases)
                .ok_or_else(|| refuse(&at, "not a reference to a resource on this server"))?;
            match (ty, kind) {
                ("Practitioner", _) | ("Organization", Kind::Permit) => {}
                ("Organization", Kind::Deny) => {
                    return Err(refuse(
                        &at,
                        "a deny provision may name Practitioners only: the gateway cannot \
                         enforce a denial of an Organization by the encryption",
                    ));
                }
                (other, _) => {
                    return Err(refuse(
                        &at,
                        format!(
                            "{other} actors are not enforced: a token says who its caller is \
                             (Practitioner) and for which Organizations they work, not which \
                             {other} they belong to"
                        ),
                    ));
                }
            }
            let actor = format!("{ty}/{id}");
            if !named.contains(&actor) {
                named.push(actor);
            }
        }
        out.push(Provision {
            kind,
            actors: named,
            classes: here.classes.clone(),
            labels: here.labels.clone(),
            purposes: here.purposes.clone(),
            start: here.start,
            end: here.end,
        });
    } else if depth > 0 {
        // A nested provision is an exception for someone: without actors it says nothing the
        // gateway can key to.
        let nested = provision
            .get("provision")
            .and_then(Value::as_array)
            .is_some_and(|p| !p.is_empty());
        if !nested {
            return Err(refuse(
                format!("{path}.actor"),
                "a nested provision without actors is not enforced: name the Practitioners or \
                 Organizations it is about",
            ));
        }
    }
    if let Some(nested) = provision.get("provision").and_then(Value::as_array) {
        for (i, inner) in nested.iter().enumerate() {
            walk(
                inner,
                &format!("{path}.provision[{i}]"),
                &here,
                depth + 1,
                bases,
                out,
            )?;
        }
    }
    Ok(())
}

/// `Type/id` of a literal reference, relative or on one of `bases`.
fn relative<'r>(reference: &'r str, bases: &[&str]) -> Option<(&'static str, &'r str)> {
    let local = bases
        .iter()
        .filter(|b| !b.is_empty())
        .find_map(|base| {
            reference
                .strip_prefix(base.trim_end_matches('/'))
                .and_then(|rest| rest.strip_prefix('/'))
        })
        .unwrap_or(reference);
    if local.contains("://") {
        return None;
    }
    parse_reference(local)
}

impl Provision {
    /// Whether it is in force at `now` (microseconds).
    pub fn in_force(&self, now: i64) -> bool {
        self.start.is_none_or(|s| s <= now) && self.end.is_none_or(|e| now < e)
    }

    /// Whether it is about the elements of a protection rule on `resource_type` whose security
    /// labels' codes are `labels` (its classes and labels).
    pub fn covers(&self, resource_type: &str, labels: &[&str]) -> bool {
        (self.classes.is_empty() || self.classes.iter().any(|c| c == resource_type))
            && (self.labels.is_empty() || labels.iter().any(|l| self.labels.iter().any(|s| s == l)))
    }

    /// Whether the gateway honours it: a permit limited to purposes of use is not.
    pub fn honoured(&self) -> bool {
        self.kind == Kind::Deny || self.purposes.is_empty()
    }
}

/// Every consent the trusted zone recorded, the latest record per `Consent` id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentBook {
    records: BTreeMap<String, ConsentRecord>,
    /// The ids of each patient's records: a decision looks at its patient's only.
    by_patient: BTreeMap<String, BTreeSet<String>>,
}

/// What one decision needs of the consents: the practitioners some patient's consent in force
/// denies (they hold no [`UNRESTRICTED`]), and the provisions in force of the record's patient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsentView {
    /// Practitioners (`Practitioner/7`) denied by some consent in force.
    pub restricted: Arc<BTreeSet<String>>,
    /// The record's patient's provisions in force and honoured, with their `Consent` ids.
    pub patient: Arc<Vec<(String, Provision)>>,
}

impl ConsentBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `record`, replacing what was recorded for its id; whether anything changed.
    pub fn insert(&mut self, record: ConsentRecord) -> bool {
        if self.records.get(&record.id) == Some(&record) {
            return false;
        }
        if let Some(before) = self.records.get(&record.id)
            && let Some(ids) = self.by_patient.get_mut(&before.patient)
        {
            ids.remove(&record.id);
            if ids.is_empty() {
                self.by_patient.remove(&before.patient);
            }
        }
        self.by_patient
            .entry(record.patient.clone())
            .or_default()
            .insert(record.id.clone());
        self.records.insert(record.id.clone(), record);
        true
    }

    /// The record of a consent id (`Consent/<id>`).
    pub fn get(&self, id: &str) -> Option<&ConsentRecord> {
        self.records.get(id)
    }

    /// How many consents are recorded.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn in_force(&self, now: i64) -> impl Iterator<Item = (&ConsentRecord, &Provision)> {
        self.records
            .values()
            .filter(|r| r.active)
            .flat_map(|r| r.provisions.iter().map(move |p| (r, p)))
            .filter(move |(_, p)| p.in_force(now) && p.honoured())
    }

    /// Every patient a recorded consent is about.
    pub fn patients(&self) -> BTreeSet<String> {
        self.by_patient.keys().cloned().collect()
    }

    /// The practitioners a consent in force denies at `now`.
    pub fn restricted(&self, now: i64) -> BTreeSet<String> {
        self.in_force(now)
            .filter(|(_, p)| p.kind == Kind::Deny)
            .flat_map(|(_, p)| p.actors.iter().cloned())
            .collect()
    }

    /// [`ConsentBook::restricted`] at `now`, and the first instant after `now` at which a deny
    /// provision begins or ends (until then the set holds; `None`: for good). A caller caches
    /// the set that long rather than walking every consent per decision.
    pub fn restricted_until(&self, now: i64) -> (BTreeSet<String>, Option<i64>) {
        let next = self
            .records
            .values()
            .filter(|r| r.active)
            .flat_map(|r| r.provisions.iter())
            .filter(|p| p.kind == Kind::Deny)
            .flat_map(|p| [p.start, p.end])
            .flatten()
            .filter(|t| *t > now)
            .min();
        (self.restricted(now), next)
    }

    /// What a decision on a record of `patient` needs at `now`.
    pub fn view(&self, patient: Option<&str>, now: i64) -> ConsentView {
        self.view_with(patient, now, Arc::new(self.restricted(now)))
    }

    /// [`ConsentBook::view`] with the restricted set already known (cached by the caller,
    /// [`ConsentBook::restricted_until`]): looks at `patient`'s consents only.
    pub fn view_with(
        &self,
        patient: Option<&str>,
        now: i64,
        restricted: Arc<BTreeSet<String>>,
    ) -> ConsentView {
        let provisions: Vec<(String, Provision)> = patient
            .and_then(|patient| self.by_patient.get(patient))
            .into_iter()
            .flatten()
            .filter_map(|id| self.records.get(id))
            .filter(|r| r.active)
            .flat_map(|r| r.provisions.iter().map(move |p| (r, p)))
            .filter(|(_, p)| p.in_force(now) && p.honoured())
            .map(|(r, p)| (r.id.clone(), p.clone()))
            .collect();
        ConsentView {
            restricted,
            patient: Arc::new(provisions),
        }
    }

    /// The patients whose consents' provisions begin or end in `(after, until]`: their records
    /// are to be sealed again.
    pub fn changing(&self, after: i64, until: i64) -> BTreeSet<String> {
        self.records
            .values()
            .filter(|r| r.active)
            .filter(|r| {
                r.provisions.iter().any(|p| {
                    [p.start, p.end]
                        .into_iter()
                        .flatten()
                        .any(|t| after < t && t <= until)
                })
            })
            .map(|r| r.patient.clone())
            .collect()
    }

    /// The patients with a deny provision in force at `now` (their structures name the
    /// restricted set, so they are sealed again when it changes).
    pub fn denying(&self, now: i64) -> BTreeSet<String> {
        self.in_force(now)
            .filter(|(_, p)| p.kind == Kind::Deny)
            .map(|(r, _)| r.patient.clone())
            .collect()
    }
}

/// The identity attributes of a caller: `actor:<Type/id>` of its `fhirUser` and
/// `actor:Organization/<id>` of each of its PractitionerRoles' organizations.
pub(crate) fn actor_attributes(
    fhir_user: Option<&str>,
    organizations: impl Iterator<Item = String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |reference: &str| {
        // Absolute `fhirUser`s end in `Type/id`: the last two segments are the reference.
        if let Some((ty, id)) = parse_reference(reference).or_else(|| {
            let mut parts = reference.rsplitn(3, '/');
            let id = parts.next()?;
            let ty = parts.next()?;
            parse_reference(&format!("{ty}/{id}")).map(|(ty, _)| (ty, id))
        }) {
            let attribute = format!("{ACTOR}{ty}/{id}");
            if Attribute::new(&attribute).is_ok() && !out.contains(&attribute) {
                out.push(attribute);
            }
        }
    };
    if let Some(user) = fhir_user {
        push(user);
    }
    for organization in organizations {
        push(&organization);
    }
    out
}

/// `readers` (already resolved for the record's patient) under the consent of that patient:
/// widened by its permits and narrowed by its denials, for the rules `consent` governs. Fails
/// closed: a structure past the scheme's limits drops the permits and keeps the denials as
/// `… and consent:unrestricted`.
pub(crate) fn consented(
    readers: AccessStructure,
    (name, resource_type, labels): (&str, &str, &[&str]),
    rules: &[ConsentRule],
    view: &ConsentView,
) -> AccessStructure {
    let governing: Vec<&ConsentRule> = rules.iter().filter(|r| r.rules.contains(name)).collect();
    if governing.is_empty() || view.patient.is_empty() {
        return readers;
    }
    let applying = |kind: Kind| -> BTreeSet<&str> {
        view.patient
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.kind == kind && p.covers(resource_type, labels))
            .flat_map(|p| p.actors.iter().map(String::as_str))
            .collect()
    };
    let permitted = applying(Kind::Permit);
    let denied = applying(Kind::Deny);
    let leaf = |name: String| Attribute::new(&name).ok().map(Node::Leaf);
    let any_of = |names: Vec<String>| -> Option<Node> {
        let mut leaves: Vec<Node> = names.into_iter().filter_map(leaf).collect();
        match leaves.len() {
            0 => None,
            1 => leaves.pop(),
            _ => Some(or_nodes(leaves)),
        }
    };
    let mut widened = readers.root().clone();
    let mut grew = false;
    if !permitted.is_empty() {
        let actors = any_of(permitted.iter().map(|a| format!("{ACTOR}{a}")).collect());
        let mut clauses = vec![widened.clone()];
        for rule in &governing {
            if let (Some(condition), Some(actors)) = (&rule.permit, &actors) {
                clauses.push(Node::Gate {
                    threshold: 2,
                    children: vec![condition.root().clone(), actors.clone()],
                });
            }
        }
        if clauses.len() > 1 {
            widened = or_nodes(clauses);
            grew = true;
        }
    }
    let narrows = !denied.is_empty() && governing.iter().any(|r| r.deny);
    let fallback = || match leaf(UNRESTRICTED.to_string()).filter(|_| narrows) {
        Some(unrestricted) => AccessStructure::from_node(Node::Gate {
            threshold: 2,
            children: vec![readers.root().clone(), unrestricted],
        })
        .unwrap_or_else(|_| readers.clone()),
        None => readers.clone(),
    };
    let node = if narrows {
        let allowed: Vec<String> = std::iter::once(UNRESTRICTED.to_string())
            .chain(
                view.restricted
                    .iter()
                    .filter(|r| !denied.contains(r.as_str()))
                    .map(|r| format!("{ACTOR}{r}")),
            )
            .collect();
        let Some(allowed) = any_of(allowed) else {
            return fallback();
        };
        Node::Gate {
            threshold: 2,
            children: vec![widened, allowed],
        }
    } else if grew {
        widened
    } else {
        return readers;
    };
    AccessStructure::from_node(node).unwrap_or_else(|_| fallback())
}

/// `a or b or …`, in gates of at most the scheme's children per gate.
fn or_nodes(mut nodes: Vec<Node>) -> Node {
    const WIDTH: usize = rshabe::access::MAX_CHILDREN;
    while nodes.len() > WIDTH {
        nodes = nodes
            .chunks(WIDTH)
            .map(|chunk| {
                if chunk.len() == 1 {
                    chunk[0].clone()
                } else {
                    Node::Gate {
                        threshold: 1,
                        children: chunk.to_vec(),
                    }
                }
            })
            .collect();
    }
    if nodes.len() == 1 {
        return nodes.remove(0);
    }
    Node::Gate {
        threshold: 1,
        children: nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000_000;

    fn consent(provision: Value) -> Value {
        json!({
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": PRIVACY_SCOPE}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p1"},
            "provision": provision,
        })
    }

    fn actor(reference: &str) -> Value {
        json!({"reference": {"reference": reference}})
    }

    #[test]
    fn provisions_naming_actors_are_read_with_what_they_inherit() {
        let resource = consent(json!({
            "type": "deny",
            "period": {"start": "2026-01-01", "end": "2026-12-31"},
            "provision": [
                {"type": "permit", "actor": [actor("https://fhir.example/fhir/Organization/east")],
                 "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
                 "period": {"end": "2026-06-30"}},
                {"type": "deny", "actor": [actor("Practitioner/d"), actor("Practitioner/d")],
                 "securityLabel": [{"code": "SUD"}]}
            ]
        }));
        let record =
            ConsentRecord::from_fhir(&resource, "c1", &["https://fhir.example/fhir"]).unwrap();
        assert_eq!(record.id, "Consent/c1");
        assert_eq!(record.patient, "Patient/p1");
        assert!(record.active);
        let [permit, deny] = record.provisions.as_slice() else {
            panic!("{record:?}")
        };
        assert_eq!(permit.kind, Kind::Permit);
        assert_eq!(permit.actors, ["Organization/east"]);
        assert_eq!(permit.classes, ["Condition"]);
        let (start, _) = date_range_micros("2026-01-01").unwrap();
        let (_, end) = date_range_micros("2026-06-30").unwrap();
        assert_eq!((permit.start, permit.end), (Some(start), Some(end)));
        assert_eq!(deny.actors, ["Practitioner/d"], "named once");
        assert_eq!(deny.labels, ["SUD"]);
        assert!(deny.in_force(start) && !deny.in_force(start - 1));
        assert!(!permit.in_force(end) && permit.in_force(end - 1));
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_by_path() {
        let refused = |resource: Value| ConsentRecord::from_fhir(&resource, "c1", &[]).unwrap_err();
        let mut other_scope = consent(json!({"type": "permit"}));
        other_scope["scope"]["coding"][0]["code"] = json!("research");
        assert_eq!(refused(other_scope).path, "Consent.scope");
        let mut no_patient = consent(json!({"type": "permit"}));
        no_patient["patient"] = json!({"reference": "Group/g"});
        assert_eq!(refused(no_patient).path, "Consent.patient");
        let org_deny = consent(json!({"type": "deny", "actor": [actor("Organization/o")]}));
        assert!(refused(org_deny).message.contains("Practitioners only"));
        let team = consent(json!({"type": "permit", "actor": [actor("CareTeam/t")]}));
        assert_eq!(
            refused(team).path,
            "Consent.provision.actor[0].reference",
            "CareTeam membership is not in a token"
        );
        let untyped = consent(json!({"actor": [actor("Practitioner/d")]}));
        assert_eq!(refused(untyped).path, "Consent.provision.type");
        let bare = consent(json!({"type": "deny", "provision": [{"type": "permit"}]}));
        assert_eq!(refused(bare).path, "Consent.provision.provision[0].actor");
        let bad_date = consent(json!({"type": "permit", "actor": [actor("Practitioner/a")],
            "period": {"end": "soon"}}));
        assert_eq!(refused(bad_date).path, "Consent.provision.period.end");
        let foreign = consent(json!({"type": "permit",
            "actor": [actor("https://elsewhere.example/Practitioner/a")]}));
        assert!(refused(foreign).message.contains("on this server"));
        assert_eq!(
            refused(json!({"resourceType": "Patient"})).path,
            "resourceType"
        );
    }

    #[test]
    fn the_book_knows_who_is_restricted_and_when_things_change() {
        let mut book = ConsentBook::new();
        let (start, _) = date_range_micros("2026-01-01").unwrap();
        let deny = consent(json!({"type": "deny", "actor": [actor("Practitioner/d")],
            "period": {"start": "2026-01-01"}}));
        let record = ConsentRecord::from_fhir(&deny, "c1", &[]).unwrap();
        assert!(book.insert(record.clone()));
        assert!(
            !book.insert(record),
            "the same record again changes nothing"
        );
        assert!(book.restricted(start - 1).is_empty());
        assert_eq!(
            book.restricted(start).into_iter().collect::<Vec<_>>(),
            ["Practitioner/d"]
        );
        assert_eq!(book.changing(start - DAY, start).len(), 1);
        assert!(book.changing(start, start + DAY).is_empty());
        let view = book.view(Some("Patient/p1"), start);
        assert_eq!(view.patient.len(), 1);
        assert!(book.view(Some("Patient/p2"), start).patient.is_empty());
        // A purpose-limited permit is not honoured; a purpose-limited deny is, for every purpose.
        let limited = consent(json!({"type": "permit", "actor": [actor("Practitioner/a")],
            "purpose": [{"code": "TREAT"}]}));
        book.insert(ConsentRecord::from_fhir(&limited, "c2", &[]).unwrap());
        assert_eq!(book.view(Some("Patient/p1"), start).patient.len(), 1);
        // Withdrawn: nothing of it is in force.
        book.insert(ConsentRecord::withdrawn("c1", "Patient/p1"));
        assert!(book.restricted(start).is_empty());
        assert!(book.denying(start).is_empty());
    }

    #[test]
    fn a_consent_moved_to_another_patient_leaves_the_first_and_the_set_says_how_long_it_holds() {
        let mut book = ConsentBook::new();
        let (start, _) = date_range_micros("2026-01-01").unwrap();
        let (_, end) = date_range_micros("2026-12-31").unwrap();
        let deny = consent(json!({"type": "deny", "actor": [actor("Practitioner/d")],
            "period": {"start": "2026-01-01", "end": "2026-12-31"}}));
        book.insert(ConsentRecord::from_fhir(&deny, "c1", &[]).unwrap());
        assert_eq!(book.restricted_until(start - 1).1, Some(start));
        assert_eq!(book.restricted_until(start).1, Some(end));
        assert_eq!(book.restricted_until(end).1, None);
        let mut moved = deny;
        moved["patient"] = json!({"reference": "Patient/p2"});
        book.insert(ConsentRecord::from_fhir(&moved, "c1", &[]).unwrap());
        assert_eq!(
            book.patients().into_iter().collect::<Vec<_>>(),
            ["Patient/p2"]
        );
        assert!(book.view(Some("Patient/p1"), start).patient.is_empty());
        assert_eq!(book.view(Some("Patient/p2"), start).patient.len(), 1);
    }

    #[test]
    fn actor_attributes_are_relative_references() {
        assert_eq!(
            actor_attributes(
                Some("https://fhir.example/fhir/Practitioner/7"),
                ["Organization/o".to_string(), "not a reference".to_string()].into_iter()
            ),
            ["actor:Practitioner/7", "actor:Organization/o"]
        );
        assert!(actor_attributes(None, std::iter::empty()).is_empty());
    }
}
