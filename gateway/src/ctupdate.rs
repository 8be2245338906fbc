//! The ciphertext-update job: after a revocation and a period change, every sealed header stored
//! on the upstream is moved to the new period with the public RS-HABE ciphertext update
//! ([`fhirseal_seal::update_headers`]), so that a copy of a revoked caller's old decryption key
//! opens nothing any more. No key is needed for it.
//!
//! - [`plan`] starts (or finds) the job for the current period in the authority's durable work
//!   queue and cuts the work into chunks: it pages through the shared headers
//!   (`GET Basic?code=…|sealed-header`) and, for each resource type with sealing rules, the
//!   resources labelled `MASKED` (`GET [type]?_security=…|MASKED`), sorted by `_id` so that pages
//!   do not shift while workers write. A chunk is one search for at most one page of ids,
//!   `[type]?_id=a,b,…` (at most 1024 bytes). It first adds a [`PLAN_CHUNK`] marker: the job
//!   cannot look finished while it is still being planned, and the worker that claims the marker
//!   pages through everything again (adding only what is new), so an interrupted plan is
//!   finished by whoever comes next.
//! - [`work`] claims chunks one at a time under a lease, reads each chunk's resources, moves
//!   their headers and writes back those that changed with `If-Match` on the version read (a
//!   concurrent write is re-read and retried; a resource deleted meanwhile is skipped), then
//!   completes the chunk with the count moved. The chunks left are the checkpoint: a stopped
//!   job resumes where it was, on any replica sharing the authority's store, and moving a header
//!   twice is a no-op, so repeated work is harmless.
//! - [`spawn_background`] runs both periodically in the gateway process.
//!
//! Failing closed: a stored header that does not decode fails its resource's chunk (it is
//! released, not completed, and the job does not finish), because skipping it would leave it
//! open to revoked keys. An upstream that fails releases the chunk and ends the run.
//!
//! Nothing here logs or reports resource content: errors name resource types, ids, chunk keys
//! and statuses only.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use fhirseal_authority::unix_now as now;
use fhirseal_authority::{Authority, Error as AuthorityError, JobId, Progress};
use fhirseal_envelope::{Header, HeaderId};
use fhirseal_fhir::request::is_fhir_id;
use fhirseal_fhir::structure::{Kind, r4};
use fhirseal_seal::shape::{OBSERVATION_VALUE_SYSTEM, SEALED_HEADER};
use fhirseal_seal::{UpdateError, update_headers};
use fhirseal_upstream::{UpstreamError, UpstreamRequest};
use rand_core::{OsRng, RngCore};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue, IF_MATCH};
use reqwest::{Method, StatusCode};
use rshabe::UpdateMode;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::headers::{CODE_SYSTEM, HEADER_CODE};
use crate::state::AppState;
use fhirseal_fhir::FHIR_JSON;

/// The key of the marker chunk every job starts with; see the module documentation.
pub const PLAN_CHUNK: &str = "plan";
/// How many times a resource written concurrently is re-read and its update retried.
pub const WRITE_ATTEMPTS: usize = 4;
/// The most pages one search is followed for (a guard against a server whose links never end).
pub const MAX_PAGES: usize = 1_000_000;

/// What a [`work`] run did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct WorkSummary {
    /// Chunks this run completed.
    pub chunks_done: u64,
    /// Headers this run moved (in completed chunks).
    pub headers_moved: u64,
    /// Chunks that failed on their content (a malformed header, a resource that kept changing):
    /// each was released, not completed, so the job stays unfinished until it is fixed.
    pub failed: Vec<ChunkFailure>,
    /// Whether the job is finished after this run.
    pub finished: bool,
}

/// A chunk that failed on its content.
#[derive(Debug)]
#[non_exhaustive]
pub struct ChunkFailure {
    /// The chunk's key.
    pub key: String,
    /// Why.
    pub error: JobError,
}

