//! The authorization server's configuration: what the operator writes ([`RawServerConfig`],
//! unknown keys refused) and the checked [`ServerConfig`] built from it.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use argon2::PasswordHash;
use fhirseal_fhir::request::is_fhir_id;
use fhirseal_smart::scope::{Scope, Scopes};
use fhirseal_smart::verify::is_https_or_loopback;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::ServerError;
use crate::throttle::{LoginThrottle, RawLoginThrottle};

/// The embedded authorization server's configuration.
///
/// Built from a [`RawServerConfig`] with `TryFrom`; [`AuthServer::new`](crate::AuthServer::new)
/// checks a hand-built one the same way.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The issuer, absolute and without a trailing slash (`http://127.0.0.1:8080/auth`); the
    /// endpoints are `{issuer}/authorize`, `/token`, `/jwks` and `/introspect`.
    pub issuer: String,
    /// The FHIR base URL: the `aud` apps must send, and that tokens carry.
    pub fhir_base: String,
    /// Who may sign in.
    pub users: Vec<UserConfig>,
    /// The registered apps.
    pub clients: Vec<ClientConfig>,
    /// Lifetime of access tokens issued to users (default 1 h).
    pub access_token_lifetime: Duration,
    /// Lifetime of access tokens issued to backend services (default 300 s, as SMART recommends).
    pub backend_token_lifetime: Duration,
    /// Lifetime of refresh tokens, renewed at each use (default 30 days).
    pub refresh_token_lifetime: Duration,
    /// Lifetime of authorization codes (default 60 s).
    pub code_lifetime: Duration,
    /// How sign-in failures are throttled and locked out.
    pub login_throttle: LoginThrottle,
}

/// A user who may sign in. `Debug` leaves the password hash out.
#[derive(Clone)]
pub struct UserConfig {
    /// The name typed on the login form.
    pub username: String,
    /// An argon2 PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
    pub password_hash: String,
    /// The user's FHIR resource (`Practitioner/dr-house`, `Patient/123`): the `fhirUser` claim.
    pub fhir_user: String,
    /// For patient users, their Patient id (`123`): the patient in context when one is needed.
    /// Defaults to the id of a `Patient/…` `fhir_user`.
    pub patient: Option<String>,
    /// Extra claims copied into the user's access tokens (`practitioner_roles`, …); the
    /// registered and SMART claim names are refused.
    pub claims: Map<String, Value>,
}

/// How a client authenticates at the token endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientAuth {
    /// A public client (a browser or native app): `client_id` only, PKCE protects the code.
    Public,
    /// A confidential client signing a JWT assertion (SMART asymmetric client authentication):
    /// its public keys by value or at a URL, exactly one of them.
    PrivateKeyJwt {
        /// The keys, registered by value.
        jwks: Option<JwkSet>,
        /// Where its keys are published (`https://…`, or `http://` on a loopback address).
        jwks_uri: Option<String>,
    },
}

/// A registered app.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientConfig {
    /// Its `client_id`.
    pub client_id: String,
    /// Its name, shown on the consent page.
    pub name: String,
    /// The redirect URIs it may use, compared exactly; empty for a backend service.
    pub redirect_uris: Vec<String>,
    /// How it authenticates.
    pub auth: ClientAuth,
    /// The most it may be granted.
    pub allowed_scopes: Scopes,
}

/// The configuration as written (TOML or JSON); unknown keys are refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerConfig {
    /// See [`ServerConfig::issuer`].
    pub issuer: String,
    /// See [`ServerConfig::fhir_base`].
    pub fhir_base: String,
    /// Who may sign in.
    #[serde(default)]
    pub users: Vec<RawUserConfig>,
    /// The registered apps.
    #[serde(default)]
    pub clients: Vec<RawClientConfig>,
    /// In seconds, 1 to 86 400 (default 3 600).
    pub access_token_lifetime_seconds: Option<u64>,
    /// In seconds, 1 to 3 600 (default 300).
    pub backend_token_lifetime_seconds: Option<u64>,
    /// In seconds, 1 to 31 536 000 (default 2 592 000, 30 days).
    pub refresh_token_lifetime_seconds: Option<u64>,
    /// In seconds, 1 to 600 (default 60).
    pub code_lifetime_seconds: Option<u64>,
    /// See [`ServerConfig::login_throttle`]; every key optional.
    #[serde(default)]
    pub login_throttle: RawLoginThrottle,
}

