//! The FHIR REST interactions on one resource, each the request flow after authentication:
//! authorize (scopes, then the policy), seal the request, the upstream call, then open or mask
//! what comes back.
//!
//! - `read`, `vread`: the stored resource is checked against the scopes and the policy, then
//!   opened for the caller.
//! - `create`: the gateway assigns the id (envelopes are bound to it) and writes the sealed
//!   resource with `PUT [type]/[id]`, so a retried write cannot create twice; `If-None-Exist`
//!   makes it conditional.
//! - `update` (also update-as-create, and conditional on a search), `patch` (JSON Patch, applied
//!   to the opened resource and sealed again; refused when the caller cannot open every sealed
//!   element, since the patch could not keep what it cannot see), `delete`. The stored resource
//!   is authorized too (moving a record out of another patient's compartment is a write to that
//!   patient's record), and `If-Match` is checked by the gateway against the stored version as
//!   well as sent upstream.
//!
//! Searches, histories and Bundles are in [`crate::search`] and [`crate::bundle`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fhirseal_fhir::shape::SEALED_HEADER;
use fhirseal_fhir::structure::{Kind, r4};
use fhirseal_fhir::{OpenReport, Reader, shared_header_ids};
use fhirseal_policy::record_patient;
use fhirseal_policy::{Decision, Interaction, Label, Obligations, Request as PolicyRequest};
use fhirseal_upstream::{UpstreamRequest, UpstreamResponse, rewrite_base};
use serde_json::{Value, json};

use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, FHIR_JSON, operation_outcome};
use crate::state::AppState;
use crate::write::{FhirBody, new_id, read_body};

/// Upstream response headers a client may see (the rest stay between gateway and upstream).
const PASSED_BACK: [HeaderName; 3] = [header::ETAG, header::LAST_MODIFIED, header::LOCATION];

/// The `Prefer` header.
pub(crate) const PREFER: HeaderName = HeaderName::from_static("prefer");
/// The `If-None-Exist` header of a conditional create.
const IF_NONE_EXIST: HeaderName = HeaderName::from_static("if-none-exist");

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
    let stored = fetch(state, resource_type, id, path).await?;
    authorize(state, caller, interaction, &stored.resource)?;
    let (opened, report) = open_for(state, caller, stored.resource).await?;
    let note = note(
        if interaction == Interaction::Vread {
            "vread"
        } else {
            "read"
        },
        vec![format!("{resource_type}/{id}")],
        report,
        0,
    );
    Ok(respond(
        state,
        StatusCode::OK,
        Some(&opened),
        &stored.headers,
        note,
    ))
}

/// `POST [base]/[type]`: creates the resource under an id the gateway assigns, sealed; with
/// `If-None-Exist`, only if the search it holds matches nothing (one match: that resource, 200;
/// several: 412).
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    FhirBody(mut resource): FhirBody,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_body_type(&resource, &resource_type)?;
    if let Some(condition) = headers.get(&IF_NONE_EXIST) {
        let query = condition
            .to_str()
            .map_err(|_| ApiError::InvalidRequest("If-None-Exist is not a query"))?;
        let query = query.strip_prefix('?').unwrap_or(query);
        match crate::search::find_one(&state, &caller, &resource_type, query).await? {
            Found::None => {}
            Found::One(existing) => {
                let id = existing
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                authorize(&state, &caller, Interaction::Read, &existing)?;
                let (opened, report) = open_for(&state, &caller, existing).await?;
                let note = note("create", vec![format!("{resource_type}/{id}")], report, 0);
                return Ok(respond(
                    &state,
                    StatusCode::OK,
                    Some(&opened),
                    &HeaderMap::new(),
                    note,
                ));
            }
            Found::Many => {
                return Err(ApiError::PreconditionFailed(
                    "If-None-Exist matches more than one resource",
                ));
            }
        }
    }
    let id = new_id();
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), Value::String(id.clone()));
        // The server owns versioning: what a client says of it is dropped.
        if let Some(Value::Object(meta)) = object.get_mut("meta") {
            meta.shift_remove("versionId");
            meta.shift_remove("lastUpdated");
        }
    }
    let obligations = authorize(&state, &caller, Interaction::Create, &resource)?;
    write(
        &state,
        &caller,
        WriteKind::Create,
        &resource_type,
        &id,
        resource,
        obligations.labels,
        &headers,
    )
    .await
}

