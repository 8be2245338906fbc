//! Access-token verification: a request's bearer token to a [`Verified`] caller, or an
//! [`AuthError`] the gateway answers with 401.
//!
//! A [`Verifier`] takes the token from the `Authorization` header ([`Verifier::authenticate`],
//! RFC 6750 §2.1), refuses anything longer than `max_token_bytes` before decoding it, and then:
//!
//! - a JWT (three base64url parts) is routed by its `iss` to the [`IssuerConfig`] with exactly
//!   that issuer. Its header must not bring keys of its own (`jku`, `x5u`, `jwk`, `x5c`), its
//!   `alg` must be one the issuer allows and the one the key named by `kid` is pinned to (the
//!   JWK's `alg`, else the key type's), never `none` or HMAC. The signature is checked with the
//!   issuer's JWKS (fetched, cached, refreshed after `max_key_age`, refetched once when a `kid` is
//!   unknown but not more often than `min_refetch_interval`, one fetch at a time); then `exp`
//!   (required) and `nbf` with the issuer's leeway, and `aud`, which must name the gateway;
//! - any other token goes to the RFC 7662 introspection endpoint, if one is configured.
//!
//! The claims are then read by [`TokenContext::from_claims`] with the issuer's [`ClaimNames`].
//! A verified token is kept (by its SHA-256) until it expires, introspection results at most five
//! minutes, so a token is checked once, not on every request.
//!
//! Everything fails closed: a key set that cannot be fetched (and no keys at hand), an
//! unreachable introspection endpoint, any doubt, refuses the token.

mod cache;
mod error;
pub mod fetch;
mod introspect;
mod jwks;
mod jwt;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::Value;

use self::cache::{Cached, TokenCache};
pub use self::error::{AuthError, ConfigError};
use self::jwks::{IssuerKeys, Refresh};
use crate::{ClaimNames, TokenContext};

/// Where an issuer's public keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// Fetched from the issuer's `jwks_uri` (and refetched as keys rotate).
    Url(String),
    /// Given once; never refetched.
    Static(JwkSet),
}

/// An authorization server whose JWT access tokens are accepted.
#[derive(Clone, Debug)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// The accepted `aud` values (the gateway's FHIR base URL); empty refuses every token.
    pub audience: Vec<String>,
    /// Where the issuer's keys come from.
    pub keys: KeySource,
    /// The signature algorithms accepted; HMAC algorithms are refused by [`Verifier::new`].
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Where the issuer puts the patient, scopes and user in its tokens.
    pub claims: ClaimNames,
}

/// An RFC 7662 introspection endpoint, for opaque tokens.
#[derive(Clone)]
pub struct IntrospectionConfig {
    /// The endpoint's URL.
    pub endpoint: String,
    /// The gateway's client id at the authorization server.
    pub client_id: String,
    /// The gateway's client secret; if set, the gateway authenticates with HTTP Basic, else it
    /// sends `client_id` in the form.
    pub client_secret: Option<String>,
    /// Where the response puts the patient, scopes and user.
    pub claims: ClaimNames,
    /// If set, the response's `iss` must equal it.
    pub issuer: Option<String>,
    /// If the response has an `aud`, one of its values must be one of these.
    pub audience: Vec<String>,
}

/// How a [`Verifier`] verifies.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// The issuers of JWT access tokens.
    pub issuers: Vec<IssuerConfig>,
    /// The introspection endpoint for opaque tokens.
    pub introspection: Option<IntrospectionConfig>,
    /// Longer tokens are refused before they are decoded.
    pub max_token_bytes: usize,
    /// An unknown `kid` refetches an issuer's keys at most this often.
    pub min_refetch_interval: Duration,
    /// Keys older than this are refetched.
    pub max_key_age: Duration,
    /// How many verified tokens are kept (0: none).
    pub cache_entries: usize,
}

/// A verified access token: who is calling, with which scopes, in which launch context.
#[derive(Clone)]
pub struct Verified {
    /// The issuer (`iss`; for introspection, the response's `iss`, else the configured issuer,
    /// else the endpoint's URL).
    pub issuer: String,
    /// The subject (`sub`).
    pub subject: Option<String>,
    /// When the token expires (`exp`, seconds since the Unix epoch).
    pub expires_at: i64,
    /// The token's claims (or the introspection response).
    pub claims: Value,
    /// The caller, as the claims describe them.
    pub context: TokenContext,
}

/// Verifies bearer tokens. Cheap to clone: clones share keys and the verified-token cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    issuers: Vec<Issuer>,
    introspection: Option<IntrospectionConfig>,
    http: reqwest::Client,
    max_token_bytes: usize,
    refresh: Refresh,
    cache: TokenCache,
}

struct Issuer {
    config: IssuerConfig,
    keys: IssuerKeys,
}

