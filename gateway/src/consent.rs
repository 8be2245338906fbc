//! Patient consent in the gateway (`docs/consent.md`): the consents in force, kept in the trusted
//! zone and read by every replica, and what a Consent written through the gateway sets going.
//!
//! # Where consents live
//!
//! A `Consent` written through the gateway goes upstream like any resource, and its checked form
//! ([`ConsentRecord`]) is appended to a log in the authority's database: named secrets
//! `consent/log/1`, `consent/log/2`, … (insert-only, each sealed under the authority's KEK and
//! bound to its name). The log, not the upstream copy, is what the gateway enforces: the upstream
//! cannot grant anyone anything by writing a Consent of its own. Every replica reads the log at
//! start and every [`REFRESH`] after ([`spawn_background`], which also sweeps period bounds);
//! the latest entry per `Consent` id wins.
//!
//! # What a decision sees
//!
//! [`Consents::view`] gives a decision the patient's provisions in force now and the practitioners
//! some consent denies: the policy widens and narrows that patient's structures with them
//! ([`fhirseal_policy::Policy::rules_under`]), and the keyring gives a denied practitioner a key
//! without `consent:unrestricted` ([`fhirseal_policy::Policy::attributes_in`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use fhirseal_fhir::compartment::patient_search_param;
use fhirseal_policy::{ConsentRecord, Obligations};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::ctupdate::{
    JobError, MAX_PAGES, WRITE_ATTEMPTS, Written, matches, next_link, put_if_match, read, search,
};
use crate::error::ApiError;
use crate::flow::protect::open_with;
use crate::keys::{KeyGrant, REINDEX_IDENTITY};
use crate::state::AppState;

pub mod log;

pub use log::{ConsentLogError, Consents, REFRESH};

/// Reads the log again every [`REFRESH`] until `shutdown`, and seals again the records of each
/// patient a provision of whose began or ended since the last round ([`sweep`]): a consent's
/// period takes effect within a round of its bounds plus the time the walk takes (writes made
/// after a bound are sealed under it at once; what is stored keeps its structures until the walk
/// reaches it).
pub fn spawn_background(
    state: &AppState,
    shutdown: impl Future + Send + 'static,
) -> JoinHandle<()> {
    let state = state.clone();
    tokio::spawn(async move {
        let rounds = async {
            let mut last = fhirseal_authority::unix_now();
            loop {
                tokio::time::sleep(REFRESH).await;
                let (consents, authority) =
                    (Arc::clone(&state.consents), Arc::clone(&state.authority));
                match tokio::task::spawn_blocking(move || consents.refresh(&authority)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(count)) => {
                        tracing::info!(count, "consent: new records read from the authority");
                    }
                    Ok(Err(error)) => tracing::warn!(
                        %error,
                        "consent: the log could not be read again; the consents last read stay in force"
                    ),
                    Err(_) => tracing::warn!("consent: reading the log did not complete"),
                }
                let now = fhirseal_authority::unix_now();
                sweep(&state, last, now).await;
                last = now;
            }
        };
        tokio::select! {
            _ = shutdown => {}
            () = rounds => {}
        }
    })
}

/// Seals again the records of every patient whose consents' provisions began or ended in
/// `(after, until]` (seconds since the epoch); how many patients that was.
pub async fn sweep(state: &AppState, after: i64, until: i64) -> usize {
    let patients = state.consents.book().changing(
        after.saturating_mul(1_000_000),
        until.saturating_mul(1_000_000),
    );
    for patient in &patients {
        match reseal_patient(state, patient).await {
            Ok(summary) => tracing::info!(
                checked = summary.checked,
                resealed = summary.resealed,
                failed = summary.failed.len(),
                "consent: a provision began or ended; the patient's records sealed again"
            ),
            Err(error) => tracing::warn!(
                %error,
                "consent: sealing a patient's records again stopped; the next round or `POST /consent/reseal` finishes it"
            ),
        }
    }
    patients.len()
}

/// What sealing one patient's records again did ([`reseal_patient`]).
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ResealSummary {
    /// Resources read.
    pub checked: u64,
    /// Sealed again and written back.
    pub resealed: u64,
    /// Resources that failed on their content, with why; the walk goes on with the others.
    pub failed: Vec<(String, JobError)>,
}

