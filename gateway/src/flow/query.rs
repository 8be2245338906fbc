//! Searches and histories: `GET [type]?…`, `POST [type]/_search`, `GET [type]/[id]/_history`,
//! `GET [type]/_history` and `GET Patient/[id]/$everything`.
//!
//! The query is checked and planned before anything goes upstream ([`check_params`]): a parameter
//! that reads a sealed element is answered from the blind index or by filtering, as the policy's
//! rule says, by its `owned` module (`docs/search.md`); or it is a 400 naming it (`reject` mode, or
//! a value no index or check answers exactly: the upstream holds only ciphertext, and a wrong
//! answer would leak through which resources match); so is a parameter the type does not have (the
//! gateway cannot know what an unknown parameter reads: fail closed), a chain or `_has` (they read
//! other resources' elements), and a malformed `_count` or `_offset`. The caller's scopes narrow
//! the search to the compartment they allow, and the policy must permit searching the type. Every
//! resource in the answer, `_include`d and `_revinclude`d ones too, then goes through the same
//! checks as a read, one by one: an entry the caller may not read is left out. What is left is
//! opened for the caller, and the paging links are moved to the gateway's base (a followed link is
//! checked again like any search).

use axum::http::{HeaderValue, Method, StatusCode, header};
use fhirseal_fhir::rest::Interaction;
use fhirseal_fhir::{Id, ResourceType, SearchParam};
use fhirseal_seal::OpenReport;
use fhirseal_seal::search::{SearchPlan, plan_search, sealed_search_param};
use fhirseal_upstream::UpstreamRequest;
use serde_json::Value;
use url::form_urlencoded;

use crate::auth::Caller;
use fhirseal_fhir::FHIR_JSON;

use crate::error::ApiError;
use crate::flow::authorize::{EntryDecisions, authorize, decide};
use crate::flow::protect::open_for;
use crate::flow::respond::{Answer, note};
use crate::flow::stored::{Found, Parse, fetch};
use crate::state::AppState;

mod owned;

/// The most entries a page may ask for.
const MAX_COUNT: u64 = 1000;

/// `GET [base]/[type]?…` and `POST [base]/[type]/_search`: checked, narrowed to what the scopes
/// allow, decided by the policy, sent, every entry checked like a read, opened.
pub async fn search(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    params: Vec<SearchParam>,
) -> Result<Answer, ApiError> {
    let resource_type = resource_type.as_str();
    let params = SearchParam::pairs(&params);
    let checked = checked(state, resource_type, &params)?;
    if checked.plan.owned() {
        return owned::search(state, caller, resource_type, &params, checked).await;
    }
    let mut params = params;
    let patient = narrow(caller, resource_type, &mut params)?;
    decide(state, caller, Interaction::Search, resource_type, patient)?;
    let path = with_query(resource_type, &params);
    let bundle = upstream_bundle(state, path, &["searchset"]).await?;
    filtered_answer(
        state,
        caller,
        bundle,
        Interaction::Search,
        "search-type",
        false,
    )
    .await
}

/// `GET [base]/[type]/[id]/_history`: every version checked like a read of it.
pub async fn instance_history(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    id: &Id,
    params: &[SearchParam],
) -> Result<Answer, ApiError> {
    let params = history_params(params)?;
    let path = with_query(&format!("{resource_type}/{id}/_history"), &params);
    let bundle = upstream_bundle(state, path, &["history"]).await?;
    filtered_answer(
        state,
        caller,
        bundle,
        Interaction::History,
        "history-instance",
        true,
    )
    .await
}

/// `GET [base]/[type]/_history`.
pub async fn type_history(
    state: &AppState,
    caller: &Caller,
    resource_type: &ResourceType,
    params: &[SearchParam],
) -> Result<Answer, ApiError> {
    let resource_type = resource_type.as_str();
    let params = history_params(params)?;
    // Scopes: a type history is a search of the type; under a compartment scope it cannot be
    // narrowed (history takes no search parameters), so it is refused.
    let narrowing = caller.0.context.search_narrowing(resource_type)?;
    if !narrowing.iter().any(|n| n.params.is_empty()) {
        return Err(ApiError::InvalidRequest(
            "type history is not available under compartment or granular scopes",
        ));
    }
    decide(state, caller, Interaction::History, resource_type, None)?;
    let path = with_query(&format!("{resource_type}/_history"), &params);
    let bundle = upstream_bundle(state, path, &["history"]).await?;
    filtered_answer(
        state,
        caller,
        bundle,
        Interaction::History,
        "history-type",
        false,
    )
    .await
}