/// How long an introspection result is trusted without asking again.
const INTROSPECTION_CACHE_SECONDS: i64 = 300;

// === impl IssuerConfig ===

impl IssuerConfig {
    /// An issuer with the default algorithms (RS256, RS384, ES256, ES384, EdDSA), a 30 s leeway
    /// and the default claim names.
    pub fn new(issuer: impl Into<String>, audience: Vec<String>, keys: KeySource) -> Self {
        Self {
            issuer: issuer.into(),
            audience,
            keys,
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ],
            leeway_seconds: 30,
            claims: ClaimNames::default(),
        }
    }
}

// === impl VerifierConfig ===

impl VerifierConfig {
    /// Verifying JWTs from `issuers`, with the default limits.
    pub fn new(issuers: Vec<IssuerConfig>) -> Self {
        Self {
            issuers,
            ..Self::default()
        }
    }
}

impl Default for VerifierConfig {
    /// No issuer, no introspection (which [`Verifier::new`] refuses); tokens up to 8 KiB, keys
    /// refetched at most every 30 s for an unknown `kid` and refreshed after an hour, 10,000
    /// verified tokens kept.
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            introspection: None,
            max_token_bytes: 8192,
            min_refetch_interval: Duration::from_secs(30),
            max_key_age: Duration::from_secs(3600),
            cache_entries: 10_000,
        }
    }
}

// === impl Verifier ===

impl Verifier {
    /// A verifier for `config`, fetching keys and introspecting with `http`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if nothing could be verified with the configuration, an issuer is empty,
    /// duplicated, allows no algorithm or an HMAC one, a URL is not https (http only to loopback)
    /// or carries credentials, a static key set has no usable key, or `max_token_bytes` is 0.
    pub fn new(config: VerifierConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        if config.issuers.is_empty() && config.introspection.is_none() {
            return Err(ConfigError::NothingToVerifyWith);
        }
        if config.max_token_bytes == 0 {
            return Err(ConfigError::NoTokenSize);
        }
        let mut issuers: Vec<Issuer> = Vec::with_capacity(config.issuers.len());
        for issuer in config.issuers {
            if issuers.iter().any(|i| i.config.issuer == issuer.issuer) {
                return Err(ConfigError::DuplicateIssuer {
                    issuer: issuer.issuer,
                });
            }
            let keys = issuer_keys(&issuer)?;
            issuers.push(Issuer {
                config: issuer,
                keys,
            });
        }
        if let Some(introspection) = &config.introspection {
            check_url(&introspection.endpoint, || "introspection endpoint".into())?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuers,
                introspection: config.introspection,
                http,
                max_token_bytes: config.max_token_bytes,
                refresh: Refresh {
                    min_interval: config.min_refetch_interval,
                    max_age: config.max_key_age,
                },
                cache: TokenCache::new(config.cache_entries),
            }),
        })
    }

    /// Verifies the token in an `Authorization` header value: `Bearer <token>` (RFC 6750 §2.1;
    /// the scheme is case-insensitive). A missing header is [`AuthError::Missing`], another
    /// scheme [`AuthError::NotBearer`].
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying why the request is refused.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<Verified>, AuthError> {
        let Some(value) = authorization else {
            return Err(AuthError::Missing);
        };
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        self.verify(token.trim_matches(|c| c == ' ' || c == '\t'))
            .await
    }

    /// Fetches the keys of every issuer whose keys come from a `jwks_uri` and are not at hand
    /// yet (at start-up, so that the first token of each does not wait for them): each issuer,
    /// in configuration order, with whether its keys are at hand now. A failure is not final:
    /// the first token of that issuer fetches again.
    pub async fn prefetch_keys(&self) -> Vec<(String, bool)> {
        let mut out = Vec::with_capacity(self.inner.issuers.len());
        for issuer in &self.inner.issuers {
            let ready = issuer.keys.prefetch(&self.inner.http).await;
            out.push((issuer.config.issuer.clone(), ready));
        }
        out
    }

    /// Verifies a bearer token.
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying why the token is refused.
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, AuthError> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Err(AuthError::Oversize);
        }
        if !jwt::is_b64token(token) {
            return Err(AuthError::Malformed);
        }
        let key = TokenCache::key(token);
        match inner.cache.get(&key, jwt::unix_now()) {
            Cached::Hit(verified) => return Ok(verified),
            Cached::Expired => return Err(AuthError::Expired),
            Cached::Miss => {}
        }
        let (verified, expires, stale) = if jwt::is_jws_shaped(token) && !inner.issuers.is_empty() {
            inner.verify_jwt(token).await?
        } else if let Some(introspection) = &inner.introspection {
            inner.introspect(introspection, token).await?
        } else {
            return Err(AuthError::Malformed);
        };
        let verified = Arc::new(verified);
        inner
            .cache
            .insert(key, Arc::clone(&verified), expires, stale, jwt::unix_now());
        Ok(verified)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field(
                "issuers",
                &self
                    .inner
                    .issuers
                    .iter()
                    .map(|i| (&i.config.issuer, &i.keys))
                    .collect::<Vec<_>>(),
            )
            .field("introspection", &self.inner.introspection)
            .field("max_token_bytes", &self.inner.max_token_bytes)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

