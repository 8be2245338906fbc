//! FHIRseal's SMART on FHIR side: who is calling, with which scopes, in which launch context.
//!
//! - [`scope`]: the SMART App Launch 2 scope grammar (v1 `patient/Observation.read`, v2
//!   `user/*.cruds`, granular `patient/Observation.rs?category=…`, `launch/patient`, `openid
//!   fhirUser`, `offline_access`), printed back exactly as parsed, malformed scopes refused;
//!   and what a set of scopes permits: [`Scopes::permits`] says whether an interaction on a
//!   resource type is covered, and with which patient-compartment narrowing and granular
//!   restrictions.
//! - [`TokenContext::from_claims`]: a verified token's claims (names configurable per issuer) to
//!   the [`fhirseal_policy::Principal`] the policy decides on, the scopes, and the launch context
//!   (patient, encounter, `fhirContext`). A `patient/` scope without a patient in context is
//!   refused.
//!
//! Token verification (JWKS, algorithms, `iss`/`aud`/`exp`), introspection and the embedded
//! authorization server come next (issue 6); they will produce the claims this crate reads.
#![warn(missing_docs)]

mod context;
pub mod scope;

pub use context::{ClaimNames, ContextError, TokenContext};
pub use scope::{Allowance, Level, Permission, Permissions, Scope, ScopeError, Scopes};