/// `GET [base]/Patient/[id]/$everything`: the patient's record, every entry checked as a read.
pub async fn everything(state: &AppState, caller: &Caller, id: &Id) -> Result<Answer, ApiError> {
    let path = format!("Patient/{id}");
    let patient = fetch(state, "Patient", id.as_str(), path, Parse::ForReader).await?;
    authorize(state, caller, Interaction::Read, &patient.resource)?;
    let bundle = upstream_bundle(
        state,
        format!("Patient/{id}/$everything"),
        &["searchset", "collection"],
    )
    .await?;
    filtered_answer(
        state,
        caller,
        bundle,
        Interaction::Read,
        "operation-everything",
        false,
    )
    .await
}

/// For conditional interactions (`If-None-Exist`, conditional update): how many resources of
/// `resource_type` the search `query` matches, with the same checks as a search.
pub async fn find_one(
    state: &AppState,
    caller: &Caller,
    resource_type: &str,
    condition: &[SearchParam],
) -> Result<Found, ApiError> {
    let mut params = SearchParam::pairs(condition);
    if params.is_empty() {
        return Err(ApiError::InvalidRequest(
            "the condition has no search parameter",
        ));
    }
    if params
        .iter()
        .any(|(k, _)| k.starts_with('_') && is_result_param(k))
    {
        return Err(ApiError::InvalidRequest(
            "a condition may not hold result parameters",
        ));
    }
    if check_params(state, resource_type, &params)?.owned() {
        return Err(ApiError::SearchRefused(
            "a condition may not read a sealed element: the server cannot tell which resource \
             it names"
                .into(),
        ));
    }
    narrow(caller, resource_type, &mut params)?;
    params.push(("_count".into(), "2".into()));
    let bundle = upstream_bundle(state, with_query(resource_type, &params), &["searchset"]).await?;
    let matches: Vec<Value> = entries(&bundle)
        .filter(|e| {
            e.get("search")
                .and_then(|s| s.get("mode"))
                .and_then(Value::as_str)
                .is_none_or(|m| m == "match")
        })
        .filter_map(|e| e.get("resource").cloned())
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some(resource_type))
        .collect();
    Ok(match matches.len() {
        0 => Found::None,
        1 => matches.into_iter().next().map_or(Found::None, Found::One),
        _ => Found::Many,
    })
}

/// `path?…` with `params` form-encoded.
pub(super) fn with_query(path: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return path.to_string();
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    format!("{path}?{}", serializer.finish())
}

/// Result parameters: they shape the answer, they read no element.
fn is_result_param(name: &str) -> bool {
    matches!(
        name.split(':').next().unwrap_or_default(),
        "_count"
            | "_offset"
            | "_sort"
            | "_include"
            | "_revinclude"
            | "_summary"
            | "_elements"
            | "_total"
            | "_contained"
            | "_containedType"
            | "_format"
            | "_pretty"
    )
}

/// Every parameter of a search checked, and the search planned: which parameters the upstream
/// answers, which become blind-index tokens, which the gateway checks on the opened candidates;
/// see the module documentation.
pub fn check_params(
    state: &AppState,
    resource_type: &str,
    params: &[(String, String)],
) -> Result<SearchPlan, ApiError> {
    checked(state, resource_type, params).map(|checked| checked.plan)
}

/// A search checked and planned ([`checked`]).
struct Checked {
    /// The plan under every generation of the blind-index secret searched: the parameters the
    /// gateway checks, and one upstream query whose `_tag`s OR the tokens of every generation.
    plan: SearchPlan,
    /// For a search the gateway owns while a rotation searches more than one generation: the
    /// upstream queries sent instead of `plan.upstream`, one per generation with that
    /// generation's tokens alone, the oldest generation first. Empty otherwise (one generation, a
    /// search the upstream answers, nothing to ask, or `_sort`): then `plan.upstream` is the one
    /// query.
    per_generation: Vec<Vec<(String, String)>>,
}

