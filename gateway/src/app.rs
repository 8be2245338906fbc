//! The gateway's HTTP surface, as one [`Router`] that tests drive without a socket
//! (STYLE rule 1), with the whole middleware stack that `fhirseal serve` deploys.
//!
//! ```text
//! request ─► audit (request id, span, one audit line)      outermost
//!         ─► metrics (interaction, status, time, elements: from the same audit note)
//!         ─► CORS (`server.cors_origins`; answers preflights itself)
//!         ─► /auth/…: the embedded authorization server
//!         ─► /fhir/metadata, /fhir/.well-known/smart-configuration   (no token)
//!         ─► /fhir, /fhir/…: authenticate ─► parse (FhirRequest) ─► flow::run ─► Answer
//! ```
//!
//! Every FHIR REST interaction, alone or as a Bundle, goes through the one handler [`fhir`]:
//! the body limit (`server.max_body_bytes`), the bearer token, the parse, then
//! [`crate::flow::run`]. Every other path and method is a 404 or 405 `OperationOutcome`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Router, middleware};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::audit::note::concerning;
use crate::audit::{AuditNote, REQUEST_ID, RequestId, audited};
use crate::auth::{Caller, authenticate};
use crate::break_glass;
use crate::config::Cors;
use crate::error::ApiError;
use crate::flow::{self, audit_name};
use crate::metrics::measure;
use crate::request::Parsed;
use crate::state::AppState;

/// The gateway's router for `state`, audited to `state.audit`.
pub fn app(state: AppState) -> Router {
    let sink = state.audit.clone();
    let metrics = state.metrics.clone();
    let cors = cors_layer(&state.config.cors);
    let auth_server = state.auth_server.clone();
    let fhir_routes = Router::new()
        .route("/fhir", any(fhir))
        .route("/fhir/", any(fhir))
        .route("/fhir/{*path}", any(fhir))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state.verifier),
            authenticate,
        ));
    let mut router = Router::new()
        .merge(fhir_routes)
        .route("/fhir/metadata", get(metadata))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
        .with_state(state);
    if let Some(server) = auth_server {
        router = router.nest("/auth", Arc::clone(&server).router());
    }
    let mut router = router
        .fallback(|| async { ApiError::UnknownPath })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed });
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    let router = router.layer(middleware::from_fn_with_state(metrics, measure));
    audited(router, sink)
}

/// The CORS layer for `cors`, or none when it is off. A preflight is answered here, before the
/// bearer token is asked for (browsers send none with it); every other response from an allowed
/// origin gets `Access-Control-Allow-Origin` and the headers a FHIR client reads exposed. Never
/// `Allow-Credentials`: tokens are bearer headers, not cookies.
fn cors_layer(cors: &Cors) -> Option<CorsLayer> {
    let origins = match cors {
        Cors::Off => return None,
        Cors::AnyOrigin => AllowOrigin::any(),
        Cors::Origins(origins) => {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::ACCEPT,
                header::CONTENT_TYPE,
                header::IF_MATCH,
                header::IF_NONE_MATCH,
                header::IF_MODIFIED_SINCE,
                HeaderName::from_static("if-none-exist"),
                HeaderName::from_static("prefer"),
                REQUEST_ID,
                break_glass::REASON_HEADER,
            ])
            .expose_headers([
                header::LOCATION,
                header::CONTENT_LOCATION,
                header::ETAG,
                header::LAST_MODIFIED,
                REQUEST_ID,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Every FHIR REST interaction: the parsed request through [`flow::run`]; a refusal answers with
/// its OperationOutcome and still names the interaction in the audit line.
pub async fn fhir(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    request_id: Option<Extension<RequestId>>,
    Parsed(request): Parsed,
) -> Response {
    let name = audit_name(&request.interaction);
    let resources: Vec<String> = request.reference().into_iter().collect();
    // An emergency asserted (docs/break-glass.md): refused here, or in force for the flow.
    let id = request_id
        .map(|Extension(RequestId(id))| id)
        .unwrap_or_default();
    let emergency = match break_glass::assert(&state, &caller, &headers, &request.interaction, &id)
    {
        Ok(emergency) => emergency,
        Err(refused) => {
            let break_glass::Refused { error, event } = *refused;
            let mut response = refusal(error, name, resources);
            break_glass::refused(&state, event, &mut response);
            return response;
        }
    };
    let run = break_glass::during(emergency.as_ref(), flow::run(&state, &caller, request));
    let ((result, patients), consents) = crate::audit::note::consenting(concerning(run)).await;
    let mut response = match result {
        Ok(answer) => answer.into_response(&state),
        Err(error) => refusal(error, name, resources),
    };
    if let Some(note) = response.extensions_mut().get_mut::<AuditNote>() {
        // A transaction refused because of an entry lists that entry alone: it names every
        // patient the refused transaction touched (it wrote nothing).
        if note.interaction == "transaction"
            && let [entry] = note.entries.as_mut_slice()
            && entry.patients.is_empty()
        {
            entry.patients = patients.clone();
        }
        note.patients = patients;
        note.consents = consents;
    }
    if let Some(active) = emergency {
        break_glass::finish(&state, &active, &mut response);
    }
    response
}

/// An error response with the audit note of the refused interaction (for a transaction refused
/// because of one entry, that entry's note).
fn refusal(error: ApiError, interaction: &'static str, resources: Vec<String>) -> Response {
    let mut note = AuditNote {
        interaction,
        resources,
        reason: error.audit_reason().map(str::to_string),
        ..AuditNote::default()
    };
    if let ApiError::TransactionEntry {
        interaction,
        resources,
        ..
    } = &error
    {
        note.interaction = "transaction";
        note.entries.push(AuditNote {
            interaction,
            resources: resources.clone(),
            status: Some(error.parts().0.as_u16()),
            reason: note.reason.clone(),
            ..AuditNote::default()
        });
    }
    let mut response = error.into_response();
    response.extensions_mut().insert(note);
    response
}

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
/// `GET [base]/metadata`, without a token (SMART clients read it before they have one).
async fn metadata(State(state): State<AppState>) -> Response {
    match flow::capabilities::capabilities(&state).await {
        Ok(answer) => answer.into_response(&state),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wrappers around a request's flow (break-glass, the patients and the Consents it
    /// concerns) hold its future once. As `async fn`s each doubled it: the handler's future was
    /// 8 times the flow's (60 KB in a release build) and was copied whole at every move
    /// (`audit::note`, "Held once").
    #[test]
    fn the_handler_holds_the_flow_once() {
        // The size of the future each returns, without calling it.
        fn flow_size<A, B, C, F>(_: impl FnOnce(A, B, C) -> F) -> usize {
            size_of::<F>()
        }
        fn handler_size<A, B, C, D, E, F>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
            size_of::<F>()
        }
        let flow = flow_size::<&'static AppState, &'static Caller, fhirseal_fhir::FhirRequest, _>(
            flow::run,
        );
        let handler = handler_size::<
            State<AppState>,
            Caller,
            HeaderMap,
            Option<Extension<RequestId>>,
            Parsed,
            _,
        >(fhir);
        assert!(
            handler < flow * 3 / 2,
            "the handler's future is {handler} bytes around a flow of {flow}"
        );
    }
}
