//! The authorization endpoint (GET and POST, SMART `authorize-post`) and the login form it
//! shows.
//!
//! Flow: the app's request is checked (client, exact redirect URI; then, with errors sent back
//! to the app, `response_type`, `state`, `aud`, PKCE S256, scopes); the request is kept
//! server-side as a pending authorization under a random token, which the login form carries
//! back, together with a `SameSite=Strict` cookie set with the form (both must match). A valid
//! sign-in consumes the pending authorization and issues a single-use code, sent back with
//! `state` by a 303 to the redirect URI.

use std::net::IpAddr;
use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use fhirseal_fhir::request::is_fhir_id;
use fhirseal_smart::scope::{Scope, Scopes};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::oauth::{OAuthError, Params, is_form, redirect, redirect_error};
use crate::page::{self, Login};
use crate::scopes::{Flow, grant};
use crate::state::{Code, Digest, Grant, Pending, digest, now, random_id, random_token};
use crate::throttle::{LoginAudit, LoginResult, Peer, Refusal};
use crate::{AuthServer, ClientConfig, UserConfig};

/// The name of the cookie that binds a login form to the browser it was sent to.
const COOKIE: &str = "fhirseal_login";
/// How long a sign-in may take.
const PENDING_LIFETIME: u64 = 600;
/// Wrong passwords allowed per authorization request.
const MAX_FAILURES: u8 = 5;
/// The longest `state` and `nonce` kept.
const MAX_ECHO: usize = 1024;

/// `GET /authorize`.
pub(super) async fn get(
    State(server): State<Arc<AuthServer>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    start(&server, params.ok())
}

/// `POST /authorize` (SMART `authorize-post`).
pub(super) async fn post(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_form(&headers) {
        return page::error(
            StatusCode::BAD_REQUEST,
            "The authorization request must be a form.",
        );
    }
    start(&server, Params::parse(&body).ok())
}

/// Checks an authorization request and shows the login form.
fn start(server: &AuthServer, params: Option<Params>) -> Response {
    let Some(params) = params else {
        return page::error(
            StatusCode::BAD_REQUEST,
            "The authorization request repeats a parameter.",
        );
    };
    // Until the client and its redirect URI are established, errors are shown, not redirected.
    let Some(client) = params.get("client_id").and_then(|id| server.client(id)) else {
        return page::error(
            StatusCode::BAD_REQUEST,
            "The application is not registered here.",
        );
    };
    let Some(redirect_uri) = params
        .get("redirect_uri")
        .filter(|uri| client.redirect_uris.iter().any(|r| r == uri))
    else {
        return page::error(
            StatusCode::BAD_REQUEST,
            "The redirect URI is not registered for this application.",
        );
    };
    match checked(server, client, &params) {
        Ok(request) => show_login(server, client, redirect_uri, request),
        Err(error) => redirect_error(redirect_uri, error, params.get("state")),
    }
}

/// An authorization request that passed every check.
struct Checked<'p> {
    state: &'p str,
    code_challenge: &'p str,
    nonce: Option<&'p str>,
    scopes: Scopes,
}

/// The checks whose failures go back to the app (RFC 6749 §4.1.2.1), in SMART's order of
/// concerns: the request's shape, the resource (`aud`), PKCE, then the scopes.
fn checked<'p>(
    server: &AuthServer,
    client: &ClientConfig,
    params: &'p Params,
) -> Result<Checked<'p>, OAuthError> {
    let Some(state) = params.get("state").filter(|s| s.len() <= MAX_ECHO) else {
        return Err(OAuthError::invalid_request(
            "state is required (at most 1024 characters)",
        ));
    };
    if params.get("response_type") != Some("code") {
        return Err(OAuthError::unsupported_response_type());
    }
    if params.get("request").is_some() || params.get("request_uri").is_some() {
        return Err(OAuthError::request_not_supported());
    }
    if params.get("launch").is_some() {
        return Err(OAuthError::invalid_request(
            "the EHR launch is not supported: use the standalone launch",
        ));
    }
    let aud = params.get("aud").map(|a| a.trim_end_matches('/'));
    if aud != Some(server.config.fhir_base.as_str()) {
        return Err(OAuthError::invalid_request(
            "aud must be this server's FHIR base URL",
        ));
    }
    if params.get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::invalid_request(
            "PKCE is required with code_challenge_method S256",
        ));
    }
    let Some(code_challenge) = params
        .get("code_challenge")
        .filter(|c| is_s256_challenge(c))
    else {
        return Err(OAuthError::invalid_request(
            "code_challenge must be a base64url SHA-256 (43 characters)",
        ));
    };
    if params
        .get("prompt")
        .is_some_and(|p| p.split(' ').any(|p| p == "none"))
    {
        return Err(OAuthError::login_required());
    }
    let nonce = params.get("nonce");
    if nonce.is_some_and(|n| n.len() > MAX_ECHO) {
        return Err(OAuthError::invalid_request(
            "nonce is longer than 1024 characters",
        ));
    }
    let scopes = grant(params.get("scope"), &client.allowed_scopes, Flow::User)?;
    Ok(Checked {
        state,
        code_challenge,
        nonce,
        scopes,
    })
}

