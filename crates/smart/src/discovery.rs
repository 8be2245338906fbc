//! The SMART discovery document (`[base]/.well-known/smart-configuration`) when the
//! authorization server is not the embedded one.
//!
//! SMART App Launch 2 requires the FHIR server to publish it, and an app reads it to find where
//! to log in. With an external server (Keycloak, Epic, an identity provider), the endpoints are
//! that server's: [`Discovery`] fetches the issuer's own discovery document
//! (`{issuer}/.well-known/smart-configuration`, else `{issuer}/.well-known/openid-configuration`),
//! keeps the issuer's endpoints and the grant and client-authentication facts from it, checks
//! that it names the configured issuer (a document for another issuer would send apps to log in
//! elsewhere), and states as `capabilities` only what the gateway enforces on its side. The
//! document is cached for an hour; a failed fetch keeps the last good one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::verify::{fetch, is_https_or_loopback};

/// How long a fetched document is served before it is fetched again.
pub const REFRESH: Duration = Duration::from_secs(3600);
/// The largest discovery document read.
const LIMIT: usize = 256 * 1024;

/// The members copied from the issuer's own document, when present.
const COPIED: [&str; 11] = [
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "introspection_endpoint",
    "revocation_endpoint",
    "registration_endpoint",
    "management_endpoint",
    "grant_types_supported",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "response_types_supported",
];

/// What the gateway itself enforces, whatever server issues the tokens.
const CAPABILITIES: [&str; 7] = [
    "launch-standalone",
    "client-public",
    "context-standalone-patient",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];

/// Why no discovery document can be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer's URL is not https (or http to loopback).
    #[error("the issuer {issuer} is not an https URL")]
    NotHttps {
        /// The issuer.
        issuer: String,
    },
    /// Neither discovery document could be fetched (transport error, status, not JSON, too
    /// large) and none was fetched before.
    #[error("the issuer's discovery document could not be fetched")]
    Unavailable,
    /// The document names another issuer, or lacks the authorization or token endpoint.
    #[error("the issuer's discovery document is not usable: {0}")]
    Unusable(&'static str),
}

/// The discovery document of an external issuer, fetched and cached; see the module docs.
pub struct Discovery {
    issuer: String,
    http: reqwest::Client,
    cached: Mutex<Option<(Value, Instant)>>,
}

impl Discovery {
    /// Discovery for `issuer`, fetched with `http`.
    pub fn new(issuer: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            issuer: issuer.into(),
            http,
            cached: Mutex::new(None),
        }
    }

    /// The SMART configuration to publish: fresh from the cache, or fetched.
    ///
    /// # Errors
    /// [`DiscoveryError`] when nothing usable was ever fetched.
    pub async fn document(&self) -> Result<Value, DiscoveryError> {
        let now = Instant::now();
        let stale = {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            match &*cached {
                Some((document, at)) if now.duration_since(*at) < REFRESH => {
                    return Ok(document.clone());
                }
                Some((document, _)) => Some(document.clone()),
                None => None,
            }
        };
        match self.fetch().await {
            Ok(document) => {
                *self.cached.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((document.clone(), now));
                Ok(document)
            }
            Err(error) => stale.ok_or(error),
        }
    }

    async fn fetch(&self) -> Result<Value, DiscoveryError> {
        let issuer = self.issuer.trim_end_matches('/');
        let parsed = url::Url::parse(issuer).map_err(|_| DiscoveryError::NotHttps {
            issuer: self.issuer.clone(),
        })?;
        if !is_https_or_loopback(&parsed) {
            return Err(DiscoveryError::NotHttps {
                issuer: self.issuer.clone(),
            });
        }
        for name in ["smart-configuration", "openid-configuration"] {
            let url = format!("{issuer}/.well-known/{name}");
            if let Some(document) = fetch::json(self.http.get(&url), LIMIT).await {
                return self.derive(&document);
            }
        }
        Err(DiscoveryError::Unavailable)
    }

    /// The published document from the issuer's own.
    fn derive(&self, theirs: &Value) -> Result<Value, DiscoveryError> {
        // OpenID documents must name their issuer; SMART ones should. Either way it must be ours.
        match theirs.get("issuer").and_then(Value::as_str) {
            Some(named) if named.trim_end_matches('/') != self.issuer.trim_end_matches('/') => {
                return Err(DiscoveryError::Unusable("it names another issuer"));
            }
            _ => {}
        }
        let mut out = Map::new();
        out.insert("issuer".into(), json!(self.issuer));
        for key in COPIED {
            if let Some(value) = theirs.get(key) {
                out.insert(key.into(), value.clone());
            }
        }
        for key in ["authorization_endpoint", "token_endpoint"] {
            let usable = out
                .get(key)
                .and_then(Value::as_str)
                .and_then(|u| url::Url::parse(u).ok())
                .is_some_and(|u| is_https_or_loopback(&u));
            if !usable {
                return Err(DiscoveryError::Unusable(
                    "it lacks an https authorization or token endpoint",
                ));
            }
        }
        out.insert("code_challenge_methods_supported".into(), json!(["S256"]));
        let mut capabilities: Vec<Value> = CAPABILITIES.iter().map(|c| json!(c)).collect();
        let asymmetric = theirs
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v == "private_key_jwt"));
        if asymmetric {
            capabilities.push(json!("client-confidential-asymmetric"));
        }
        let symmetric = theirs
            .get("token_endpoint_auth_methods_supported")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|v| v == "client_secret_basic"));
        if symmetric {
            capabilities.push(json!("client-confidential-symmetric"));
        }
        out.insert("capabilities".into(), Value::Array(capabilities));
        Ok(Value::Object(out))
    }
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}
