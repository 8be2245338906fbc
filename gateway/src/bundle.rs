//! `POST [base]` with a `batch` or `transaction` Bundle: entry by entry through the same checks
//! as the single interactions, then one Bundle upstream.
//!
//! - Creates get their ids from the gateway (their envelopes are bound to them) and go upstream
//!   as `PUT [type]/[id]`. In a transaction, every `urn:uuid:` `fullUrl` is mapped to its
//!   `[type]/[id]` first and every reference to it rewritten, before anything is sealed: a
//!   reference inside a sealed element could not be rewritten by the upstream server.
//!   `ifNoneExist` is resolved by the gateway (one match: the entry is answered `200 OK` and its
//!   `fullUrl` means that resource).
//! - Updates, deletes and reads are authorized on the stored resource as the single interactions
//!   are; `ifMatch` is checked by the gateway and sent upstream.
//! - Reads (`GET [type]/[id]`, `GET [type]?…`) are checked after the answer, like a read or a
//!   search.
//! - A refused entry fails a transaction as a whole (nothing goes upstream, the status is the
//!   entry's, and the outcome names its index); in a batch it becomes that entry's error
//!   response and the others proceed.
//!
//! The answer is opened for the caller, its URLs moved to the gateway's base.

use std::collections::{HashMap, HashSet};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use fhirseal_policy::Interaction;
use fhirseal_upstream::UpstreamRequest;
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, FHIR_JSON};
use crate::rest::{
    Found, PREFER, authorize, check_type, check_type_and_id, check_version, fetch, is_fhir_id,
    note, open_for, outcome_of, respond, upstream_refusal,
};
use crate::search::{check_params, find_one, parse_query};
use crate::state::AppState;
use crate::write::{FhirBody, new_id};

/// The most entries one Bundle may hold.
const MAX_ENTRIES: usize = 10_000;

/// What became of one entry before the upstream call.
enum Planned {
    /// Sent upstream as this entry; a read is checked when it comes back.
    Send { entry: Value, read: bool },
    /// Answered by the gateway (an `ifNoneExist` match, a delete of nothing).
    Answered(Value),
    /// Refused.
    Failed(ApiError),
}

/// `POST [base]` with a batch or transaction Bundle.
pub async fn batch_or_transaction(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    FhirBody(mut bundle): FhirBody,
) -> Result<Response, ApiError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::InvalidRequest(
            "POST to the base takes a batch or transaction Bundle",
        ));
    }
    let transaction = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch") => false,
        _ => {
            return Err(ApiError::InvalidRequest(
                "the Bundle's type must be batch or transaction",
            ));
        }
    };
    let mut entries = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(ApiError::InvalidRequest("Bundle.entry must be an array")),
    };
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::InvalidRequest(
            "the Bundle holds too many entries",
        ));
    }

    // Pass 1 (transactions): ids for creates, ifNoneExist resolved, urn:uuid references rewritten.
    let mut answered: HashMap<usize, Value> = HashMap::new();
    let mut created: HashSet<usize> = HashSet::new();
    if transaction {
        let mut ids: HashMap<String, String> = HashMap::new();
        for (index, entry) in entries.iter_mut().enumerate() {
            match assign(&state, &caller, entry).await {
                Ok(Assigned::Id {
                    full_url,
                    reference,
                    create,
                }) => {
                    if let Some(full_url) = full_url {
                        ids.insert(full_url, reference);
                    }
                    if create {
                        created.insert(index);
                    }
                }
                Ok(Assigned::Existing {
                    full_url,
                    reference,
                    answer,
                }) => {
                    if let Some(full_url) = full_url {
                        ids.insert(full_url, reference);
                    }
                    answered.insert(index, answer);
                }
                Ok(Assigned::Nothing) => {}
                Err(reason) => {
                    return Err(ApiError::TransactionEntry {
                        index,
                        reason: Box::new(reason),
                    });
                }
            }
        }
        for entry in &mut entries {
            if let Some(resource) = entry.get_mut("resource") {
                rewrite_references(resource, &ids);
            }
        }
    }

    // Pass 2: each entry checked, sealed and planned.
    let mut plans = Vec::with_capacity(entries.len());
    let mut sealed_total = 0usize;
    let mut references = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let plan = if let Some(answer) = answered.remove(&index) {
            Planned::Answered(answer)
        } else {
            match plan(
                &state,
                &caller,
                entry,
                transaction,
                created.contains(&index),
            )
            .await
            {
                Ok((plan, sealed, reference)) => {
                    sealed_total += sealed;
                    references.extend(reference);
                    plan
                }
                Err(e) => Planned::Failed(e),
            }
        };
        if transaction && let Planned::Failed(reason) = plan {
            return Err(ApiError::TransactionEntry {
                index,
                reason: Box::new(reason),
            });
        }
        plans.push(plan);
    }

    // The upstream call, with the entries to send.
    let sends: Vec<Value> = plans
        .iter()
        .filter_map(|p| match p {
            Planned::Send { entry, .. } => Some(entry.clone()),
            _ => None,
        })
        .collect();
    let mut responses = if sends.is_empty() {
        Vec::new()
    } else {
        send(&state, transaction, sends, &headers).await?
    }
    .into_iter();

    // The answer, in request order.
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        let entry = match plan {
            Planned::Answered(answer) => answer,
            Planned::Failed(error) => error_entry(&error),
            Planned::Send { read, .. } => {
                let Some(response) = responses.next() else {
                    return Err(ApiError::UpstreamMalformed);
                };
                if read {
                    checked_read(&state, &caller, response)
                } else {
                    response
                }
            }
        };
        out.push(entry);
    }
    let answer = json!({
        "resourceType": "Bundle",
        "type": if transaction { "transaction-response" } else { "batch-response" },
        "entry": out,
    });
    let (opened, report) = open_for(&state, &caller, answer).await?;
    let note = note(
        if transaction { "transaction" } else { "batch" },
        references,
        report,
        sealed_total,
    );
    Ok(respond(
        &state,
        StatusCode::OK,
        Some(&opened),
        &HeaderMap::new(),
        note,
    ))
}