/// Seals every record of `patient` of a type a `[[consent]]` rule governs again, under the
/// structures the consents in force now give (`docs/consent.md`): opened with the gateway's own
/// service key ([`REINDEX_IDENTITY`], every role attribute and `consent:unrestricted`), merged as
/// a write of what was read is (an element that key cannot open, one only `patient:self` may
/// read, is carried across as it is), sealed and written back with `If-Match`. Records are found
/// through the compartment's search parameter of each type
/// ([`fhirseal_fhir::compartment::patient_search_param`]).
///
/// # Errors
/// The service key cannot be had, or the upstream failed: the walk stops; running it again
/// finishes it.
pub async fn reseal_patient(state: &AppState, patient: &str) -> Result<ResealSummary, JobError> {
    let Some(id) = patient.strip_prefix("Patient/") else {
        return Ok(ResealSummary::default());
    };
    let now = fhirseal_authority::unix_now();
    let attributes = state.policy.role_attributes();
    let grant = state
        .keyring
        .grant_for_service(REINDEX_IDENTITY, &attributes, now)
        .await
        .map_err(|e| JobError::ServiceKey(e.to_string()))?;
    let governed: BTreeSet<&str> = state
        .policy
        .consent_rules()
        .iter()
        .flat_map(|rule| rule.rules.iter())
        .filter_map(|name| {
            state
                .policy
                .protections()
                .iter()
                .find(|p| &p.name == name)
                .map(|p| p.resource_type.as_str())
        })
        .collect();
    let page_size = state.config.ct_update.page_size;
    let mut summary = ResealSummary::default();
    for resource_type in governed {
        let Some(param) = patient_search_param(resource_type) else {
            continue;
        };
        let value = if param == "_id" {
            id.to_string()
        } else {
            patient.to_string()
        };
        let value: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        let mut next = Some(format!(
            "{resource_type}?{param}={value}&_sort=_id&_count={page_size}"
        ));
        let mut seen = HashSet::new();
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) || seen.len() > MAX_PAGES {
                return Err(JobError::PagingLoop);
            }
            let bundle = search(state, &path).await?;
            let resources: Vec<Value> = matches(&bundle, resource_type).cloned().collect();
            for resource in resources {
                summary.checked += 1;
                let name = format!(
                    "{resource_type}/{}",
                    resource
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                );
                match reseal(state, &grant, patient, &name, resource).await {
                    Ok(true) => summary.resealed += 1,
                    Ok(false) => {}
                    Err(
                        error @ (JobError::NoVersion { .. }
                        | JobError::Contended { .. }
                        | JobError::Reseal { .. }),
                    ) => {
                        tracing::warn!(resource = %name, %error, "consent: sealing a record again failed");
                        summary.failed.push((name, error));
                    }
                    Err(error) => return Err(error),
                }
            }
            next = next_link(state, &bundle)?;
        }
    }
    Ok(summary)
}

/// Seals `stored` (a record of `patient`) again under the consents in force; whether it was
/// written back.
async fn reseal(
    state: &AppState,
    grant: &KeyGrant,
    patient: &str,
    name: &str,
    mut stored: Value,
) -> Result<bool, JobError> {
    let failed = |e: &dyn std::fmt::Display| JobError::Reseal {
        resource: name.to_string(),
        reason: e.to_string(),
    };
    for _ in 0..WRITE_ATTEMPTS {
        let (opened, _) = open_with(state, Some(grant.clone()), stored.clone())
            .await
            .map_err(|e| JobError::ServiceKey(e.to_string()))?;
        let mut merged =
            fhirseal_seal::merge(Some(&stored), Some(&opened), &opened).map_err(|e| failed(&e))?;
        let view = state
            .consents
            .view(Some(patient), fhirseal_authority::unix_now());
        let permit = Obligations {
            access: "consent: sealed again".to_string(),
            elements: Vec::new(),
            labels: Vec::new(),
            sealing: state.policy.sealing_rules_under(Some(patient), view),
        };
        let unstored = state
            .sealing
            .seal(merged.take_resource(), None, permit)
            .await
            .map_err(|e| failed(&e))?
            .try_map(|sealed| merged.finish(sealed))
            .map_err(|e| failed(&e))?;
        let sealed = unstored
            .store(&state.headers)
            .await
            .map_err(|e| failed(&e))?;
        match put_if_match(state, name, &sealed.resource).await? {
            Written::Stored => return Ok(true),
            Written::Gone => return Ok(false),
            Written::Conflict => match read(state, name).await? {
                Some(fresh) => stored = fresh,
                None => return Ok(false),
            },
        }
    }
    Err(JobError::Contended {
        resource: name.to_string(),
    })
}

