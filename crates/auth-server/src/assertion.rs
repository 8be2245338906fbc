//! Client authentication with a signed JWT assertion (RFC 7523, SMART
//! client-confidential-asymmetric and Backend Services).
//!
//! SMART (backend-services.md, "Authenticating to the Token endpoint"): the header has `alg`
//! RS384 or ES384, `kid`, and an optional `jku` that must be the registered JWKS URL; the claims
//! have `iss` = `sub` = the `client_id`, `aud` = the token endpoint URL, `exp` no more than five
//! minutes ahead, and a `jti` the server must not have seen within its lifetime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::jwt::Jws;
use crate::oauth::OAuthError;
use crate::state::{digest, now};
use crate::{AuthServer, ClientAuth, ClientConfig};

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The assertion algorithms accepted, exactly those SMART names.
pub(super) const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS384, Algorithm::ES384];

/// How far ahead an assertion's `exp` may be (SMART: five minutes), in seconds.
const MAX_LIFETIME: u64 = 300;
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
const LEEWAY: u64 = 30;
/// The longest `jti` accepted.
const MAX_JTI: usize = 256;

/// Fetched JWKS are kept this long.
const JWKS_TTL: Duration = Duration::from_secs(300);
/// A JWKS is fetched again for an unknown `kid` at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(10);
/// The largest JWKS document read.
const MAX_JWKS: usize = 64 * 1024;

/// JWKS fetched from clients' `jwks_uri`, by client id.
#[derive(Debug, Default)]
pub(super) struct JwksCache(Mutex<HashMap<String, Fetched>>);

/// One client's published keys.
#[derive(Clone, Debug)]
struct Fetched {
    /// The keys and when they were fetched, after the first successful fetch.
    jwks: Option<(Instant, JwkSet)>,
    /// When a fetch was last started, successful or not.
    attempted: Instant,
}

/// Authenticates the client that signed `assertion`: the registered `private_key_jwt` client.
/// Every failure is `invalid_client` with a fixed description.
pub(super) async fn authenticate<'s>(
    server: &'s AuthServer,
    assertion_type: Option<&str>,
    assertion: &str,
) -> Result<&'s ClientConfig, OAuthError> {
    if assertion_type != Some(JWT_BEARER) {
        return Err(OAuthError::invalid_client(
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ));
    }
    let Some(jws) = Jws::parse(assertion) else {
        return Err(OAuthError::invalid_client(
            "the client assertion is not a well-formed JWT",
        ));
    };
    let alg = jws.header.alg;
    if !ALGORITHMS.contains(&alg) {
        return Err(OAuthError::invalid_client(
            "the client assertion must be signed with RS384 or ES384",
        ));
    }
    let Some(kid) = jws.header.kid.as_deref() else {
        return Err(OAuthError::invalid_client(
            "the client assertion has no kid",
        ));
    };
    // The claimed issuer selects the registered client; the signature then proves it.
    let client =
        jws.str("iss")
            .and_then(|iss| server.client(iss))
            .ok_or(OAuthError::invalid_client(
                "the client assertion's issuer is not a registered client",
            ))?;
    let ClientAuth::PrivateKeyJwt { jwks, jwks_uri } = &client.auth else {
        return Err(OAuthError::invalid_client(
            "this client does not authenticate with an assertion",
        ));
    };
    if let Some(jku) = &jws.header.jku
        && jwks_uri.as_deref() != Some(jku.as_str())
    {
        return Err(OAuthError::invalid_client(
            "the assertion's jku is not the client's registered JWKS URL",
        ));
    }
    let key = match (jwks, jwks_uri) {
        (Some(jwks), _) => usable_key(jwks, kid, alg),
        (None, Some(uri)) => {
            server
                .jwks_cache
                .key(server, &client.client_id, uri, kid, alg)
                .await
        }
        (None, None) => None,
    };
    let Some(key) = key else {
        return Err(OAuthError::invalid_client(
            "the assertion's kid is not a registered key for its algorithm",
        ));
    };
    if !jws.verifies(&key, alg) {
        return Err(OAuthError::invalid_client(
            "the client assertion's signature does not verify",
        ));
    }
    check_claims(server, &jws, &client.client_id)?;
    Ok(client)
}