/// What pass 1 made of a transaction entry.
enum Assigned {
    /// A create (or an update by id) that others may reference as `reference`.
    Id {
        full_url: Option<String>,
        reference: String,
        create: bool,
    },
    /// A create whose `ifNoneExist` matched one resource: answered, referenced as it.
    Existing {
        full_url: Option<String>,
        reference: String,
        answer: Value,
    },
    /// Nothing to map.
    Nothing,
}

/// Pass 1 for one transaction entry: a create gets its id now (written into the entry, its
/// request turned into `PUT [type]/[id]`), so that references to its `fullUrl` can be rewritten.
async fn assign(
    state: &AppState,
    caller: &Caller,
    entry: &mut Value,
) -> Result<Assigned, ApiError> {
    let (method, url) = request_of(entry)?;
    let full_url = entry
        .get("fullUrl")
        .and_then(Value::as_str)
        .map(str::to_string);
    match method.as_str() {
        "POST" => {
            let resource_type = url.clone();
            check_type(&resource_type)?;
            if let Some((reference, answer)) =
                existing_match(state, caller, entry, &resource_type).await?
            {
                return Ok(Assigned::Existing {
                    full_url,
                    reference,
                    answer,
                });
            }
            let id = new_id();
            set_create_as_put(entry, &resource_type, &id);
            Ok(Assigned::Id {
                full_url,
                reference: format!("{resource_type}/{id}"),
                create: true,
            })
        }
        "PUT" if !url.contains('?') => Ok(Assigned::Id {
            full_url,
            reference: url,
            create: false,
        }),
        _ => Ok(Assigned::Nothing),
    }
}

