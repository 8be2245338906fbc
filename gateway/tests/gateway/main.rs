//! The gateway's tests, one binary. Each module is what was once a test binary of its own, named
//! as it was: the router with a wiremock upstream (`app`, `read`, `faults`, `audit`, `auth`,
//! `cors`, the admin API's guard, `admin`, and its `/metrics`, `metrics`, searches on sealed
//! elements during a rotation of the blind-index secret, `rotation_search`), its parts (`config`, `headers`, `keys`,
//! `ctupdate`), the built binary run as a process (`cli`, `config_cli`, `policy_cli`, `smart_cli`,
//! `serve`), and the end-to-end tests against a real FHIR server, sekmet-fhir (`e2e_rest`,
//! `e2e_r4_examples`, `revocation`), and two `fhirseal serve` replicas on one PostgreSQL
//! (`replicas`). What they share is in [`support`]: the test issuer, its
//! tokens and key set, a gateway configured in a folder of its own, requests through a router,
//! and the sekmet-fhir harness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

mod admin;
mod app;
mod audit;
mod audit_chain;
mod audit_search;
mod auth;
mod break_glass;
mod cli;
mod config;
mod config_cli;
mod consent;
mod cors;
mod ctupdate;
mod e2e_r4_examples;
mod e2e_rest;
mod faults;
mod headers;
mod keys;
mod metrics;
mod policy_cli;
mod read;
mod replicas;
mod revocation;
mod rotation_search;
mod serve;
mod smart_cli;
mod support;
