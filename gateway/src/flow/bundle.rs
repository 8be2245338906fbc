//! `POST [base]` with a `batch` or `transaction` Bundle: every entry is parsed by the same
//! [`FhirRequest::from_entry`] as a request alone and answered by the same flow, so it gets the
//! same decision, the same filtering and the same audit record as alone.
//!
//! - **Batch**: each entry is [`crate::flow::run`] on its own, in order; a refused entry becomes
//!   that entry's error response (its OperationOutcome, the one the request alone would get) and
//!   the others proceed. Entries go upstream one by one, so no upstream limit on the number of
//!   entries in a Bundle applies.
//! - **Transaction**: every `urn:uuid` `fullUrl` of a create is mapped to the `[type]/[id]` the
//!   gateway assigns it (a create whose `ifNoneExist` matches one resource means that resource),
//!   and every reference to it rewritten, before anything is sealed (a reference inside a sealed
//!   element could not be rewritten by the upstream). Every write is then prepared by the same
//!   [`change`] functions as alone (authorized, `ifMatch` checked, sealed); a refused one fails the
//!   whole transaction before anything goes upstream, with that entry's status and outcome (its
//!   `expression` names the entry). The writes go upstream as one transaction and each answer is
//!   finished as alone. Reads (`GET`) run after the writes are committed, as FHIR orders them; a
//!   refused read is that entry's error, since the writes before it are already committed.
//!   Two entries that write one resource are refused (400), as FHIR says ("if any resource
//!   identities overlap … the transaction SHALL fail"): before anything is prepared when the
//!   entries name it (`PUT`, `PATCH`, `DELETE`, a conditional update's body id), else once
//!   prepared. So a transaction never waits for a create guard it holds itself; the create
//!   guards its creates by `PUT` take are held until the upstream transaction has answered.
//!
//! The answer's URLs are moved to the gateway's base; the audit line lists every entry.

use std::collections::{HashMap, HashSet};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use fhirseal_fhir::{FhirRequest, Interaction, Prefer};
use fhirseal_upstream::UpstreamRequest;
use serde_json::{Map, Value, json};

use crate::audit::AuditNote;
use crate::audit::note::concerning;
use crate::auth::Caller;
use fhirseal_fhir::FHIR_JSON;

use crate::error::ApiError;
use crate::flow::change::{self, CreateId, Planned, Prepared, Step};
use crate::flow::query::find_one;
use crate::flow::respond::Answer;
use crate::flow::stored::{Found, Parse};
use crate::flow::{audit_name, run as run_one};
use crate::guard::CreateGuard;
use crate::seal::new_id;
use crate::state::AppState;

/// The most entries one Bundle may hold.
const MAX_ENTRIES: usize = 10_000;

