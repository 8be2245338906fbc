//! The gateway's HTTP surface, as one [`Router`] that tests drive without a socket
//! (STYLE rule 1).
//!
//! The embedded authorization server under `/auth`, the SMART discovery document, the upstream's
//! CapabilityStatement with the gateway's security section, and, behind authentication, every
//! FHIR REST interaction: read, vread, create, update, patch, delete ([`rest`]), search, history
//! and `$everything` ([`search`]), batch and transaction ([`bundle`]). Bodies are limited to
//! `server.max_body_bytes`. Every other path and method is a 404 or 405 `OperationOutcome`.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::{DefaultBodyLimit, Path, RawQuery};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, middleware};
use fhirseal_upstream::{UpstreamRequest, rewrite_base};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::auth::authenticate;
use crate::error::{ApiError, FHIR_JSON};
use crate::state::AppState;
use crate::{bundle, rest, search};

/// The gateway's router for `state`.
pub fn app(state: AppState) -> Router {
    let auth_server = state.auth_server.clone();
    let authenticated = Router::new()
        .route("/fhir", post(bundle::batch_or_transaction))
        .route(
            "/fhir/{type}",
            get(search::search_get)
                .post(rest::create)
                .put(rest::conditional_update),
        )
        .route("/fhir/{type}/_search", post(search::search_post))
        .route("/fhir/{type}/_history", get(search::type_history))
        .route(
            "/fhir/{type}/{id}",
            get(rest::read)
                .put(rest::update)
                .patch(rest::patch)
                .delete(rest::delete),
        )
        .route("/fhir/{type}/{id}/{operation}", get(instance_operation))
        .route("/fhir/{type}/{id}/_history/{version}", get(rest::vread))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.verifier),
            authenticate,
        ));
    let mut router = Router::new()
        .merge(authenticated)
        .route("/fhir/metadata", get(metadata))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .with_state(state);
    if let Some(server) = auth_server {
        router = router.nest("/auth", Arc::clone(&server).router());
    }
    router
        .fallback(|| async { ApiError::UnknownPath })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
}

/// `GET [base]/[type]/[id]/_history` and `GET [base]/Patient/[id]/$everything` (one route: the
/// router cannot tell a literal from a parameter in that position).
async fn instance_operation(
    state: State<AppState>,
    caller: Caller,
    Path((resource_type, id, operation)): Path<(String, String, String)>,
    query: RawQuery,
) -> Result<Response, ApiError> {
    match operation.as_str() {
        "_history" => {
            search::instance_history(state, caller, Path((resource_type, id)), query).await
        }
        "$everything" if resource_type == "Patient" => {
            search::everything(state, caller, Path(id)).await
        }
        _ => Err(ApiError::UnknownPath),
    }
}

/// `GET /fhir/.well-known/smart-configuration`: always `application/json`, whatever the
/// `Accept` header (SMART App Launch 2, conformance). The embedded authorization server's
/// document; with an external server, one derived from that server's own discovery document
/// (its endpoints, the capabilities the gateway enforces); a 502 while it cannot be fetched.
async fn smart_configuration(State(state): State<AppState>) -> Result<Response, ApiError> {
    let document = match (&state.auth_server, &state.discovery) {
        (Some(server), _) => server.smart_configuration(),
        (None, Some(discovery)) => discovery
            .document()
            .await
            .map_err(|_| ApiError::DiscoveryUnavailable)?,
        (None, None) => return Err(ApiError::UnknownPath),
    };
    let mut response = document.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `GET /fhir/metadata`: the upstream's CapabilityStatement, its URLs moved to the gateway's
/// base, with the gateway's security section (SMART on FHIR, and the embedded server's OAuth
/// endpoints). Not authenticated: clients read it to learn how to authenticate.
async fn metadata(State(state): State<AppState>) -> Result<Response, ApiError> {
    let request = UpstreamRequest::new(Method::GET, "metadata").with_header(
        header::ACCEPT,
        HeaderValue::from_static("application/fhir+json"),
    );
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        return Err(ApiError::UpstreamStatus(response.status()));
    }
    let text = std::str::from_utf8(response.body()).map_err(|_| ApiError::UpstreamMalformed)?;
    let text = rewrite_base(text, state.upstream.base(), &state.config.fhir_base);
    let mut statement: Value =
        serde_json::from_str(&text).map_err(|_| ApiError::UpstreamMalformed)?;
    if statement.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
        return Err(ApiError::UpstreamMalformed);
    }
    secure(&mut statement, &state);
    let mut response = (StatusCode::OK, statement.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    Ok(response)
}

/// Puts the gateway's security section in every server `rest` entry and its own
/// `implementation`.
fn secure(statement: &mut Value, state: &AppState) {
    let mut security = json!({
        "cors": true,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"
        }]}],
        "description": "SMART App Launch 2 bearer tokens; protected elements are sealed by \
            FHIRseal and opened only for callers whose attributes satisfy them"
    });
    if let Some(server) = &state.auth_server {
        let discovery = server.smart_configuration();
        let uris: Vec<Value> = [
            ("authorize", "authorization_endpoint"),
            ("token", "token_endpoint"),
            ("introspect", "introspection_endpoint"),
        ]
        .iter()
        .filter_map(|(name, field)| {
            discovery
                .get(*field)
                .and_then(Value::as_str)
                .map(|uri| json!({"url": name, "valueUri": uri}))
        })
        .collect();
        security["extension"] = json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": uris
        }]);
    }
    if let Some(Value::Array(rest)) = statement.get_mut("rest") {
        for entry in rest
            .iter_mut()
            .filter(|r| r.get("mode").and_then(Value::as_str) == Some("server"))
        {
            if let Value::Object(entry) = entry {
                entry.insert("security".into(), security.clone());
            }
        }
    }
    if let Value::Object(object) = statement {
        object.insert(
            "implementation".into(),
            json!({
                "description": "FHIRseal gateway (sealing protected elements) in front of the FHIR server",
                "url": state.config.fhir_base
            }),
        );
    }
}
