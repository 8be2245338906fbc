//! FHIRseal's compliance policy: the TOML documents in which a compliance officer says who is
//! who (roles → attributes) and what is protected from whom (elements → access structures), and
//! the pure decision engine the gateway asks.
//!
//! - [`Policy::load`] parses one or more files into validated types: unknown keys are refused,
//!   every problem is reported with its file, line and key ([`PolicyErrors`]), element paths are
//!   checked against FHIR R4 (through `fhirseal-fhir`), and rules that contradict each other are
//!   refused. A policy does not depend on the order of its rules or files.
//! - [`Policy::attributes`] maps a caller's token facts ([`fhirseal_fhir::Principal`]) to
//!   attributes, with hierarchical attributes (`org:st-mary/dept:cardiology` implies
//!   `org:st-mary`).
//! - [`Policy::decide`] answers a [`Request`] with [`Decision::Permit`] and the obligations
//!   (which elements to seal on the way in, which open or stay masked on the way out, how
//!   searches on them are answered, which labels to set), or [`Decision::Deny`] with the reason.
//!   Deny is the default. Pure: no I/O, no clock, no randomness.
//! - [`Policy::explain`] says, per protected element of a resource, open or masked, and which
//!   rule and which attribute made it so.
//! - [`Policy::emergency`] says whether a caller may break the glass (a `[[break-glass]]` rule
//!   whose `who` its attributes satisfy) and what the emergency adds to its attributes, for how
//!   long; [`Policy::explain_emergency`] says which emergency rule opened which element.
//! - [`ConsentRecord::from_fhir`] reads a patient's FHIR `Consent`; [`Policy::rules_under`] and
//!   [`Policy::attributes_in`] say what the consents in force ([`ConsentBook::view`]) do to a
//!   record's structures and a caller's attributes (`docs/consent.md`).
//! - [`Policy::rules_for`] gives the sealing rules for one patient's records: `patient:self` in
//!   a structure becomes that patient's own attribute, so the record owner's key opens what the
//!   policy lets patients see.
//!
//! The language is described for compliance officers in `fhir-profiles/README.md`; the shipped
//! policies are in `fhir-profiles/policies/`.
#![warn(missing_docs)]

pub mod consent;
mod decide;
mod document;
mod policy;

pub use consent::{ConsentBook, ConsentError, ConsentRecord, ConsentRule, ConsentView};
pub use decide::{
    Decision, ElementExplanation, ElementObligation, Emergency, Explanation, Obligations, Request,
    record_patient,
};
pub use document::Search;
pub use policy::{
    Access, Attributes, BreakGlass, LOW_ENTROPY_TYPES, Label, MAX_BREAK_GLASS_MINUTES, NO_PATIENT,
    Origin, PATIENT_SELF, Policy, PolicyError, PolicyErrors, Protection, Role, SealingRules,
    low_entropy,
};

/// The policy the gateway runs with when none is configured: `fhir-profiles/policies/general-hospital.toml`.
pub const DEFAULT_POLICY: (&str, &str) = (
    "general-hospital.toml (embedded)",
    include_str!("../../../fhir-profiles/policies/general-hospital.toml"),
);

impl Policy {
    /// The embedded default policy.
    pub fn embedded_default() -> Result<Self, PolicyErrors> {
        Self::load(&[(DEFAULT_POLICY.0.to_string(), DEFAULT_POLICY.1.to_string())])
    }

    /// Loads policy files from disk; a file that cannot be read is an error naming it.
    pub fn from_paths(paths: &[std::path::PathBuf]) -> Result<Self, PolicyErrors> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            match std::fs::read_to_string(path) {
                Ok(text) => files.push((path.display().to_string(), text)),
                Err(e) => errors.push(PolicyError {
                    file: path.display().to_string(),
                    line: 0,
                    key: String::new(),
                    message: format!("cannot be read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        Self::load(&files)
    }
}