/// `POST [base]` with a batch or transaction Bundle; see the module documentation.
///
/// # Errors
/// [`ApiError`] for a body that is not a batch or transaction Bundle, and, for a transaction,
/// [`ApiError::TransactionEntry`] when an entry is refused.
pub async fn run(
    state: &AppState,
    caller: &Caller,
    body: Option<Value>,
    prefer: Prefer,
) -> Result<Answer, ApiError> {
    let (transaction, entries) = entries_of(body)?;
    let base = state.config.fhir_base.as_str();
    let answers = if transaction {
        let requests = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                FhirRequest::from_entry(entry, prefer, base)
                    .map_err(|e| refused_entry(index, None, e.into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let full_urls = entries
            .iter()
            .map(|e| e.get("fullUrl").and_then(Value::as_str).map(str::to_string))
            .collect();
        run_transaction(state, caller, requests, full_urls).await?
    } else {
        let mut answers = Vec::with_capacity(entries.len());
        for entry in &entries {
            answers
                .push(run_entry(state, caller, FhirRequest::from_entry(entry, prefer, base)).await);
        }
        answers
    };
    Ok(bundle_answer(transaction, answers))
}

/// One batch entry: its answer, or its refusal as the same request alone would get it.
async fn run_entry(
    state: &AppState,
    caller: &Caller,
    request: Result<FhirRequest, fhirseal_fhir::RequestError>,
) -> Answer {
    let request = match request {
        Ok(request) => request,
        // Unparsed: no interaction to name, as for the same request alone.
        Err(error) => return Answer::refused(&error.into(), "", Vec::new()),
    };
    let (name, resources) = audit_of(&request);
    if request.interaction == Interaction::BatchOrTransaction {
        return Answer::refused(&ApiError::NestedBundle, name, resources);
    }
    let (result, patients) = concerning(run_one(state, caller, request)).await;
    let mut answer = match result {
        Ok(answer) => answer,
        Err(error) => Answer::refused(&error, name, resources),
    };
    answer.note.patients = patients;
    answer
}

/// A transaction: references mapped, writes prepared, sent as one, finished; then the reads.
async fn run_transaction(
    state: &AppState,
    caller: &Caller,
    mut requests: Vec<FhirRequest>,
    full_urls: Vec<Option<String>>,
) -> Result<Vec<Answer>, ApiError> {
    let mut answers: Vec<Option<Answer>> = requests.iter().map(|_| None).collect();
    let mut ids: Vec<Option<String>> = requests.iter().map(|_| None).collect();
    let mut mapped: HashMap<String, String> = HashMap::new();
    // Pass 1: no resource written twice; the id of every create, or the one resource its
    // ifNoneExist matches.
    let mut written = HashSet::new();
    for (index, request) in requests.iter().enumerate() {
        if let Some(reference) = written_by(request)
            && !written.insert(reference)
        {
            return Err(refused_entry(
                index,
                Some(request),
                ApiError::DuplicateEntry,
            ));
        }
        match &request.interaction {
            Interaction::BatchOrTransaction => {
                return Err(refused_entry(index, Some(request), ApiError::NestedBundle));
            }
            Interaction::Create(t) => {
                let reference = match &request.conditions.if_none_exist {
                    Some(condition) => match find_one(state, caller, t.as_str(), condition)
                        .await
                        .map_err(|e| refused_entry(index, Some(request), e))?
                    {
                        Found::Many => {
                            return Err(refused_entry(
                                index,
                                Some(request),
                                ApiError::PreconditionFailed(
                                    "ifNoneExist matches more than one resource",
                                ),
                            ));
                        }
                        Found::One(existing) => existing
                            .get("id")
                            .and_then(Value::as_str)
                            .map(|id| format!("{t}/{id}")),
                        Found::None => None,
                    },
                    None => None,
                };
                let reference = reference.unwrap_or_else(|| {
                    let id = new_id();
                    ids[index] = Some(id.clone());
                    format!("{t}/{id}")
                });
                if let Some(full_url) = &full_urls[index] {
                    mapped.insert(full_url.clone(), reference);
                }
            }
            Interaction::Update(t, id) => {
                if let Some(full_url) = &full_urls[index] {
                    mapped.insert(full_url.clone(), format!("{t}/{id}"));
                }
            }
            _ => {}
        }
    }
    for request in &mut requests {
        if let Some(body) = &mut request.body {
            rewrite_references(body, &mapped);
        }
    }
    // Pass 2: every write prepared as alone; the first refusal fails the transaction.
    let mut reads = Vec::new();
    let mut sends: Vec<Sent> = Vec::new();
    let mut targets = HashSet::new();
    for (index, request) in requests.into_iter().enumerate() {
        let id = CreateId(ids[index].take());
        let (interaction, resources) = audit_of(&request);
        let refused = |reason| ApiError::TransactionEntry {
            index,
            interaction,
            resources: resources.clone(),
            reason: Box::new(reason),
        };
        let (planned, patients) = concerning(change::prepare(state, caller, request, id)).await;
        let (prepared, guard) = match planned {
            Ok(Planned::Other(request)) => {
                reads.push((index, request));
                continue;
            }
            Ok(Planned::Write(Step::Answered(mut answer))) => {
                answer.note.patients = patients;
                answers[index] = Some(answer);
                continue;
            }
            Ok(Planned::Write(Step::Send(prepared))) => (prepared, None),
            Ok(Planned::Write(Step::SendGuarded(prepared, guard))) => (prepared, Some(guard)),
            Err(error) => return Err(refused(error)),
        };
        // A conditional update's resource is known only now.
        let (resource_type, id) = prepared.target();
        if !targets.insert(format!("{resource_type}/{id}")) {
            return Err(refused(ApiError::DuplicateEntry));
        }
        sends.push(Sent {
            index,
            interaction,
            resources,
            patients,
            prepared,
            guard,
        });
    }
    // Pass 3: the writes as one upstream transaction, each answer finished as alone.
    if !sends.is_empty() {
        let calls: Vec<Value> = sends
            .iter()
            .map(|sent| upstream_entry(state, &sent.prepared))
            .collect();
        let responses = match send_transaction(state, calls).await {
            Ok(responses) => responses,
            Err(Unsent::Refused(status)) => return Err(refused_transaction(status, sends)),
            Err(Unsent::Failed(error)) => return Err(error),
        };
        for (
            Sent {
                index,
                prepared,
                guard,
                mut patients,
                ..
            },
            response,
        ) in sends.into_iter().zip(responses)
        {
            // The upstream has answered: a create's guard goes.
            drop(guard);
            let (status, headers, stored) = entry_response(response)?;
            let (answer, finished) = concerning(change::finish(
                state, caller, prepared, status, &headers, stored,
            ))
            .await;
            let mut answer = answer?;
            for patient in finished {
                if !patients.contains(&patient) {
                    patients.push(patient);
                }
            }
            answer.note.patients = patients;
            answers[index] = Some(answer);
        }
    }
    // Pass 4: the reads, after the writes, each as alone.
    for (index, request) in reads {
        answers[index] = Some(run_entry(state, caller, Ok(request)).await);
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Answer::refused(&ApiError::UpstreamMalformed, "", Vec::new())))
        .collect())
}

