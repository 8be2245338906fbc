//! The writes of the request flow: create, update (also update-as-create and the conditional
//! update), patch and delete, each in two steps so that a transaction can run many of them in one
//! upstream call:
//!
//! - prepare (one function per interaction: [`create`], [`update`], [`conditional_update`],
//!   [`patch`], [`delete`]): the stored resource (if any) authorized for the interaction and `If-Match`
//!   checked against it; the new content authorized too (moving a record out of another patient's
//!   compartment is a write to that patient's record); sealed. The result is the upstream call
//!   ([`Prepared::call`]), or an answer already known (a conditional create that matched).
//! - [`finish`]: the upstream's answer to that call, checked and opened for the caller as the
//!   client's `Prefer` asks.
//!
//! A single write is `prepare`, one upstream request, `finish` ([`write()`]); a transaction is
//! `prepare` of every entry, one upstream transaction, `finish` of every entry. The gateway
//! assigns every created resource's id (its envelopes are bound to it) and writes it with
//! `PUT [type]/[id]`, so a retried create cannot create twice.
//!
//! A `PUT [type]/[id]` (or a conditional update matching nothing) of an id the upstream does not
//! hold is a create, and creates once: the writer takes the create guard of `[type]/[id]`
//! ([`crate::guard`]), reads again, and, still absent, prepares the create holding the guard
//! ([`Step::SendGuarded`]), which goes only once the upstream has answered the write (alone, in
//! [`write()`]; in a transaction, once the upstream transaction has). A writer that finds the
//! resource there once it has the guard lets it go and proceeds as the update it now is, merged
//! with that version and written under `If-Match` of it: 200, or 412 if another write came in
//! between, never a second 201.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use base64::Engine as _;
use fhirseal_fhir::request::Conditions;
use fhirseal_fhir::rest::Interaction;
use fhirseal_fhir::{
    FhirRequest, Id, Interaction as FhirInteraction, Prefer, ResourceType, SearchParam, json_text,
};
use fhirseal_seal::OpenReport;
use fhirseal_upstream::UpstreamRequest;
use serde_json::{Value, json};

use crate::auth::Caller;
use fhirseal_fhir::FHIR_JSON;

use crate::error::ApiError;
use crate::flow::authorize::authorize;
use crate::flow::protect::open_for;
use crate::flow::query::find_one;
use crate::flow::respond::{Answer, note};
use crate::flow::stored::{Found, Parse, Stored, check_version, fetch, version_of};
use crate::guard::CreateGuard;
use crate::seal::new_id;
use crate::state::AppState;

/// What a write becomes before the upstream call.
#[derive(Debug)]
pub enum Step {
    /// Answered without writing (a conditional create whose search matched one resource).
    Answered(Answer),
    /// To send upstream, then [`finish`].
    Send(Prepared),
    /// A create by `PUT`, to send upstream, then [`finish`], holding the create guard of its
    /// resource until the upstream has answered (dropping the guard lets it go).
    SendGuarded(Prepared, CreateGuard),
}

/// A checked, sealed write: the upstream call, and what [`finish`] needs to answer it.
#[derive(Debug)]
pub struct Prepared {
    /// The upstream call.
    pub call: Call,
    kind: Kind,
    resource_type: String,
    id: String,
    sealed: usize,
    prefer: Prefer,
    /// A `Consent` written: what goes into force once the upstream has stored it.
    consent: Option<fhirseal_policy::ConsentRecord>,
}

impl Prepared {
    /// The resource written: its type and id.
    pub fn target(&self) -> (&str, &str) {
        (&self.resource_type, &self.id)
    }
}

/// One upstream write: `PUT [type]/[id]` with the sealed resource, or `DELETE [type]/[id]`.
/// `Debug` prints no body (what is not sealed may still be personal data).
pub struct Call {
    /// `PUT` or `DELETE`.
    pub method: Method,
    /// `[type]/[id]`.
    pub path: String,
    /// The sealed resource of a `PUT`.
    pub body: Option<Value>,
    /// The version the client named, passed on as `If-Match`.
    pub if_match: Option<String>,
}

/// Whether the write creates, updates or deletes (for its status and audit line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
    Patch,
    Delete,
}

/// What a create takes besides its body: an id assigned beforehand (a transaction maps its
/// `urn:uuid` references to it) or none (a fresh one is drawn).
#[derive(Debug, Default)]
pub struct CreateId(pub Option<String>);

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