/// `PUT [base]/[type]/[id]`: updates the resource, or creates it under that id; `If-Match` is
/// honoured.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    FhirBody(resource): FhirBody,
) -> Result<Response, ApiError> {
    check_type_and_id(&resource_type, &id)?;
    check_body_type(&resource, &resource_type)?;
    if resource.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(ApiError::InvalidRequest(
            "the resource's id must be the id in the URL",
        ));
    }
    update_resource(&state, &caller, &resource_type, &id, resource, &headers).await
}

/// `PUT [base]/[type]?[search]`: the conditional update. No match: created (under the body's
/// id, or one the gateway assigns); one match: that resource updated; several: 412.
pub async fn conditional_update(
    State(state): State<AppState>,
    caller: Caller,
    Path(resource_type): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    FhirBody(mut resource): FhirBody,
) -> Result<Response, ApiError> {
    check_type(&resource_type)?;
    check_body_type(&resource, &resource_type)?;
    let query = query.unwrap_or_default();
    if query.is_empty() {
        return Err(ApiError::MethodNotAllowed);
    }
    let body_id = resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = match crate::search::find_one(&state, &caller, &resource_type, &query).await? {
        Found::Many => {
            return Err(ApiError::PreconditionFailed(
                "the conditional update matches more than one resource",
            ));
        }
        Found::One(existing) => {
            let id = existing
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if body_id.as_deref().is_some_and(|b| b != id) {
                return Err(ApiError::InvalidRequest(
                    "the resource's id is not the id of the resource the search matched",
                ));
            }
            id
        }
        Found::None => body_id.unwrap_or_else(new_id),
    };
    if !is_fhir_id(&id) {
        return Err(ApiError::InvalidRequest("the id is not a FHIR id"));
    }
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), Value::String(id.clone()));
    }
    update_resource(&state, &caller, &resource_type, &id, resource, &headers).await
}

/// The update of `resource_type/id` to `resource`, after the stored version (if any) is
/// authorized and `If-Match` checked against it.
async fn update_resource(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    id: &str,
    resource: Value,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let kind = match fetch(state, resource_type, id, format!("{resource_type}/{id}")).await {
        Ok(stored) => {
            authorize(state, caller, Interaction::Update, &stored.resource)?;
            check_if_match(headers, &stored.resource)?;
            WriteKind::Update
        }
        Err(ApiError::NotFound { .. } | ApiError::Gone { .. }) => {
            if headers.contains_key(header::IF_MATCH) {
                return Err(ApiError::PreconditionFailed(
                    "If-Match names a version of a resource that does not exist",
                ));
            }
            WriteKind::Create
        }
        Err(e) => return Err(e),
    };
    let obligations = authorize(state, caller, Interaction::Update, &resource)?;
    write(
        state,
        caller,
        kind,
        resource_type,
        id,
        resource,
        obligations.labels,
        headers,
    )
    .await
}

