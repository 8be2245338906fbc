//! FHIRseal's SMART on FHIR side: who is calling, with which scopes, in which launch context.
//! The embedded authorization server, for deployments without one of their own, is the crate
//! `fhirseal-auth-server`, which issues tokens in this crate's grammar.
//!
//! - [`verify`]: access-token verification. [`Verifier::verify`] checks a bearer token from any
//!   configured issuer: JWKS fetched, cached and rotated (an unknown `kid` refetches, rate
//!   limited, once under concurrency); RS256/384/512, PS*, ES256, ES384 and EdDSA with the
//!   algorithm pinned by the key, never `none` nor HMAC, and no key references of the token's
//!   own (`jku`, `x5u`, `jwk`, `x5c`); `iss`, `aud` (the gateway's FHIR base URL), `exp` and
//!   `nbf` with a small leeway; a size limit before anything is decoded. Opaque tokens go to RFC
//!   7662 introspection. Parsed keys and verified tokens are cached until expiry. Every refusal
//!   is an [`AuthError`] that says why in a `WWW-Authenticate` challenge
//!   ([`AuthError::www_authenticate`]) without echoing the token.
//! - [`scope`]: the SMART App Launch 2 scope grammar (v1 `patient/Observation.read`, v2
//!   `user/*.cruds`, granular `patient/Observation.rs?category=…`, `launch/patient`, `openid
//!   fhirUser`, `offline_access`), printed back exactly as parsed, malformed scopes refused;
//!   and what a set of scopes permits: [`Scopes::permits`] says whether an interaction on a
//!   resource type is covered, and with which patient-compartment narrowing and granular
//!   restrictions.
//! - [`TokenContext::from_claims`]: a verified token's claims (names configurable per issuer) to
//!   the [`fhirseal_fhir::Principal`] the policy decides on, the scopes, and the launch context
//!   (patient, encounter, `fhirContext`). A `patient/` scope without a patient in context is
//!   refused.
//! - Enforcement: [`TokenContext::check_resource`] (may this caller's scopes touch this
//!   resource: the interaction, and under a `patient/` scope the patient's compartment) and
//!   [`TokenContext::search_narrowing`] (the parameters that keep a search inside the scopes);
//!   a [`Refusal`] is a 403.
//! - [`discovery`]: the `smart-configuration` the gateway publishes for an external
//!   authorization server, derived from that server's own discovery document.
//!
//! The scopes only narrow: what a caller finally sees is what scopes, the compliance policy
//! and the caller's RS-HABE key all allow.
#![warn(missing_docs)]

mod context;
pub mod discovery;
mod enforce;
pub mod scope;
pub mod verify;

pub use context::{ClaimNames, ContextError, TokenContext};
pub use enforce::{Narrowing, Refusal};
pub use scope::{Allowance, Level, Permission, Permissions, Scope, ScopeError, Scopes};
pub use verify::{
    AuthError, ConfigError, IntrospectionConfig, IssuerConfig, KeySource, Verified, Verifier,
    VerifierConfig,
};
