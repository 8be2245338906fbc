//! The decision engine: pure, synchronous, no I/O, deny by default.

use std::fmt;

use fhirseal_envelope::Granularity;
use fhirseal_fhir::principal::Principal;
use fhirseal_fhir::rest::Interaction;
use fhirseal_fhir::structure::r4;
use fhirseal_seal::locate;
use rshabe::AccessStructure;
use serde_json::Value;

use crate::consent::{ConsentView, Kind};
use crate::document::Search;
use crate::policy::{
    Attributes, BreakGlass, Label, Origin, Policy, Protection, SealingRules, substitute,
};

/// A request, as far as the policy needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// What it does.
    pub interaction: Interaction,
    /// On which resource type.
    pub resource_type: String,
    /// The patient whose compartment the target is in (`Patient/456`), when known.
    pub patient: Option<String>,
    /// The consents in force for that patient, and who any consent denies
    /// ([`crate::ConsentBook::view`]; the default: none).
    pub consent: ConsentView,
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Go ahead, and do this.
    Permit(Obligations),
    /// No, because (in words).
    Deny(String),
}

/// What the gateway must do with a permitted request.
#[derive(Clone, Debug, PartialEq)]
pub struct Obligations {
    /// The access rule that permitted it.
    pub access: String,
    /// Each protected element of the resource type: sealed on the way in, opened or masked on
    /// the way out.
    pub elements: Vec<ElementObligation>,
    /// Security labels to set on resources written.
    pub labels: Vec<Label>,
    /// What a write of the request is sealed under: the protection rules of the policy that
    /// made this decision, for the record's patient (not a second look at the policy).
    pub sealing: SealingRules,
}

/// One protected element.
#[derive(Clone, Debug, PartialEq)]
pub struct ElementObligation {
    /// Its path, as the rule writes it.
    pub path: String,
    /// The rule.
    pub rule: String,
    /// The structure it is sealed under for this record.
    pub readers: AccessStructure,
    /// Header granularity.
    pub granularity: Granularity,
    /// How a search on it is answered.
    pub search: Search,
    /// Whether this caller's key opens it (the crypto decides; this is the policy's forecast).
    pub open: bool,
    /// Who may also set it without being able to read it back, for this record (the rule's
    /// `writers`); `None`: only its readers.
    pub writers: Option<AccessStructure>,
    /// Whether this caller's attributes satisfy `writers` (false without one): it may set the
    /// element even where its key does not open it.
    pub write: bool,
}

/// Why each protected element of a resource is open or masked for a caller.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// `Patient/p1`
    pub resource: String,
    /// The patient whose record it is, if any.
    pub patient: Option<String>,
    /// The caller's attributes, and the roles that gave them.
    pub attributes: Attributes,
    /// Whether the caller may read the resource at all.
    pub access: Decision,
    /// Each protected element present in the resource.
    pub elements: Vec<ElementExplanation>,
}

/// What break-glass gives a caller who asserts an emergency ([`Policy::emergency`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emergency {
    /// The break-glass rules whose `who` the caller satisfies, by name.
    pub rules: Vec<String>,
    /// The caller's own attributes and every rule's grants: what the emergency key holds.
    pub attributes: Attributes,
    /// The granted attributes the caller did not hold already (sorted).
    pub added: Vec<String>,
    /// How long the grant lasts from its first assertion: the shortest of the rules'.
    pub max_seconds: u64,
}

/// One element's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementExplanation {
    /// Its concrete path (`Patient.name[1]`).
    pub path: String,
    /// Open (true) or masked.
    pub open: bool,
    /// The break-glass rules that opened it, when only the emergency did (empty otherwise).
    pub break_glass: Vec<String>,
    /// The `Consent`s that opened or masked it, when the policy's rules alone would have
    /// decided otherwise (empty otherwise).
    pub consent: Vec<String>,
    /// In words.
    pub why: String,
    /// When its rule names `writers`: whether the caller may set it without reading it, in
    /// words (`None`: only its readers may set it).
    pub write: Option<(bool, String)>,
}