// === the interactions ===

/// What [`prepare`] makes of a request.
#[derive(Debug)]
pub enum Planned {
    /// A write, prepared: answered already, or to send.
    Write(Step),
    /// Not a write: the request as it came, for the rest of the flow.
    Other(FhirRequest),
}

/// The write step of `request` (create, update, conditional update, patch, delete), the one
/// function that alone and inside a transaction prepares every write; any other request comes
/// back as [`Planned::Other`]. `id` is a create's id when a transaction assigned it.
pub async fn prepare(
    state: &AppState,
    caller: &Caller,
    request: FhirRequest,
    id: CreateId,
) -> Result<Planned, ApiError> {
    use FhirInteraction as I;
    // The audit trail is written by the gateway alone (a transaction's entries come here
    // without `flow::run`).
    if crate::audit::search::serves(&request.interaction)
        && matches!(
            request.interaction,
            I::Create(_) | I::Update(..) | I::ConditionalUpdate(_) | I::Patch(..) | I::Delete(..)
        )
    {
        return Err(ApiError::MethodNotAllowed);
    }
    let FhirRequest {
        interaction,
        params,
        conditions,
        prefer,
        body,
    } = request;
    let step = match &interaction {
        I::Create(t) => create(state, caller, t, body, &conditions, prefer, id).await?,
        I::Update(t, i) => update(state, caller, t, i, body, &conditions, prefer).await?,
        I::ConditionalUpdate(t) => {
            conditional_update(state, caller, t, &params, body, &conditions, prefer).await?
        }
        I::Patch(t, i) => patch(state, caller, t, i, body, &conditions, prefer).await?,
        I::Delete(t, i) => delete(state, caller, t, i, &conditions).await?,
        _ => {
            return Ok(Planned::Other(FhirRequest {
                interaction,
                params,
                conditions,
                prefer,
                body,
            }));
        }
    };
    Ok(Planned::Write(step))
}

/// `POST [type]`: under an id the gateway assigns; with `If-None-Exist`, only if its search
/// matches nothing (one match: that resource, 200; several: 412).
pub async fn create(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    body: Option<Value>,
    conditions: &Conditions,
    prefer: Prefer,
    id: CreateId,
) -> Result<Step, ApiError> {
    let resource_type = resource_type.as_str();
    let mut resource = body_of(body, resource_type)?;
    if let Some(condition) = &conditions.if_none_exist {
        match find_one(state, caller, resource_type, condition).await? {
            Found::None => {}
            Found::One(existing) => {
                return Ok(Step::Answered(
                    existing_answer(state, caller, existing).await?,
                ));
            }
            Found::Many => {
                return Err(ApiError::PreconditionFailed(
                    "If-None-Exist matches more than one resource",
                ));
            }
        }
    }
    let id = id.0.unwrap_or_else(new_id);
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), Value::String(id.clone()));
        // The server owns versioning: what a client says of it is dropped.
        if let Some(Value::Object(meta)) = object.get_mut("meta") {
            meta.shift_remove("versionId");
            meta.shift_remove("lastUpdated");
        }
    }
    let target = Target {
        resource_type,
        id: &id,
    };
    let how = (Kind::Create, Interaction::Create);
    seal(state, caller, how, target, resource, None, None, prefer).await
}

/// `PUT [type]/[id]`: updates the resource, or creates it under that id; `If-Match` is honoured.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    id: &Id,
    body: Option<Value>,
    conditions: &Conditions,
    prefer: Prefer,
) -> Result<Step, ApiError> {
    let resource = body_of(body, resource_type.as_str())?;
    if resource.get("id").and_then(Value::as_str) != Some(id.as_str()) {
        return Err(ApiError::InvalidRequest(
            "the resource's id must be the id in the URL",
        ));
    }
    let target = Target {
        resource_type: resource_type.as_str(),
        id: id.as_str(),
    };
    update_resource(state, caller, target, resource, conditions, prefer).await
}