/// The upstream transaction entry of a prepared write.
fn upstream_entry(state: &AppState, prepared: &Prepared) -> Value {
    let call = &prepared.call;
    let mut request = Map::new();
    request.insert("method".into(), json!(call.method.as_str()));
    request.insert("url".into(), json!(call.path));
    if let Some(if_match) = &call.if_match {
        request.insert("ifMatch".into(), json!(if_match));
    }
    let mut entry = Map::new();
    entry.insert(
        "fullUrl".into(),
        json!(format!("{}/{}", state.upstream.base(), call.path)),
    );
    if let Some(body) = &call.body {
        entry.insert("resource".into(), body.clone());
    }
    entry.insert("request".into(), Value::Object(request));
    Value::Object(entry)
}

/// A prepared write of a transaction: its entry's index, what the audit line names of it (its
/// patients too), the write, and a create's guard, held until the upstream transaction has answered.
struct Sent {
    index: usize,
    interaction: &'static str,
    resources: Vec<String>,
    patients: Vec<String>,
    prepared: Prepared,
    guard: Option<CreateGuard>,
}

/// Why the upstream transaction gave no answers.
enum Unsent {
    /// The upstream refused it as a whole, with this status.
    Refused(StatusCode),
    /// It failed otherwise (no answer, not a transaction-response).
    Failed(ApiError),
}

impl From<ApiError> for Unsent {
    fn from(error: ApiError) -> Self {
        Self::Failed(error)
    }
}

impl From<fhirseal_upstream::UpstreamError> for Unsent {
    fn from(error: fhirseal_upstream::UpstreamError) -> Self {
        Self::Failed(error.into())
    }
}