/// A create entry's `ifNoneExist`, resolved: the one matching resource (checked like a read) as
/// its reference and the entry's `200 OK` answer; `None` without a condition or a match; 412 for
/// several matches.
async fn existing_match(
    state: &AppState,
    caller: &Caller,
    entry: &Value,
    resource_type: &str,
) -> Result<Option<(String, Value)>, ApiError> {
    let Some(query) = entry
        .get("request")
        .and_then(|r| r.get("ifNoneExist"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    match find_one(state, caller, resource_type, query).await? {
        Found::Many => Err(ApiError::PreconditionFailed(
            "ifNoneExist matches more than one resource",
        )),
        Found::One(existing) => {
            authorize(state, caller, Interaction::Read, &existing)?;
            let id = existing
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let reference = format!("{resource_type}/{id}");
            let answer = json!({"response": {
                "status": "200 OK",
                "location": format!("{}/{reference}", state.config.fhir_base),
            }});
            Ok(Some((reference, answer)))
        }
        Found::None => Ok(None),
    }
}

/// Writes `id` into a create entry's resource and makes its request `PUT [type]/[id]`.
fn set_create_as_put(entry: &mut Value, resource_type: &str, id: &str) {
    if let Some(Value::Object(resource)) = entry.get_mut("resource") {
        resource.insert("id".into(), Value::String(id.to_string()));
        if let Some(Value::Object(meta)) = resource.get_mut("meta") {
            meta.shift_remove("versionId");
            meta.shift_remove("lastUpdated");
        }
    }
    if let Some(Value::Object(request)) = entry.get_mut("request") {
        request.insert("method".into(), Value::String("PUT".into()));
        request.insert("url".into(), Value::String(format!("{resource_type}/{id}")));
        request.shift_remove("ifNoneExist");
    }
}

/// An entry's `request.method` and `request.url` (relative; our own base stripped).
fn request_of(entry: &Value) -> Result<(String, String), ApiError> {
    let request = entry
        .get("request")
        .ok_or(ApiError::InvalidRequest("an entry has no request"))?;
    let method = request
        .get("method")
        .and_then(Value::as_str)
        .ok_or(ApiError::InvalidRequest("an entry's request has no method"))?
        .to_string();
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or(ApiError::InvalidRequest("an entry's request has no url"))?;
    Ok((method, url.to_string()))
}

/// Replaces every `reference` that names a mapped `fullUrl`.
fn rewrite_references(value: &mut Value, ids: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(reference)) = object.get_mut("reference")
                && let Some(mapped) = ids.get(reference.as_str())
            {
                *reference = mapped.clone();
            }
            for (_, child) in object.iter_mut() {
                rewrite_references(child, ids);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_references(item, ids)),
        _ => {}
    }
}