/// `PUT [type]?[search]`: no match, created (under the body's id, or one the gateway assigns);
/// one match, that resource updated; several, 412.
pub async fn conditional_update(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    condition: &[SearchParam],
    body: Option<Value>,
    conditions: &Conditions,
    prefer: Prefer,
) -> Result<Step, ApiError> {
    let resource_type = resource_type.as_str();
    let mut resource = body_of(body, resource_type)?;
    let body_id = resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = match find_one(state, caller, resource_type, condition).await? {
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
    let id = Id::parse(&id).map_err(|_| ApiError::InvalidRequest("the id is not a FHIR id"))?;
    if let Some(object) = resource.as_object_mut() {
        object.insert("id".into(), Value::String(id.to_string()));
    }
    let target = Target {
        resource_type,
        id: id.as_str(),
    };
    update_resource(state, caller, target, resource, conditions, prefer).await
}

/// `PATCH [type]/[id]` with a JSON Patch: the body itself (`application/json-patch+json`) or,
/// inside a Bundle, a `Binary` of that content type. Applied to the resource as opened for the
/// caller (placeholders where it cannot read), then merged with the stored version as a `PUT`
/// is ([`fhirseal_seal::merge()`]): what the caller cannot read is carried across; a patch that
/// changes or removes such an element is refused, naming it.
pub async fn patch(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    id: &Id,
    body: Option<Value>,
    conditions: &Conditions,
    prefer: Prefer,
) -> Result<Step, ApiError> {
    let operations = patch_document(body)?;
    let (resource_type, id) = (resource_type.as_str(), id.as_str());
    let path = format!("{resource_type}/{id}");
    let stored = fetch(state, resource_type, id, path, Parse::Whole).await?;
    authorize(state, caller, Interaction::Patch, &stored.resource)?;
    check_if_match(conditions, &stored.resource)?;
    let version = version_of(&stored.resource);
    let (opened, _) = open_for(state, caller, stored.resource.clone()).await?;
    let mut patched = opened.clone();
    json_patch::patch(&mut patched, &operations)
        .map_err(|_| ApiError::Unprocessable("the JSON Patch does not apply to the resource"))?;
    // A `PUT` that leaves out an element the caller cannot read keeps it (a client model drops
    // placeholders); a patch names what it removes, so removing one is refused.
    let before = fhirseal_seal::unreadable_paths(&stored.resource, &opened);
    let after = fhirseal_seal::unreadable_paths(&stored.resource, &patched);
    if let Some(path) = before.into_iter().find(|p| !after.contains(p)) {
        return Err(fhirseal_seal::MergeError::Changed { path }.into());
    }
    if patched.get("resourceType").and_then(Value::as_str) != Some(resource_type)
        || patched.get("id").and_then(Value::as_str) != Some(id)
    {
        return Err(ApiError::Unprocessable(
            "a patch may not change the resource's type or id",
        ));
    }
    // The version read is the one patched: a concurrent write in between is a 412 upstream.
    let if_match = version.map(|v| format!("W/\"{v}\""));
    let target = Target { resource_type, id };
    let how = (Kind::Patch, Interaction::Patch);
    let read = Some((stored.resource, opened));
    seal(state, caller, how, target, patched, read, if_match, prefer).await
}

/// `DELETE [type]/[id]`: authorized on the stored resource; `If-Match` checked by the gateway
/// (some servers ignore it on `DELETE`) and sent upstream.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    id: &Id,
    conditions: &Conditions,
) -> Result<Step, ApiError> {
    let (resource_type, id) = (resource_type.as_str(), id.as_str());
    let path = format!("{resource_type}/{id}");
    let stored = fetch(state, resource_type, id, path, Parse::Whole).await?;
    authorize(state, caller, Interaction::Delete, &stored.resource)?;
    check_if_match(conditions, &stored.resource)?;
    // Deleting a Consent withdraws it: nothing of it stays in force.
    let bases = [state.config.fhir_base.as_str(), state.upstream.base()];
    let consent = (resource_type == "Consent")
        .then(|| fhirseal_policy::record_patient(&stored.resource, &bases))
        .flatten()
        .map(|patient| fhirseal_policy::ConsentRecord::withdrawn(id, &patient));
    Ok(Step::Send(Prepared {
        call: Call {
            method: Method::DELETE,
            path: format!("{resource_type}/{id}"),
            body: None,
            if_match: conditions.if_match.clone(),
        },
        kind: Kind::Delete,
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        sealed: 0,
        prefer: Prefer::Unspecified,
        consent,
    }))
}

// === the two ends: one write alone, and the finish of any write ===