/// Why planning or working fails. No message holds resource content, a header or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// The attribute authority (its store: the job queue, the periods) failed.
    #[error("the attribute authority: {0}")]
    Authority(#[source] AuthorityError),
    /// A blocking task did not complete (it panicked, or the runtime is shutting down).
    #[error("a background task of the ciphertext update did not complete")]
    Task,
    /// The upstream server could not be reached, or did not answer in time.
    #[error("the upstream FHIR server did not answer: {0}")]
    Upstream(#[source] UpstreamError),
    /// The upstream server answered a search or a write with an unexpected status.
    #[error("the upstream FHIR server answered {status} to {what}")]
    UpstreamStatus {
        /// Its status.
        status: StatusCode,
        /// What was asked (`a search`, `an update of Patient/p1`).
        what: String,
    },
    /// The upstream server's answer is not the FHIR JSON expected.
    #[error("the upstream FHIR server's answer to {what} is not the FHIR JSON expected")]
    UpstreamMalformed {
        /// What was asked.
        what: String,
    },
    /// A paging link leaves the upstream server's base URL.
    #[error("a paging link of the upstream FHIR server leaves its base URL")]
    ForeignLink,
    /// A paging link was seen twice, or paging did not end after [`MAX_PAGES`] pages.
    #[error("the upstream FHIR server's paging links do not end")]
    PagingLoop,
    /// A chunk key this gateway does not plan (a type R4 does not know, an id that is not a
    /// FHIR id).
    #[error("chunk {key} is not one this gateway plans")]
    UnknownChunk {
        /// The key.
        key: String,
    },
    /// A stored resource's headers cannot be moved (a header that does not decode, a period
    /// past the time tree). Its chunk fails closed.
    #[error("the sealed headers of {resource} cannot be moved: {source}")]
    Header {
        /// `type/id`.
        resource: String,
        /// Why.
        source: UpdateError,
    },
    /// A stored resource that holds headers to move has no `meta.versionId`, so it cannot be
    /// written back without risking a concurrent write being lost.
    #[error("{resource} has no meta.versionId to write it back with If-Match")]
    NoVersion {
        /// `type/id`.
        resource: String,
    },
    /// The re-index job's key could not be had, or a resource could not be opened with it
    /// ([`crate::reindex`]).
    #[error("the re-index job's key, or opening a resource with it: {0}")]
    ServiceKey(String),
    /// A resource could not be sealed again under the consents in force
    /// (the consent re-seal, `consent::reseal_patient`): it keeps its former structures.
    #[error("{resource} could not be sealed again: {reason}")]
    Reseal {
        /// `type/id`.
        resource: String,
        /// Why (element paths, never values).
        reason: String,
    },
    /// A resource kept being written by others during its update.
    #[error("{resource} kept changing during its update ({WRITE_ATTEMPTS} attempts)")]
    Contended {
        /// `type/id`.
        resource: String,
    },
}

impl From<AuthorityError> for JobError {
    fn from(error: AuthorityError) -> Self {
        Self::Authority(error)
    }
}

impl From<UpstreamError> for JobError {
    fn from(error: UpstreamError) -> Self {
        Self::Upstream(error)
    }
}

impl JobError {
    /// Whether the error is about the chunk's content (the chunk fails, the run goes on), rather
    /// than the upstream or the authority (the run stops).
    fn is_content(&self) -> bool {
        matches!(
            self,
            Self::Header { .. }
                | Self::NoVersion { .. }
                | Self::Contended { .. }
                | Self::UnknownChunk { .. }
        )
    }
}

// === planner ===

/// Plans the job for the current period at `now`: starts it (or finds it), adds the
/// [`PLAN_CHUNK`] marker and one chunk per page of ids found. `None` when the job for that
/// period is already finished. Idempotent: several replicas may plan the same job; chunks
/// already there are not added again. The count is the new search chunks (not the marker).
///
/// # Errors
/// [`JobError::Authority`] and [`JobError::Task`] (the authority), the upstream errors of a
/// search ([`JobError::Upstream`], [`JobError::UpstreamStatus`],
/// [`JobError::UpstreamMalformed`], [`JobError::ForeignLink`], [`JobError::PagingLoop`]).
pub async fn plan(state: &AppState, now: i64) -> Result<Option<(JobId, u64)>, JobError> {
    let job = authority(state, move |a| {
        let target = a.current_period(now)?;
        a.start_update_job(target, now)
    })
    .await?;
    let marker = authority(state, move |a| {
        if a.update_job_progress(job)?.finished {
            return Ok(None);
        }
        a.add_update_chunks(job, &[PLAN_CHUNK.to_string()])
            .map(Some)
    })
    .await;
    match marker {
        Ok(Some(_)) => {}
        Ok(None) | Err(JobError::Authority(AuthorityError::JobFinished { .. })) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    match list_all(state, job, None).await {
        Ok(added) => Ok(Some((job, added))),
        Err(JobError::Authority(AuthorityError::JobFinished { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The searches that find every stored header: the shared ones, then each sealed type's.
fn searches(state: &AppState) -> Vec<(String, String)> {
    let mut searches = vec![(
        "Basic".to_string(),
        format!("code={}", encode(&format!("{CODE_SYSTEM}|{HEADER_CODE}"))),
    )];
    let label = encode(&format!("{OBSERVATION_VALUE_SYSTEM}|MASKED"));
    let mut types: Vec<String> = state
        .policy
        .rules_for(None)
        .sets()
        .map(|set| set.resource_type().to_string())
        .collect();
    types.sort();
    types.dedup();
    for resource_type in types {
        searches.push((resource_type, format!("_security={label}")));
    }
    searches
}

/// Pages through every search, adding a chunk per page of ids; how many chunks were new. With
/// `lease`, the lease on that chunk is renewed along the way.
async fn list_all(
    state: &AppState,
    job: JobId,
    lease: Option<(&str, &str)>,
) -> Result<u64, JobError> {
    let mut added = 0;
    let page_size = state.config.ct_update.page_size;
    for (resource_type, filter) in searches(state) {
        let mut next = Some(format!(
            "{resource_type}?{filter}&_sort=_id&_elements=id&_count={page_size}"
        ));
        let mut seen = HashSet::new();
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) || seen.len() > MAX_PAGES {
                return Err(JobError::PagingLoop);
            }
            let bundle = search(state, &path).await?;
            let ids: Vec<String> = matches(&bundle, &resource_type)
                .filter_map(|r| r.get("id").and_then(Value::as_str))
                .filter(|id| is_fhir_id(id))
                .map(str::to_string)
                .collect();
            let keys = chunk_keys(&resource_type, &ids);
            if !keys.is_empty() {
                added += authority(state, move |a| a.add_update_chunks(job, &keys)).await?;
            }
            if let Some((key, worker)) = lease {
                renew(state, job, key, worker).await?;
            }
            next = next_link(state, &bundle)?;
        }
    }
    Ok(added)
}

/// The chunk keys for a page of ids: `type?_id=a,b,…`, each at most 1024 bytes.
fn chunk_keys(resource_type: &str, ids: &[String]) -> Vec<String> {
    let prefix = format!("{resource_type}?_id=");
    let mut keys = Vec::new();
    let mut key = prefix.clone();
    for id in ids {
        if key.len() > prefix.len()
            && key.len() + 1 + id.len() > fhirseal_authority::jobs::MAX_CHUNK_KEY
        {
            keys.push(std::mem::replace(&mut key, prefix.clone()));
        }
        if key.len() > prefix.len() {
            key.push(',');
        }
        key.push_str(id);
    }
    if key.len() > prefix.len() {
        keys.push(key);
    }
    keys
}

/// The relative path of the Bundle's `next` link, if any; a link off the upstream's base is
/// refused.
pub(crate) fn next_link(state: &AppState, bundle: &Value) -> Result<Option<String>, JobError> {
    let Some(url) = bundle
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))
        .and_then(|l| l.get("url"))
    else {
        return Ok(None);
    };
    let url = url.as_str().ok_or(JobError::ForeignLink)?;
    let base = state.upstream.base();
    let rest = url
        .strip_prefix(base)
        .filter(|rest| rest.starts_with('/') || rest.starts_with('?'))
        .ok_or(JobError::ForeignLink)?;
    let rest = rest.trim_start_matches('/');
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if rest.starts_with('/') || path.contains(':') {
        return Err(JobError::ForeignLink);
    }
    Ok(Some(rest.to_string()))
}

/// `GET path` with `Prefer: handling=strict`: the searchset Bundle.
pub(crate) async fn search(state: &AppState, path: &str) -> Result<Value, JobError> {
    let request = UpstreamRequest::new(Method::GET, path)
        .with_header(ACCEPT, HeaderValue::from_static(FHIR_JSON))
        .with_header(PREFER, HeaderValue::from_static("handling=strict"));
    let response = state.upstream.send(request).await?;
    let what = || "a search".to_string();
    if response.status() != StatusCode::OK {
        return Err(JobError::UpstreamStatus {
            status: response.status(),
            what: what(),
        });
    }
    let bundle: Value = serde_json::from_slice(response.body())
        .map_err(|_| JobError::UpstreamMalformed { what: what() })?;
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(JobError::UpstreamMalformed { what: what() });
    }
    Ok(bundle)
}

/// The matched resources of type `resource_type` in a searchset (not included resources, not
/// outcome entries).
pub(crate) fn matches<'a>(
    bundle: &'a Value,
    resource_type: &'a str,
) -> impl Iterator<Item = &'a Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|entry| {
            entry
                .pointer("/search/mode")
                .and_then(Value::as_str)
                .is_none_or(|mode| mode == "match")
        })
        .filter_map(|entry| entry.get("resource"))
        .filter(move |r| r.get("resourceType").and_then(Value::as_str) == Some(resource_type))
}

