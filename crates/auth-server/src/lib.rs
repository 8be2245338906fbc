//! FHIRseal's embedded OAuth 2 / SMART App Launch 2 authorization server, for deployments without
//! an external one: it signs users in, issues the access tokens that
//! [`fhirseal_smart::Verifier`] checks, and publishes the SMART configuration that describes it.
//!
//! # Brief overview
//!
//! - [`ServerConfig`] (from a [`RawServerConfig`] read from TOML or JSON, unknown keys refused):
//!   the issuer URL, the FHIR base URL apps ask for (`aud`), the users who may sign in (argon2
//!   password hashes, `fhirUser`, extra claims such as `practitioner_roles`) and the registered
//!   apps (public, or `private_key_jwt` with their keys), with token lifetimes.
//! - [`SigningKey`]: the RS256 key tokens are signed with, kept sealed in the attribute
//!   authority's store ([`SigningKey::load_or_create`]) so that it survives restarts and is shared
//!   by replicas.
//! - [`AuthServer`]: the endpoints, as an [`axum::Router`] to mount at the issuer's
//!   path: `/authorize` (GET and POST; a plain HTML login and consent form, posting to
//!   `/login`), `/token` (authorization code with PKCE S256, rotating refresh tokens, client
//!   credentials for SMART Backend Services), `/jwks`, `/introspect` and
//!   `/.well-known/openid-configuration`. [`AuthServer::smart_configuration`] is the document the
//!   gateway serves at `{fhir_base}/.well-known/smart-configuration`, and
//!   [`AuthServer::issuer_config`] is how the gateway's [`fhirseal_smart::Verifier`] trusts it.
//!
//! The scope grammar (what a client may ask for, what a grant holds) is
//! [`fhirseal_smart::Scopes`], the same that the gateway enforces.
//!
//! # Login throttling
//!
//! Sign-in failures count against the user name typed and against the source address
//! ([`LoginThrottle`], `login_throttle` in the configuration). With the defaults: from the fifth
//! failure of a user name on, each further attempt must wait 1, 2, 4, … seconds (at most 60)
//! after the last failure; the twentieth locks the name for 15 minutes, during which even the
//! right password is refused; a success clears the count. A source (the connection's address,
//! IPv6 by its /64, or behind `trusted_proxies` the client that `X-Forwarded-For` names) is
//! backed off from its twentieth failure and locked at its two hundredth. A refused attempt
//! gets the login page again with `429 Too Many Requests` and `Retry-After`, and runs no argon2.
//! User names no user has are counted, backed off and locked exactly alike, so the answers never
//! tell whether a name exists. [`AuthServer::unlock`] (and [`AuthServer::unlock_source`]) is
//! how an administrator lifts a lockout before it ends; [`AuthServer::login_stats`] counts what
//! is tracked. Each `/login` answer that checked credentials, or refused to, carries a
//! [`LoginAudit`] in its extensions (the user name, the result, the source; never the password)
//! for the gateway's audit line. The tables are bounded (`max_tracked` user names and as many
//! sources): when full, counts that ran out are swept, then those that tell least go first, so a
//! flood of fresh names or addresses neither grows memory nor lifts a lockout. Time is read from
//! a [`Clock`] ([`AuthServer::with_clock`]), so that tests move it instead of waiting. The
//! server needs the peer address as axum's `ConnectInfo<SocketAddr>` (serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()`); without it only user names count.
//!
//! ```
//! use std::sync::Arc;
//! use fhirseal_auth_server::{AuthServer, RawServerConfig, ServerConfig, SigningKey};
//!
//! let raw: RawServerConfig = serde_json::from_value(serde_json::json!({
//!     "issuer": "http://127.0.0.1:8080/auth",
//!     "fhir_base": "http://127.0.0.1:8080/fhir",
//!     "clients": [{
//!         "client_id": "growth-chart",
//!         "client_name": "Growth chart",
//!         "redirect_uris": ["http://127.0.0.1:9000/callback"],
//!         "token_endpoint_auth_method": "none",
//!         "scope": "openid fhirUser launch/patient patient/*.rs offline_access"
//!     }]
//! }))?;
//! let server = Arc::new(AuthServer::new(ServerConfig::try_from(raw)?, SigningKey::generate()?, reqwest::Client::new())?);
//! let document = server.smart_configuration();
//! assert_eq!(document["token_endpoint"], "http://127.0.0.1:8080/auth/token");
//! let _app: axum::Router = server.router(); // nest it at the issuer's path, `/auth`
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - PKCE S256 is mandatory (`plain` refused), redirect URIs match exactly, codes are single-use
//!   (a replay revokes what was issued from the code), refresh tokens rotate (a replay of a
//!   rotated one revokes the grant), client assertions are RS384/ES384 only and their `jti`s
//!   are never accepted twice within their lifetime.
//! - Codes, refresh tokens, login-request tokens and cookies are random 256-bit values from the
//!   OS, and only their SHA-256 is kept.
//! - OAuth errors are RFC 6749 JSON with fixed descriptions; no token, key, password or hash
//!   reaches an error, a page or a `Debug` output. Every echoed value on a page is escaped.
//!
//! # Non-goals
//!
//! No EHR launch (`launch` is refused), no client secrets, no dynamic registration, no
//! sessions (every authorization signs in). Pending authorizations, codes, refresh tokens, seen
//! `jti`s, revocations and sign-in failure counts live in this process's memory (bounded, with
//! expiry; each replica throttles on its own counts): replicas behind a
//! load balancer would need them shared, or sticky routing for `/authorize`, `/login` and
//! `/token`; a restart forgets them (users sign in again). Access tokens are self-contained JWTs:
//! a revocation shows at introspection, not to a resource server verifying them locally.
#![warn(missing_docs)]

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use fhirseal_smart::scope::Scope;
use fhirseal_smart::verify::{IssuerConfig, KeySource};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