/// A user as written. `Debug` leaves the password hash out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUserConfig {
    /// See [`UserConfig::username`].
    pub username: String,
    /// See [`UserConfig::password_hash`].
    pub password_hash: String,
    /// See [`UserConfig::fhir_user`].
    pub fhir_user: String,
    /// A Patient id (`123` or `Patient/123`); see [`UserConfig::patient`].
    pub patient: Option<String>,
    /// See [`UserConfig::claims`].
    #[serde(default)]
    pub claims: Map<String, Value>,
}

/// A client as written, with RFC 7591 client-metadata names.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientConfig {
    /// See [`ClientConfig::client_id`].
    pub client_id: String,
    /// See [`ClientConfig::name`].
    pub client_name: String,
    /// See [`ClientConfig::redirect_uris`].
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// `none` (a public client) or `private_key_jwt`.
    pub token_endpoint_auth_method: String,
    /// The client's public keys, for `private_key_jwt`.
    pub jwks: Option<JwkSet>,
    /// Where the client publishes its keys, for `private_key_jwt`.
    pub jwks_uri: Option<String>,
    /// The scopes it may be granted, space-separated.
    pub scope: String,
}

impl TryFrom<RawServerConfig> for ServerConfig {
    type Error = ServerError;

    fn try_from(raw: RawServerConfig) -> Result<Self, ServerError> {
        let users = raw
            .users
            .into_iter()
            .map(|u| UserConfig {
                username: u.username,
                password_hash: u.password_hash,
                fhir_user: u.fhir_user,
                patient: u.patient,
                claims: u.claims,
            })
            .collect();
        let clients = raw
            .clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| client(i, c))
            .collect::<Result<_, _>>()?;
        let seconds =
            |value: Option<u64>, default: u64| Duration::from_secs(value.unwrap_or(default));
        checked(Self {
            issuer: raw.issuer,
            fhir_base: raw.fhir_base,
            users,
            clients,
            access_token_lifetime: seconds(raw.access_token_lifetime_seconds, 3_600),
            backend_token_lifetime: seconds(raw.backend_token_lifetime_seconds, 300),
            refresh_token_lifetime: seconds(raw.refresh_token_lifetime_seconds, 30 * 86_400),
            code_lifetime: seconds(raw.code_lifetime_seconds, 60),
            login_throttle: raw.login_throttle.resolve()?,
        })
    }
}

fn client(index: usize, raw: RawClientConfig) -> Result<ClientConfig, ServerError> {
    let key = |field: &str| format!("clients[{index}].{field}");
    let auth = match raw.token_endpoint_auth_method.as_str() {
        "none" => {
            if raw.jwks.is_some() || raw.jwks_uri.is_some() {
                return Err(invalid(key("jwks"), "is for private_key_jwt clients only"));
            }
            ClientAuth::Public
        }
        "private_key_jwt" => ClientAuth::PrivateKeyJwt {
            jwks: raw.jwks,
            jwks_uri: raw.jwks_uri,
        },
        _ => {
            return Err(invalid(
                key("token_endpoint_auth_method"),
                "must be `none` or `private_key_jwt`",
            ));
        }
    };
    let allowed_scopes = Scopes::parse(&raw.scope)
        .map_err(|_| invalid(key("scope"), "is not a valid SMART scope list"))?;
    Ok(ClientConfig {
        client_id: raw.client_id,
        name: raw.client_name,
        redirect_uris: raw.redirect_uris,
        auth,
        allowed_scopes,
    })
}