// === worker ===

/// Works on `job` as `worker` until no chunk is left to claim: each chunk's headers are moved to
/// the job's target period and written back. `progress` is called after each chunk. The job is
/// marked finished when all its chunks are done.
///
/// A chunk that fails on its content ([`JobError::Header`], [`JobError::NoVersion`],
/// [`JobError::Contended`], [`JobError::UnknownChunk`]) is released and reported in
/// [`WorkSummary::failed`]; the run goes on with the others.
///
/// # Errors
/// The authority's errors, and the upstream's: the chunk being worked on is released (its
/// lease is given back) and the run stops; the next run resumes from the chunks left.
pub async fn work(
    state: &AppState,
    job: JobId,
    worker: &str,
    mut progress: impl FnMut(&Progress),
) -> Result<WorkSummary, JobError> {
    let target = authority(state, move |a| a.update_job_progress(job))
        .await?
        .target_period;
    let mut summary = WorkSummary::default();
    let result = work_chunks(state, job, worker, target, &mut summary, &mut progress).await;
    // The chunks that failed on their content were kept claimed, so that this run's claims pass
    // them by; they go back to pending now, for the next run.
    for failure in &summary.failed {
        let released = release(state, job, &failure.key, worker).await;
        if result.is_ok() {
            released?;
        }
    }
    result?;
    summary.finished = authority(state, move |a| a.finish_update_job_if_done(job, now())).await?;
    Ok(summary)
}