mod assertion;
mod authorize;
mod config;
mod introspect;
mod jwt;
mod key;
mod oauth;
mod page;
mod scopes;
mod state;
mod throttle;
mod token;

pub use config::{
    ClientAuth, ClientConfig, RawClientConfig, RawServerConfig, RawUserConfig, ServerConfig,
    UserConfig,
};
pub use key::SigningKey;
pub use throttle::{
    Clock, LoginAudit, LoginResult, LoginStats, LoginThrottle, RawLoginThrottle, SystemClock,
    ThrottledBy,
};

/// An argon2id PHC string for `password`, for a user's `password_hash` in the server's
/// configuration: argon2's recommended parameters (19 MiB, 2 passes), a random 128-bit salt.
///
/// # Errors
///
/// [`ServerError::PasswordHash`] if the password is empty or longer than 1,024 bytes.
pub fn hash_password(password: &str) -> Result<String, ServerError> {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;
    if password.is_empty() || password.len() > 1024 {
        return Err(ServerError::PasswordHash);
    }
    let salt = SaltString::generate(&mut rand_core::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| ServerError::PasswordHash)
}

use self::assertion::JwksCache;
use self::jwt::Jws;
use self::oauth::json_no_store;
use self::state::{Grant, State as Memory, random_id};
use self::throttle::Throttle;