/// Puts a `Consent` the upstream has just stored in force: appends its record to the log, then
/// seals its patient's records again in the background (and, when the practitioners some consent
/// denies changed, the records of every patient whose consent denies someone, since their
/// structures name them). The key of a practitioner newly denied is re-issued without
/// `consent:unrestricted` at their next request (never throttled), and its former registration
/// revoked.
///
/// # Errors
/// [`ApiError::ConsentLog`]: the record could not be appended (the Consent is not in force).
pub async fn put_in_force(state: &AppState, record: ConsentRecord) -> Result<(), ApiError> {
    let now = fhirseal_authority::unix_now();
    let before = state
        .consents
        .book()
        .restricted(now.saturating_mul(1_000_000));
    let (consents, authority) = (Arc::clone(&state.consents), Arc::clone(&state.authority));
    let patient = record.patient.clone();
    // A Consent moved to another patient leaves the first one's records too.
    let previous = state
        .consents
        .book()
        .get(&record.id)
        .map(|r| r.patient.clone());
    tokio::task::spawn_blocking(move || consents.record(&authority, &record))
        .await
        .map_err(|e| ApiError::Task {
            panicked: e.is_panic(),
        })?
        .map_err(ApiError::ConsentLog)?;
    let book = state.consents.book();
    let micros = now.saturating_mul(1_000_000);
    let mut patients: BTreeSet<String> = std::iter::once(patient).chain(previous).collect();
    let after = book.restricted(micros);
    if after != before {
        patients.extend(book.denying(micros));
    }
    for practitioner in after.difference(&before) {
        match state.keyring.restrict(practitioner, now).await {
            Ok(revoked) => tracing::info!(
                revoked = %revoked.join(", "),
                "consent: a denied practitioner's keys re-issued without consent:unrestricted"
            ),
            // Their next request re-issues it (fail closed meanwhile: the gateway's decisions
            // already see the denial).
            Err(error) => {
                tracing::warn!(%error, "consent: re-issuing a denied practitioner's key failed")
            }
        }
    }
    tracing::info!(
        patients = patients.len(),
        "consent: recorded; sealing the records concerned again"
    );
    let state = state.clone();
    tokio::spawn(async move {
        for patient in patients {
            match reseal_patient(&state, &patient).await {
                Ok(summary) => tracing::info!(
                    checked = summary.checked,
                    resealed = summary.resealed,
                    failed = summary.failed.len(),
                    "consent: a patient's records sealed again"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    "consent: sealing a patient's records again stopped; `POST /consent/reseal` finishes it"
                ),
            }
        }
    });
    Ok(())
}

/// The body of `POST /consent/reseal`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResealBody {
    patient: Option<String>,
}

/// `POST /consent/reseal` on the admin listener: reads the consent log again, then seals again
/// the records of `{"patient": "Patient/p1"}`, or with `{}` of every patient a consent names, and
/// answers what it did once done (the consents in force, records read, sealed again, failed).
/// What a consent write starts in the background, made to wait for, and the way to finish a
/// walk that stopped.
pub async fn reseal_endpoint(
    axum::extract::State(state): axum::extract::State<AppState>,
    body: Result<axum::Json<ResealBody>, axum::extract::rejection::JsonRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let bad = |message: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": message})),
        )
            .into_response()
    };
    let Ok(axum::Json(body)) = body else {
        return bad(r#"the body is {"patient": "Patient/<id>"} or {}"#);
    };
    if let Some(patient) = &body.patient
        && !patient.strip_prefix("Patient/").is_some_and(|id| {
            fhirseal_fhir::matching::parse_reference(patient).is_some() && !id.is_empty()
        })
    {
        return bad("patient is a reference `Patient/<id>`");
    }
    let (consents, authority) = (Arc::clone(&state.consents), Arc::clone(&state.authority));
    let refreshed = tokio::task::spawn_blocking(move || consents.refresh(&authority)).await;
    if !matches!(refreshed, Ok(Ok(_))) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "the consent log cannot be read"})),
        )
            .into_response();
    }
    let patients: BTreeSet<String> = match body.patient {
        Some(patient) => BTreeSet::from([patient]),
        None => state.consents.book().patients(),
    };
    let (mut checked, mut resealed, mut failed) = (0, 0, Vec::new());
    for patient in &patients {
        match reseal_patient(&state, patient).await {
            Ok(summary) => {
                checked += summary.checked;
                resealed += summary.resealed;
                failed.extend(
                    summary
                        .failed
                        .into_iter()
                        .map(|(name, error)| serde_json::json!({"resource": name, "error": error.to_string()})),
                );
            }
            Err(error) => {
                return (
                    axum::http::StatusCode::BAD_GATEWAY,
                    axum::Json(serde_json::json!({"error": error.to_string(),
                        "checked": checked, "resealed": resealed})),
                )
                    .into_response();
            }
        }
    }
    let mut response = axum::Json(serde_json::json!({
        "patients": patients.len(), "checked": checked, "resealed": resealed, "failed": failed,
        "consents": state.consents.book().len(),
    }))
    .into_response();
    response.extensions_mut().insert(crate::audit::AuditNote {
        interaction: "consent-reseal",
        resources: patients.into_iter().collect(),
        ..crate::audit::AuditNote::default()
    });
    response
}
