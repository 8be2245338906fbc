//! The authentication step of the request flow, and the scope checks after it.
//!
//! [`authenticate`] is an axum middleware: it verifies the request's bearer token with the
//! [`Verifier`] (signature, issuer, audience, lifetime, claims) and puts the verified caller in
//! the request's extensions as a [`Caller`], and the caller's identifiers in the response's
//! extensions as an [`AuditWho`] for the audit line; any failure is a 401 with the `WWW-Authenticate`
//! challenge that says why, and the handler never runs. Handlers then ask the caller's scopes
//! ([`fhirseal_smart::TokenContext::check_resource`],
//! [`fhirseal_smart::TokenContext::search_narrowing`]); a refusal is a 403.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use fhirseal_smart::verify::{AuthError, Verified, Verifier};

use crate::audit::AuditWho;
use crate::error::ApiError;

/// The verified caller of a request, put there by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<Verified>);

/// Verifies the bearer token of every request it wraps; see the module documentation.
pub async fn authenticate(
    State(verifier): State<Arc<Verifier>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let mut values = request.headers().get_all(AUTHORIZATION).iter();
    let (first, second) = (values.next(), values.next());
    // A header given twice, or not visible ASCII, is nobody's token.
    if second.is_some() {
        return Err(AuthError::NotBearer.into());
    }
    let header = first
        .map(|value| value.to_str().map_err(|_| AuthError::NotBearer))
        .transpose()?;
    let verified = verifier.authenticate(header).await?;
    let who = AuditWho::of(&verified);
    request.extensions_mut().insert(Caller(verified));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(who);
    Ok(response)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Fail closed: a handler reached without the middleware has no caller.
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(ApiError::Unauthorized(AuthError::Missing))
    }
}
