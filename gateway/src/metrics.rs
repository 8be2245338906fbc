//! The gateway's metrics, served as Prometheus text (format 0.0.4) at `GET /metrics` on the admin
//! listener, behind the admin token like every admin endpoint but `/live` and `/ready`.
//!
//! One [`Metrics`] per process, in [`AppState`](crate::state::AppState): a registry of the Prometheus project's own Rust
//! client (`prometheus-client`), a value rather than a global, so that every test has its own.
//! Each fact is recorded where it is known: a request's interaction, status, time and element
//! counts by the [`measure`] middleware from the same [`AuditNote`] the audit line is written
//! from; every call to the upstream by [`fhirseal_upstream::Observe`]; the shared-header cache by
//! [`crate::headers`]; the key cache and key derivations by [`crate::keys`]; the update job's
//! chunks by [`crate::ctupdate`]. The authority's period and the latest update job's progress are
//! read from the authority at each scrape (`GET /metrics`, served by [`crate::admin`]), so every
//! replica reports the shared state.
//!
//! Label values are bounded: interaction names, HTTP status codes, R4 resource types, methods and
//! fixed words. Never an id, a user, a path, a query or a value. `docs/metrics.md` lists them all.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use fhirseal_authority::{PeriodInfo, Progress};
use fhirseal_fhir::ResourceType;
use fhirseal_upstream::{Call, Observe, UpstreamError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::note::AuditNote;

/// The `Content-Type` of the scrape: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the latency histograms' buckets: 2.5 ms to 10 s.
const BUCKETS: [f64; 12] = [
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The gateway's metrics. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<InteractionLabels>,
    elements: Family<ActionLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_seconds: Histograms<MethodLabels>,
    upstream_errors: Family<KindLabels, Counter>,
    header_cache: Family<ResultLabels, Counter>,
    key_cache: Family<ResultLabels, Counter>,
    key_derivations: Family<OutcomeLabels, Counter>,
    ct_chunks: Family<OutcomeLabels, Counter>,
    ct_headers_moved: Counter,
    break_glass: Family<OutcomeLabels, Counter>,
    break_glass_alerts: Family<ResultLabels, Counter>,
    job_chunks: Family<StateLabels, Gauge>,
    job_headers_moved: Gauge,
    job_target_period: Gauge,
    job_finished: Gauge,
    authority_up: Gauge,
    period: Gauge,
    last_period: Gauge,
    periods_left: Gauge,
    period_seconds: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    interaction: &'static str,
    resource_type: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InteractionLabels {
    interaction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    method: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// What a key derivation came to, for [`Metrics::key_derivation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Derivation {
    /// A key was derived.
    Derived,
    /// The registration is revoked: no key.
    Revoked,
    /// The authority failed.
    Failed,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding every metric of the gateway, each at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            "fhirseal_requests",
            "Requests answered, by FHIR interaction (none: refused before one was known), R4 \
             resource type and HTTP status",
            requests.clone(),
        );
        let request_seconds = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "fhirseal_request_duration_seconds",
            "Time from a request's arrival to its response's head, by interaction",
            request_seconds.clone(),
        );
        let elements = Family::default();
        registry.register(
            "fhirseal_elements",
            "Protected elements opened for, masked from or withheld as forged from callers, and \
             sealed on writes",
            elements.clone(),
        );
        let upstream_requests = Family::default();
        registry.register(
            "fhirseal_upstream_requests",
            "Calls to the upstream FHIR server, by method and outcome (the status class of its \
             answer after retries, or why there was none)",
            upstream_requests.clone(),
        );
        let upstream_seconds = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "fhirseal_upstream_request_duration_seconds",
            "Time a call to the upstream took, retries and waits included, by method",
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            "fhirseal_upstream_errors",
            "Calls to the upstream that failed: no answer (connect, timeout, reset, \
             body_interrupted, body_too_large, token, unsendable) or a 5xx answer (status_5xx)",
            upstream_errors.clone(),
        );
        let header_cache = Family::default();
        registry.register(
            "fhirseal_header_cache_lookups",
            "Shared headers looked up, found in the cache (hit) or asked of the upstream (miss)",
            header_cache.clone(),
        );
        let key_cache = Family::default();
        registry.register(
            "fhirseal_key_cache_lookups",
            "Callers' decryption keys asked of the keyring, served from its cache (hit) or not \
             (miss: the authority was asked)",
            key_cache.clone(),
        );
        let key_derivations = Family::default();
        registry.register(
            "fhirseal_key_derivations",
            "Decryption keys derived from the authority, by outcome (derived, revoked, failed)",
            key_derivations.clone(),
        );
        let ct_chunks = Family::default();
        registry.register(
            "fhirseal_ct_update_chunks",
            "Ciphertext-update chunks this process worked on, by outcome (done, failed)",
            ct_chunks.clone(),
        );
        let ct_headers_moved = Counter::default();
        registry.register(
            "fhirseal_ct_update_headers_moved",
            "Shared headers this process moved to a later period",
            ct_headers_moved.clone(),
        );
        let break_glass = Family::default();
        registry.register(
            "fhirseal_break_glass",
            "Break-glass assertions, by outcome (granted, refused)",
            break_glass.clone(),
        );
        let break_glass_alerts = Family::default();
        registry.register(
            "fhirseal_break_glass_alerts",
            "Break-glass alerts for the webhook, by result (sent; failed: every attempt failed; \
             dropped: too many in flight)",
            break_glass_alerts.clone(),
        );
        let job_chunks = Family::default();
        registry.register(
            "fhirseal_ct_update_job_chunks",
            "The latest ciphertext-update job's chunks, all replicas together, read at scrape \
             (state: total, done, claimed, pending)",
            job_chunks.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let job_headers_moved = gauge(
            &mut registry,
            "fhirseal_ct_update_job_headers_moved",
            "Headers the latest ciphertext-update job has moved, all replicas together",
        );
        let job_target_period = gauge(
            &mut registry,
            "fhirseal_ct_update_job_target_period",
            "The period the latest ciphertext-update job moves headers to",
        );
        let job_finished = gauge(
            &mut registry,
            "fhirseal_ct_update_job_finished",
            "1 when the latest ciphertext-update job is finished, 0 otherwise or when none ran",
        );
        let authority_up = gauge(
            &mut registry,
            "fhirseal_authority_up",
            "1 when the authority's periods could be read at this scrape, 0 otherwise",
        );
        let period = gauge(
            &mut registry,
            "fhirseal_authority_period",
            "The authority's current period",
        );
        let last_period = gauge(
            &mut registry,
            "fhirseal_authority_last_period",
            "The last period the authority's time tree holds",
        );
        let periods_left = gauge(
            &mut registry,
            "fhirseal_authority_periods_left",
            "Periods left after the current one; past the last one every request fails (/ready \
             warns below 64)",
        );
        let period_seconds = gauge(
            &mut registry,
            "fhirseal_authority_period_seconds",
            "The length of a period in seconds",
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                request_seconds,
                elements,
                upstream_requests,
                upstream_seconds,
                upstream_errors,
                header_cache,
                key_cache,
                key_derivations,
                ct_chunks,
                ct_headers_moved,
                break_glass,
                break_glass_alerts,
                job_chunks,
                job_headers_moved,
                job_target_period,
                job_finished,
                authority_up,
                period,
                last_period,
                periods_left,
                period_seconds,
            }),
        }
    }

    /// Records a request for `resource_type` (the type its path names) answered with `status`
    /// after `elapsed`, as its audit `note` describes it (`None`: refused before any handler, a
    /// 401 say).
    pub fn request(
        &self,
        resource_type: Option<&ResourceType>,
        note: Option<&AuditNote>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let inner = &self.inner;
        let interaction = note.map_or("", |n| n.interaction);
        let interaction = if interaction.is_empty() {
            "none"
        } else {
            interaction
        };
        inner
            .requests
            .get_or_create(&RequestLabels {
                interaction,
                resource_type: resource_type
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                status: status.as_u16(),
            })
            .inc();
        inner
            .request_seconds
            .get_or_create(&InteractionLabels { interaction })
            .observe(elapsed.as_secs_f64());
        if let Some(note) = note {
            for (action, count) in [
                ("opened", note.opened),
                ("masked", note.masked),
                ("forged", note.forged),
                ("sealed", note.sealed),
            ] {
                if count > 0 {
                    let count = u64::try_from(count).unwrap_or(u64::MAX);
                    inner
                        .elements
                        .get_or_create(&ActionLabels { action })
                        .inc_by(count);
                }
            }
        }
    }

    /// Records shared-header lookups: `hits` found in the cache, `misses` asked of the upstream.
    pub fn header_cache(&self, hits: u64, misses: u64) {
        for (result, count) in [("hit", hits), ("miss", misses)] {
            if count > 0 {
                self.inner
                    .header_cache
                    .get_or_create(&ResultLabels { result })
                    .inc_by(count);
            }
        }
    }

    /// Records one request for a caller's key: served from the keyring's cache (`hit`) or not.
    pub fn key_cache(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.inner
            .key_cache
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records one key derivation.
    pub fn key_derivation(&self, outcome: Derivation) {
        let outcome = match outcome {
            Derivation::Derived => "derived",
            Derivation::Revoked => "revoked",
            Derivation::Failed => "failed",
        };
        self.inner
            .key_derivations
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records one ciphertext-update chunk done by this process, which moved `moved` headers.
    pub fn ct_chunk_done(&self, moved: u64) {
        let inner = &self.inner;
        let outcome = "done";
        inner
            .ct_chunks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        inner.ct_headers_moved.inc_by(moved);
    }

    /// Records one break-glass assertion, `granted` or `refused`.
    pub fn break_glass(&self, outcome: &'static str) {
        self.inner
            .break_glass
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records what became of one break-glass alert: `sent`, `failed` or `dropped`.
    pub fn break_glass_alert(&self, result: &'static str) {
        self.inner
            .break_glass_alerts
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records one ciphertext-update chunk that failed on its content.
    pub fn ct_chunk_failed(&self) {
        let outcome = "failed";
        self.inner
            .ct_chunks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the authority's gauges from `period` (`None`: it could not be read) and the update
    /// job's from `job` (the latest, if any).
    pub fn authority(&self, period: Option<Result<PeriodInfo, ()>>, job: Option<&Progress>) {
        let inner = &self.inner;
        let gauge = |gauge: &Gauge, value: u64| {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        match period {
            Some(Ok(info)) => {
                inner.authority_up.set(1);
                gauge(&inner.period, info.period);
                gauge(&inner.last_period, info.last);
                gauge(&inner.periods_left, info.periods_left());
                gauge(&inner.period_seconds, info.seconds);
            }
            // Past the last period: readable, and nothing left.
            Some(Err(())) => {
                inner.authority_up.set(1);
                inner.periods_left.set(0);
            }
            None => {
                inner.authority_up.set(0);
            }
        }
        if let Some(job) = job {
            for (state, value) in [
                ("total", job.chunks_total),
                ("done", job.chunks_done),
                ("claimed", job.chunks_claimed),
                ("pending", job.chunks_pending()),
            ] {
                gauge(
                    &inner.job_chunks.get_or_create(&StateLabels { state }),
                    value,
                );
            }
            gauge(&inner.job_headers_moved, job.headers_moved);
            gauge(&inner.job_target_period, job.target_period);
            inner.job_finished.set(i64::from(job.finished));
        }
    }

    /// Every metric, in the Prometheus text format 0.0.4.
    ///
    /// # Errors
    /// Only if formatting fails (it does not, into a `String`).
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The R4 resource type a FHIR request's path names (`/fhir/Patient/p1`, `/fhir/Patient?…`);
/// `None` for any other path, or a name R4 does not define: a label is never a free string.
fn resource_type(path: &str) -> Option<ResourceType> {
    let name = path.strip_prefix("/fhir/")?.split('/').next()?;
    ResourceType::parse(name).ok()
}

/// A method as a label: the standard ones by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Why a call to the upstream gave no answer, as a label.
fn error_kind(error: &UpstreamError) -> &'static str {
    match error {
        UpstreamError::InvalidRequest(_) => "unsendable",
        UpstreamError::Connect { .. } => "connect",
        UpstreamError::Timeout { .. } => "timeout",
        UpstreamError::Reset { .. } => "reset",
        UpstreamError::BodyInterrupted { .. } => "body_interrupted",
        UpstreamError::BodyTooLarge { .. } => "body_too_large",
        UpstreamError::Auth(_) => "token",
        _ => "other",
    }
}

impl Observe for Metrics {
    fn observe(&self, call: &Call<'_>) {
        let inner = &self.inner;
        let method = method_label(call.method);
        let outcome = match call.outcome {
            Ok(status) => match status.as_u16() {
                100..=199 => "1xx",
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Err(error) => error_kind(error),
        };
        inner
            .upstream_requests
            .get_or_create(&UpstreamLabels { method, outcome })
            .inc();
        inner
            .upstream_seconds
            .get_or_create(&MethodLabels { method })
            .observe(call.elapsed.as_secs_f64());
        let failed = match call.outcome {
            Ok(status) if status.is_server_error() => Some("status_5xx"),
            Ok(_) => None,
            Err(_) => Some(outcome),
        };
        if let Some(kind) = failed {
            inner
                .upstream_errors
                .get_or_create(&KindLabels { kind })
                .inc();
        }
    }
}

/// The middleware that records each request (`middleware::from_fn_with_state(metrics,
/// measure)`), inside the audit layer so that it reads the same [`AuditNote`].
pub async fn measure(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let resource_type = resource_type(request.uri().path());
    let response = next.run(request).await;
    let note = response.extensions().get::<AuditNote>();
    metrics.request(
        resource_type.as_ref(),
        note,
        response.status(),
        started.elapsed(),
    );
    response
}
