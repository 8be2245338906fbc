//! FHIRseal, the gateway: what sits between FHIR clients and an unmodified FHIR server.
//!
//! - [`config`]: the configuration (one TOML file or the embedded defaults, environment
//!   overrides), validated with errors that name the file and the key.
//! - [`app`]: the router; [`state`]: what it runs with, built once from the configuration.
//! - [`keys`]: the keyring: callers enrolled in the authority on first use, re-keyed when their
//!   attributes change, and their per-period decryption keys.
//! - [`headers`]: the shared RS-HABE headers, stored once each on the upstream as `Basic`
//!   resources, and found again for readers.
//! - [`error`]: the one place where errors become HTTP responses, each a FHIR
//!   `OperationOutcome` with the right status (and `WWW-Authenticate` for 401 and 403).
//! - [`auth`]: the authentication step of the request flow (bearer token verified, the caller put
//!   in the request) and the scope checks that turn SMART scopes into 403s.
//! - [`ctupdate`]: the ciphertext-update job that moves every stored header to the current period
//!   after a revocation (planner, workers, background task).
//! - [`admin`]: the admin API for the loopback admin listener (health, the update job,
//!   revocation, period changes).
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod config;
pub mod ctupdate;
pub mod error;
pub mod flow;
pub mod headers;
pub mod keys;
pub mod request;
pub mod state;
pub mod write;