/// The upstream's refusal of the whole transaction, status for status
/// ([`ApiError::from_upstream_status`]). Holding one write, it is that entry's refusal, naming
/// its resource as the write alone would; holding several, the transaction's, naming none (the
/// upstream's words, which may say which entry, are not passed on).
fn refused_transaction(status: StatusCode, mut sends: Vec<Sent>) -> ApiError {
    match (sends.pop(), sends.is_empty()) {
        (Some(sent), true) => ApiError::TransactionEntry {
            index: sent.index,
            interaction: sent.interaction,
            resources: sent.resources,
            reason: Box::new(ApiError::from_upstream_status(
                status,
                Some(sent.prepared.target()),
            )),
        },
        _ => ApiError::from_upstream_status(status, None),
    }
}

/// The writes sent upstream as one transaction: its response entries, one per write, in order.
async fn send_transaction(state: &AppState, entries: Vec<Value>) -> Result<Vec<Value>, Unsent> {
    let count = entries.len();
    let bundle = fhirseal_fhir::json_text(
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
    );
    // Every entry fits alone (`change::seal`); together they must fit too: the upstream's answer
    // holds them all.
    let limit = change::write_limit(state);
    if u64::try_from(bundle.len()).unwrap_or(u64::MAX) > limit {
        return Err(ApiError::TooLargeToStore {
            what: "the transaction".into(),
            limit,
        }
        .into());
    }
    let request = UpstreamRequest::new(Method::POST, "")
        .with_header(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
        .with_header(header::ACCEPT, HeaderValue::from_static(FHIR_JSON))
        .with_header(
            header::HeaderName::from_static("prefer"),
            HeaderValue::from_static("return=representation"),
        )
        .with_body(bundle);
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        let refusal = ApiError::from_upstream_response(&response, None);
        // Unavailable or throttling is the upstream's state, no entry's doing.
        if matches!(refusal, ApiError::UpstreamUnavailable { .. }) {
            return Err(refusal.into());
        }
        return Err(Unsent::Refused(response.status()));
    }
    // Each entry's resource is only opened for the caller (`change::finish`): no use for tokens.
    let answer = Parse::ForReader.body(response.body())?;
    if answer.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || answer.get("type").and_then(Value::as_str) != Some("transaction-response")
    {
        return Err(ApiError::UpstreamMalformed.into());
    }
    match answer.get("entry") {
        Some(Value::Array(entries)) if entries.len() == count => Ok(entries.clone()),
        _ => Err(ApiError::UpstreamMalformed.into()),
    }
}

/// An upstream transaction-response entry as a write's answer: status, `ETag`/`Last-Modified`/
/// `Location` as headers, the stored resource.
fn entry_response(entry: Value) -> Result<(StatusCode, HeaderMap, Option<Value>), ApiError> {
    let response = entry.get("response").ok_or(ApiError::UpstreamMalformed)?;
    let status = response
        .get("status")
        .and_then(Value::as_str)
        .and_then(|s| s.split(' ').next())
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(StatusCode::is_success)
        .ok_or(ApiError::UpstreamMalformed)?;
    let mut headers = HeaderMap::new();
    for (field, name) in [
        ("etag", header::ETAG),
        ("lastModified", header::LAST_MODIFIED),
        ("location", header::LOCATION),
    ] {
        if let Some(value) = response
            .get(field)
            .and_then(Value::as_str)
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            headers.insert(name, value);
        }
    }
    Ok((status, headers, entry.get("resource").cloned()))
}

/// The Bundle's type and its entries, within the limits.
fn entries_of(body: Option<Value>) -> Result<(bool, Vec<Value>), ApiError> {
    let mut bundle = body.ok_or(ApiError::InvalidRequest(
        "POST to the base takes a batch or transaction Bundle",
    ))?;
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
    let entries = match bundle.get_mut("entry").map(Value::take) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(ApiError::InvalidRequest("Bundle.entry must be an array")),
    };
    if entries.len() > MAX_ENTRIES {
        return Err(ApiError::InvalidRequest(
            "the Bundle holds too many entries",
        ));
    }
    Ok((transaction, entries))
}