impl Obligations {
    /// The concrete paths (`Patient.identifier[0]`) of the protected elements present in
    /// `resource` that this caller may set without being able to read them back: those of the
    /// rules whose `writers` it satisfies ([`ElementObligation::write`]), as the rules stood at
    /// the decision. Only rules name elements: a narrative or a reference's display sealed
    /// along with them is never among these.
    pub fn writable_paths(&self, resource: &Value) -> Vec<String> {
        let mut paths = Vec::new();
        for obligation in self.elements.iter().filter(|e| e.write) {
            let Some(protection) = self.sealing.protection(&obligation.rule) else {
                continue;
            };
            for rule in protection
                .elements
                .iter()
                .filter(|r| r.path().to_string() == obligation.path)
            {
                paths.extend(locate(resource, rule));
            }
        }
        paths
    }
}

impl Policy {
    /// Permits `request` for `principal` only if an access rule covers its resource type and
    /// interaction and the principal's attributes satisfy that rule's structure; everything else
    /// is denied, with the reason.
    pub fn decide(&self, principal: &Principal, request: &Request) -> Decision {
        if r4().kind(&request.resource_type) != Some(fhirseal_fhir::structure::Kind::Resource) {
            return Decision::Deny(format!(
                "`{}` is not an R4 resource type",
                request.resource_type
            ));
        }
        let attributes = self.attributes_in(principal, &request.consent);
        let patient = request.patient.as_deref();
        let covering: Vec<_> = self
            .access()
            .iter()
            .filter(|a| {
                a.interactions.contains(&request.interaction)
                    && a.resources
                        .as_ref()
                        .is_none_or(|r| r.contains(&request.resource_type))
            })
            .collect();
        let Some(permitting) = covering
            .iter()
            .find(|a| attributes.satisfy(&substitute(&a.readers, &patient_attribute(patient))))
        else {
            let what =
                format!("{:?} {}", request.interaction, request.resource_type).to_lowercase();
            let held = held(&attributes);
            return Decision::Deny(if covering.is_empty() {
                format!("no access rule covers {what}: denied by default")
            } else {
                let needs: Vec<String> = covering
                    .iter()
                    .map(|a| format!("`{}` needs {}", a.name, a.readers))
                    .collect();
                format!(
                    "no access rule lets you {what}: {}; you hold {held}",
                    needs.join("; ")
                )
            });
        };
        let mut labels: Vec<Label> = Vec::new();
        let mut elements = Vec::new();
        for protection in self
            .protections()
            .iter()
            .filter(|p| p.resource_type == request.resource_type)
        {
            let readers = self.readers_under(protection, patient, &request.consent);
            let open = attributes.satisfy(&readers);
            let writers = protection.writers_for(patient);
            let write = writers.as_ref().is_some_and(|w| attributes.satisfy(w));
            for rule in &protection.elements {
                elements.push(ElementObligation {
                    path: rule.path().to_string(),
                    rule: protection.name.clone(),
                    readers: readers.clone(),
                    granularity: protection.granularity,
                    search: protection.search,
                    open,
                    writers: writers.clone(),
                    write,
                });
            }
            for label in &protection.labels {
                if !labels.contains(label) {
                    labels.push(label.clone());
                }
            }
        }
        labels.sort();
        Decision::Permit(Obligations {
            access: permitting.name.clone(),
            elements,
            labels,
            sealing: self.sealing_rules(request.patient.clone(), request.consent.clone()),
        })
    }

    /// Per protected element present in `resource`: open or masked for `principal`, which rule
    /// and which attributes made it so.
    pub fn explain(&self, principal: &Principal, resource: &Value) -> Explanation {
        self.explain_under(principal, resource, &ConsentView::default())
    }

