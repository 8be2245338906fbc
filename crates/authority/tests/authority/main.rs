//! The authority's tests, one binary, each on both backends: SQLite in a temporary folder, and a
//! real PostgreSQL server started by `scripts/test` (`FHIRSEAL_TEST_POSTGRES_URL`; a missing
//! server is a failure, never a skip). The registry and its keys through their life cycle
//! (`lifecycle`), named secrets (`secrets`), the ciphertext-update job's work queue (`jobs`), the
//! gateway's create-guard leases (`leases`), the key migration of issue 13 (`migration`) and the audit chain of issue 19 (`audit`); what
//! they share is in [`support`].
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod audit;
mod jobs;
mod leases;
mod lifecycle;
mod migration;
mod secrets;
mod support;
