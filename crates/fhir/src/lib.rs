//! FHIRseal's FHIR vocabulary: R4 structure facts, element paths, the Patient compartment, R4
//! search parameters, one typed parse of a REST request, and the words the policy and the SMART
//! scopes share: interactions by kind ([`rest::Interaction`]) and who the caller is
//! ([`Principal`]). No cryptography: the seal/open transforms that use this vocabulary are
//! `fhirseal-seal`.
//!
//! # Structure facts
//!
//! Which members are primitives, choices, required, modifiers or compartment references comes
//! from R4's StructureDefinitions, compiled in from `fhir-profiles/r4/` (see [`structure`]).
//!
//! Which elements each R4 search parameter reads comes from R4's SearchParameters the same way
//! ([`search`]); whether one resource matches one search parameter, as a server would decide it
//! on clear data, is [`matching`].
//!
//! # Requests
//!
//! [`FhirRequest`] is an interaction parsed once, from HTTP or a Bundle entry, into a known
//! resource type, [`Id`]s of FHIR's syntax ([`request::is_fhir_id`]) and split search
//! parameters.
//!
//! # JSON
//!
//! [`Members`] looks a member up in the small objects FHIR JSON is made of by comparing names,
//! which costs less than hashing them; the walks that run over every object of every resource
//! use it ([`json`]).
//!
//! # Callers
//!
//! A [`Principal`] is what a verified token says about its caller (`sub`, `fhirUser`, scopes,
//! PractitionerRoles, every claim): the SMART layer makes it, the policy maps it to attributes.
#![warn(missing_docs)]

pub mod compartment;
pub mod json;
pub mod matching;
pub mod path;
pub mod principal;
pub mod request;
pub mod rest;
pub mod search;
pub mod structure;

/// FHIR's JSON media type, as written on every body sent: `application/fhir+json` in UTF-8.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub use json::{Members, json_text};
pub use path::{ElementPath, PathError};
pub use principal::{ClaimsError, PractitionerRoleFacts, Principal};
pub use request::{FhirRequest, Id, Interaction, Prefer, RequestError, ResourceType, SearchParam};
