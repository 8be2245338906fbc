//! FHIRseal, the gateway: what sits between FHIR clients and an unmodified FHIR server.
//!
//! ```text
//! client ─► audit + request id (audit) ─► authenticate: bearer JWT → Caller (auth)
//!        ─► parse: FhirRequest (request::Parsed) ─► flow::run
//!             ─► authorize: scopes + compartment + policy (flow::authorize)
//!             ─► seal the request's elements (flow::change, seal::Sealing)
//!             ─► upstream FHIR server (fhirseal_upstream)
//!             ─► open / mask every returned resource, per Bundle entry (flow::protect)
//!        ─► Answer → response, or → Bundle entry (flow::respond)
//! ```
//!
//! Every interaction, alone or inside a batch or transaction, takes that path ([`flow`]).
//!
//! - [`app`]: the router and its middleware stack, as deployed; [`state`]: what it runs with,
//!   built once from the configuration ([`config`]: one TOML file or the embedded defaults,
//!   environment overrides, errors that name the file and the key).
//! - [`request`]: the parse step for HTTP; [`flow`]: the steps after it.
//! - [`seal`]: what writes seal with (shared headers, blind index, sealing key).
//! - [`guard`]: the create guard, so that a `PUT` of a new id creates once (a keyed lock in the
//!   process, a lease in the authority's store across replicas).
//! - [`keys`]: the keyring: callers enrolled in the authority on first use, re-keyed when their
//!   attributes change, and their per-period decryption keys.
//! - [`headers`]: the shared RS-HABE headers, stored once each on the upstream as `Basic`
//!   resources, and found again for readers.
//! - [`error`]: the one place where errors become HTTP responses, each a FHIR
//!   `OperationOutcome` with the right status (and `WWW-Authenticate` for 401 and 403).
//! - [`auth`]: the authentication step (bearer token verified, the caller put in the request).
//! - [`audit`]: one audit line per request.
//! - [`break_glass`]: emergency access: asserted, bounded in time, opened with an emergency key,
//!   labelled, audited and alerted.
//! - [`ctupdate`]: the ciphertext-update job that moves every stored header to the current period
//!   after a revocation (planner, workers, background task).
//! - [`admin`]: the admin API for the loopback admin listener (health, the update job,
//!   revocation, period changes).
//! - [`metrics`]: the Prometheus metrics the admin listener serves at `/metrics`.
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod break_glass;
pub mod config;
pub mod consent;
pub mod ctupdate;
pub mod error;
pub mod flow;
pub mod guard;
pub mod headers;
pub mod index_secret;
pub mod keys;
pub mod metrics;
pub mod reindex;
pub mod request;
pub mod seal;
pub mod state;
pub mod warm;