/// `PATCH [base]/[type]/[id]` with a JSON Patch (`application/json-patch+json`).
pub async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    Path((resource_type, id)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    check_type_and_id(&resource_type, &id)?;
    let headers = request.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/json-patch+json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = read_body(request, &()).await?;
    let operations: json_patch::Patch = serde_json::from_slice(&body)
        .map_err(|_| ApiError::InvalidRequest("the body is not a JSON Patch document"))?;

    let stored = fetch(&state, &resource_type, &id, format!("{resource_type}/{id}")).await?;
    authorize(&state, &caller, Interaction::Patch, &stored.resource)?;
    check_if_match(&headers, &stored.resource)?;
    let version = version_of(&stored.resource);
    let (mut opened, report) = open_for(&state, &caller, stored.resource).await?;
    if report.masked > 0 || report.forged > 0 {
        return Err(ApiError::Unprocessable(
            "the resource holds sealed elements this caller cannot open; a patch could not keep them",
        ));
    }
    json_patch::patch(&mut opened, &operations)
        .map_err(|_| ApiError::Unprocessable("the JSON Patch does not apply to the resource"))?;
    if opened.get("resourceType").and_then(Value::as_str) != Some(resource_type.as_str())
        || opened.get("id").and_then(Value::as_str) != Some(id.as_str())
    {
        return Err(ApiError::Unprocessable(
            "a patch may not change the resource's type or id",
        ));
    }
    let obligations = authorize(&state, &caller, Interaction::Patch, &opened)?;
    // The version read is the one patched: a concurrent write in between is a 412 upstream.
    let mut headers = headers;
    if let Some(version) = version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()) {
        headers.insert(header::IF_MATCH, version);
    }
    write(
        &state,
        &caller,
        WriteKind::Update,
        &resource_type,
        &id,
        opened,
        obligations.labels,
        &headers,
    )
    .await
}

/// `DELETE [base]/[type]/[id]`.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_type_and_id(&resource_type, &id)?;
    let stored = fetch(&state, &resource_type, &id, format!("{resource_type}/{id}")).await?;
    authorize(&state, &caller, Interaction::Delete, &stored.resource)?;
    check_if_match(&headers, &stored.resource)?;
    let mut request = UpstreamRequest::new(Method::DELETE, format!("{resource_type}/{id}"))
        .with_header(header::ACCEPT, HeaderValue::from_static(FHIR_JSON));
    if let Some(value) = headers.get(header::IF_MATCH) {
        request = request.with_header(header::IF_MATCH, value.clone());
    }
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        return Err(upstream_refusal(&response, &resource_type, &id));
    }
    let note = note(
        "delete",
        vec![format!("{resource_type}/{id}")],
        OpenReport::default(),
        0,
    );
    let mut out = StatusCode::NO_CONTENT.into_response();
    out.extensions_mut().insert(note);
    Ok(out)
}

/// Whether a write creates or updates (for its status and audit line).
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    Create,
    Update,
}

/// Seals `resource` and writes it with `PUT [type]/[id]`, answering as the client's `Prefer`
/// asks: the stored resource opened for the caller (the default), nothing, or an outcome.
#[allow(clippy::too_many_arguments)]
async fn write(
    state: &AppState,
    caller: &Caller,
    kind: WriteKind,
    resource_type: &str,
    id: &str,
    resource: Value,
    labels: Vec<Label>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let sealed = state
        .sealing
        .seal(&state.headers, resource, None, labels)
        .await?;
    let mut request = UpstreamRequest::new(Method::PUT, format!("{resource_type}/{id}"))
        .with_header(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
        .with_header(header::ACCEPT, HeaderValue::from_static(FHIR_JSON))
        .with_header(PREFER, HeaderValue::from_static("return=representation"))
        .with_body(sealed.resource.to_string());
    if let Some(value) = headers.get(header::IF_MATCH) {
        request = request.with_header(header::IF_MATCH, value.clone());
    }
    let response = state.upstream.send(request).await?;
    let status = response.status();
    if !status.is_success() {
        return Err(upstream_refusal(&response, resource_type, id));
    }
    let status = match kind {
        WriteKind::Create => StatusCode::CREATED,
        WriteKind::Update if status == StatusCode::CREATED => StatusCode::CREATED,
        WriteKind::Update => StatusCode::OK,
    };
    let interaction = if kind == WriteKind::Create {
        "create"
    } else {
        "update"
    };
    let stored: Option<Value> = serde_json::from_slice(response.body()).ok();
    let version = stored.as_ref().and_then(version_of);
    let mut passed = response.headers().clone();
    let location = format!(
        "{}/{resource_type}/{id}{}",
        state.config.fhir_base,
        version
            .as_deref()
            .map(|v| format!("/_history/{v}"))
            .unwrap_or_default()
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        passed.insert(header::LOCATION, location);
    }
    if let Some(etag) = version.and_then(|v| HeaderValue::from_str(&format!("W/\"{v}\"")).ok()) {
        passed.entry(header::ETAG).or_insert(etag);
    }
    let refs = vec![format!("{resource_type}/{id}")];
    match prefer_return(headers) {
        PreferReturn::Minimal => {
            let note = note(interaction, refs, OpenReport::default(), sealed.elements);
            Ok(respond(state, status, None, &passed, note))
        }
        PreferReturn::Outcome => {
            let outcome = json!({"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "informational",
                "diagnostics": format!("{interaction}d {resource_type}/{id}")}]});
            let note = note(interaction, refs, OpenReport::default(), sealed.elements);
            Ok(respond(state, status, Some(&outcome), &passed, note))
        }
        PreferReturn::Representation => {
            // The upstream's answer is what it stored; opened for the caller. An upstream that
            // answers without a body gets the minimal answer.
            let Some(stored) = stored.filter(|s| {
                s.get("resourceType").and_then(Value::as_str) == Some(resource_type)
                    && s.get("id").and_then(Value::as_str) == Some(id)
            }) else {
                let note = note(interaction, refs, OpenReport::default(), sealed.elements);
                return Ok(respond(state, status, None, &passed, note));
            };
            let (opened, report) = open_for(state, caller, stored).await?;
            let note = note(interaction, refs, report, sealed.elements);
            Ok(respond(state, status, Some(&opened), &passed, note))
        }
    }
}

