//! The token endpoint: `authorization_code` (with PKCE), `refresh_token` (rotating) and
//! `client_credentials` (SMART Backend Services).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fhirseal_smart::scope::Scope;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::assertion;
use crate::oauth::{OAuthError, Params, is_form, json_no_store};
use crate::scopes::{Flow, grant, narrow};
use crate::state::{Grant, Refresh, digest, now, random_id, random_token};
use crate::{AuthServer, ClientAuth, ClientConfig};

/// `POST /token`.
pub(super) async fn handle(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token(&server, &headers, &body).await {
        Ok(body) => json_no_store(StatusCode::OK, &body),
        Err(error) => error.into_response(),
    }
}

async fn token(server: &AuthServer, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the token request must be a form (application/x-www-form-urlencoded)",
        ));
    }
    let form =
        Params::parse(body).map_err(|_| OAuthError::invalid_request("a parameter is repeated"))?;
    match form.get("grant_type") {
        Some("authorization_code") => authorization_code(server, &form).await,
        Some("refresh_token") => refresh(server, &form).await,
        Some("client_credentials") => client_credentials(server, &form).await,
        Some(_) => Err(OAuthError::unsupported_grant_type()),
        None => Err(OAuthError::invalid_request("grant_type is required")),
    }
}

/// RFC 6749 §4.1.3 with RFC 7636 §4.6.
async fn authorization_code(server: &AuthServer, form: &Params) -> Result<Value, OAuthError> {
    let client = authenticate(server, form).await?;
    let (Some(code), Some(redirect_uri), Some(verifier)) = (
        form.get("code"),
        form.get("redirect_uri"),
        form.get("code_verifier"),
    ) else {
        return Err(OAuthError::invalid_request(
            "code, redirect_uri and code_verifier are required",
        ));
    };
    let now = now();
    let record = {
        let mut state = server.state();
        let key = digest(code.as_bytes());
        let Some(entry) = state.codes.get_mut(&key, now) else {
            return Err(OAuthError::invalid_grant("the code is unknown or expired"));
        };
        if entry.used {
            // RFC 6749 §4.1.2: a code used twice revokes what was issued from it.
            let grant_id = entry.grant.id.clone();
            state.revoke(
                &grant_id,
                now + server.config.access_token_lifetime.as_secs(),
                now,
            );
            return Err(OAuthError::invalid_grant("the code was already used"));
        }
        // Consumed by this attempt, whatever its outcome.
        entry.used = true;
        entry.clone()
    };
    if record.grant.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if record.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request's",
        ));
    }
    if !pkce_matches(verifier, &record.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    issue(server, client, &record.grant, record.nonce.as_deref(), now)
}

/// RFC 6749 §6, with rotation: the refresh token used is spent, a new one is issued.
async fn refresh(server: &AuthServer, form: &Params) -> Result<Value, OAuthError> {
    let client = authenticate(server, form).await?;
    let Some(token) = form.get("refresh_token") else {
        return Err(OAuthError::invalid_request("refresh_token is required"));
    };
    let now = now();
    let grant = {
        let mut state = server.state();
        let key = digest(token.as_bytes());
        let Some(entry) = state.refresh.get_mut(&key, now) else {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown or expired",
            ));
        };
        if entry.grant.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if entry.used {
            // A rotated token presented again: someone holds a copy. Revoke the whole grant.
            let grant_id = entry.grant.id.clone();
            state.revoke(
                &grant_id,
                now + server.config.access_token_lifetime.as_secs(),
                now,
            );
            return Err(OAuthError::invalid_grant(
                "the refresh token was already used",
            ));
        }
        // Checked before the token is spent: a refused widening leaves it usable.
        let scopes = narrow(form.get("scope"), &entry.grant.scopes)?;
        entry.used = true;
        Grant {
            scopes,
            ..entry.grant.clone()
        }
    };
    issue(server, client, &grant, None, now)
}

