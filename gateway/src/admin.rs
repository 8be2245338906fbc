//! The admin API, served on its own listener (loopback only; `fhirseal serve` binds it). It is
//! not FHIR: bodies are plain JSON and errors are `{"error": "…"}` with a status.
//!
//! | Endpoint | What |
//! |---|---|
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 when the upstream's `metadata` answers and the authority is readable, else 503 |
//! | `GET /jobs/ct-update` | the latest ciphertext-update job's progress (404 when none ran) |
//! | `POST /jobs/ct-update` | plans the job for the current period; the work runs in a task, or inline with `?wait=true` (the final progress is returned) |
//! | `POST /authority/revoke` | `{"kind": "user", "name": "Practitioner/dr-grey"}` or `{"kind": "authority", "name": "…"}`: revokes, and drops the keyring's cache of each revoked identity |
//! | `POST /authority/period/advance` | moves to the next period now; returns it |
//!
//! A user is named by its key identity (its `fhirUser`, see [`crate::keys`]): every active
//! version of its registration is revoked, so the keyring never re-enrols it.

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fhirseal_authority::unix_now as now;
use fhirseal_authority::{Error as AuthorityError, JobId, Kind, Progress};
use fhirseal_upstream::UpstreamRequest;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::ctupdate::{self, JobError, WorkSummary};
use crate::keys::{identity_of, registered_versions};
use crate::state::AppState;

/// Why an admin request fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The request body or query is not what the endpoint takes (400).
    #[error("the request is invalid: {0}")]
    Invalid(&'static str),
    /// No ciphertext-update job has been started (404).
    #[error("no ciphertext-update job has been started")]
    NoJob,
    /// The identity or sub-authority to revoke is not registered (404).
    #[error("no such principal is registered")]
    UnknownPrincipal,
    /// The identity or sub-authority is already revoked (409).
    #[error("it is already revoked")]
    AlreadyRevoked,
    /// The period cannot advance: the time tree's last period is reached (409).
    #[error("the authority's periods are exhausted")]
    PeriodsExhausted,
    /// The gateway is not ready: the upstream or the authority does not answer (503).
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// The attribute authority failed (503 when its store is unreachable, 500 otherwise).
    #[error("the attribute authority failed: {0}")]
    Authority(#[source] AuthorityError),
    /// The ciphertext-update job failed (502 on an upstream failure, 500 otherwise).
    #[error("the ciphertext update failed: {0}")]
    Job(#[source] JobError),
    /// A blocking task did not complete (500).
    #[error("a background task did not complete")]
    Task,
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::NoJob | Self::UnknownPrincipal => StatusCode::NOT_FOUND,
            Self::AlreadyRevoked | Self::PeriodsExhausted => StatusCode::CONFLICT,
            Self::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Authority(e) => authority_status(e),
            Self::Job(JobError::Authority(e)) => authority_status(e),
            Self::Job(
                JobError::Upstream(_)
                | JobError::UpstreamStatus { .. }
                | JobError::UpstreamMalformed { .. }
                | JobError::ForeignLink
                | JobError::PagingLoop,
            ) => StatusCode::BAD_GATEWAY,
            Self::Job(_) | Self::Task => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

fn authority_status(e: &AuthorityError) -> StatusCode {
    match e {
        AuthorityError::Sqlite { .. }
        | AuthorityError::Postgres { .. }
        | AuthorityError::Io { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<AuthorityError> for AdminError {
    fn from(error: AuthorityError) -> Self {
        match error {
            AuthorityError::UnknownPrincipal { .. } => Self::UnknownPrincipal,
            AuthorityError::AlreadyRevoked { .. } => Self::AlreadyRevoked,
            AuthorityError::PeriodsExhausted { .. } => Self::PeriodsExhausted,
            other => Self::Authority(other),
        }
    }
}

impl From<JobError> for AdminError {
    fn from(error: JobError) -> Self {
        Self::Job(error)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// The admin router over `state`.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/live", get(|| async { Json(json!({"status": "live"})) }))
        .route("/ready", get(ready))
        .route("/jobs/ct-update", get(job).post(start_job))
        .route("/authority/revoke", post(revoke))
        .route("/authority/period/advance", post(advance))
        .with_state(state)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no admin endpoint at this path"})),
            )
        })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"error": "this endpoint does not accept this method"})),
            )
        })
}

/// `GET /ready`.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    let request = UpstreamRequest::new(Method::GET, "metadata").with_header(
        axum::http::header::ACCEPT,
        axum::http::HeaderValue::from_static("application/fhir+json"),
    );
    match state.upstream.send(request).await {
        Ok(response) if response.status().is_success() => {}
        _ => {
            return Err(AdminError::NotReady(
                "the upstream FHIR server does not answer",
            ));
        }
    }
    let period = blocking(&state, |a| a.current_period(now()))
        .await
        .map_err(|_| AdminError::NotReady("the attribute authority cannot be read"))?;
    Ok(Json(json!({"status": "ready", "period": period})))
}

/// `GET /jobs/ct-update`.
async fn job(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    let (job, progress) = blocking(&state, |a| a.latest_update_job())
        .await?
        .ok_or(AdminError::NoJob)?;
    Ok(Json(progress_json(job, &progress)))
}