/// What `Prefer: return=` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PreferReturn {
    Minimal,
    Representation,
    Outcome,
}

pub(crate) fn prefer_return(headers: &HeaderMap) -> PreferReturn {
    for value in headers.get_all(&PREFER) {
        for part in value.to_str().unwrap_or_default().split([',', ';']) {
            match part.trim().replace(' ', "").as_str() {
                "return=minimal" => return PreferReturn::Minimal,
                "return=OperationOutcome" => return PreferReturn::Outcome,
                "return=representation" => return PreferReturn::Representation,
                _ => {}
            }
        }
    }
    PreferReturn::Representation
}

/// A stored resource and the upstream's response headers.
pub(crate) struct Stored {
    pub(crate) resource: Value,
    pub(crate) headers: HeaderMap,
}

/// `GET path` on the upstream, which must be `resource_type`/`id`: 404 and 410 are
/// [`ApiError::NotFound`] and [`ApiError::Gone`].
pub(crate) async fn fetch(
    state: &AppState,
    resource_type: &str,
    id: &str,
    path: String,
) -> Result<Stored, ApiError> {
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
    let (_, headers, body) = response.into_parts();
    let resource: Value = serde_json::from_slice(&body).map_err(|_| ApiError::UpstreamMalformed)?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
        || resource.get("id").and_then(Value::as_str) != Some(id)
    {
        return Err(ApiError::UpstreamMalformed);
    }
    Ok(Stored { resource, headers })
}

/// Scopes first (they only narrow), then the policy, on `resource` (the stored one for reads,
/// deletes and patches; the new content for creates and updates).
pub(crate) fn authorize(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource: &Value,
) -> Result<Obligations, ApiError> {
    let verified = &caller.0;
    let bases = [state.config.fhir_base.as_str(), state.upstream.base()];
    verified
        .context
        .check_resource(interaction, resource, &bases)?;
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    decide(
        state,
        caller,
        interaction,
        resource_type,
        record_patient(resource),
    )
}

/// The policy's decision for `interaction` on `resource_type` records of `patient`.
pub(crate) fn decide(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource_type: &str,
    patient: Option<String>,
) -> Result<Obligations, ApiError> {
    let decision = state.policy.decide(
        &caller.0.context.principal,
        &PolicyRequest {
            interaction,
            resource_type: resource_type.to_string(),
            patient,
        },
    );
    match decision {
        Decision::Permit(obligations) => Ok(obligations),
        Decision::Deny(_) => Err(ApiError::Denied),
    }
}