/// SMART Backend Services: a `private_key_jwt` client, `system/` scopes, no refresh token.
async fn client_credentials(server: &AuthServer, form: &Params) -> Result<Value, OAuthError> {
    let Some(assertion) = form.get("client_assertion") else {
        return Err(OAuthError::invalid_client(
            "client_credentials needs a client assertion",
        ));
    };
    let client =
        assertion::authenticate(server, form.get("client_assertion_type"), assertion).await?;
    if form
        .get("client_id")
        .is_some_and(|id| id != client.client_id)
    {
        return Err(OAuthError::invalid_client(
            "client_id differs from the assertion's issuer",
        ));
    }
    let scopes = grant(form.get("scope"), &client.allowed_scopes, Flow::Backend)?;
    let lifetime = server.config.backend_token_lifetime.as_secs();
    let grant = Grant {
        id: random_id(),
        client_id: client.client_id.clone(),
        username: None,
        scopes,
        patient: None,
    };
    let access_token = server.access_token(&grant, lifetime, now())?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": grant.scopes.to_string(),
    }))
}

/// The client making an authorization-code or refresh request: a public client by its
/// `client_id`, a `private_key_jwt` client by its assertion (then `client_id`, if sent, must
/// agree).
async fn authenticate<'s>(
    server: &'s AuthServer,
    form: &Params,
) -> Result<&'s ClientConfig, OAuthError> {
    if form.get("client_secret").is_some() {
        return Err(OAuthError::invalid_client(
            "client secrets are not supported",
        ));
    }
    if let Some(assertion) = form.get("client_assertion") {
        let client =
            assertion::authenticate(server, form.get("client_assertion_type"), assertion).await?;
        if form
            .get("client_id")
            .is_some_and(|id| id != client.client_id)
        {
            return Err(OAuthError::invalid_client(
                "client_id differs from the assertion's issuer",
            ));
        }
        return Ok(client);
    }
    if form.get("client_assertion_type").is_some() {
        return Err(OAuthError::invalid_client(
            "client_assertion_type without client_assertion",
        ));
    }
    let Some(client) = form.get("client_id").and_then(|id| server.client(id)) else {
        return Err(OAuthError::invalid_client("the client is unknown"));
    };
    match client.auth {
        ClientAuth::Public => Ok(client),
        ClientAuth::PrivateKeyJwt { .. } => Err(OAuthError::invalid_client(
            "this client must authenticate with a client assertion (private_key_jwt)",
        )),
    }
}

/// The token response for a user's grant (RFC 6749 §5.1, SMART app-launch "Response").
fn issue(
    server: &AuthServer,
    client: &ClientConfig,
    grant: &Grant,
    nonce: Option<&str>,
    now: u64,
) -> Result<Value, OAuthError> {
    let user = grant
        .username
        .as_deref()
        .and_then(|name| server.config.users.iter().find(|u| u.username == name))
        .ok_or(OAuthError::invalid_grant(
            "the user of this grant no longer exists",
        ))?;
    let lifetime = server.config.access_token_lifetime.as_secs();
    let mut response = Map::new();
    response.insert(
        "access_token".into(),
        Value::String(server.access_token(grant, lifetime, now)?),
    );
    response.insert("token_type".into(), "Bearer".into());
    response.insert("expires_in".into(), lifetime.into());
    response.insert("scope".into(), Value::String(grant.scopes.to_string()));
    if let Some(patient) = &grant.patient {
        response.insert("patient".into(), Value::String(patient.clone()));
        response.insert("need_patient_banner".into(), Value::Bool(true));
    }
    if grant.scopes.iter().any(|s| *s == Scope::OpenId) {
        let id_token = server.id_token(user, client, grant, nonce, now)?;
        response.insert("id_token".into(), Value::String(id_token));
    }
    if grant
        .scopes
        .iter()
        .any(|s| matches!(s, Scope::OfflineAccess | Scope::OnlineAccess))
    {
        let token = random_token();
        let expires = now + server.config.refresh_token_lifetime.as_secs();
        let record = Refresh {
            grant: grant.clone(),
            used: false,
        };
        server
            .state()
            .refresh
            .insert(digest(token.as_bytes()), expires, record, now)
            .map_err(|_| OAuthError::unavailable("the store of refresh tokens is full"))?;
        response.insert("refresh_token".into(), Value::String(token));
    }
    Ok(Value::Object(response))
}

/// RFC 7636 §4.1 and §4.6: a verifier of 43 to 128 unreserved characters whose SHA-256,
/// base64url, is the challenge (compared in constant time).
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}