/// The configuration with its invariants checked and its URLs and patient ids normalised.
pub(super) fn checked(mut config: ServerConfig) -> Result<ServerConfig, ServerError> {
    config.issuer = base_url(&config.issuer, "issuer")?;
    config.fhir_base = base_url(&config.fhir_base, "fhir_base")?;
    bounded(
        config.access_token_lifetime,
        86_400,
        "access_token_lifetime_seconds",
    )?;
    bounded(
        config.backend_token_lifetime,
        3_600,
        "backend_token_lifetime_seconds",
    )?;
    bounded(
        config.refresh_token_lifetime,
        31_536_000,
        "refresh_token_lifetime_seconds",
    )?;
    bounded(config.code_lifetime, 600, "code_lifetime_seconds")?;
    crate::throttle::check(&config.login_throttle)?;
    let mut names = HashSet::new();
    for (i, user) in config.users.iter_mut().enumerate() {
        check_user(i, user)?;
        if !names.insert(user.username.clone()) {
            return Err(invalid(
                format!("users[{i}].username"),
                "repeats an earlier user name",
            ));
        }
    }
    let mut ids = HashSet::new();
    for (i, client) in config.clients.iter().enumerate() {
        check_client(i, client)?;
        if !ids.insert(client.client_id.clone()) {
            return Err(invalid(
                format!("clients[{i}].client_id"),
                "repeats an earlier client id",
            ));
        }
    }
    Ok(config)
}

/// Claims the server sets itself; a user's extra claims may not override them.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "scp",
    "client_id",
    "azp",
    "fhirUser",
    "patient",
    "encounter",
    "fhirContext",
    "nonce",
    "auth_time",
    "need_patient_banner",
    "active",
    "token_type",
];

/// Resource types a `fhirUser` may name (SMART App Launch, scopes-and-launch-context).
const USER_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "RelatedPerson",
    "Person",
];

fn check_user(i: usize, user: &mut UserConfig) -> Result<(), ServerError> {
    let key = |field: &str| format!("users[{i}].{field}");
    if !is_name(&user.username, 128) {
        return Err(invalid(
            key("username"),
            "must be 1 to 128 visible characters, without surrounding spaces",
        ));
    }
    check_password_hash(&user.password_hash)
        .map_err(|problem| invalid(key("password_hash"), problem))?;
    let Some((kind, id)) = user.fhir_user.split_once('/') else {
        return Err(invalid(
            key("fhir_user"),
            "must be `Type/id`, e.g. `Practitioner/123`",
        ));
    };
    if !USER_TYPES.contains(&kind) || !is_fhir_id(id) {
        return Err(invalid(
            key("fhir_user"),
            "must be `Type/id` with Type one of Patient, Practitioner, PractitionerRole, RelatedPerson, Person",
        ));
    }
    let own = (kind == "Patient").then(|| id.to_string());
    user.patient = match (user.patient.take(), own) {
        (None, own) => own,
        (Some(patient), own) => {
            let id = patient.strip_prefix("Patient/").unwrap_or(&patient);
            if !is_fhir_id(id) {
                return Err(invalid(key("patient"), "must be a Patient id"));
            }
            if own.as_deref().is_some_and(|own| own != id) {
                return Err(invalid(
                    key("patient"),
                    "differs from the patient of fhir_user",
                ));
            }
            Some(id.to_string())
        }
    };
    if let Some(name) = user
        .claims
        .keys()
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
    {
        return Err(invalid(
            format!("users[{i}].claims.{name}"),
            "is set by the server and cannot be configured",
        ));
    }
    Ok(())
}

/// Argon2 PHC strings whose verification costs at most 1 GiB and 64 passes.
fn check_password_hash(hash: &str) -> Result<(), &'static str> {
    let parsed = PasswordHash::new(hash).map_err(|_| "is not a PHC string")?;
    argon2::Algorithm::try_from(parsed.algorithm).map_err(|_| "is not an argon2 hash")?;
    let params = argon2::Params::try_from(&parsed).map_err(|_| "has invalid argon2 parameters")?;
    if params.m_cost() > 1 << 20 || params.t_cost() > 64 || params.p_cost() > 16 {
        return Err("costs too much to verify (at most m=1048576, t=64, p=16)");
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("has no salt or no hash");
    }
    Ok(())
}