/// A single write: `step` sent upstream on its own and finished.
pub async fn write(state: &AppState, caller: &Caller, step: Step) -> Result<Answer, ApiError> {
    // A create's guard is held until the upstream has answered (or failed), then dropped.
    let (prepared, guard) = match step {
        Step::Answered(answer) => return Ok(answer),
        Step::Send(prepared) => (prepared, None),
        Step::SendGuarded(prepared, guard) => (prepared, Some(guard)),
    };
    let call = &prepared.call;
    let mut request = UpstreamRequest::new(call.method.clone(), call.path.clone())
        .with_header(header::ACCEPT, HeaderValue::from_static(FHIR_JSON));
    if let Some(body) = &call.body {
        request = request
            .with_header(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
            .with_header(PREFER, HeaderValue::from_static("return=representation"))
            .with_body(json_text(body));
    }
    if let Some(value) = call
        .if_match
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        request = request.with_header(header::IF_MATCH, value);
    }
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        let target = (prepared.resource_type.as_str(), prepared.id.as_str());
        return Err(ApiError::from_upstream_response(&response, Some(target)));
    }
    let (status, headers, body) = response.into_parts();
    // What the upstream stored is only opened for the caller ([`finish`]): no use for its tokens.
    let stored = Parse::ForReader.body(&body).ok();
    drop(guard);
    finish(state, caller, prepared, status, &headers, stored).await
}

/// The answer to a write, from the upstream's answer to its call: `status`, its `headers`
/// (`ETag`, `Location`) and the stored resource it sent back (if any), opened for the caller as
/// the client's `Prefer` asks.
pub async fn finish(
    state: &AppState,
    caller: &Caller,
    prepared: Prepared,
    status: StatusCode,
    headers: &HeaderMap,
    stored: Option<Value>,
) -> Result<Answer, ApiError> {
    let Prepared {
        kind,
        resource_type,
        id,
        sealed,
        prefer,
        consent,
        ..
    } = prepared;
    if let Some(record) = consent {
        crate::consent::put_in_force(state, record).await?;
    }
    let refs = vec![format!("{resource_type}/{id}")];
    if kind == Kind::Delete {
        let note = note("delete", refs, OpenReport::default(), 0);
        return Ok(Answer::new(StatusCode::NO_CONTENT, None, note));
    }
    let status = match kind {
        Kind::Create => StatusCode::CREATED,
        _ if status == StatusCode::CREATED => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    let interaction = match kind {
        Kind::Create => "create",
        Kind::Patch => "patch",
        _ => "update",
    };
    // What the upstream stored, if it is the resource written.
    let stored = stored.filter(|s| {
        s.get("resourceType").and_then(Value::as_str) == Some(resource_type.as_str())
            && s.get("id").and_then(Value::as_str) == Some(id.as_str())
    });
    let version = stored.as_ref().and_then(version_of);
    let mut passed = HeaderMap::new();
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(value) = headers.get(&name) {
            passed.insert(name, value.clone());
        }
    }
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
    let answer = |body, report| Answer {
        status,
        body,
        headers: passed.clone(),
        note: note(interaction, refs.clone(), report, sealed),
    };
    Ok(match (prefer, stored) {
        (Prefer::Minimal, _) => answer(None, OpenReport::default()),
        (Prefer::OperationOutcome, _) => {
            let outcome = json!({"resourceType": "OperationOutcome", "issue": [{
                "severity": "information", "code": "informational",
                "diagnostics": format!("{interaction}d {resource_type}/{id}")}]});
            answer(Some(outcome), OpenReport::default())
        }
        // An upstream that answers without the resource gets the minimal answer.
        (_, None) => answer(None, OpenReport::default()),
        (_, Some(stored)) => {
            let (opened, report) = open_for(state, caller, stored).await?;
            answer(Some(opened), report)
        }
    })
}

// === helpers ===

/// `Prefer` (RFC 7240).
const PREFER: header::HeaderName = header::HeaderName::from_static("prefer");

/// A write's target.
#[derive(Clone, Copy)]
struct Target<'a> {
    resource_type: &'a str,
    id: &'a str,
}