/// Why the authorization server cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A configuration value is invalid; `key` is its path (`clients[2].redirect_uris[0]`).
    #[error("authorization server configuration: `{key}` {problem}")]
    InvalidConfig {
        /// Where, as a path into the configuration.
        key: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A new RSA signing key could not be generated.
    #[error("the authorization server's signing key could not be generated")]
    KeyGeneration,
    /// Key bytes are not an RSA private key of at least 2048 bits in PKCS#8 DER.
    #[error("the authorization server's signing key is not an RSA (2048 bits or more) PKCS#8 key")]
    KeyRejected,
    /// The authority storing the signing key failed (its store, its key-encryption key).
    #[error(transparent)]
    Authority(#[from] fhirseal_authority::Error),
    /// A token could not be signed.
    #[error("a token could not be signed")]
    Signing,
    /// A password could not be hashed: it is empty or longer than 1,024 bytes.
    #[error("a password must have 1 to 1,024 bytes")]
    PasswordHash,
}

/// The embedded authorization server. Build it once, share it in an [`Arc`], mount
/// [`AuthServer::router`] at the issuer's path.
pub struct AuthServer {
    config: ServerConfig,
    key: SigningKey,
    /// The signing key's public half, to verify our own tokens at introspection.
    public_key: DecodingKey,
    http: reqwest::Client,
    endpoints: Endpoints,
    scopes_supported: Vec<String>,
    memory: Mutex<Memory>,
    jwks_cache: JwksCache,
    /// Bounds concurrent argon2 verifications (memory-hard: about 19 MiB each by default).
    argon2: Semaphore,
    /// Sign-in failures per user name and per source: back-off and lockout.
    throttle: Throttle,
}

/// The absolute endpoint URLs, and the path login cookies are scoped to.
#[derive(Debug)]
struct Endpoints {
    authorize: String,
    token: String,
    jwks: String,
    introspect: String,
    cookie_path: String,
}

impl AuthServer {
    /// The server for `config` (checked again here, as for [`ServerConfig::try_from`]), signing
    /// with `key`; `http` fetches clients' published JWKS.
    pub fn new(
        config: ServerConfig,
        key: SigningKey,
        http: reqwest::Client,
    ) -> Result<Self, ServerError> {
        let config = config::checked(config)?;
        let config_throttle = config.login_throttle.clone();
        let issuer = &config.issuer;
        let cookie_path = url::Url::parse(issuer)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let endpoints = Endpoints {
            authorize: format!("{issuer}/authorize"),
            token: format!("{issuer}/token"),
            jwks: format!("{issuer}/jwks"),
            introspect: format!("{issuer}/introspect"),
            cookie_path: if cookie_path.is_empty() {
                "/".into()
            } else {
                cookie_path
            },
        };
        let (n, e) = key.components();
        let public_key =
            DecodingKey::from_rsa_components(n, e).map_err(|_| ServerError::KeyRejected)?;
        let mut scopes_supported: Vec<String> = [
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
            "online_access",
        ]
        .into_iter()
        .map(str::to_string)
        .collect();
        for scope in config.clients.iter().flat_map(|c| c.allowed_scopes.iter()) {
            let text = scope.to_string();
            if !scopes_supported.contains(&text) && !matches!(scope, Scope::Other(_)) {
                scopes_supported.push(text);
            }
        }
        Ok(Self {
            config,
            key,
            public_key,
            http,
            endpoints,
            scopes_supported,
            memory: Mutex::new(Memory::new()),
            jwks_cache: JwksCache::default(),
            argon2: Semaphore::new(4),
            throttle: Throttle::new(config_throttle),
        })
    }

    /// This server with the login throttle reading the time from `clock` (the system's by
    /// default): tests move it forward instead of waiting out a lockout.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.throttle.set_clock(clock);
        self
    }

    /// Lifts the lockout or back-off of the user name `username` and forgets its failures,
    /// whether or not a user has that name: what an administrator does for a user locked out
    /// (the audit line of the failure that locked it names it, `"result":"lockout"`). Whether
    /// there was anything to lift. The source addresses the failures came from keep their own
    /// counts ([`AuthServer::unlock_source`]).
    pub fn unlock(&self, username: &str) -> bool {
        self.throttle.unlock_user(username)
    }

    /// Lifts the lockout or back-off of the source address `source` (for IPv6, of its /64) and
    /// forgets its failures; whether there was anything to lift.
    pub fn unlock_source(&self, source: std::net::IpAddr) -> bool {
        self.throttle.unlock_source(source)
    }

    /// How many user names and sources the login throttle tracks and has locked, and how many
    /// passwords were checked.
    pub fn login_stats(&self) -> LoginStats {
        self.throttle.stats()
    }

    /// The endpoints, relative to the issuer's path: `/authorize` (GET, POST), `/login` (the
    /// login form's target), `/token`, `/jwks`, `/introspect` and
    /// `/.well-known/openid-configuration`. Request bodies are limited to 64 KiB.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/authorize", get(authorize::get).post(authorize::post))
            .route("/login", post(authorize::login))
            .route("/token", post(token::handle))
            .route("/jwks", get(jwks))
            .route("/introspect", post(introspect::handle))
            .route(
                "/.well-known/openid-configuration",
                get(openid_configuration),
            )
            .layer(DefaultBodyLimit::max(64 * 1024))
            .with_state(self)
    }

    /// The SMART configuration (conformance.md), which the gateway serves at
    /// `{fhir_base}/.well-known/smart-configuration`. `capabilities` lists exactly what this
    /// server enforces.
    pub fn smart_configuration(&self) -> Value {
        let e = &self.endpoints;
        json!({
            "issuer": self.config.issuer,
            "jwks_uri": e.jwks,
            "authorization_endpoint": e.authorize,
            "token_endpoint": e.token,
            "introspection_endpoint": e.introspect,
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": self.scopes_supported,
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "capabilities": [
                "launch-standalone", "authorize-post", "client-public", "client-confidential-asymmetric",
                "sso-openid-connect", "context-standalone-patient", "permission-offline",
                "permission-patient", "permission-user", "permission-v1", "permission-v2"
            ],
        })
    }

    /// The public signing key(s), as served at `/jwks`.
    pub fn jwks(&self) -> JwkSet {
        self.key.jwks()
    }

    /// How a [`Verifier`](fhirseal_smart::Verifier) accepts this server's access tokens: this
    /// issuer, the FHIR base URL as audience, the public signing key given by value, RS256 only.
    pub fn issuer_config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(
            self.config.issuer.clone(),
            vec![self.config.fhir_base.clone()],
            KeySource::Static(self.jwks()),
        );
        config.algorithms = vec![Algorithm::RS256];
        config
    }

    /// The OpenID Connect discovery document (served at `/.well-known/openid-configuration`).
    fn openid_configuration(&self) -> Value {
        let e = &self.endpoints;
        json!({
            "issuer": self.config.issuer,
            "authorization_endpoint": e.authorize,
            "token_endpoint": e.token,
            "jwks_uri": e.jwks,
            "introspection_endpoint": e.introspect,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": self.scopes_supported,
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        })
    }

    // === helpers for the endpoints ===

    fn client(&self, client_id: &str) -> Option<&ClientConfig> {
        self.config
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
    }

    fn state(&self) -> MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An access token for `grant`: `iss`, `aud` (the FHIR base), `sub` (the user name, or the
    /// client id of a backend service), `exp`, `iat`, `jti` (the grant id, a dot, 128 random
    /// bits), `scope`, `client_id`, and for a user `fhirUser`, `patient` when in context and the
    /// user's extra claims.
    fn access_token(
        &self,
        grant: &Grant,
        lifetime: u64,
        now: u64,
    ) -> Result<String, oauth::OAuthError> {
        let user = grant
            .username
            .as_deref()
            .and_then(|name| self.config.users.iter().find(|u| u.username == name));
        let mut claims = user.map(|u| u.claims.clone()).unwrap_or_default();
        claims.insert("iss".into(), Value::String(self.config.issuer.clone()));
        claims.insert(
            "sub".into(),
            Value::String(user.map_or(&grant.client_id, |u| &u.username).clone()),
        );
        claims.insert("aud".into(), Value::String(self.config.fhir_base.clone()));
        claims.insert("exp".into(), (now + lifetime).into());
        claims.insert("iat".into(), now.into());
        claims.insert(
            "jti".into(),
            Value::String(format!("{}.{}", grant.id, random_id())),
        );
        claims.insert("scope".into(), Value::String(grant.scopes.to_string()));
        claims.insert("client_id".into(), Value::String(grant.client_id.clone()));
        if let Some(user) = user {
            claims.insert("fhirUser".into(), Value::String(user.fhir_user.clone()));
        }
        if let Some(patient) = &grant.patient {
            claims.insert("patient".into(), Value::String(patient.clone()));
        }
        self.key
            .sign(&claims)
            .map_err(|_| oauth::OAuthError::server_error("signing the access token failed"))
    }

    /// An OpenID Connect ID token: `iss`, `sub`, `aud` (the client id), `exp`, `iat`, `nonce` if
    /// one was sent, and `fhirUser` (absolute) when the `fhirUser` scope was granted.
    fn id_token(
        &self,
        user: &UserConfig,
        client: &ClientConfig,
        grant: &Grant,
        nonce: Option<&str>,
        now: u64,
    ) -> Result<String, oauth::OAuthError> {
        let mut claims = Map::new();
        claims.insert("iss".into(), Value::String(self.config.issuer.clone()));
        claims.insert("sub".into(), Value::String(user.username.clone()));
        claims.insert("aud".into(), Value::String(client.client_id.clone()));
        claims.insert(
            "exp".into(),
            (now + self.config.access_token_lifetime.as_secs()).into(),
        );
        claims.insert("iat".into(), now.into());
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), Value::String(nonce.to_string()));
        }
        if grant.scopes.iter().any(|s| *s == Scope::FhirUser) {
            let absolute = format!("{}/{}", self.config.fhir_base, user.fhir_user);
            claims.insert("fhirUser".into(), Value::String(absolute));
        }
        self.key
            .sign(&claims)
            .map_err(|_| oauth::OAuthError::server_error("signing the ID token failed"))
    }

    /// The claims of `token` if it is an access token of this server, valid at `now` and not
    /// revoked.
    fn active_claims(&self, token: &str, now: u64) -> Option<Map<String, Value>> {
        let jws = Jws::parse(token)?;
        if jws.header.kid.as_deref() != Some(self.key.kid())
            || !jws.verifies(&self.public_key, Algorithm::RS256)
        {
            return None;
        }
        let issued_here = jws.str("iss") == Some(self.config.issuer.as_str())
            && jws.has_audience(&self.config.fhir_base)
            && jws.str("scope").is_some();
        let live = jws.seconds("exp").is_some_and(|exp| exp > now);
        let grant = jws
            .str("jti")
            .and_then(|jti| jti.split_once('.'))
            .map(|(grant, _)| grant)?;
        if !issued_here || !live || self.state().is_revoked(grant, now) {
            return None;
        }
        Some(jws.claims)
    }
}

impl std::fmt::Debug for AuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthServer")
            .field("issuer", &self.config.issuer)
            .field("fhir_base", &self.config.fhir_base)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `GET /jwks`.
async fn jwks(State(server): State<Arc<AuthServer>>) -> Response {
    let body = serde_json::to_value(server.jwks()).unwrap_or(Value::Null);
    json_no_store(StatusCode::OK, &body)
}

/// `GET /.well-known/openid-configuration`.
async fn openid_configuration(State(server): State<Arc<AuthServer>>) -> Response {
    json_no_store(StatusCode::OK, &server.openid_configuration())
}