/// Claims and does chunks until none is left to claim.
async fn work_chunks(
    state: &AppState,
    job: JobId,
    worker: &str,
    target: u64,
    summary: &mut WorkSummary,
    progress: &mut impl FnMut(&Progress),
) -> Result<(), JobError> {
    loop {
        let name = worker.to_string();
        let lease = state.config.ct_update.lease_seconds;
        let claimed = authority(state, move |a| {
            a.claim_update_chunk(job, &name, now(), lease)
        })
        .await?;
        let Some(chunk) = claimed else {
            return Ok(());
        };
        if summary.failed.iter().any(|f| f.key == chunk.key) {
            // Our lease on a chunk that failed in this run expired and we got it back: hold it.
            continue;
        }
        match run_chunk(state, job, worker, &chunk.key, target).await {
            Ok(moved) => {
                let (key, name) = (chunk.key.clone(), worker.to_string());
                match authority(state, move |a| {
                    a.complete_update_chunk(job, &key, &name, moved)
                })
                .await
                {
                    Ok(()) => {
                        summary.chunks_done += 1;
                        summary.headers_moved += moved;
                        state.metrics.ct_chunk_done(moved);
                    }
                    // Another worker took the chunk over; it does it again.
                    Err(JobError::Authority(AuthorityError::LeaseLost { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(error) if error.is_content() => {
                tracing::warn!(job = job.get(), chunk = %chunk.key, %error, "ciphertext-update chunk failed");
                state.metrics.ct_chunk_failed();
                summary.failed.push(ChunkFailure {
                    key: chunk.key,
                    error,
                });
            }
            Err(error) => {
                release(state, job, &chunk.key, worker).await?;
                return Err(error);
            }
        }
        progress(&authority(state, move |a| a.update_job_progress(job)).await?);
    }
}

/// Releases a chunk after a failure; one already lost to another worker is fine.
async fn release(state: &AppState, job: JobId, key: &str, worker: &str) -> Result<(), JobError> {
    let (key, worker) = (key.to_string(), worker.to_string());
    match authority(state, move |a| a.release_update_chunk(job, &key, &worker)).await {
        Ok(()) | Err(JobError::Authority(AuthorityError::LeaseLost { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Extends the lease on a chunk.
async fn renew(state: &AppState, job: JobId, key: &str, worker: &str) -> Result<(), JobError> {
    let (key, worker) = (key.to_string(), worker.to_string());
    let lease = state.config.ct_update.lease_seconds;
    authority(state, move |a| {
        a.renew_update_lease(job, &key, &worker, now(), lease)
    })
    .await
}

/// Does one chunk: the headers moved.
async fn run_chunk(
    state: &AppState,
    job: JobId,
    worker: &str,
    key: &str,
    target: u64,
) -> Result<u64, JobError> {
    if key == PLAN_CHUNK {
        list_all(state, job, Some((key, worker))).await?;
        return Ok(0);
    }
    let (resource_type, ids) = parse_chunk(key)?;
    let path = format!("{resource_type}?_id={}&_count={}", ids.join(","), ids.len());
    let bundle = search(state, &path).await?;
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let resources: Vec<Value> = matches(&bundle, resource_type)
        .filter(|r| {
            r.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| wanted.contains(id))
        })
        .cloned()
        .collect();
    let mut moved = 0u64;
    let mut first_failure = None;
    let mut renewed = std::time::Instant::now();
    for resource in resources {
        match update_resource(state, resource_type, resource, target).await {
            Ok(n) => moved += n,
            Err(e) if e.is_content() => {
                // The others in the chunk are still moved; the chunk fails closed.
                first_failure.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
        if renewed.elapsed() > Duration::from_secs(state.config.ct_update.lease_seconds / 3) {
            renew(state, job, key, worker).await?;
            renewed = std::time::Instant::now();
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(moved),
    }
}

/// The resource type and ids of a chunk key `type?_id=a,b,…`.
fn parse_chunk(key: &str) -> Result<(&str, Vec<String>), JobError> {
    let unknown = || JobError::UnknownChunk {
        key: key.to_string(),
    };
    let (resource_type, list) = key.split_once("?_id=").ok_or_else(unknown)?;
    if r4().kind(resource_type) != Some(Kind::Resource) {
        return Err(unknown());
    }
    let ids: Vec<String> = list.split(',').map(str::to_string).collect();
    if ids.is_empty() || !ids.iter().all(|id| is_fhir_id(id)) {
        return Err(unknown());
    }
    Ok((resource_type, ids))
}

/// Moves one resource's headers and writes it back if any moved: how many moved.
async fn update_resource(
    state: &AppState,
    resource_type: &str,
    mut resource: Value,
    target: u64,
) -> Result<u64, JobError> {
    let id = resource
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = format!("{resource_type}/{id}");
    for _ in 0..WRITE_ATTEMPTS {
        let authority = Arc::clone(&state.authority);
        let (updated, result) = tokio::task::spawn_blocking(move || {
            let result = update_headers(
                &mut resource,
                authority.public_params(),
                target,
                UpdateMode::Rerandomize,
                &mut OsRng,
            );
            (resource, result)
        })
        .await
        .map_err(|_| JobError::Task)?;
        let report = result.map_err(|source| JobError::Header {
            resource: name.clone(),
            source,
        })?;
        if report.moved == 0 {
            return Ok(0);
        }
        match put_if_match(state, &name, &updated).await? {
            Written::Stored => {
                for header in header_ids(&updated) {
                    state.headers.forget(header);
                }
                return Ok(u64::try_from(report.moved).unwrap_or(u64::MAX));
            }
            Written::Gone => return Ok(0),
            Written::Conflict => {
                // Written (or deleted) meanwhile: read it again and redo it.
                match read(state, &name).await? {
                    Some(fresh) => resource = fresh,
                    None => return Ok(0),
                }
            }
        }
    }
    Err(JobError::Contended { resource: name })
}

/// How a conditional write-back ended.
pub(crate) enum Written {
    /// Stored.
    Stored,
    /// The resource is gone (404, 410).
    Gone,
    /// It was written (or deleted) meanwhile: 409 or 412.
    Conflict,
}

/// `PUT name` with `updated`, on condition that the stored version is still `updated`'s
/// `meta.versionId` (`If-Match`), so that a write made meanwhile is never lost.
pub(crate) async fn put_if_match(
    state: &AppState,
    name: &str,
    updated: &Value,
) -> Result<Written, JobError> {
    let no_version = || JobError::NoVersion {
        resource: name.to_string(),
    };
    let version = updated
        .pointer("/meta/versionId")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty() && !v.contains('"'))
        .ok_or_else(no_version)?;
    let if_match = HeaderValue::from_str(&format!("W/\"{version}\"")).map_err(|_| no_version())?;
    let request = UpstreamRequest::new(Method::PUT, name.to_string())
        .with_header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
        .with_header(ACCEPT, HeaderValue::from_static(FHIR_JSON))
        .with_header(IF_MATCH, if_match)
        .with_header(PREFER, HeaderValue::from_static("return=minimal"))
        .with_body(updated.to_string());
    let response = state.upstream.send(request).await?;
    match response.status() {
        StatusCode::OK | StatusCode::CREATED => Ok(Written::Stored),
        StatusCode::NOT_FOUND | StatusCode::GONE => Ok(Written::Gone),
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Ok(Written::Conflict),
        status => Err(JobError::UpstreamStatus {
            status,
            what: format!("an update of {name}"),
        }),
    }
}

/// `GET type/id`: the resource, or `None` when it is gone.
pub(crate) async fn read(state: &AppState, name: &str) -> Result<Option<Value>, JobError> {
    let request = UpstreamRequest::new(Method::GET, name)
        .with_header(ACCEPT, HeaderValue::from_static(FHIR_JSON));
    let response = state.upstream.send(request).await?;
    let what = || format!("a read of {name}");
    match response.status() {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(None),
        status => {
            return Err(JobError::UpstreamStatus {
                status,
                what: what(),
            });
        }
    }
    let resource: Value = serde_json::from_slice(response.body())
        .map_err(|_| JobError::UpstreamMalformed { what: what() })?;
    let (resource_type, id) = name.split_once('/').unwrap_or_default();
    if resource.get("resourceType").and_then(Value::as_str) != Some(resource_type)
        || resource.get("id").and_then(Value::as_str) != Some(id)
    {
        return Err(JobError::UpstreamMalformed { what: what() });
    }
    Ok(Some(resource))
}

/// The ids of the headers a resource's `sealed-header` extensions hold (at any depth).
fn header_ids(value: &Value) -> Vec<HeaderId> {
    let mut ids = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(object) => {
                if object.get("url").and_then(Value::as_str) == Some(SEALED_HEADER)
                    && let Some(text) = object.get("valueBase64Binary").and_then(Value::as_str)
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text)
                    && let Ok(header) = Header::from_bytes(&bytes)
                {
                    ids.push(header.id());
                    continue;
                }
                stack.extend(object.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    ids
}

// === background ===

/// Runs the job in the background until `shutdown` completes: every `interval`, when the
/// current period is ahead of the latest job's target (or there is no job and the period is past
/// 0), it plans the job for the current period; then, while the latest job has chunks left, it
/// works on them. Failures are logged (never with resource content) and retried at the next
/// round.
pub fn spawn_background(
    state: AppState,
    interval: Duration,
    shutdown: impl Future + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let worker = worker_name();
        let rounds = async {
            loop {
                if let Err(error) = round(&state, &worker).await {
                    tracing::warn!(%error, worker = %worker, "ciphertext update round failed");
                }
                tokio::time::sleep(interval).await;
            }
        };
        tokio::select! {
            _ = shutdown => {}
            () = rounds => {}
        }
    })
}

/// One round of the background task.
async fn round(state: &AppState, worker: &str) -> Result<(), JobError> {
    let now = now();
    let (current, latest) = authority(state, move |a| {
        Ok((a.current_period(now)?, a.latest_update_job()?))
    })
    .await?;
    let job = match latest {
        Some((job, progress)) if progress.target_period >= current => {
            if progress.finished {
                return Ok(());
            }
            job
        }
        None if current == 0 => return Ok(()),
        _ => match plan(state, now).await? {
            Some((job, added)) => {
                tracing::info!(
                    job = job.get(),
                    period = current,
                    chunks = added,
                    "ciphertext-update job planned"
                );
                job
            }
            None => return Ok(()),
        },
    };
    let summary = work(state, job, worker, |_| {}).await?;
    if summary.chunks_done > 0 || summary.finished || !summary.failed.is_empty() {
        tracing::info!(
            job = job.get(),
            chunks = summary.chunks_done,
            headers = summary.headers_moved,
            failed = summary.failed.len(),
            finished = summary.finished,
            "ciphertext-update work"
        );
    }
    Ok(())
}

/// A worker name unique to this process: host name, process id and a random suffix.
pub fn worker_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    let host: String = host.chars().filter(|c| !c.is_control()).take(200).collect();
    format!("{host}/{}/{:08x}", std::process::id(), OsRng.next_u32())
}

// === helpers ===

/// Runs an authority call on a blocking thread.
async fn authority<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&Authority) -> Result<T, AuthorityError> + Send + 'static,
) -> Result<T, JobError> {
    let authority = Arc::clone(&state.authority);
    tokio::task::spawn_blocking(move || call(&authority))
        .await
        .map_err(|_| JobError::Task)?
        .map_err(JobError::Authority)
}

/// `|` percent-encoded, for a token search value in a query.
fn encode(value: &str) -> String {
    value.replace('|', "%7C")
}

/// `Prefer` (RFC 7240).
const PREFER: HeaderName = HeaderName::from_static("prefer");

impl fmt::Display for WorkSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} chunks done, {} headers moved, {} chunks failed",
            self.chunks_done,
            self.headers_moved,
            self.failed.len()
        )
    }
}