/// Pass 2 for one entry: checked, sealed, and its upstream form; how many elements were sealed
/// and the resource it touches.
async fn plan(
    state: &AppState,
    caller: &Caller,
    mut entry: Value,
    transaction: bool,
    created: bool,
) -> Result<(Planned, usize, Option<String>), ApiError> {
    let (method, url) = request_of(&entry)?;
    let url = relative(state, &url)?;
    let if_match = entry
        .get("request")
        .and_then(|r| r.get("ifMatch"))
        .and_then(Value::as_str)
        .map(str::to_string);
    match method.as_str() {
        "POST" if !transaction => {
            // A batch create: its id now (no references to map in a batch).
            check_type(&url)?;
            if let Some((reference, answer)) = existing_match(state, caller, &entry, &url).await? {
                return Ok((Planned::Answered(answer), 0, Some(reference)));
            }
            let id = new_id();
            set_create_as_put(&mut entry, &url, &id);
            Box::pin(plan(state, caller, entry, transaction, true)).await
        }
        "PUT" => {
            let (resource_type, id) = match url.split_once('?') {
                Some((resource_type, query)) => {
                    check_type(resource_type)?;
                    let id = match find_one(state, caller, resource_type, query).await? {
                        Found::Many => {
                            return Err(ApiError::PreconditionFailed(
                                "the conditional update matches more than one resource",
                            ));
                        }
                        Found::One(existing) => existing
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        Found::None => entry
                            .get("resource")
                            .and_then(|r| r.get("id"))
                            .and_then(Value::as_str)
                            .map_or_else(new_id, str::to_string),
                    };
                    (resource_type.to_string(), id)
                }
                None => split_instance(&url)?,
            };
            check_type_and_id(&resource_type, &id)?;
            let mut resource = entry
                .get_mut("resource")
                .map(Value::take)
                .ok_or(ApiError::InvalidRequest("a PUT entry has no resource"))?;
            if resource.get("resourceType").and_then(Value::as_str) != Some(&resource_type) {
                return Err(ApiError::InvalidRequest(
                    "an entry's resourceType must be the type in its url",
                ));
            }
            match resource.get("id").and_then(Value::as_str) {
                Some(body_id) if body_id != id => {
                    return Err(ApiError::InvalidRequest(
                        "an entry's resource id must be the id in its url",
                    ));
                }
                Some(_) => {}
                None => {
                    if let Some(object) = resource.as_object_mut() {
                        object.insert("id".into(), Value::String(id.clone()));
                    }
                }
            }
            if !created {
                match fetch(state, &resource_type, &id, format!("{resource_type}/{id}")).await {
                    Ok(stored) => {
                        authorize(state, caller, Interaction::Update, &stored.resource)?;
                        if let Some(wanted) = &if_match {
                            check_version(wanted, &stored.resource)?;
                        }
                    }
                    Err(ApiError::NotFound { .. } | ApiError::Gone { .. }) => {
                        if if_match.is_some() {
                            return Err(ApiError::PreconditionFailed(
                                "ifMatch names a version of a resource that does not exist",
                            ));
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            let interaction = if created {
                Interaction::Create
            } else {
                Interaction::Update
            };
            let obligations = authorize(state, caller, interaction, &resource)?;
            let sealed = state
                .sealing
                .seal(&state.headers, resource, None, obligations.labels)
                .await?;
            let mut request = Map::new();
            request.insert("method".into(), json!("PUT"));
            request.insert("url".into(), json!(format!("{resource_type}/{id}")));
            if let Some(if_match) = if_match {
                request.insert("ifMatch".into(), json!(if_match));
            }
            let entry = json!({
                "fullUrl": format!("{}/{resource_type}/{id}", state.upstream.base()),
                "resource": sealed.resource,
                "request": request,
            });
            Ok((
                Planned::Send { entry, read: false },
                sealed.elements,
                Some(format!("{resource_type}/{id}")),
            ))
        }
        "DELETE" => {
            if url.contains('?') {
                return Err(ApiError::InvalidRequest(
                    "conditional deletes are not supported; delete by id",
                ));
            }
            let (resource_type, id) = split_instance(&url)?;
            check_type_and_id(&resource_type, &id)?;
            match fetch(state, &resource_type, &id, url.clone()).await {
                Ok(stored) => {
                    authorize(state, caller, Interaction::Delete, &stored.resource)?;
                    if let Some(wanted) = &if_match {
                        check_version(wanted, &stored.resource)?;
                    }
                }
                Err(ApiError::NotFound { .. } | ApiError::Gone { .. }) => {
                    let answer = json!({"response": {"status": "204 No Content"}});
                    return Ok((Planned::Answered(answer), 0, None));
                }
                Err(e) => return Err(e),
            }
            let entry = json!({"request": {"method": "DELETE", "url": url}});
            Ok((
                Planned::Send { entry, read: false },
                0,
                Some(format!("{resource_type}/{id}")),
            ))
        }
        "GET" => {
            let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
            let parts: Vec<&str> = path.split('/').collect();
            match parts.as_slice() {
                [resource_type] => {
                    check_type(resource_type)?;
                    let params = parse_query(query);
                    check_params(state, resource_type, &params)?;
                    // Compartment and granular scopes are not applied to searches inside a
                    // Bundle: each answer entry is checked on its own instead.
                }
                [resource_type, id] => check_type_and_id(resource_type, id)?,
                [resource_type, id, "_history", version] => {
                    check_type_and_id(resource_type, id)?;
                    if !is_fhir_id(version) {
                        return Err(ApiError::InvalidRequest("the version is not a FHIR id"));
                    }
                }
                _ => {
                    return Err(ApiError::InvalidRequest(
                        "a GET entry must read a resource, a version or a search",
                    ));
                }
            }
            let entry = json!({"request": {"method": "GET", "url": url}});
            Ok((Planned::Send { entry, read: true }, 0, None))
        }
        "PATCH" => Err(ApiError::Unprocessable(
            "PATCH entries in a Bundle are not supported; use PATCH [type]/[id]",
        )),
        _ => Err(ApiError::InvalidRequest(
            "an entry's method must be GET, POST, PUT, DELETE or PATCH",
        )),
    }
}

/// `Type/id` of an instance URL.
fn split_instance(url: &str) -> Result<(String, String), ApiError> {
    match url.split('/').collect::<Vec<_>>().as_slice() {
        [resource_type, id] => Ok(((*resource_type).to_string(), (*id).to_string())),
        _ => Err(ApiError::InvalidRequest(
            "an entry's url must be [type]/[id] here",
        )),
    }
}

/// A request URL relative to the base: our own base is stripped; another absolute URL is refused.
fn relative(state: &AppState, url: &str) -> Result<String, ApiError> {
    let base = state.config.fhir_base.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix(base) {
        return Ok(rest.trim_start_matches('/').to_string());
    }
    if url.contains("://") || url.starts_with('/') {
        return Err(ApiError::InvalidRequest(
            "an entry's url must be relative to this server's base",
        ));
    }
    Ok(url.to_string())
}

/// Sends the Bundle upstream; its response entries, one per entry sent.
async fn send(
    state: &AppState,
    transaction: bool,
    entries: Vec<Value>,
    headers: &HeaderMap,
) -> Result<Vec<Value>, ApiError> {
    let count = entries.len();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": if transaction { "transaction" } else { "batch" },
        "entry": entries,
    });
    let mut request = UpstreamRequest::new(Method::POST, "")
        .with_header(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
        .with_header(header::ACCEPT, HeaderValue::from_static(FHIR_JSON))
        .with_body(bundle.to_string());
    let prefer = match crate::rest::prefer_return(headers) {
        crate::rest::PreferReturn::Minimal => "return=minimal",
        _ => "return=representation",
    };
    request = request.with_header(PREFER, HeaderValue::from_static(prefer));
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        return Err(upstream_refusal(&response, "Bundle", "-"));
    }
    let answer: Value =
        serde_json::from_slice(response.body()).map_err(|_| ApiError::UpstreamMalformed)?;
    let kind = answer.get("type").and_then(Value::as_str);
    let wanted = if transaction {
        "transaction-response"
    } else {
        "batch-response"
    };
    if answer.get("resourceType").and_then(Value::as_str) != Some("Bundle") || kind != Some(wanted)
    {
        return Err(ApiError::UpstreamMalformed);
    }
    let Some(Value::Array(entries)) = answer.get("entry").cloned() else {
        return Err(ApiError::UpstreamMalformed);
    };
    if entries.len() != count {
        return Err(ApiError::UpstreamMalformed);
    }
    Ok(entries
        .into_iter()
        .map(|mut e| {
            // An upstream error outcome describes the sealed form: replaced by fixed words.
            if let Some(Value::Object(response)) = e.get_mut("response")
                && response.contains_key("outcome")
            {
                response.insert(
                    "outcome".into(),
                    crate::error::operation_outcome(
                        "processing",
                        "the FHIR server refused this entry",
                    ),
                );
            }
            e
        })
        .collect())
}

/// A read entry's answer, checked like a read (or each entry of a searchset like a search).
fn checked_read(state: &AppState, caller: &Caller, mut response: Value) -> Value {
    let Some(resource) = response.get_mut("resource") else {
        return response;
    };
    if resource.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        if let Some(Value::Array(entries)) = resource.get_mut("entry") {
            entries.retain(|e| {
                e.get("resource").is_none_or(|r| {
                    r.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
                        || authorize(state, caller, Interaction::Read, r).is_ok()
                })
            });
        }
        return response;
    }
    match authorize(state, caller, Interaction::Read, resource) {
        Ok(_) => response,
        Err(error) => error_entry(&error),
    }
}

/// A batch answer entry for a refused entry.
fn error_entry(error: &ApiError) -> Value {
    let (status, outcome) = outcome_of(error);
    json!({"response": {
        "status": format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or_default()),
        "outcome": outcome,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_mapped_full_urls_are_rewritten_everywhere() {
        let mut ids = HashMap::new();
        ids.insert("urn:uuid:1".to_string(), "Patient/abc".to_string());
        let mut r = json!({"resourceType": "Observation",
            "subject": {"reference": "urn:uuid:1"},
            "performer": [{"reference": "urn:uuid:2"}, {"reference": "urn:uuid:1"}],
            "contained": [{"resourceType": "Provenance", "target": [{"reference": "urn:uuid:1"}]}]});
        rewrite_references(&mut r, &ids);
        assert_eq!(r["subject"]["reference"], "Patient/abc");
        assert_eq!(r["performer"][0]["reference"], "urn:uuid:2");
        assert_eq!(r["performer"][1]["reference"], "Patient/abc");
        assert_eq!(r["contained"][0]["target"][0]["reference"], "Patient/abc");
    }

    #[test]
    fn creates_become_puts_under_the_new_id() {
        let mut entry = json!({"fullUrl": "urn:uuid:1",
            "resource": {"resourceType": "Patient", "id": "client", "meta": {"versionId": "9"}},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "x=y"}});
        set_create_as_put(&mut entry, "Patient", "abc");
        assert_eq!(entry["resource"]["id"], "abc");
        assert!(entry["resource"]["meta"].get("versionId").is_none());
        assert_eq!(entry["request"]["method"], "PUT");
        assert_eq!(entry["request"]["url"], "Patient/abc");
        assert!(entry["request"].get("ifNoneExist").is_none());
    }
}