    /// [`Policy::explain`] under the consents `view` of the record's patient: an element a
    /// Consent opens or masks, where the policy's rules alone would not, says which Consent and
    /// which consent rule ([`ElementExplanation::consent`]).
    pub fn explain_under(
        &self,
        principal: &Principal,
        resource: &Value,
        view: &ConsentView,
    ) -> Explanation {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)");
        // Offline: no base is known, so only relative references name a patient.
        let patient = record_patient(resource, &[]);
        let attributes = self.attributes_in(principal, view);
        let access = self.decide(
            principal,
            &Request {
                interaction: Interaction::Read,
                resource_type: resource_type.clone(),
                patient: patient.clone(),
                consent: view.clone(),
            },
        );
        let mut elements = Vec::new();
        for protection in self
            .protections()
            .iter()
            .filter(|p| p.resource_type == resource_type)
        {
            let base = protection.readers_for(patient.as_deref());
            let readers = self.readers_under(protection, patient.as_deref(), view);
            let open = attributes.satisfy(&readers);
            let (consent, consent_words) = if open == attributes.satisfy(&base) {
                (Vec::new(), None)
            } else {
                let (ids, said) = self.consent_words(protection, view, &attributes, open);
                (ids, Some(said))
            };
            let write = protection
                .writers_for(patient.as_deref())
                .map(|writers| writer_words(protection, &writers, &attributes));
            for rule in &protection.elements {
                for concrete in locate(resource, rule) {
                    let why = match &consent_words {
                        Some(said) => said.clone(),
                        None => words(protection, &readers, &attributes, open, patient.as_deref()),
                    };
                    elements.push(ElementExplanation {
                        path: concrete,
                        open,
                        break_glass: Vec::new(),
                        consent: consent.clone(),
                        why,
                        write: write.clone(),
                    });
                }
            }
        }
        elements.sort_by(|a, b| a.path.cmp(&b.path));
        Explanation {
            resource: format!("{resource_type}/{id}"),
            patient,
            attributes,
            access,
            elements,
        }
    }
}

impl Policy {
    /// Whether `principal` may break the glass: every `[[break-glass]]` rule whose `who` its
    /// own attributes satisfy, and what they add to them. Deny by default: with no such rule the
    /// answer is the reason, in words (which rule needs what, what the caller holds).
    ///
    /// # Errors
    /// The reason the emergency is refused.
    pub fn emergency(&self, principal: &Principal) -> Result<Emergency, String> {
        let own = self.attributes(principal);
        let permitted: Vec<&BreakGlass> = self
            .break_glass()
            .iter()
            .filter(|rule| own.satisfy(&rule.who))
            .collect();
        if permitted.is_empty() {
            return Err(if self.break_glass().is_empty() {
                "the policy has no break-glass rule: nobody may break the glass".to_string()
            } else {
                let needs: Vec<String> = self
                    .break_glass()
                    .iter()
                    .map(|rule| format!("`{}` needs {}", rule.name, rule.who))
                    .collect();
                format!(
                    "no break-glass rule lets you break the glass: {}; you hold {}",
                    needs.join("; "),
                    held(&own)
                )
            });
        }
        let mut attributes = own.clone();
        for rule in &permitted {
            for attribute in &rule.grants {
                attributes.grant(attribute, &format!("break-glass {}", rule.name));
            }
        }
        let added = attributes
            .names()
            .filter(|a| !own.has(a))
            .map(str::to_string)
            .collect();
        Ok(Emergency {
            rules: permitted.iter().map(|r| r.name.clone()).collect(),
            attributes,
            added,
            max_seconds: permitted
                .iter()
                .map(|r| r.max_seconds)
                .min()
                .unwrap_or_default(),
        })
    }

