//! The admin API, served on its own listener (loopback only; `fhirseal serve` binds it at
//! `server.admin_listen`). It is not FHIR: bodies are JSON and errors are `{"error": "…"}` with a
//! status.
//!
//! Every request passes [`access::guard`] first: its `Host` must name the admin listener (421
//! otherwise), it must carry no `Origin` (403: browsers send one, scripts do not), it must bear
//! an admin token (`Authorization: Bearer …`, 401 otherwise) except `GET /live` and `GET /ready`,
//! and a `POST` must be `Content-Type: application/json` (415) with a JSON object as body and no
//! query string (400). Tokens come from a file or a variable, never the configuration; by
//! default `{data_dir}/admin.token`, made on first start. The audit line of every request made
//! with a token names the token (`who.sub`), never the token itself.
//!
//! | Endpoint | What |
//! |---|---|
//! | `GET /live` | 200 while the process runs (no token) |
//! | `GET /ready` | 200 when the warm-up after the start has ended ([`crate::warm`], at most its budget), the upstream's `metadata` answers and the authority is readable, else 503 (no token); says the period, how many are left and, below [`PERIODS_LEFT_WARNING`], a `warning` |
//! | `GET /metrics` | the gateway's metrics in the Prometheus text format 0.0.4 ([`crate::metrics`], `docs/metrics.md`); the gauges of the authority's period and of the latest update job are read at each scrape |
//! | `GET /jobs/ct-update` | the latest ciphertext-update job's progress (404 when none ran) |
//! | `POST /jobs/ct-update` | `{}` plans the job for the current period and runs it in a task (202); `{"wait": true}` works inline and returns the final progress (200) |
//! | `POST /authority/revoke` | `{"kind": "user", "name": "Practitioner/dr-grey"}` or `{"kind": "authority", "name": "…"}`: revokes, and drops the keyring's cache of each revoked identity |
//! | `POST /authority/period/advance` | `{}` moves to the next period now, unless the period was advanced by hand less than a period length ago (429 with `Retry-After`); `{"force": true}` advances anyway. Returns the period, the periods left and when the next advance is allowed |
//! | `POST /authorization/unlock` | `{"username": "dr.grey"}` or `{"source": "192.0.2.7"}`: lifts the embedded authorization server's sign-in lockout or back-off of that user name, or of that source address (an IPv6 one's /64), and forgets its failures; says whether there was one (404 when the embedded server is off) |
//! | `GET /authorization/login-stats` | how many user names and sources the sign-in throttle tracks and has locked, and how many passwords were checked |
//!
//! A user is named by its key identity (its `fhirUser`, see [`crate::keys`]): every active
//! version of its registration is revoked, so the keyring never re-enrols it.
//!
//! **Why advances are paced.** Each period advanced by hand is one the time tree (2^ℓ periods,
//! fixed when the authority is made) no longer has for later; past the last one every request
//! fails until a new authority is made. Paced to one per period length, advances by hand at most
//! double the clock's pace, so the tree lasts at least half its planned time, and a loop of
//! requests advances once. A forced advance is audited as `period-advance-forced`.

pub mod access;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Extension, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fhirseal_authority::unix_now as now;
use fhirseal_authority::{Error as AuthorityError, JobId, Kind, PeriodInfo, Progress};
use fhirseal_upstream::UpstreamRequest;
use serde::Deserialize;
use serde_json::{Value, json};