/// Opens `value` (a resource or a Bundle) for the caller: its key for the current period, the
/// shared headers it names, then the reader off the async threads.
pub(crate) async fn open_for(
    state: &AppState,
    caller: &Caller,
    value: Value,
) -> Result<(Value, OpenReport), ApiError> {
    let ids = shared_header_ids(&value);
    let grant = state
        .keyring
        .grant_for(&caller.0.context.principal, now())
        .await?;
    let headers = state.headers.lookup(&ids).await?;
    let cache = Arc::clone(&state.header_cache);
    let sealing = Arc::clone(&state.sealing);
    let holder = grant.as_ref().map(|grant| grant.registration.clone());
    let open = move |mut value: Value| {
        let (holder, key) = match &grant {
            Some(grant) => (grant.registration.as_str(), Some(&*grant.key)),
            None => ("", None),
        };
        let report = Reader::new(holder, key, &cache, &headers, sealing.key()).open(&mut value);
        (value, report)
    };
    // Opening with header keys already opened is a few AES-GCM decryptions: done here, it costs
    // less than the hand-over to the blocking pool. A header to open (an RS-HABE decryption,
    // milliseconds) or a large answer goes to the blocking pool, off the async threads.
    let quick = ids.len() <= INLINE_HEADERS
        && entry_count(&value) <= INLINE_ENTRIES
        && !has_embedded_headers(&value)
        && holder.as_deref().is_some_and(|holder| {
            let now = std::time::Instant::now();
            ids.iter()
                .all(|id| state.header_cache.get(holder, *id, now).is_some())
        });
    let (value, report) = if quick {
        open(value)
    } else {
        tokio::task::spawn_blocking(move || open(value))
            .await
            .map_err(|_| ApiError::KeyTask)?
    };
    // Here, in the request's span (the blocking pool is outside it).
    warn_forged(&report);
    Ok((value, report))
}

/// One warning per response that held forged sealed content (`docs/authenticity.md`): where,
/// never what (no value, no envelope). The request span names the request.
fn warn_forged(report: &OpenReport) {
    if report.forged == 0 {
        return;
    }
    tracing::warn!(
        forged = report.forged,
        elements = %report.forged_elements.join(", "),
        "sealed content that FHIRseal did not seal there was withheld (forged, modified or moved upstream)"
    );
}

/// At most this many shared headers for opening on the async thread.
const INLINE_HEADERS: usize = 8;
/// At most this many Bundle entries for opening on the async thread.
const INLINE_ENTRIES: usize = 20;

/// Whether `value` carries RS-HABE headers of its own (`resource` granularity).
fn has_embedded_headers(value: &Value) -> bool {
    match value {
        Value::Object(object) => {
            object.get("url").and_then(Value::as_str) == Some(SEALED_HEADER)
                || object.values().any(has_embedded_headers)
        }
        Value::Array(items) => items.iter().any(has_embedded_headers),
        _ => false,
    }
}