/// A verified token, when it expires (leeway included), and when it must be checked again.
type Outcome = (Verified, i64, i64);

impl Inner {
    async fn verify_jwt(&self, token: &str) -> Result<Outcome, AuthError> {
        let jws = jwt::parse(token)?;
        let issuer = match jws.claims.get("iss") {
            Some(Value::String(iss)) => self.issuers.iter().find(|i| i.config.issuer == *iss),
            None => None,
            Some(_) => return Err(AuthError::Malformed),
        }
        .ok_or(AuthError::UnknownIssuer)?;
        let config = &issuer.config;
        if !config.algorithms.contains(&jws.alg) {
            return Err(AuthError::AlgorithmRefused);
        }
        issuer.keys.verify(&jws, &self.http, self.refresh).await?;
        let leeway = i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX);
        let exp = jwt::check_times(&jws.claims, leeway, jwt::unix_now())?;
        jwt::check_audience(jws.claims.get("aud"), &config.audience)?;
        let claims = Value::Object(jws.claims);
        let verified = verified(config.issuer.clone(), exp, claims, &config.claims)?;
        let expires = exp.saturating_add(leeway);
        Ok((verified, expires, expires))
    }

    async fn introspect(
        &self,
        config: &IntrospectionConfig,
        token: &str,
    ) -> Result<Outcome, AuthError> {
        let (claims, exp) = introspect::introspect(config, &self.http, token).await?;
        let issuer = match claims.get("iss").and_then(Value::as_str) {
            Some(iss) => iss.to_string(),
            None => config
                .issuer
                .clone()
                .unwrap_or_else(|| config.endpoint.clone()),
        };
        let verified = verified(issuer, exp, Value::Object(claims), &config.claims)?;
        let stale = jwt::unix_now().saturating_add(INTROSPECTION_CACHE_SECONDS);
        Ok((verified, exp, stale))
    }
}

fn verified(
    issuer: String,
    expires_at: i64,
    claims: Value,
    names: &ClaimNames,
) -> Result<Verified, AuthError> {
    let context = TokenContext::from_claims(&claims, names).map_err(AuthError::BadClaims)?;
    Ok(Verified {
        issuer,
        subject: claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string),
        expires_at,
        claims,
        context,
    })
}

fn issuer_keys(issuer: &IssuerConfig) -> Result<IssuerKeys, ConfigError> {
    let name = || issuer.issuer.clone();
    if issuer.issuer.is_empty() {
        return Err(ConfigError::EmptyIssuer);
    }
    if issuer.algorithms.is_empty() {
        return Err(ConfigError::NoAlgorithms { issuer: name() });
    }
    if issuer
        .algorithms
        .iter()
        .any(|alg| alg.family() == AlgorithmFamily::Hmac)
    {
        return Err(ConfigError::HmacAlgorithm { issuer: name() });
    }
    let allowed = issuer.algorithms.clone();
    match &issuer.keys {
        KeySource::Url(url) => {
            check_url(url, || format!("jwks_uri of `{}`", issuer.issuer))?;
            Ok(IssuerKeys::remote(url.clone(), allowed))
        }
        KeySource::Static(set) => serde_json::to_value(set)
            .ok()
            .and_then(|jwks| IssuerKeys::fixed(&jwks, allowed))
            .ok_or(ConfigError::NoUsableKeys { issuer: name() }),
    }
}

/// An absolute `https` URL, or `http` to a loopback host, without credentials.
fn check_url(text: &str, what: impl Fn() -> String) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadUrl { what: what() };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    if !is_https_or_loopback(&url)
        || url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad());
    }
    Ok(())
}

/// Whether `url` is `https`, or `http` to a loopback host (`localhost`, 127.0.0.0/8, `::1`):
/// the one rule for every URL tokens, keys or codes travel to, here and in the embedded
/// authorization server (`fhirseal-auth-server`).
pub fn is_https_or_loopback(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        // The url crate lower-cases domain hosts when it parses.
        "http" => match url.host() {
            Some(url::Host::Domain(name)) => name == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

// === Debug ===

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Url(url) => f.debug_tuple("Url").field(url).finish(),
            // Key material stays out of logs (a set may hold symmetric keys, which are ignored).
            Self::Static(set) => f
                .debug_struct("Static")
                .field("keys", &set.keys.len())
                .finish_non_exhaustive(),
        }
    }
}

impl fmt::Debug for IntrospectionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntrospectionConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Verified {
    /// Who and until when; the claims and context (which may name a patient) are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