pub use self::access::{AdminAccess, AdminCaller, AdminTokenSource, AdminTokens};
use crate::audit::AuditNote;
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
    /// The `Host` does not name the admin listener (421): a name pointed at it from elsewhere.
    #[error("this request is not addressed to the admin listener (Host)")]
    ForeignHost,
    /// The request carries an `Origin`: a browser's (403).
    #[error("admin requests from a browser (with an Origin) are refused")]
    BrowserOrigin,
    /// No admin token, or not one of the configured ones (401).
    #[error("an admin token is needed: Authorization: Bearer <token>")]
    Unauthorized,
    /// A `POST` whose body is not declared JSON (415).
    #[error("the body must be JSON, sent with Content-Type: application/json")]
    NotJson,
    /// The body is larger than [`access::MAX_BODY`] (413).
    #[error("the body is too large")]
    TooLarge,
    /// A guarded period advance too soon after the last one (429).
    #[error(
        "the period was advanced by hand at {at} (unix time); the next advance is allowed from \
         {next}, one period length later; send {{\"force\": true}} to advance anyway"
    )]
    AdvancedRecently {
        /// When the period was last advanced by hand.
        at: i64,
        /// When the next guarded advance is allowed.
        next: i64,
    },
    /// The embedded authorization server is off: no sign-ins to unlock (404).
    #[error("the embedded authorization server is off (smart.embedded): no sign-ins are throttled")]
    NoSignIn,
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
    NotReady(String),
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
            Self::ForeignHost => StatusCode::MISDIRECTED_REQUEST,
            Self::BrowserOrigin => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::AdvancedRecently { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NoJob | Self::UnknownPrincipal | Self::NoSignIn => StatusCode::NOT_FOUND,
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
            AuthorityError::AdvancedRecently { at, next } => Self::AdvancedRecently { at, next },
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
        if self.status().is_server_error() {
            // Once per answer, with its cause (resource types and ids at most, never content).
            tracing::error!(status = self.status().as_u16(), error = %self, "an admin request failed");
        }
        let mut body = json!({"error": self.to_string()});
        if let Self::AdvancedRecently { next, .. } = &self {
            body["next_advance_at"] = json!(next);
        }
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"fhirseal-admin\""),
                );
            }
            Self::AdvancedRecently { next, .. } => {
                let wait = next.saturating_sub(now()).max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(wait));
            }
            _ => {}
        }
        response
    }
}

/// Below this many periods left after the current one, `/ready` carries a `warning` and the
/// gateway logs one (at start, at each advance, and at the first `/ready` of each period). 64 is a
/// sixteenth of the default tree: with one-day periods, two months at the clock's pace and at
/// least a month even with the advances by hand that the pacing allows, for the operator to make
/// the new authority and move the data (docs/authority-keys.md, "When the periods run out").
pub const PERIODS_LEFT_WARNING: u64 = 64;

/// The warning for `info`, when fewer than [`PERIODS_LEFT_WARNING`] periods are left.
pub fn periods_warning(info: &PeriodInfo) -> Option<String> {
    let left = info.periods_left();
    (left < PERIODS_LEFT_WARNING).then(|| {
        let seconds = left.saturating_mul(info.seconds);
        format!(
            "{left} of the time tree's {} periods left (about {} days at one per {} s): past \
             the last one every request fails; plan the move to a new authority now \
             (docs/authority-keys.md, \"When the periods run out\")",
            info.last.saturating_add(1),
            seconds / 86_400,
            info.seconds
        )
    })
}

/// Logs [`periods_warning`] for `info`, once per period per process (or always with `again`).
pub fn log_periods_warning(info: &PeriodInfo, again: bool) {
    static WARNED: AtomicU64 = AtomicU64::new(u64::MAX);
    if let Some(warning) = periods_warning(info)
        && (again || WARNED.swap(info.period, Ordering::Relaxed) != info.period)
    {
        tracing::warn!(
            period = info.period,
            last_period = info.last,
            periods_left = info.periods_left(),
            "{warning}"
        );
    }
}

/// The admin router over `state`, behind [`access::guard`] with `access`.
pub fn admin_router(state: AppState, access: AdminAccess) -> Router {
    Router::new()
        .route("/live", get(|| async { Json(json!({"status": "live"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/jobs/ct-update", get(job).post(start_job))
        .route("/authority/revoke", post(revoke))
        .route("/authority/period/advance", post(advance))
        .route("/authorization/unlock", post(unlock))
        .route("/authorization/login-stats", get(login_stats))
        .route("/break-glass", get(crate::break_glass::admin::list))
        .route("/break-glass/renew", post(crate::break_glass::admin::renew))
        .route("/consent/reseal", post(crate::consent::reseal_endpoint))
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
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
}

/// `response` with an audit note naming the admin `interaction` and the `resources` touched.
fn noted(
    response: impl IntoResponse,
    interaction: &'static str,
    resources: Vec<String>,
) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(AuditNote {
        interaction,
        resources,
        ..AuditNote::default()
    });
    response
}

/// `GET /metrics` on the admin listener: the authority's gauges read now, then every metric as
/// Prometheus text.
async fn metrics(State(state): State<AppState>) -> Response {
    let authority = std::sync::Arc::clone(&state.authority);
    let read = tokio::task::spawn_blocking(move || {
        let period = match authority.period_info(now()) {
            Ok(info) => Some(Ok(info)),
            Err(AuthorityError::PeriodsExhausted { .. }) => Some(Err(())),
            Err(_) => None,
        };
        let job = authority.latest_update_job().ok().flatten();
        (period, job)
    })
    .await;
    match read {
        Ok((period, job)) => state
            .metrics
            .authority(period, job.as_ref().map(|(_, progress)| progress)),
        Err(_) => state.metrics.authority(None, None),
    }
    let mut response = match state.metrics.render() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "the metrics could not be written");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "the metrics could not be written"})),
            )
                .into_response()
        }
    };
    response.extensions_mut().insert(AuditNote {
        interaction: "metrics",
        ..AuditNote::default()
    });
    response
}