/// [`check_params`], with the upstream queries of each generation searched.
///
/// During a rotation, ORing two generations' tokens in one `_tag` gives the same candidates, but
/// an upstream may answer it far more slowly than either token alone: sekmet-fhir on SQLite then
/// scans every `_tag` row of the type (at 10,000 Patients, 103 ms against 0.02 ms for one token;
/// a `family` + `birthdate` search fell from 536 to 1.6 a second for the rotation's 5½ minutes,
/// `BENCHMARKS.md`, "Rotating the blind-index secret"). So a search the gateway owns asks once
/// per generation, each `_tag` naming one generation's systems, and merges the candidates
/// (`owned`). Not with `_sort`: each query would be sorted, their concatenation not, so the one
/// OR-ed query stays (correct, slower).
fn checked(
    state: &AppState,
    resource_type: &str,
    params: &[(String, String)],
) -> Result<Checked, ApiError> {
    let rules = state.sealing.policy_rules();
    let mut search = Vec::new();
    for (name, value) in params {
        let base = name.split(':').next().unwrap_or_default();
        match base {
            "_count" | "_offset" => check_paging(base, value)?,
            // The gateway's own paging link of a search it filters; checked there.
            owned::CURSOR => {}
            "_format" => {
                if !value.contains("json") {
                    return Err(ApiError::SearchRefused(
                        "_format: this gateway answers in FHIR JSON only".into(),
                    ));
                }
            }
            // A summary or element subset is made by the upstream on the sealed form: sealed
            // elements would go without their masked marker, or the sealed header with them
            // (`docs/gateway-rest.md`, "Summaries"). `count`, `data` and `false` drop no
            // sealed element, and pass.
            "_summary" if matches!(value.as_str(), "true" | "text") => {
                return Err(ApiError::SearchRefused(format!(
                    "_summary={value} is not supported: summaries of sealed resources are not \
                     made; use _summary=count, data or false"
                )));
            }
            "_elements" => {
                return Err(ApiError::SearchRefused(
                    "_elements is not supported: element subsets of sealed resources are not \
                     made"
                        .into(),
                ));
            }
            "_sort" => {
                for key in value.split(',') {
                    let key = key.trim().trim_start_matches('-');
                    if key.is_empty() {
                        continue;
                    }
                    sealed_search_param(resource_type, key, rules)
                        .map_err(|e| ApiError::SearchRefused(format!("_sort: {e}")))?;
                }
            }
            name if is_result_param(name) => {}
            _ => search.push((name.clone(), value.clone())),
        }
    }
    let index = state.sealing.index_keys();
    let refused = |e: fhirseal_seal::search::SearchRefusal| ApiError::SearchRefused(e.to_string());
    // Planned under every generation at once first: the refusals (the token limit too) are those
    // of the OR-ed query, whichever form is sent.
    let plan = plan_search(resource_type, &search, rules, index.searched()).map_err(refused)?;
    if !plan.owned() && params.iter().any(|(k, _)| k == owned::CURSOR) {
        return Err(ApiError::SearchRefused(format!(
            "{}: only the gateway's paging links of a search on sealed elements carry it",
            owned::CURSOR
        )));
    }
    let sorted = params
        .iter()
        .any(|(k, _)| k.split(':').next() == Some("_sort"));
    let per_generation = if plan.owned() && !plan.nothing && index.searched().len() > 1 && !sorted {
        // Oldest first: a resource only ever moves to the current generation (the retire walk,
        // a write), so one moved between two queries is found by both (and kept once), never
        // by neither.
        index
            .searched()
            .iter()
            .rev()
            .map(|generation| {
                plan_search(
                    resource_type,
                    &search,
                    rules,
                    std::slice::from_ref(generation),
                )
                .map(|plan| plan.upstream)
                .map_err(refused)
            })
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    Ok(Checked {
        plan,
        per_generation,
    })
}

/// Narrows `params` to what the scopes allow; the patient the search is limited to, if any.
pub(super) fn narrow(
    caller: &Caller,
    resource_type: &str,
    params: &mut Vec<(String, String)>,
) -> Result<Option<String>, ApiError> {
    let narrowings = caller.0.context.search_narrowing(resource_type)?;
    if narrowings.iter().any(|n| n.params.is_empty()) {
        return Ok(None);
    }
    // Scopes are a union of ways; the first is used (its entries are still checked one by one).
    let Some(first) = narrowings.into_iter().next() else {
        return Err(ApiError::Denied {
            reason: "no scope of the token leaves a way to search this type".into(),
        });
    };
    let patient = caller
        .0
        .context
        .patient_id()
        .filter(|_| {
            first
                .params
                .iter()
                .any(|(k, v)| k == "_id" || v.starts_with("Patient/"))
        })
        .map(|id| format!("Patient/{id}"));
    params.extend(first.params);
    Ok(patient)
}

/// `_count`, `_offset`, `_since` and `_at` only, checked.
fn history_params(params: &[SearchParam]) -> Result<Vec<(String, String)>, ApiError> {
    let params = SearchParam::pairs(params);
    for (name, value) in &params {
        match name.as_str() {
            "_count" | "_offset" => check_paging(name, value)?,
            "_since" | "_at" => {}
            _ => {
                return Err(ApiError::SearchRefused(format!(
                    "{name}: history takes only _count, _offset, _since and _at"
                )));
            }
        }
    }
    Ok(params)
}

/// `_count` and `_offset`: non-negative integers, `_count` at most [`MAX_COUNT`] (sekmet answers
/// `_offset=abc` with a 500).
fn check_paging(name: &str, value: &str) -> Result<(), ApiError> {
    let n: u64 = value
        .parse()
        .map_err(|_| ApiError::SearchRefused(format!("{name} must be a non-negative integer")))?;
    if name == "_count" && n > MAX_COUNT {
        return Err(ApiError::SearchRefused(format!(
            "_count may be at most {MAX_COUNT}"
        )));
    }
    Ok(())
}

/// `GET path` on the upstream, which must answer a Bundle of one of `types`; its refusals mapped
/// status for status in fixed words ([`ApiError::from_upstream_status`]; a 400 says it was the
/// search's).
pub(super) async fn upstream_bundle(
    state: &AppState,
    path: String,
    types: &[&str],
) -> Result<Value, ApiError> {
    let request = UpstreamRequest::new(Method::GET, path)
        .with_header(header::ACCEPT, HeaderValue::from_static(FHIR_JSON))
        .with_header(
            header::HeaderName::from_static("prefer"),
            HeaderValue::from_static("handling=strict"),
        );
    let response = state.upstream.send(request).await?;
    match response.status() {
        status if status.is_success() => {}
        // The upstream refused the query (a bad value): the client's error, in fixed words.
        StatusCode::BAD_REQUEST => {
            return Err(ApiError::InvalidRequest(
                "the FHIR server refused the search's parameters or values",
            ));
        }
        // The one mapping of upstream refusals: an operation or type the upstream does not
        // have (`$everything` on a server without it) is FHIR's 404, one it does not implement
        // a 501.
        _ => return Err(ApiError::from_upstream_response(&response, None)),
    }
    // Every use of a search's, a history's or `$everything`'s answer opens it, a conditional
    // write's match included (to answer with it, or for its id): no use for the tokens.
    let bundle = Parse::ForReader.body(response.body())?;
    let kind = bundle
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle")
        || !types.contains(&kind)
    {
        return Err(ApiError::UpstreamMalformed);
    }
    Ok(bundle)
}

pub(super) fn entries(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// Leaves out the entries the caller may not see, opens the rest, answers.
async fn filtered_answer(
    state: &AppState,
    caller: &Caller,
    bundle: Value,
    interaction: Interaction,
    name: &'static str,
    keep_deleted: bool,
) -> Result<Answer, ApiError> {
    let (opened, mut references, report) =
        filter_and_open(state, caller, bundle, interaction, keep_deleted).await?;
    references.dedup();
    Ok(Answer::new(
        StatusCode::OK,
        Some(opened),
        note(name, references, report, 0),
    ))
}

/// The entries of `bundle` the caller may see, opened for it, and the `Type/id` of each
/// resource kept. An entry the caller may not read is left out, and `total` with it (it would
/// tell how many); an instance history none of whose versions the caller may read is refused
/// like a read of it (`keep_deleted`: a history, whose deleted versions are kept).
pub(super) async fn filter_and_open(
    state: &AppState,
    caller: &Caller,
    mut bundle: Value,
    interaction: Interaction,
    keep_deleted: bool,
) -> Result<(Value, Vec<String>, OpenReport), ApiError> {
    let mut kept_resources = 0usize;
    let mut decisions = EntryDecisions::default();
    let mut refused: Option<ApiError> = None;
    let mut references = Vec::new();
    if let Some(Value::Array(list)) = bundle.get_mut("entry") {
        let taken = std::mem::take(list);
        for entry in taken {
            let Some(resource) = entry.get("resource") else {
                // A deleted version in a history: only a URL.
                if keep_deleted {
                    list.push(entry);
                }
                continue;
            };
            let is_outcome =
                resource.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome");
            let mode = entry
                .get("search")
                .and_then(|s| s.get("mode"))
                .and_then(Value::as_str);
            if is_outcome && mode == Some("outcome") {
                list.push(entry);
                continue;
            }
            let allowed = if interaction == Interaction::History {
                decisions
                    .authorize(state, caller, Interaction::History, resource)
                    .or_else(|_| decisions.authorize(state, caller, Interaction::Read, resource))
            } else {
                decisions.authorize(state, caller, Interaction::Read, resource)
            };
            if let Err(error) = allowed {
                refused.get_or_insert(error);
            } else {
                if let Some(reference) = reference_of(resource) {
                    references.push(reference);
                }
                kept_resources += 1;
                list.push(entry);
            }
        }
    }
    if let Some(error) = refused {
        if keep_deleted && kept_resources == 0 {
            return Err(error);
        }
        // Entries were left out: the upstream's count would tell how many.
        if let Value::Object(object) = &mut bundle {
            object.shift_remove("total");
        }
    }
    let (opened, report) = open_for(state, caller, bundle).await?;
    Ok((opened, references, report))
}

/// `Type/id` of a resource.
pub(super) fn reference_of(resource: &Value) -> Option<String> {
    let t = resource.get("resourceType").and_then(Value::as_str)?;
    let id = resource.get("id").and_then(Value::as_str)?;
    Some(format!("{t}/{id}"))
}