/// The update of `target` to `resource`, after the stored version (if any) is authorized and
/// `If-Match` checked against it; with none, the create of it under its guard (see the module
/// documentation).
async fn update_resource(
    state: &AppState,
    caller: &Caller,
    target: Target<'_>,
    resource: Value,
    conditions: &Conditions,
    prefer: Prefer,
) -> Result<Step, ApiError> {
    let Target { resource_type, id } = target;
    let key = format!("{resource_type}/{id}");
    let (stored, guard) = match stored_or_absent(state, target, &key).await? {
        Some(stored) => (Some(stored), None),
        None if conditions.if_match.is_some() => {
            return Err(ApiError::PreconditionFailed(
                "If-Match names a version of a resource that does not exist",
            ));
        }
        // Absent: read again under the guard, so that of concurrent creates one creates.
        None => {
            let guard = state.creates.acquire(&key).await?;
            match stored_or_absent(state, target, &key).await? {
                // Created meanwhile: the update it now is; the guard is not needed.
                Some(stored) => (Some(stored), None),
                None => (None, Some(guard)),
            }
        }
    };
    let (kind, read) = match stored {
        Some(stored) => {
            authorize(state, caller, Interaction::Update, &stored.resource)?;
            check_if_match(conditions, &stored.resource)?;
            let (opened, _) = open_for(state, caller, stored.resource.clone()).await?;
            (Kind::Update, Some((stored.resource, opened)))
        }
        // Update as create: answered 201, decided as the update it was asked as.
        None => (Kind::Create, None),
    };
    // Merged with the version read, so written only over that version: a write in between is a
    // 412 upstream, never overwritten unseen.
    let if_match = match &read {
        Some((stored, _)) => version_of(stored).map(|v| format!("W/\"{v}\"")),
        None => None,
    }
    .or_else(|| conditions.if_match.clone());
    let how = (kind, Interaction::Update);
    let step = seal(state, caller, how, target, resource, read, if_match, prefer).await?;
    Ok(match (step, guard) {
        (Step::Send(prepared), Some(guard)) => Step::SendGuarded(prepared, guard),
        (step, _) => step,
    })
}

