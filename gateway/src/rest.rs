//! The FHIR REST interactions, each one step of the request flow after authentication:
//! authorize (scopes, then the policy), the upstream call, then open or mask what comes back.
//!
//! Today: `read` and `vread`. The other interactions follow (issue 7).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirseal_fhir::structure::{Kind, r4};
use fhirseal_fhir::{Reader, shared_header_ids};
use fhirseal_policy::{Decision, Interaction, Request, record_patient};
use fhirseal_upstream::{UpstreamRequest, rewrite_base};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, FHIR_JSON};
use crate::state::AppState;

/// Upstream response headers a client may see (the rest stay between gateway and upstream).
const PASSED_BACK: [header::HeaderName; 2] = [header::ETAG, header::LAST_MODIFIED];

/// `GET [base]/[type]/[id]`: the resource, its protected elements opened for the caller where
/// its attributes satisfy them and masked elsewhere.
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path((resource_type, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_type_and_id(&resource_type, &id)?;
    let path = format!("{resource_type}/{id}");
    fetch_and_open(
        &state,
        &caller,
        Interaction::Read,
        &resource_type,
        &id,
        path,
    )
    .await
}

/// `GET [base]/[type]/[id]/_history/[vid]`: one version of the resource, as [`read`] opens it.
pub async fn vread(
    State(state): State<AppState>,
    caller: Caller,
    Path((resource_type, id, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    check_type_and_id(&resource_type, &id)?;
    if !is_fhir_id(&version) {
        return Err(ApiError::InvalidRequest("the version is not a FHIR id"));
    }
    let path = format!("{resource_type}/{id}/_history/{version}");
    fetch_and_open(
        &state,
        &caller,
        Interaction::Vread,
        &resource_type,
        &id,
        path,
    )
    .await
}

/// Reads `path` from the upstream, checks it is `resource_type`/`id`, lets the scopes and the
/// policy decide on it for `interaction`, and opens it for the caller.
async fn fetch_and_open(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource_type: &str,
    id: &str,
    path: String,
) -> Result<Response, ApiError> {
    let request = UpstreamRequest::new(Method::GET, path).with_header(
        header::ACCEPT,
        HeaderValue::from_static("application/fhir+json"),
    );
    let response = state.upstream.send(request).await?;
    let gone = || (resource_type.to_string(), id.to_string());
    match response.status() {
        status if status.is_success() => {}
        StatusCode::NOT_FOUND => {
            let (resource_type, id) = gone();
            return Err(ApiError::NotFound { resource_type, id });
        }
        StatusCode::GONE => {
            let (resource_type, id) = gone();
            return Err(ApiError::Gone { resource_type, id });
        }
        status => return Err(ApiError::UpstreamStatus(status)),
    }
    let resource: Value =
        serde_json::from_slice(response.body()).map_err(|_| ApiError::UpstreamMalformed)?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
        || resource.get("id").and_then(Value::as_str) != Some(id)
    {
        return Err(ApiError::UpstreamMalformed);
    }

    // Scopes first (they only narrow), then the policy; both on the stored resource.
    let verified = &caller.0;
    let bases = [state.config.fhir_base.as_str(), state.upstream.base()];
    verified
        .context
        .check_resource(interaction, &resource, &bases)?;
    let principal = &verified.context.principal;
    let decision = state.policy.decide(
        principal,
        &Request {
            interaction,
            resource_type: resource_type.to_string(),
            patient: record_patient(&resource),
        },
    );
    if let Decision::Deny(_) = decision {
        return Err(ApiError::Denied);
    }

    let grant = state.keyring.grant_for(principal, now()).await?;
    let headers = state.headers.lookup(&shared_header_ids(&resource)).await?;
    let cache = Arc::clone(&state.header_cache);
    let opened = tokio::task::spawn_blocking(move || {
        let mut resource = resource;
        let (holder, key) = match &grant {
            Some(grant) => (grant.registration.as_str(), Some(&*grant.key)),
            None => ("", None),
        };
        Reader::new(holder, key, &cache, &headers).open(&mut resource);
        resource
    })
    .await
    .map_err(|_| ApiError::KeyTask)?;

    let text = opened.to_string();
    let text = rewrite_base(&text, state.upstream.base(), &state.config.fhir_base).into_owned();
    let mut out = (StatusCode::OK, text).into_response();
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    copy_headers(response.headers(), out.headers_mut());
    Ok(out)
}

/// A resource type R4 knows and an id of FHIR's id syntax (`[A-Za-z0-9\-\.]{1,64}`).
fn check_type_and_id(resource_type: &str, id: &str) -> Result<(), ApiError> {
    if r4().kind(resource_type) != Some(Kind::Resource) {
        return Err(ApiError::UnknownPath);
    }
    if !is_fhir_id(id) {
        return Err(ApiError::InvalidRequest("the id is not a FHIR id"));
    }
    Ok(())
}

/// FHIR's id syntax: `[A-Za-z0-9\-\.]{1,64}`.
fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in PASSED_BACK {
        if let Some(value) = from.get(&name) {
            to.insert(name, value.clone());
        }
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
