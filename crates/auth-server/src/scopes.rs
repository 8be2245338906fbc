//! What a client is granted of the scopes it asks for.
//!
//! Decision: a request gets the **intersection** of what it asks and what the client may have
//! (RFC 6749 §3.3 lets the server grant less; the token response's `scope` says what was
//! granted, and SMART apps must read it). A requested scope is kept when one allowed scope
//! covers it: same level, the same type or `*`, a subset of its permissions, and at least its
//! granular restrictions; any other scope only when allowed as written. The request is refused
//! with `invalid_scope` when a scope is malformed, when it asks for something this server never
//! grants in that flow (`launch`: no EHR launch; `system/` scopes from a user; anything but
//! `system/` scopes from a backend service), or when nothing is left.

use fhirseal_smart::scope::{Level, Scope, Scopes};

use crate::oauth::OAuthError;

/// Who the scopes are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// A user signing in (authorization code).
    User,
    /// A backend service (client credentials).
    Backend,
}

/// The scopes granted for `requested` (the `scope` parameter) within `allowed`.
pub(super) fn grant(
    requested: Option<&str>,
    allowed: &Scopes,
    flow: Flow,
) -> Result<Scopes, OAuthError> {
    let requested = parse(requested)?;
    let mut kept: Vec<&Scope> = Vec::new();
    for scope in requested.iter() {
        let system = matches!(
            scope,
            Scope::Resource {
                level: Level::System,
                ..
            }
        );
        match (flow, scope) {
            (_, Scope::Launch) => {
                return Err(OAuthError::invalid_scope(
                    "the EHR launch scope `launch` is not supported",
                ));
            }
            (Flow::Backend, _) if !system => {
                return Err(OAuthError::invalid_scope(
                    "client_credentials grants system/ scopes only",
                ));
            }
            (Flow::User, _) if system => {
                return Err(OAuthError::invalid_scope(
                    "system/ scopes are for backend services only",
                ));
            }
            // Only the standalone patient context is supported.
            (Flow::User, Scope::LaunchContext { context, .. }) if context != "patient" => continue,
            _ => {}
        }
        if allowed.iter().any(|a| covers(a, scope)) && !kept.contains(&scope) {
            kept.push(scope);
        }
    }
    if kept.is_empty() {
        return Err(OAuthError::invalid_scope(
            "none of the requested scopes may be granted to this application",
        ));
    }
    collect(&kept)
}

/// The scopes of a refresh: `requested` when every one of them is covered by `granted`
/// (narrowed, never widened), `granted` when none is asked.
pub(super) fn narrow(requested: Option<&str>, granted: &Scopes) -> Result<Scopes, OAuthError> {
    if requested.is_none() {
        return Ok(granted.clone());
    }
    let requested = parse(requested)?;
    let mut kept: Vec<&Scope> = Vec::new();
    for scope in requested.iter() {
        if !granted.iter().any(|g| covers(g, scope)) {
            return Err(OAuthError::invalid_scope(
                "a refresh may narrow the granted scopes, not widen them",
            ));
        }
        if !kept.contains(&scope) {
            kept.push(scope);
        }
    }
    if kept.is_empty() {
        return Err(OAuthError::invalid_scope("scope is empty"));
    }
    collect(&kept)
}

/// Whether holding `allowed` implies holding `requested`.
pub(super) fn covers(allowed: &Scope, requested: &Scope) -> bool {
    match (allowed, requested) {
        (
            Scope::Resource {
                level: allowed_level,
                resource_type: allowed_type,
                permissions: allowed_permissions,
                query: allowed_query,
            },
            Scope::Resource {
                level,
                resource_type,
                permissions,
                query,
            },
        ) => {
            allowed_level == level
                && (allowed_type.is_none() || allowed_type == resource_type)
                && permissions.bits() & !allowed_permissions.bits() == 0
                && allowed_query
                    .iter()
                    .all(|restriction| query.contains(restriction))
        }
        _ => allowed == requested,
    }
}

fn parse(requested: Option<&str>) -> Result<Scopes, OAuthError> {
    let Some(text) = requested else {
        return Err(OAuthError::invalid_scope("scope is required"));
    };
    Scopes::parse(text).map_err(|_| OAuthError::invalid_scope("a requested scope is malformed"))
}

fn collect(scopes: &[&Scope]) -> Result<Scopes, OAuthError> {
    let text: Vec<String> = scopes.iter().map(ToString::to_string).collect();
    // Scopes print back exactly as parsed, so this cannot fail.
    Scopes::parse(&text.join(" "))
        .map_err(|_| OAuthError::server_error("granted scopes do not parse back"))
}
