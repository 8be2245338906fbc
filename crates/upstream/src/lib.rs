//! FHIRseal's only way to talk to the upstream FHIR server: a pooled HTTP client with
//! timeouts, retries for idempotent calls only, header hygiene, a response size cap, and the
//! gateway's own credential (none, a static bearer token, or OAuth 2.0 client credentials).
//!
//! # Brief overview
//! - [`RawUpstreamConfig`] is read by serde from the gateway's configuration; `TryFrom` turns it
//!   into an [`UpstreamConfig`] (URLs normalised, ranges checked, secrets read once).
//! - [`Upstream::new`] builds the client from it; [`Upstream::send`] takes an
//!   [`UpstreamRequest`] (method, path relative to the base, end-to-end headers, body) and
//!   returns an [`UpstreamResponse`] (status, end-to-end headers, body), or an
//!   [`UpstreamError`] when no complete response exists.
//! - [`rewrite_base`] moves absolute URLs from the upstream's base to the gateway's, for
//!   `Location` headers and Bundle `fullUrl`/`link` values.
//!
//! ```
//! use fhirseal_upstream::{RawUpstreamConfig, Upstream, UpstreamConfig, UpstreamRequest, rewrite_base};
//!
//! let raw: RawUpstreamConfig = serde_json::from_str(
//!     r#"{ "base_url": "https://fhir.internal/r4/", "max_retries": 1, "auth": { "kind": "none" } }"#,
//! )?;
//! let upstream = Upstream::new(UpstreamConfig::try_from(raw)?)?;
//! assert_eq!(upstream.base(), "https://fhir.internal/r4");
//!
//! async fn read_patient(upstream: &Upstream) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
//!     let request = UpstreamRequest::new(reqwest::Method::GET, "Patient/p1");
//!     let response = upstream.send(request).await?;
//!     Ok(response.body().to_vec())
//! }
//!
//! let location = rewrite_base("https://fhir.internal/r4/Patient/p1/_history/2", upstream.base(), "https://gw.example/fhir");
//! assert_eq!(location, "https://gw.example/fhir/Patient/p1/_history/2");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//! - A request never leaves the base URL: absolute URLs, dot segments (literal or encoded) and
//!   encoded slashes are refused before sending.
//! - The client's `Authorization`, its cookies and every hop-by-hop header (RFC 9110 §7.6.1,
//!   including those named in `Connection`) are dropped; redirects are not followed.
//! - `POST` and `PATCH` are sent once (except after a 401 with client credentials, which the
//!   upstream answers without processing the request); a lost answer is reported as
//!   [`UpstreamError::outcome_unknown`].
//! - A response body is never buffered past the cap.
//! - No error, log or `Debug` output holds a body, a token or a secret.
//!
//! # Non-goals
//! Streaming bodies (bulk `$export` NDJSON will need its own reader), following redirects,
//! HTTP proxies, and mutual TLS towards the upstream.

#![warn(missing_docs)]

mod auth;
mod client;
mod config;
mod error;
mod request;
mod rewrite;

pub use client::{Call, Observe, Upstream};
pub use config::{
    AuthStyle, ConfigError, RawAuth, RawUpstreamConfig, SecretString, UpstreamConfig,
};
pub use error::{AuthError, RequestError, TokenRefusal, UpstreamError};
pub use request::{UpstreamRequest, UpstreamResponse, retry_after};
pub use rewrite::rewrite_base;