/// `GET /ready`.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, AdminError> {
    if !state.warmth.is_warm() {
        return Err(AdminError::NotReady(
            "warming up after the start (the caches the first requests need); at most a few seconds"
                .into(),
        ));
    }
    let request = UpstreamRequest::new(Method::GET, "metadata").with_header(
        header::ACCEPT,
        HeaderValue::from_static("application/fhir+json"),
    );
    match state.upstream.send(request).await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            return Err(AdminError::NotReady(format!(
                "the upstream FHIR server answers its metadata with {}",
                response.status()
            )));
        }
        Err(error) => {
            return Err(AdminError::NotReady(format!(
                "the upstream FHIR server does not answer: {error}"
            )));
        }
    }
    let info = blocking(&state, |a| a.period_info(now()))
        .await
        .map_err(|e| match e {
            AdminError::PeriodsExhausted => AdminError::NotReady(
                "the authority's periods are exhausted: make a new authority".into(),
            ),
            other => {
                AdminError::NotReady(format!("the attribute authority cannot be read: {other}"))
            }
        })?;
    let mut body = json!({
        "status": "ready",
        "period": info.period,
        "last_period": info.last,
        "periods_left": info.periods_left(),
        "period_seconds": info.seconds,
    });
    if let Some(warning) = periods_warning(&info) {
        log_periods_warning(&info, false);
        body["warning"] = json!(warning);
    }
    Ok(Json(body))
}

/// `GET /jobs/ct-update`.
async fn job(State(state): State<AppState>) -> Result<Response, AdminError> {
    let (job, progress) = blocking(&state, |a| a.latest_update_job())
        .await?
        .ok_or(AdminError::NoJob)?;
    Ok(noted(
        Json(progress_json(job, &progress)),
        "ct-update-status",
        Vec::new(),
    ))
}

/// The body of `POST /jobs/ct-update`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    wait: bool,
}

