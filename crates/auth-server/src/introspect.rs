//! Token introspection (RFC 7662, SMART token-introspection profile).
//!
//! The caller authenticates with a valid access token of this server (`Authorization: Bearer`)
//! or a client assertion (`client_assertion_type` + `client_assertion`). The answer for an
//! access token issued here, still valid and not revoked: `active: true` with `scope`,
//! `client_id`, `exp`, `iat`, `sub`, `iss`, `aud`, `token_type` and, when present, `fhirUser`
//! and `patient`; for anything else (unknown, expired, revoked, another issuer's, a refresh
//! token): `active: false` only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::AuthServer;
use crate::assertion;
use crate::oauth::{OAuthError, Params, is_form, json_no_store};
use crate::state::now;

/// `POST /introspect`.
pub(super) async fn handle(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match introspect(&server, &headers, &body).await {
        Ok(body) => json_no_store(StatusCode::OK, &body),
        Err(error) => error.into_response(),
    }
}

async fn introspect(
    server: &AuthServer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the introspection request must be a form",
        ));
    }
    let form =
        Params::parse(body).map_err(|_| OAuthError::invalid_request("a parameter is repeated"))?;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    match (bearer, form.get("client_assertion")) {
        (Some(token), None) => {
            if server.active_claims(token.trim(), now()).is_none() {
                return Err(OAuthError::invalid_token());
            }
        }
        (None, Some(assertion)) => {
            assertion::authenticate(server, form.get("client_assertion_type"), assertion).await?;
        }
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "authenticate with a bearer token or a client assertion, not both",
            ));
        }
        (None, None) => return Err(OAuthError::invalid_token()),
    }
    let Some(token) = form.get("token") else {
        return Err(OAuthError::invalid_request("token is required"));
    };
    let Some(claims) = server.active_claims(token, now()) else {
        return Ok(json!({"active": false}));
    };
    let mut answer = Map::new();
    answer.insert("active".into(), Value::Bool(true));
    for name in [
        "scope",
        "client_id",
        "exp",
        "iat",
        "sub",
        "iss",
        "aud",
        "fhirUser",
        "patient",
    ] {
        if let Some(value) = claims.get(name) {
            answer.insert(name.into(), value.clone());
        }
    }
    answer.insert("token_type".into(), "Bearer".into());
    Ok(Value::Object(answer))
}