/// Keeps the request as a pending authorization and shows the login form, with the cookie that
/// binds it to this browser.
fn show_login(
    server: &AuthServer,
    client: &ClientConfig,
    redirect_uri: &str,
    request: Checked<'_>,
) -> Response {
    let needs_patient = request.scopes.needs_patient()
        || request
            .scopes
            .iter()
            .any(|s| matches!(s, Scope::LaunchContext { context, .. } if context == "patient"));
    let request_token = random_token();
    let cookie = random_token();
    let page = Login {
        client_name: &client.name,
        scopes: &request.scopes,
        patient_picker: needs_patient,
        request_token: &request_token,
        username: "",
        error: None,
    };
    let response = page::login(StatusCode::OK, &page, Some(&server.cookie(&cookie)));
    let pending = Pending {
        client_id: client.client_id.clone(),
        redirect_uri: redirect_uri.to_string(),
        state: request.state.to_string(),
        code_challenge: request.code_challenge.to_string(),
        scopes: request.scopes,
        nonce: request.nonce.map(str::to_string),
        needs_patient,
        cookie: digest(cookie.as_bytes()),
        failures: 0,
    };
    let now = now();
    let key = digest(request_token.as_bytes());
    if (server.state().pending)
        .insert(key, now + PENDING_LIFETIME, pending, now)
        .is_err()
    {
        return redirect_error(
            redirect_uri,
            OAuthError::unavailable("the store of pending sign-ins is full"),
            Some(request.state),
        );
    }
    response
}

/// `POST /login`: the login form.
pub(super) async fn login(
    State(server): State<Arc<AuthServer>>,
    peer: Peer,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expired = || {
        page::error(
            StatusCode::BAD_REQUEST,
            "This sign-in request is unknown or has expired. Start again from the application.",
        )
    };
    if !is_form(&headers) {
        return expired();
    }
    let Ok(form) = Params::parse(&body) else {
        return expired();
    };
    let Some(request_token) = form.get("request_token") else {
        return expired();
    };
    let key = digest(request_token.as_bytes());
    let Some(pending) = server.state().pending.get(&key, now()).cloned() else {
        return expired();
    };
    let cookie = cookie(&headers)
        .map(|c| digest(c.as_bytes()))
        .unwrap_or_default();
    if !bool::from(cookie.ct_eq(&pending.cookie)) {
        return expired();
    }
    let Some(client) = server.client(&pending.client_id) else {
        return expired();
    };
    match form.get("action") {
        Some("allow") => {}
        Some("deny") => {
            if server.state().pending.remove(&key, now()).is_none() {
                return expired();
            }
            return redirect_error(
                &pending.redirect_uri,
                OAuthError::access_denied(),
                Some(&pending.state),
            );
        }
        _ => return expired(),
    }
    let source = server.throttle.source(peer, &headers);
    sign_in(&server, &form, &key, pending, client, source).await
}