/// The batch-response or transaction-response, and its audit note: every entry's note, and
/// their resources and counts added up.
fn bundle_answer(transaction: bool, answers: Vec<Answer>) -> Answer {
    let mut note = AuditNote {
        interaction: if transaction { "transaction" } else { "batch" },
        ..AuditNote::default()
    };
    let mut out = Vec::with_capacity(answers.len());
    for answer in answers {
        let status = answer.status;
        let (entry, mut entry_note) = answer.into_entry();
        note.resources.extend(entry_note.resources.iter().cloned());
        for patient in &entry_note.patients {
            if !note.patients.contains(patient) {
                note.patients.push(patient.clone());
            }
        }
        note.opened += entry_note.opened;
        note.masked += entry_note.masked;
        for (all, of_entry) in [
            (&mut note.opened_paths, &entry_note.opened_paths),
            (&mut note.masked_paths, &entry_note.masked_paths),
        ] {
            for path in of_entry {
                if !all.contains(path) && all.len() < fhirseal_seal::MAX_PATHS_LISTED {
                    all.push(path.clone());
                }
            }
        }
        note.forged += entry_note.forged;
        note.sealed += entry_note.sealed;
        entry_note.status = Some(status.as_u16());
        note.entries.push(entry_note);
        out.push(entry);
    }
    note.resources.dedup();
    let body = json!({
        "resourceType": "Bundle",
        "type": if transaction { "transaction-response" } else { "batch-response" },
        "entry": out,
    });
    Answer::new(StatusCode::OK, Some(body), note)
}

/// A transaction refused because of entry `index`, the request `what` (for the audit line).
fn refused_entry(index: usize, what: Option<&FhirRequest>, reason: ApiError) -> ApiError {
    let (interaction, resources) = what.map_or(("", Vec::new()), audit_of);
    ApiError::TransactionEntry {
        index,
        interaction,
        resources,
        reason: Box::new(reason),
    }
}

/// The resource a transaction entry writes, as far as the entry says (a conditional update's
/// body id; `None` for a create, which gets an id of its own, and for reads).
fn written_by(request: &FhirRequest) -> Option<String> {
    match &request.interaction {
        Interaction::Update(t, id) | Interaction::Patch(t, id) | Interaction::Delete(t, id) => {
            Some(format!("{t}/{id}"))
        }
        Interaction::ConditionalUpdate(t) => {
            let id = request.body.as_ref()?.get("id")?.as_str()?;
            Some(format!("{t}/{id}"))
        }
        _ => None,
    }
}

/// What the audit line names of a request: its interaction and the resource it names.
fn audit_of(request: &FhirRequest) -> (&'static str, Vec<String>) {
    (
        audit_name(&request.interaction),
        request.reference().into_iter().collect(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_mapped_full_urls_are_rewritten_everywhere() {
        let mut ids = HashMap::new();
        ids.insert("urn:uuid:1".to_string(), "Patient/p1".to_string());
        let mut value = json!({"subject": {"reference": "urn:uuid:1"},
            "contained": [{"performer": [{"reference": "urn:uuid:1"}]}],
            "other": {"reference": "urn:uuid:2"}});
        rewrite_references(&mut value, &ids);
        assert_eq!(value["subject"]["reference"], "Patient/p1");
        assert_eq!(
            value["contained"][0]["performer"][0]["reference"],
            "Patient/p1"
        );
        assert_eq!(value["other"]["reference"], "urn:uuid:2");
    }

    #[test]
    fn upstream_entries_answer_with_their_status_and_headers() {
        let (status, headers, resource) = entry_response(json!({"response": {
            "status": "201 Created", "etag": "W/\"1\"", "location": "Patient/p/_history/1"},
            "resource": {"resourceType": "Patient", "id": "p"}}))
        .unwrap();
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers.get(header::ETAG).unwrap(), "W/\"1\"");
        assert_eq!(resource.unwrap()["id"], "p");
        assert!(entry_response(json!({"response": {"status": "400 Bad Request"}})).is_err());
        assert!(entry_response(json!({})).is_err());
    }
}