fn check_client(i: usize, client: &ClientConfig) -> Result<(), ServerError> {
    let key = |field: &str| format!("clients[{i}].{field}");
    if !is_name(&client.client_id, 128) || client.client_id.contains(' ') {
        return Err(invalid(
            key("client_id"),
            "must be 1 to 128 visible characters without spaces",
        ));
    }
    if client.name.trim().is_empty()
        || client.name.len() > 200
        || client.name.chars().any(char::is_control)
    {
        return Err(invalid(key("name"), "must be 1 to 200 characters"));
    }
    for (j, uri) in client.redirect_uris.iter().enumerate() {
        check_redirect_uri(uri)
            .map_err(|problem| invalid(format!("clients[{i}].redirect_uris[{j}]"), problem))?;
    }
    if client.allowed_scopes.iter().next().is_none() {
        return Err(invalid(key("scope"), "must allow at least one scope"));
    }
    if client.allowed_scopes.iter().any(|s| *s == Scope::Launch) {
        return Err(invalid(
            key("scope"),
            "holds `launch`: the EHR launch is not supported",
        ));
    }
    match &client.auth {
        ClientAuth::Public if client.redirect_uris.is_empty() => Err(invalid(
            key("redirect_uris"),
            "must hold a redirect URI for a public client",
        )),
        ClientAuth::Public => Ok(()),
        ClientAuth::PrivateKeyJwt {
            jwks: Some(_),
            jwks_uri: Some(_),
        }
        | ClientAuth::PrivateKeyJwt {
            jwks: None,
            jwks_uri: None,
        } => Err(invalid(
            key("jwks"),
            "a private_key_jwt client has exactly one of jwks and jwks_uri",
        )),
        ClientAuth::PrivateKeyJwt {
            jwks: Some(jwks), ..
        } => check_jwks(jwks).map_err(|problem| invalid(key("jwks"), problem)),
        ClientAuth::PrivateKeyJwt {
            jwks_uri: Some(uri),
            ..
        } => {
            let url = Url::parse(uri).map_err(|_| invalid(key("jwks_uri"), "is not a URL"))?;
            if !is_https_or_loopback(&url) {
                return Err(invalid(
                    key("jwks_uri"),
                    "must be https (http only on a loopback address)",
                ));
            }
            Ok(())
        }
    }
}

/// Registered keys: each with a `kid`, RSA or EC P-256/P-384; no symmetric keys.
fn check_jwks(jwks: &JwkSet) -> Result<(), &'static str> {
    if jwks.keys.is_empty() {
        return Err("holds no key");
    }
    for jwk in &jwks.keys {
        if jwk.common.key_id.as_deref().is_none_or(str::is_empty) {
            return Err("holds a key without `kid`");
        }
        match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => {}
            AlgorithmParameters::EllipticCurve(ec)
                if matches!(ec.curve, EllipticCurve::P256 | EllipticCurve::P384) => {}
            _ => return Err("holds a key that is neither RSA nor EC P-256/P-384"),
        }
    }
    Ok(())
}

fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    let url = Url::parse(uri).map_err(|_| "is not an absolute URL")?;
    if url.fragment().is_some() {
        return Err("must not hold a fragment (RFC 6749 §3.1.2)");
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_https_or_loopback(&url) => Ok(()),
        "http" => Err("must be https (http only on a loopback address)"),
        "javascript" | "data" | "file" | "vbscript" | "about" | "blob" | "ftp" | "ws" | "wss" => {
            Err("has a scheme that cannot be a redirect URI")
        }
        // A native app's private-use scheme (RFC 8252 §7.1).
        _ => Ok(()),
    }
}

/// An absolute http(s) URL without query, fragment or credentials, its trailing slash removed.
fn base_url(value: &str, key: &str) -> Result<String, ServerError> {
    let url = Url::parse(value).map_err(|_| invalid(key.to_string(), "is not an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(invalid(
            key.to_string(),
            "must be an http(s) URL without query, fragment or credentials",
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

fn bounded(value: Duration, max_seconds: u64, key: &str) -> Result<(), ServerError> {
    if value.as_secs() == 0 || value.as_secs() > max_seconds {
        return Err(invalid(key.to_string(), "is out of range"));
    }
    Ok(())
}

fn is_name(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value.trim() == value
        && !value.chars().any(char::is_control)
}

fn invalid(key: String, problem: &'static str) -> ServerError {
    ServerError::InvalidConfig { key, problem }
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("fhir_user", &self.fhir_user)
            .field("patient", &self.patient)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RawUserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawUserConfig")
            .field("username", &self.username)
            .field("fhir_user", &self.fhir_user)
            .finish_non_exhaustive()
    }
}