/// The query of `POST /jobs/ct-update`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartQuery {
    #[serde(default)]
    wait: bool,
}

/// `POST /jobs/ct-update[?wait=true]`.
async fn start_job(
    State(state): State<AppState>,
    query: Result<Query<StartQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let Query(query) =
        query.map_err(|_| AdminError::Invalid("the only parameter is wait=true|false"))?;
    let planned = ctupdate::plan(&state, now()).await?;
    let Some((job, added)) = planned else {
        // The job for the current period is finished already.
        let (job, progress) = blocking(&state, |a| a.latest_update_job())
            .await?
            .ok_or(AdminError::NoJob)?;
        return Ok(Json(progress_json(job, &progress)).into_response());
    };
    if query.wait {
        let worker = ctupdate::worker_name();
        let summary = ctupdate::work(&state, job, &worker, |_| {}).await?;
        let progress = blocking(&state, move |a| a.update_job_progress(job)).await?;
        let mut body = progress_json(job, &progress);
        body["run"] = summary_json(&summary);
        return Ok(Json(body).into_response());
    }
    let background = state.clone();
    tokio::spawn(async move {
        let worker = ctupdate::worker_name();
        if let Err(error) = ctupdate::work(&background, job, &worker, |_| {}).await {
            tracing::warn!(job = job.get(), %error, "ciphertext-update work failed");
        }
    });
    let progress = blocking(&state, move |a| a.update_job_progress(job)).await?;
    let mut body = progress_json(job, &progress);
    body["chunks_planned"] = json!(added);
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The body of `POST /authority/revoke`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    kind: String,
    name: String,
}

/// `POST /authority/revoke`.
async fn revoke(
    State(state): State<AppState>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, AdminError> {
    let Json(body) = body.map_err(|_| {
        AdminError::Invalid(r#"the body is {"kind": "user"|"authority", "name": "…"}"#)
    })?;
    let kind = match body.kind.as_str() {
        "user" => Kind::User,
        "authority" => Kind::Authority,
        _ => return Err(AdminError::Invalid(r#"kind is "user" or "authority""#)),
    };
    let name = body.name;
    if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "the name is empty, too long or holds control characters",
        ));
    }
    let revoked = blocking(&state, move |a| {
        let at = now();
        if kind == Kind::Authority {
            return a.revoke(Kind::Authority, &name, at);
        }
        // Every still-active version of the identity's registration.
        let versions = registered_versions(a, &name)?;
        if versions.is_empty() {
            return Err(AuthorityError::UnknownPrincipal {
                kind: Kind::User.as_str(),
                name,
            });
        }
        let mut revoked = Vec::new();
        for version in versions.iter().filter(|v| v.revoked_at.is_none()) {
            match a.revoke(Kind::User, &version.name, at) {
                Ok(mut done) => revoked.append(&mut done),
                Err(AuthorityError::AlreadyRevoked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if revoked.is_empty() {
            let period = versions
                .last()
                .and_then(|v| v.revoked_at)
                .unwrap_or_default();
            return Err(AuthorityError::AlreadyRevoked {
                kind: Kind::User.as_str(),
                name,
                period,
            });
        }
        Ok(revoked)
    })
    .await?;
    for (kind, name) in &revoked {
        if *kind == Kind::User {
            state.keyring.forget(identity_of(name));
        }
    }
    let list: Vec<Value> = revoked
        .iter()
        .map(|(kind, name)| json!({"kind": kind.as_str(), "name": name}))
        .collect();
    Ok(Json(json!({"revoked": list})))
}

/// `POST /authority/period/advance`.
async fn advance(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    let period = blocking(&state, |a| a.advance_period(now())).await?;
    state.keyring.forget_period();
    Ok(Json(json!({"period": period})))
}

/// A job's progress as the admin API shows it.
pub fn progress_json(job: JobId, progress: &Progress) -> Value {
    json!({
        "job": job.get(),
        "target_period": progress.target_period,
        "created_at": progress.created_at,
        "chunks": {
            "total": progress.chunks_total,
            "done": progress.chunks_done,
            "claimed": progress.chunks_claimed,
            "pending": progress.chunks_pending(),
        },
        "headers_moved": progress.headers_moved,
        "finished": progress.finished,
        "finished_at": progress.finished_at,
    })
}

fn summary_json(summary: &WorkSummary) -> Value {
    let failed: Vec<Value> = summary
        .failed
        .iter()
        .map(|f| json!({"chunk": f.key, "error": f.error.to_string()}))
        .collect();
    json!({
        "chunks_done": summary.chunks_done,
        "headers_moved": summary.headers_moved,
        "failed": failed,
        "finished": summary.finished,
    })
}

/// Runs an authority call on a blocking thread.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    call: impl FnOnce(&fhirseal_authority::Authority) -> Result<T, AuthorityError> + Send + 'static,
) -> Result<T, AdminError> {
    let authority = std::sync::Arc::clone(&state.authority);
    tokio::task::spawn_blocking(move || call(&authority))
        .await
        .map_err(|_| AdminError::Task)?
        .map_err(AdminError::from)
}