    /// [`Policy::explain`] for `principal` breaking the glass: each element the emergency
    /// opens, and the caller's own attributes do not, is open with the break-glass rules that
    /// opened it and their grants named (`ElementExplanation::break_glass`).
    ///
    /// # Errors
    /// The reason the emergency is refused ([`Policy::emergency`]).
    pub fn explain_emergency(
        &self,
        principal: &Principal,
        resource: &Value,
    ) -> Result<Explanation, String> {
        let emergency = self.emergency(principal)?;
        let mut explanation = self.explain(principal, resource);
        let patient = explanation.patient.clone();
        for element in explanation.elements.iter_mut().filter(|e| !e.open) {
            let Some(protection) = self.protections().iter().find(|p| {
                p.resource_type
                    == resource
                        .get("resourceType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                    && p.elements
                        .iter()
                        .any(|rule| locate(resource, rule).contains(&element.path))
            }) else {
                continue;
            };
            let readers = protection.readers_for(patient.as_deref());
            if !emergency.attributes.satisfy(&readers) {
                element.why = format!("{} (break-glass does not open it either)", element.why);
                continue;
            }
            let opened_by: Vec<&BreakGlass> = self
                .break_glass()
                .iter()
                .filter(|rule| emergency.rules.contains(&rule.name))
                .collect();
            element.open = true;
            element.break_glass = opened_by.iter().map(|r| r.name.clone()).collect();
            element.why = format!(
                "open by break-glass: emergency rule {} grants {}; {}",
                opened_by
                    .iter()
                    .map(|r| format!("`{}` ({})", r.name, origin(&r.origin)))
                    .collect::<Vec<_>>()
                    .join(" and "),
                emergency.added.join(", "),
                words(
                    protection,
                    &readers,
                    &emergency.attributes,
                    true,
                    patient.as_deref()
                )
            );
        }
        explanation.attributes = emergency.attributes;
        Ok(explanation)
    }
}

impl Policy {
    /// Which Consents of `view` opened (`open`) or masked `protection`'s elements for a caller
    /// holding `attributes`, and why in words.
    fn consent_words(
        &self,
        protection: &Protection,
        view: &ConsentView,
        attributes: &Attributes,
        open: bool,
    ) -> (Vec<String>, String) {
        let rule = self
            .consent_rules()
            .iter()
            .find(|r| r.rules.contains(&protection.name));
        let kind = if open { Kind::Permit } else { Kind::Deny };
        let mut ids = Vec::new();
        let mut named = Vec::new();
        for (id, provision) in view.patient.iter() {
            if provision.kind != kind
                || !provision.covers(&protection.resource_type, &protection.label_codes())
            {
                continue;
            }
            let held: Vec<&String> = provision
                .actors
                .iter()
                .filter(|a| attributes.has(&format!("{}{a}", crate::consent::ACTOR)))
                .collect();
            if held.is_empty() {
                continue;
            }
            if !ids.contains(id) {
                ids.push(id.clone());
            }
            named.extend(
                held.into_iter()
                    .map(|a| format!("{id} {} {a}", if open { "permits" } else { "denies" })),
            );
        }
        let under = rule.map_or_else(String::new, |r| {
            format!(" under consent rule `{}` ({})", r.name, origin(&r.origin))
        });
        let said = if open {
            format!(
                "open by consent: {}{under}; rule `{}` ({}) alone lets only {} read it",
                named.join(", "),
                protection.name,
                origin(&protection.origin),
                protection.readers
            )
        } else {
            format!(
                "masked by consent: {}{under}; rule `{}` ({}) alone would open it",
                named.join(", "),
                protection.name,
                origin(&protection.origin)
            )
        };
        (ids, said)
    }
}

fn patient_attribute(patient: Option<&str>) -> String {
    patient.map_or_else(
        || crate::policy::NO_PATIENT.to_string(),
        |p| format!("patient:{p}"),
    )
}

fn held(attributes: &Attributes) -> String {
    if attributes.is_empty() {
        return "no attributes (no role of the policy matches your token)".into();
    }
    attributes
        .names()
        .map(|a| format!("{a} (role {})", attributes.because(a).join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn origin(o: &Origin) -> String {
    format!("{}:{}", o.file, o.line)
}

/// The attributes of `structure` that `attributes` hold, each with the roles it comes from.
fn held_of(structure: &AccessStructure, attributes: &Attributes) -> Vec<String> {
    structure
        .leaves()
        .iter()
        .filter(|a| attributes.has(a.as_str()))
        .map(|a| {
            format!(
                "{} (role {})",
                a.as_str(),
                attributes.because(a.as_str()).join(", ")
            )
        })
        .collect()
}

fn words(
    p: &Protection,
    readers: &AccessStructure,
    attributes: &Attributes,
    open: bool,
    patient: Option<&str>,
) -> String {
    let relevant = held_of(readers, attributes);
    let who = if p.readers != *readers {
        let record = patient.map_or_else(|| "no patient's".to_string(), |p| format!("{p}'s"));
        format!("{} (patient:self is {record} own key here)", p.readers)
    } else {
        p.readers.to_string()
    };
    if open {
        format!(
            "open: rule `{}` ({}) lets {who} read it, and you hold {}",
            p.name,
            origin(&p.origin),
            relevant.join(", ")
        )
    } else if relevant.is_empty() {
        format!(
            "masked: rule `{}` ({}) lets only {who} read it, and you hold none of its attributes",
            p.name,
            origin(&p.origin)
        )
    } else {
        format!(
            "masked: rule `{}` ({}) lets only {who} read it; you hold {}, which is not enough",
            p.name,
            origin(&p.origin),
            relevant.join(", ")
        )
    }
}

/// Whether `attributes` satisfy the `writers` of `p` (for this record), and why, in words.
fn writer_words(
    p: &Protection,
    writers: &AccessStructure,
    attributes: &Attributes,
) -> (bool, String) {
    let held = held_of(writers, attributes);
    if attributes.satisfy(writers) {
        let words = format!(
            "may set it without reading it: rule `{}` lets {writers} set it unread, and you hold {}",
            p.name,
            held.join(", ")
        );
        (true, words)
    } else {
        let words = format!(
            "may set it only if it may read it: rule `{}` lets only {writers} set it unread",
            p.name
        );
        (false, words)
    }
}

/// The patient whose record `resource` is: the Patient itself, or the Patient its primary
/// compartment reference names (`Observation.subject`, `AllergyIntolerance.patient`: the first
/// parameter of CompartmentDefinition/patient for the type), or failing that the first Patient
/// among its other compartment references. A record is its subject's, never the record of
/// another patient it merely names (an Observation `performer`, a Condition `asserter`).
///
/// What patient a reference names is [`fhirseal_fhir::compartment::referenced_patient`]'s rule,
/// the scopes' too: relative, or absolute under one of `bases` (the gateway's and the upstream's
/// base URLs); an absolute reference to another server names none of ours. The references are
/// found as the scopes find them: this is [`fhirseal_fhir::compartment::record_patient`], as a
/// reference.
pub fn record_patient(resource: &Value, bases: &[&str]) -> Option<String> {
    fhirseal_fhir::compartment::record_patient(resource, bases).map(|id| format!("Patient/{id}"))
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}{}",
            self.resource,
            self.patient
                .as_ref()
                .map_or(String::new(), |p| format!(" (record of {p})"))
        )?;
        writeln!(f, "your attributes: {}", held(&self.attributes))?;
        match &self.access {
            Decision::Permit(o) => writeln!(f, "read: permitted by access rule `{}`", o.access)?,
            Decision::Deny(why) => writeln!(f, "read: denied: {why}")?,
        }
        if self.elements.is_empty() {
            writeln!(f, "no protected element is present")?;
        }
        for e in &self.elements {
            writeln!(f, "  {}: {}", e.path, e.why)?;
            if let Some((_, words)) = &e.write {
                writeln!(f, "    write: {words}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod record_patient_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_record_is_its_subjects_whatever_else_it_names() {
        let observation = json!({"resourceType": "Observation",
            "performer": [{"reference": "Patient/b"}], "subject": {"reference": "Patient/a"}});
        assert_eq!(
            record_patient(&observation, &[]).as_deref(),
            Some("Patient/a")
        );
        let allergy = json!({"resourceType": "AllergyIntolerance",
            "asserter": {"reference": "Patient/b"}, "patient": {"reference": "Patient/a"}});
        assert_eq!(record_patient(&allergy, &[]).as_deref(), Some("Patient/a"));
        let only_performer = json!({"resourceType": "Observation",
            "performer": [{"reference": "Patient/b"}], "subject": {"reference": "Group/g"}});
        assert_eq!(
            record_patient(&only_performer, &[]).as_deref(),
            Some("Patient/b")
        );
    }

    #[test]
    fn an_absolute_reference_names_a_patient_only_under_our_bases() {
        let at = |reference: &str| json!({"resourceType": "Observation", "subject": {"reference": reference}});
        let bases = &["https://gw.example/fhir"];
        let ours = at("https://gw.example/fhir/Patient/x");
        assert_eq!(record_patient(&ours, bases).as_deref(), Some("Patient/x"));
        let other = at("http://other.example/fhir/Patient/x");
        assert_eq!(record_patient(&other, bases), None);
    }
}

#[cfg(test)]
mod permit_tests {
    use super::*;
    use serde_json::json;

    /// A policy that lets physicians write patients and seals `Patient.name` for `readers`.
    fn policy(readers: &str) -> Policy {
        let text = format!(
            r#"
[policy]
name = "permit test"
version = "1"
default = "deny"

[[roles]]
name = "physician"
fhir-user-type = ["Practitioner"]
attributes = ["role:physician"]

[[access]]
name = "physicians write patients"
resources = ["Patient"]
interactions = ["create", "update"]
readers = "role:physician"

[[protect]]
name = "names"
resource = "Patient"
elements = ["Patient.name"]
readers = "{readers}"
"#
        );
        Policy::load(&[("permit-test.toml".into(), text)]).unwrap()
    }

    fn permit(policy: &Policy) -> Obligations {
        let physician =
            Principal::from_claims(&json!({"sub": "dr", "fhirUser": "Practitioner/dr"})).unwrap();
        let request = Request {
            interaction: Interaction::Create,
            resource_type: "Patient".into(),
            patient: Some("Patient/p1".into()),
            consent: Default::default(),
        };
        match policy.decide(&physician, &request) {
            Decision::Permit(obligations) => obligations,
            Decision::Deny(why) => panic!("{why}"),
        }
    }

    #[test]
    fn a_permit_seals_under_the_policy_that_made_it() {
        let decided = policy("role:physician or patient:self");
        let obligations = permit(&decided);
        // The policy is reloaded between the decision and the sealing: patients lose their names.
        let reloaded = policy("role:physician");
        let patient = json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "X"}],
            "generalPractitioner": [{"reference": "Patient/p2", "display": "Y"}]});
        let rules = obligations.sealing.for_resource(&patient).unwrap();
        let at_decision = decided
            .rules_for_resource(&patient, Some("Patient/p1"))
            .unwrap();
        assert_eq!(rules, at_decision);
        assert_ne!(
            rules,
            reloaded
                .rules_for_resource(&patient, Some("Patient/p1"))
                .unwrap()
        );
        assert_eq!(obligations.sealing.patient(), Some("Patient/p1"));
    }

    #[test]
    fn permits_compare_by_what_they_seal() {
        let same = policy("role:physician or patient:self");
        assert_eq!(permit(&same), permit(&same.clone()));
        assert_eq!(
            permit(&same),
            permit(&policy("role:physician or patient:self"))
        );
        assert_ne!(permit(&same), permit(&policy("role:physician")));
    }
}