/// The claims of a verified assertion, and its `jti` recorded against replay.
fn check_claims(server: &AuthServer, jws: &Jws<'_>, client_id: &str) -> Result<(), OAuthError> {
    let now = now();
    if jws.str("sub") != Some(client_id) {
        return Err(OAuthError::invalid_client(
            "the assertion's sub must be the client_id",
        ));
    }
    if !jws.has_audience(&server.endpoints.token) {
        return Err(OAuthError::invalid_client(
            "the assertion's aud must be the token endpoint URL",
        ));
    }
    let Some(exp) = jws.seconds("exp") else {
        return Err(OAuthError::invalid_client("the assertion has no exp"));
    };
    if exp + LEEWAY <= now {
        return Err(OAuthError::invalid_client(
            "the client assertion has expired",
        ));
    }
    if exp > now + MAX_LIFETIME + LEEWAY {
        return Err(OAuthError::invalid_client(
            "the assertion's exp is more than five minutes ahead",
        ));
    }
    for name in ["nbf", "iat"] {
        match jws.claims.get(name) {
            None => {}
            Some(_) if jws.seconds(name).is_some_and(|t| t <= now + LEEWAY) => {}
            Some(_) => {
                return Err(OAuthError::invalid_client(
                    "the assertion's nbf or iat is in the future or malformed",
                ));
            }
        }
    }
    let Some(jti) = jws
        .str("jti")
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI)
    else {
        return Err(OAuthError::invalid_client(
            "the assertion needs a jti of 1 to 256 characters",
        ));
    };
    let key = digest(format!("{client_id}\0{jti}").as_bytes());
    let mut state = server.state();
    if state.jtis.get(&key, now).is_some() {
        return Err(OAuthError::invalid_client(
            "the assertion's jti was already used",
        ));
    }
    state
        .jtis
        .insert(key, exp + LEEWAY, (), now)
        .map_err(|_| OAuthError::unavailable("the store of used assertion ids is full"))
}

/// The key `kid` of `jwks` if it fits `alg`: RSA for RS384, EC P-384 for ES384, and its `alg`
/// and `use`, when given, agree.
fn usable_key(jwks: &JwkSet, kid: &str, alg: Algorithm) -> Option<DecodingKey> {
    let jwk: &Jwk = jwks.find(kid)?;
    let fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS384) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => {
            ec.curve == EllipticCurve::P384
        }
        _ => false,
    };
    let declared = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS384) => alg == Algorithm::RS384,
        Some(KeyAlgorithm::ES384) => alg == Algorithm::ES384,
        Some(_) => false,
    };
    let for_signing = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|u| *u == PublicKeyUse::Signature);
    if !(fits && declared && for_signing) {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok()
}

impl JwksCache {
    /// The key `kid` of the client's published JWKS: from the cache while fresh, fetched again
    /// when stale or when the `kid` is unknown, but at most every few seconds whatever the
    /// outcome (a stale set is not used when the fetch fails).
    async fn key(
        &self,
        server: &AuthServer,
        client_id: &str,
        uri: &str,
        kid: &str,
        alg: Algorithm,
    ) -> Option<DecodingKey> {
        {
            let mut cache = self.lock();
            if let Some(entry) = cache.get_mut(client_id) {
                if let Some((fetched, jwks)) = &entry.jwks
                    && fetched.elapsed() < JWKS_TTL
                    && let Some(key) = usable_key(jwks, kid, alg)
                {
                    return Some(key);
                }
                if entry.attempted.elapsed() < JWKS_REFETCH {
                    return None;
                }
                entry.attempted = Instant::now();
            } else {
                cache.insert(
                    client_id.to_string(),
                    Fetched {
                        jwks: None,
                        attempted: Instant::now(),
                    },
                );
            }
        }
        let jwks = fetch(&server.http, uri).await?;
        let key = usable_key(&jwks, kid, alg);
        if let Some(entry) = self.lock().get_mut(client_id) {
            entry.jwks = Some((Instant::now(), jwks));
        }
        key
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fetched>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// GETs a JWKS: a 200 JSON document of at most 64 KiB, within five seconds (the same bounded
/// exchange the resource side uses for issuers' keys).
async fn fetch(http: &reqwest::Client, uri: &str) -> Option<JwkSet> {
    let document = fhirseal_smart::verify::fetch::json(http.get(uri), MAX_JWKS).await?;
    serde_json::from_value(document).ok()
}