/// How many entries a Bundle holds (0 for a resource).
fn entry_count(value: &Value) -> usize {
    value
        .get("entry")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

/// A response with `body` (moved to the gateway's base), the upstream headers a client may see
/// (`Location` moved too) and the audit note.
pub(crate) fn respond(
    state: &AppState,
    status: StatusCode,
    body: Option<&Value>,
    upstream_headers: &HeaderMap,
    note: AuditNote,
) -> Response {
    let upstream_base = state.upstream.base();
    let gateway_base = state.config.fhir_base.as_str();
    let mut out = match body {
        Some(body) => {
            let text = body.to_string();
            let text = rewrite_base(&text, upstream_base, gateway_base).into_owned();
            let mut out = (status, text).into_response();
            out.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
            out
        }
        None => status.into_response(),
    };
    for name in PASSED_BACK {
        let Some(value) = upstream_headers.get(&name) else {
            continue;
        };
        let value = if name == header::LOCATION {
            match value.to_str() {
                Ok(text) => {
                    match HeaderValue::from_str(&rewrite_base(text, upstream_base, gateway_base)) {
                        Ok(v) => v,
                        Err(_) => continue,
                    }
                }
                Err(_) => continue,
            }
        } else {
            value.clone()
        };
        out.headers_mut().insert(name, value);
    }
    out.extensions_mut().insert(note);
    out
}

/// The audit note of an interaction.
pub(crate) fn note(
    interaction: &'static str,
    resources: Vec<String>,
    report: OpenReport,
    sealed: usize,
) -> AuditNote {
    AuditNote {
        interaction,
        resources,
        opened: report.opened,
        masked: report.masked,
        forged: report.forged,
        sealed,
    }
}

/// An upstream refusal of a write or delete, as the client's error: 404/410 as such, 409, 412
/// and 422 kept (with the upstream's own words dropped: they describe the sealed form, not what
/// the client sent), anything else a 502.
pub(crate) fn upstream_refusal(
    response: &UpstreamResponse,
    resource_type: &str,
    id: &str,
) -> ApiError {
    match response.status() {
        StatusCode::NOT_FOUND => ApiError::NotFound {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
        },
        StatusCode::GONE => ApiError::Gone {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
        },
        StatusCode::PRECONDITION_FAILED => {
            ApiError::PreconditionFailed("the resource was changed since the version named")
        }
        StatusCode::CONFLICT => ApiError::UpstreamConflict,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
            ApiError::Unprocessable("the FHIR server refused the resource as invalid")
        }
        status => ApiError::UpstreamStatus(status),
    }
}

/// The `If-Match` check against the stored resource's `meta.versionId`.
fn check_if_match(headers: &HeaderMap, stored: &Value) -> Result<(), ApiError> {
    let Some(wanted) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let wanted = wanted
        .to_str()
        .map_err(|_| ApiError::InvalidRequest("If-Match is not an ETag"))?;
    check_version(wanted, stored)
}

/// An ETag (`W/"3"`, `"3"` or `3`) against the stored resource's `meta.versionId`: 412 unless
/// it names the current version.
pub(crate) fn check_version(wanted: &str, stored: &Value) -> Result<(), ApiError> {
    let wanted = wanted.trim();
    let wanted = wanted
        .strip_prefix("W/")
        .unwrap_or(wanted)
        .trim_matches('"');
    match version_of(stored) {
        Some(current) if current == wanted => Ok(()),
        _ => Err(ApiError::PreconditionFailed(
            "If-Match does not name the current version",
        )),
    }
}

/// A resource's `meta.versionId`.
pub(crate) fn version_of(resource: &Value) -> Option<String> {
    resource
        .get("meta")
        .and_then(|m| m.get("versionId"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// What a conditional interaction's search found.
pub(crate) enum Found {
    None,
    One(Value),
    Many,
}

/// A resource type R4 knows.
pub(crate) fn check_type(resource_type: &str) -> Result<(), ApiError> {
    if r4().kind(resource_type) != Some(Kind::Resource) {
        return Err(ApiError::UnknownPath);
    }
    Ok(())
}

/// The body is a resource of the URL's type.
fn check_body_type(resource: &Value, resource_type: &str) -> Result<(), ApiError> {
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(ApiError::InvalidRequest(
            "the body's resourceType must be the type in the URL",
        ));
    }
    Ok(())
}

/// A resource type R4 knows and an id of FHIR's id syntax (`[A-Za-z0-9\-\.]{1,64}`).
pub(crate) fn check_type_and_id(resource_type: &str, id: &str) -> Result<(), ApiError> {
    check_type(resource_type)?;
    if !is_fhir_id(id) {
        return Err(ApiError::InvalidRequest("the id is not a FHIR id"));
    }
    Ok(())
}

/// FHIR's id syntax: `[A-Za-z0-9\-\.]{1,64}`.
pub(crate) fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An OperationOutcome body for an entry of a batch answer.
pub(crate) fn outcome_of(error: &ApiError) -> (StatusCode, Value) {
    let (status, code, _) = error.parts();
    (status, operation_outcome(code, &error.to_string()))
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
