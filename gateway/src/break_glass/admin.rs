//! The admin API's break-glass endpoints (on the admin listener, behind its token):
//!
//! - `GET /break-glass`: the recent events (granted and refused, at most [`alert::RECENT`],
//!   oldest first), the grants this process remembers, and the webhook's counts;
//! - `POST /break-glass/renew` with `{"identity": "Practitioner/7"}`: forgets that identity's
//!   grant, so that its next assertion begins a new one (after a grant ended).

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::alert;
use crate::admin::access::AdminCaller;
use crate::audit::AuditNote;
use crate::audit::timestamp;
use crate::state::AppState;

/// `GET /break-glass`.
pub async fn list(State(state): State<AppState>) -> Response {
    let (events, alerts) = state.break_glass.alerts.recent();
    let now = state.break_glass.grants.now();
    let grants: Vec<_> = state
        .break_glass
        .grants
        .list()
        .into_iter()
        .map(|(identity, grant)| {
            json!({"identity": identity, "started": timestamp(grant.started),
                   "ends": timestamp(grant.ends), "in_force": now < grant.ends})
        })
        .collect();
    noted(
        Json(json!({"events": events, "grants": grants, "alerts": alerts})).into_response(),
        "break-glass-list",
        Vec::new(),
    )
}

/// The body of `POST /break-glass/renew`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    identity: String,
}

/// `POST /break-glass/renew`.
pub async fn renew(
    State(state): State<AppState>,
    Extension(AdminCaller(caller)): Extension<AdminCaller>,
    body: Result<Json<RenewBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        let error = json!({"error": r#"the body is {"identity": "Practitioner/7"}"#});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    };
    let renewed = state.break_glass.grants.renew(&body.identity);
    tracing::warn!(admin = %caller, identity = %body.identity, renewed = renewed.is_some(),
        "break-glass grant renewed by an administrator");
    noted(
        Json(json!({"identity": body.identity, "renewed": renewed.is_some()})).into_response(),
        "break-glass-renew",
        vec![format!("identity:{}", body.identity)],
    )
}

fn noted(mut response: Response, interaction: &'static str, resources: Vec<String>) -> Response {
    response.extensions_mut().insert(AuditNote {
        interaction,
        resources,
        ..AuditNote::default()
    });
    response
}

// The list is bounded by the alerts' own bound.
const _: () = assert!(alert::RECENT > 0);