/// `POST /jobs/ct-update` with `{}` or `{"wait": true}`.
async fn start_job(
    State(state): State<AppState>,
    body: Result<Json<StartBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(body) =
        body.map_err(|_| AdminError::Invalid(r#"the body is {} or {"wait": true}"#))?;
    let response = start(&state, body.wait).await?;
    Ok(noted(response, "ct-update", Vec::new()))
}

async fn start(state: &AppState, wait: bool) -> Result<Response, AdminError> {
    let state = state.clone();
    let planned = ctupdate::plan(&state, now()).await?;
    let Some((job, added)) = planned else {
        // The job for the current period is finished already.
        let (job, progress) = blocking(&state, |a| a.latest_update_job())
            .await?
            .ok_or(AdminError::NoJob)?;
        return Ok(Json(progress_json(job, &progress)).into_response());
    };
    if wait {
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
    Extension(AdminCaller(caller)): Extension<AdminCaller>,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
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
    let names: Vec<String> = revoked
        .iter()
        .map(|(kind, name)| format!("{}:{name}", kind.as_str()))
        .collect();
    tracing::info!(admin = %caller, revoked = ?names, "revoked by an administrator");
    Ok(noted(Json(json!({"revoked": list})), "revoke", names))
}

/// The body of `POST /authority/period/advance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceBody {
    #[serde(default)]
    force: bool,
}

/// `POST /authority/period/advance` with `{}` or `{"force": true}`.
async fn advance(
    State(state): State<AppState>,
    Extension(AdminCaller(caller)): Extension<AdminCaller>,
    body: Result<Json<AdvanceBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    let Json(AdvanceBody { force }) =
        body.map_err(|_| AdminError::Invalid(r#"the body is {} or {"force": true}"#))?;
    let info = blocking(&state, move |a| {
        let at = now();
        if force {
            a.advance_period(at)?;
        } else {
            a.advance_period_unless_recent(at)?;
        }
        a.period_info(at)
    })
    .await;
    let info = match info {
        Ok(info) => info,
        Err(error) => {
            // A failure (5xx) is logged once, with the answer; a refusal here.
            if !error.status().is_server_error() {
                tracing::warn!(admin = %caller, force, %error, "period advance refused");
            }
            return Err(error);
        }
    };
    state.keyring.forget_period();
    tracing::warn!(
        admin = %caller,
        force,
        period = info.period,
        periods_left = info.periods_left(),
        "period advanced by an administrator"
    );
    log_periods_warning(&info, true);
    let seconds = i64::try_from(info.seconds).unwrap_or(i64::MAX);
    let mut body = json!({
        "period": info.period,
        "last_period": info.last,
        "periods_left": info.periods_left(),
        "forced": force,
        "next_advance_at": info.advanced_at.map(|at| at.saturating_add(seconds)),
    });
    if let Some(warning) = periods_warning(&info) {
        body["warning"] = json!(warning);
    }
    let interaction = if force {
        "period-advance-forced"
    } else {
        "period-advance"
    };
    Ok(noted(Json(body), interaction, Vec::new()))
}

/// The body of `POST /authorization/unlock`: a user name or a source address, not both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlockBody {
    username: Option<String>,
    source: Option<String>,
}

/// The longest user name `POST /authorization/unlock` takes.
const MAX_USERNAME: usize = 1024;

/// `POST /authorization/unlock` with `{"username": "…"}` or `{"source": "…"}`.
async fn unlock(
    State(state): State<AppState>,
    Extension(AdminCaller(caller)): Extension<AdminCaller>,
    body: Result<Json<UnlockBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AdminError> {
    const USAGE: &str = r#"the body is {"username": "…"} or {"source": "an IP address"}"#;
    let Json(body) = body.map_err(|_| AdminError::Invalid(USAGE))?;
    let server = state.auth_server.as_ref().ok_or(AdminError::NoSignIn)?;
    let (key, name, lifted) = match (body.username, body.source) {
        (Some(username), None) => {
            if username.is_empty()
                || username.len() > MAX_USERNAME
                || username.chars().any(char::is_control)
            {
                return Err(AdminError::Invalid(
                    "the user name is empty, too long or holds control characters",
                ));
            }
            let lifted = server.unlock(&username);
            ("username", username, lifted)
        }
        (None, Some(source)) => {
            let address: IpAddr = source.trim().parse().map_err(|_| {
                AdminError::Invalid(
                    "the source is not an IP address (like 192.0.2.7 or 2001:db8::7)",
                )
            })?;
            let lifted = server.unlock_source(address);
            ("source", address.to_string(), lifted)
        }
        _ => return Err(AdminError::Invalid(USAGE)),
    };
    let resource = format!("{key}:{name}");
    tracing::warn!(
        admin = %caller,
        unlocked = ?resource,
        lifted,
        "sign-in lockout lifted by an administrator"
    );
    Ok(noted(
        Json(json!({key: name, "lifted": lifted})),
        "login-unlock",
        vec![resource],
    ))
}

/// `GET /authorization/login-stats`.
async fn login_stats(State(state): State<AppState>) -> Result<Response, AdminError> {
    let server = state.auth_server.as_ref().ok_or(AdminError::NoSignIn)?;
    let stats = server.login_stats();
    let body = json!({
        "tracked_users": stats.tracked_users,
        "tracked_sources": stats.tracked_sources,
        "locked_users": stats.locked_users,
        "locked_sources": stats.locked_sources,
        "password_checks": stats.password_checks,
    });
    Ok(noted(Json(body), "login-stats", Vec::new()))
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