/// The stored version of `target` (`key` is its `[type]/[id]`), or `None` when the upstream
/// holds none (never created, or deleted).
async fn stored_or_absent(
    state: &AppState,
    target: Target<'_>,
    key: &str,
) -> Result<Option<Stored>, ApiError> {
    let (resource_type, id) = (target.resource_type, target.id);
    match fetch(state, resource_type, id, key.to_string(), Parse::Whole).await {
        Ok(stored) => Ok(Some(stored)),
        Err(ApiError::NotFound { .. } | ApiError::Gone { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The new content merged with the version `read` (the stored upstream form and the caller's
/// opened view of it; `None` for a create: [`fhirseal_seal::merge()`]), authorized for the write
/// (as `how`'s interaction) and sealed, what the caller cannot read carried across: the upstream
/// call.
///
/// - Size: the sealed resource must fit [`write_limit`], so that the gateway can read back
///   whatever it writes; else 413 before anything is stored. A body whose own JSON is already
///   larger is refused before it is sealed.
/// - "A caller may set only what it may read", for creates as for updates: every element the
///   write newly seals (not carried across) must open for the caller, checked by opening the
///   result with its key, unless the rule that seals it names `writers` the caller satisfies
///   ([`fhirseal_policy::Obligations::writable_paths`]); else 403 naming the element. Changing
///   or removing a stored element the caller cannot read is refused before this, by the merge,
///   writer or not: a writer cannot see what it would overwrite.
#[allow(clippy::too_many_arguments)] // the write's parts, each one value
async fn seal(
    state: &AppState,
    caller: &Caller,
    how: (Kind, Interaction),
    target: Target<'_>,
    resource: Value,
    read: Option<(Value, Value)>,
    if_match: Option<String>,
    prefer: Prefer,
) -> Result<Step, ApiError> {
    let (kind, interaction) = how;
    let Target { resource_type, id } = target;
    let too_large = |limit| ApiError::TooLargeToStore {
        what: format!("{resource_type}/{id}"),
        limit,
    };
    let limit = write_limit(state);
    if json_len(&resource) > limit {
        return Err(too_large(limit));
    }
    let (stored, opened) = match &read {
        Some((stored, opened)) => (Some(stored), Some(opened)),
        None => (None, None),
    };
    let mut merged = fhirseal_seal::merge(stored, opened, &resource)?;
    drop(read);
    let resource = merged.take_resource();
    // The decision carries the rules it was made under: the write is sealed by those.
    let permit = authorize(state, caller, interaction, &resource)?;
    // A Consent the gateway cannot enforce is refused before anything goes upstream.
    let consent = (resource_type == "Consent")
        .then(|| {
            let bases = [state.config.fhir_base.as_str(), state.upstream.base()];
            fhirseal_policy::ConsentRecord::from_fhir(&resource, id, &bases)
        })
        .transpose()?;
    let writable = permit.writable_paths(&resource);
    let unstored = state.sealing.seal(resource, None, permit).await?;
    let unstored = unstored.try_map(|sealed| merged.finish(sealed))?;
    // Before the shared headers are stored: a write refused here leaves nothing upstream.
    if json_len(unstored.resource()) > limit {
        return Err(too_large(limit));
    }
    let sealed = unstored.store(&state.headers).await?;
    let written = sealed.resource;
    if sealed.elements > 0 {
        let (reopened, _) = open_for(state, caller, written.clone()).await?;
        let carried: Vec<&str> = merged.carried_paths().collect();
        if let Some(path) = fhirseal_seal::unreadable_paths(&written, &reopened)
            .into_iter()
            .find(|p| !carried.contains(&p.as_str()) && !writable.contains(p))
        {
            return Err(fhirseal_seal::MergeError::NotReadable { path }.into());
        }
    }
    Ok(Step::Send(Prepared {
        call: Call {
            method: Method::PUT,
            path: format!("{resource_type}/{id}"),
            body: Some(written),
            if_match,
        },
        kind,
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        sealed: sealed.elements,
        prefer,
        consent,
    }))
}

/// The largest upstream write the gateway makes, in bytes of JSON: a sealed resource, or a
/// transaction's Bundle of them. 7/8 of `upstream.max_response_bytes`, the largest response it
/// reads, so that whatever it writes it can read back: the eighth left is room for what the
/// upstream adds when it answers (`meta`, its own formatting, the Bundle of a read by search).
pub fn write_limit(state: &AppState) -> u64 {
    state.upstream.max_response_bytes() / 8 * 7
}

/// The length of `value` as compact JSON, counted without building the text.
pub fn json_len(value: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += u64::try_from(bytes.len()).unwrap_or(u64::MAX);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a `Value` to a sink that never fails cannot fail; if it did, count it too large.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => u64::MAX,
    }
}

/// A conditional create's one match, checked like a read and opened: the answer (200).
async fn existing_answer(
    state: &AppState,
    caller: &Caller,
    existing: Value,
) -> Result<Answer, ApiError> {
    let reference = format!(
        "{}/{}",
        existing
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        existing
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    authorize(state, caller, Interaction::Read, &existing)?;
    let (opened, report) = open_for(state, caller, existing).await?;
    let mut answer = Answer::new(
        StatusCode::OK,
        Some(opened),
        note("create", vec![reference.clone()], report, 0),
    );
    if let Ok(location) = HeaderValue::from_str(&format!("{}/{reference}", state.config.fhir_base))
    {
        answer.headers.insert(header::LOCATION, location);
    }
    Ok(answer)
}

/// The body of a create or update: a resource of the URL's type.
fn body_of(body: Option<Value>, resource_type: &str) -> Result<Value, ApiError> {
    let resource = body.ok_or(ApiError::InvalidRequest("the request has no resource"))?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type) {
        return Err(ApiError::InvalidRequest(
            "the body's resourceType must be the type in the URL",
        ));
    }
    Ok(resource)
}

/// The JSON Patch of a `PATCH`: the body itself, or a `Binary` holding it (how a Bundle entry
/// carries one).
fn patch_document(body: Option<Value>) -> Result<json_patch::Patch, ApiError> {
    let not_a_patch = ApiError::InvalidRequest("the body is not a JSON Patch document");
    let document = match body {
        Some(Value::Object(binary))
            if binary.get("resourceType").and_then(Value::as_str) == Some("Binary") =>
        {
            let json_patch = binary
                .get("contentType")
                .and_then(Value::as_str)
                .is_some_and(|t| {
                    t.split(';').next().map(str::trim) == Some("application/json-patch+json")
                });
            let data = binary.get("data").and_then(Value::as_str);
            let (true, Some(data)) = (json_patch, data) else {
                return Err(not_a_patch);
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| ApiError::InvalidRequest("the Binary's data is not base64"))?;
            serde_json::from_slice(&bytes)
                .map_err(|_| ApiError::InvalidRequest("the body is not a JSON Patch document"))?
        }
        Some(document) => document,
        None => return Err(not_a_patch),
    };
    serde_json::from_value(document).map_err(|_| not_a_patch)
}

/// `If-Match` against the stored resource's `meta.versionId`.
fn check_if_match(conditions: &Conditions, stored: &Value) -> Result<(), ApiError> {
    match &conditions.if_match {
        Some(wanted) => check_version(wanted, stored),
        None => Ok(()),
    }
}