/// Checks the credentials (and the patient picked) and, when they are good, issues the code.
/// The login throttle goes first: a refused attempt is answered without running argon2. Every
/// answer carries a [`LoginAudit`] for the audit line.
async fn sign_in(
    server: &AuthServer,
    form: &Params,
    key: &Digest,
    pending: Pending,
    client: &ClientConfig,
    source: Option<IpAddr>,
) -> Response {
    let request_token = form.get("request_token").unwrap_or("");
    let username = form.get("username").unwrap_or("");
    let password = Zeroizing::new(form.get("password").unwrap_or("").to_string());
    let page_with = |status: StatusCode, error: &str| {
        let page = Login {
            client_name: &client.name,
            scopes: &pending.scopes,
            patient_picker: pending.needs_patient,
            request_token,
            username,
            error: Some(error),
        };
        page::login(status, &page, None)
    };
    let again = |error: &str| page_with(StatusCode::BAD_REQUEST, error);
    let audited = |mut response: Response, result, by| {
        let note = LoginAudit::new(username, result, by, source);
        response.extensions_mut().insert(note);
        response
    };
    let attempt = match server.throttle.begin(username, source) {
        Ok(attempt) => attempt,
        Err(refusal) => {
            let result = if refusal.locked {
                LoginResult::Locked
            } else {
                LoginResult::Throttled
            };
            let response = throttled(refusal, |error| {
                page_with(StatusCode::TOO_MANY_REQUESTS, error)
            });
            return audited(response, result, Some(refusal.by));
        }
    };
    let Some(user) = server.authenticate(username, password).await else {
        let failed = attempt.failed();
        let result = if failed.locked.is_some() {
            LoginResult::Lockout
        } else {
            LoginResult::Failure
        };
        let mut state = server.state();
        let failures = match state.pending.get_mut(key, now()) {
            Some(entry) => {
                entry.failures += 1;
                entry.failures
            }
            None => MAX_FAILURES,
        };
        if failures >= MAX_FAILURES {
            state.pending.remove(key, now());
            let response = page::error(
                StatusCode::BAD_REQUEST,
                "Too many failed sign-in attempts, or the request expired. Start again from the application.",
            );
            return audited(response, result, failed.locked);
        }
        drop(state);
        return audited(again("Wrong user name or password."), result, failed.locked);
    };
    attempt.succeeded();
    let patient = if pending.needs_patient {
        let typed = form
            .get("patient")
            .map(|p| p.strip_prefix("Patient/").unwrap_or(p));
        match (&user.patient, typed) {
            (Some(own), _) => Some(own.clone()),
            (None, Some(id)) if is_fhir_id(id) => Some(id.to_string()),
            (None, _) => {
                let response = again("Enter the id of the patient to open.");
                return audited(response, LoginResult::Success, None);
            }
        }
    } else {
        None
    };
    let response = issue_code(server, key, pending, user, patient);
    audited(response, LoginResult::Success, None)
}

/// The answer to an attempt the throttle refused: the login page again (`page` makes it from the
/// message), with `Retry-After`. The same for every user name, known or not.
fn throttled(refusal: Refusal, page: impl FnOnce(&str) -> Response) -> Response {
    let message = if refusal.locked {
        let minutes = refusal.retry_after.div_ceil(60);
        format!(
            "Sign-in is locked after too many failed attempts, for this user name or from this \
             address. Try again in {minutes} minute{}, or ask an administrator to unlock it.",
            if minutes == 1 { "" } else { "s" }
        )
    } else {
        let seconds = refusal.retry_after;
        format!(
            "Too many failed sign-in attempts. Wait {seconds} second{} before trying again.",
            if seconds == 1 { "" } else { "s" }
        )
    };
    let mut response = page(&message);
    if let Ok(value) = header::HeaderValue::from_str(&refusal.retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Consumes the pending authorization and sends the app its code.
fn issue_code(
    server: &AuthServer,
    key: &Digest,
    pending: Pending,
    user: &UserConfig,
    patient: Option<String>,
) -> Response {
    let code = random_token();
    let now = now();
    let record = Code {
        grant: Grant {
            id: random_id(),
            client_id: pending.client_id,
            username: Some(user.username.clone()),
            scopes: pending.scopes,
            patient,
        },
        redirect_uri: pending.redirect_uri.clone(),
        code_challenge: pending.code_challenge,
        nonce: pending.nonce,
        used: false,
    };
    let expires = now + server.config.code_lifetime.as_secs();
    let mut state = server.state();
    // Single use: a second submission of the same form finds nothing.
    if state.pending.remove(key, now).is_none() {
        return page::error(
            StatusCode::BAD_REQUEST,
            "This sign-in request was already completed.",
        );
    }
    if state
        .codes
        .insert(digest(code.as_bytes()), expires, record, now)
        .is_err()
    {
        return redirect_error(
            &pending.redirect_uri,
            OAuthError::unavailable("the store of authorization codes is full"),
            Some(&pending.state),
        );
    }
    drop(state);
    redirect(
        &pending.redirect_uri,
        &[("code", &code), ("state", &pending.state)],
    )
}

impl AuthServer {
    /// The user `username` if `password` is theirs. Argon2 runs on the blocking pool, a few at a
    /// time; an unknown user name costs one verification too, against another user's hash, so
    /// both failures look alike.
    async fn authenticate(
        &self,
        username: &str,
        password: Zeroizing<String>,
    ) -> Option<&UserConfig> {
        let user = self.config.users.iter().find(|u| u.username == username);
        let target = user.or(self.config.users.first())?;
        let hash = target.password_hash.clone();
        let permit = self.argon2.acquire().await.ok()?;
        self.throttle.password_checked();
        let verified = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        drop(permit);
        user.filter(|_| verified)
    }

    /// The `Set-Cookie` value binding a login form to this browser.
    fn cookie(&self, value: &str) -> String {
        let secure = if self.config.issuer.starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        format!(
            "{COOKIE}={value}; Path={}; Max-Age={PENDING_LIFETIME}; HttpOnly; SameSite=Strict{secure}",
            self.endpoints.cookie_path
        )
    }
}

/// The login cookie sent by the browser.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))` is 43 base64url characters.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
