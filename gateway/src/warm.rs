//! Warming up after a start (issue 18): what the first requests would otherwise wait for, done
//! in the background before `/ready` says ready (for at most [`WarmSettings::budget`],
//! `server.warm_up_seconds`; 0 turns it off).
//!
//! A restarted gateway has empty caches, and its first requests paid for filling them: the token
//! issuers' keys (a fetch of each `jwks_uri`), the period's key update (read from the authority
//! and decoded: two MiB, about a thousand key-update nodes, with a hundred revoked users), each
//! caller's decryption key for the period (its secret key unsealed and decoded, then combined
//! with the key update) and the header keys its answers need (a header fetched from the upstream
//! and opened with RS-HABE). So, in order:
//!
//! 1. the keys of every configured issuer ([`fhirseal_smart::verify::Verifier::prefetch_keys`]);
//! 2. the current period and its key update ([`fhirseal_authority::Authority::key_update`]);
//! 3. for the callers who made the most recent successful reads in the audit trail (at most
//!    [`WarmSettings::callers`], `server.warm_up_callers`, looked for in the last [`LOOKBACK_SECONDS`]; needs
//!    `server.audit_chain`; read newest first, [`RECORDS_READ`] records at a time, for at most
//!    [`PAGES_READ`] pages: a caller's burst of reads of one type does not hide the other types
//!    it read just before), their decryption keys for the period ([`Keyring::warm`]: with the
//!    attributes of their latest registration, never enrolling or re-issuing anyone), then the
//!    header keys of up to [`RESOURCES_PER_CALLER`] resources each read, one per resource type
//!    (headers are shared per access structure, which follows the type): each resource is read
//!    from the upstream, the headers it names are fetched, and those the caller's key opens are
//!    opened into the header-key cache; those it does not open (their structure not satisfied)
//!    are remembered closed to that key there, as a read remembers them, so that the first read
//!    masks them at once. No element is opened and nothing is sent anywhere: what
//!    is cached is what those callers' next requests would have cached, and they are checked as
//!    always (token, scopes, policy).
//!
//! What fails is logged (never with resource content) and skipped: warming up never stops the
//! gateway from serving. Requests that arrive meanwhile are served as they come; `/ready` answers
//! 503 until the warm-up ends or its budget runs out, so a load balancer sends traffic once it is
//! warm, and never waits longer than the budget.
//!
//! [`Keyring::warm`]: crate::keys::Keyring::warm

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{Method, header};
use fhirseal_authority::audit::{self, AuditQuery};
use fhirseal_envelope::HeaderId;
use fhirseal_fhir::Principal;
use fhirseal_seal::{HeaderLookup, shared_header_ids};
use fhirseal_upstream::UpstreamRequest;
use rand_core::OsRng;
use serde_json::{Map, Value};

use crate::config::{DEFAULT_WARM_UP_CALLERS, DEFAULT_WARM_UP_SECONDS};
use crate::keys::{KeyGrant, key_identity};
use crate::state::AppState;

/// How far back the audit trail is read for recent callers.
pub const LOOKBACK_SECONDS: i64 = 24 * 3600;
/// How many audit records are read for recent callers at a time, newest first: as many as one
/// search of the trail gives.
pub const RECORDS_READ: u32 = audit::index::MAX_LIMIT;
/// How many pages of [`RECORDS_READ`] records are read at most (fewer when the last
/// [`LOOKBACK_SECONDS`] hold fewer records).
pub const PAGES_READ: usize = 8;
/// How many resources of each caller's recent reads are read for their header keys, one per
/// resource type.
pub const RESOURCES_PER_CALLER: usize = 8;

/// How much the warm-up does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmSettings {
    /// How many recent callers' keys are derived (0: none).
    pub callers: usize,
    /// How long `/ready` waits for the warm-up at most.
    pub budget: Duration,
}

impl Default for WarmSettings {
    /// [`DEFAULT_WARM_UP_CALLERS`] callers, [`DEFAULT_WARM_UP_SECONDS`] seconds.
    fn default() -> Self {
        Self {
            callers: DEFAULT_WARM_UP_CALLERS,
            budget: Duration::from_secs(DEFAULT_WARM_UP_SECONDS),
        }
    }
}

/// What a warm-up did; only counts and issuer URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmReport {
    /// Issuers whose keys are at hand.
    pub issuers: usize,
    /// Issuers whose keys could not be fetched (their first token fetches again).
    pub issuers_failed: Vec<String>,
    /// Whether the period's key update is at hand.
    pub key_update: bool,
    /// Recent callers found in the audit trail.
    pub callers_found: usize,
    /// Callers whose key for the period was derived (or already cached).
    pub keys: usize,
    /// Header keys opened into the cache.
    pub header_keys: usize,
    /// Headers found closed to a caller's key (its structure not satisfied), remembered so in
    /// the cache as a read would remember them: that caller's first read masks them at once
    /// instead of trying attribute-based decryption again.
    pub closed_headers: usize,
    /// Steps that failed (an authority or upstream error), skipped.
    pub failures: usize,
    /// Whether it ended within the budget (else it was stopped there).
    pub finished: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// Starts the warm-up in the background: `/ready` answers 503 until it ends (at most
/// `settings.budget`), then the report is logged.
pub fn spawn(state: &AppState, now: i64, settings: WarmSettings) -> tokio::task::JoinHandle<()> {
    state.warmth.begin();
    let state = state.clone();
    tokio::spawn(async move {
        let report = warm_up(&state, now, settings).await;
        tracing::info!(
            issuers = report.issuers,
            issuers_failed = report.issuers_failed.len(),
            key_update = report.key_update,
            callers_found = report.callers_found,
            keys = report.keys,
            header_keys = report.header_keys,
            closed_headers = report.closed_headers,
            failures = report.failures,
            finished = report.finished,
            elapsed_ms = u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
            "warm-up ended"
        );
        state.warmth.end();
    })
}

/// Warms up `state` at `now` (see the module documentation), stopping when `settings.budget`
/// runs out; what was done stays done.
pub async fn warm_up(state: &AppState, now: i64, settings: WarmSettings) -> WarmReport {
    let started = Instant::now();
    let mut report = WarmReport::default();
    let finished = tokio::time::timeout(settings.budget, steps(state, now, settings, &mut report))
        .await
        .is_ok();
    report.finished = finished;
    report.elapsed = started.elapsed();
    report
}

async fn steps(state: &AppState, now: i64, settings: WarmSettings, report: &mut WarmReport) {
    for (issuer, ready) in state.verifier.prefetch_keys().await {
        if ready {
            report.issuers += 1;
        } else {
            tracing::warn!(%issuer, "warm-up: the issuer's keys could not be fetched");
            report.issuers_failed.push(issuer);
        }
    }
    let authority = Arc::clone(&state.authority);
    let update = tokio::task::spawn_blocking(move || {
        let period = authority.current_period(now)?;
        authority.key_update(period, &mut OsRng).map(|_| ())
    })
    .await;
    match update {
        Ok(Ok(())) => report.key_update = true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "warm-up: the period's key update could not be read");
            report.failures += 1;
        }
        Err(_) => report.failures += 1,
    }
    if settings.callers == 0 {
        return;
    }
    let callers = match recent_callers(state, now, settings.callers).await {
        Ok(callers) => callers,
        Err(error) => {
            tracing::warn!(%error, "warm-up: the audit trail could not be read");
            report.failures += 1;
            return;
        }
    };
    report.callers_found = callers.len();
    let mut opened: HashSet<(String, HeaderId)> = HashSet::new();
    for (identity, resources) in callers {
        let grant = match state.keyring.warm(&identity, now).await {
            Ok(Some(grant)) => grant,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "warm-up: a recent caller's key could not be derived");
                report.failures += 1;
                continue;
            }
        };
        report.keys += 1;
        for resource in resources {
            match header_keys(state, &grant, &resource, &mut opened).await {
                Ok((opened, closed)) => {
                    report.header_keys += opened;
                    report.closed_headers += closed;
                }
                Err(error) => {
                    tracing::warn!(%error, "warm-up: a resource's headers could not be warmed");
                    report.failures += 1;
                }
            }
        }
    }
}

/// The identities of the callers of the most recent successful reads in the audit trail, newest
/// first, at most `limit`, each with the resources (`Type/id`) it read, newest first, one per
/// type, at most [`RESOURCES_PER_CALLER`]. Empty without the audit chain.
async fn recent_callers(
    state: &AppState,
    now: i64,
    limit: usize,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let Some(chain) = state.audit.chain() else {
        return Ok(Vec::new());
    };
    let mut callers: Vec<(String, Vec<String>)> = Vec::new();
    let mut before = None;
    for _ in 0..PAGES_READ {
        let reader = chain.reader();
        let query = AuditQuery {
            from: Some(now.saturating_sub(LOOKBACK_SECONDS).saturating_mul(1000)),
            before,
            limit: RECORDS_READ,
            ..AuditQuery::default()
        };
        let records = tokio::task::spawn_blocking(move || {
            let mut store = reader.lock().unwrap_or_else(PoisonError::into_inner);
            audit::search(&mut **store, &query)
        })
        .await
        .map_err(|_| "the audit trail's reading did not complete".to_string())?
        .map_err(|e| e.to_string())?;
        let full = records.len() >= RECORDS_READ as usize;
        before = records.last().map(|record| record.seq);
        let lines = records.iter().filter_map(|record| {
            match serde_json::from_str::<Value>(&record.record) {
                Ok(Value::Object(line)) => Some(line),
                _ => None,
            }
        });
        note_callers(&mut callers, lines, limit);
        if !full {
            break;
        }
    }
    Ok(callers)
}

/// Adds to `callers` (at most `limit` of them) the reader of each of `lines` (audit lines,
/// newest first) and, for each, one resource per type it read, up to [`RESOURCES_PER_CALLER`].
fn note_callers(
    callers: &mut Vec<(String, Vec<String>)>,
    lines: impl Iterator<Item = Map<String, Value>>,
    limit: usize,
) {
    for line in lines {
        let Some(identity) = reader_identity(&line) else {
            continue;
        };
        let resources = line
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|r| is_reference(r));
        let at = match callers.iter().position(|(id, _)| *id == identity) {
            Some(at) => at,
            None if callers.len() < limit => {
                callers.push((identity, Vec::new()));
                callers.len() - 1
            }
            None => continue,
        };
        // One resource per type: headers are shared per access structure, which the policy
        // gives per type, so one of each type read covers most of what the caller opens.
        let list = &mut callers[at].1;
        for resource in resources {
            if list.len() >= RESOURCES_PER_CALLER {
                break;
            }
            let kind = resource.split('/').next();
            if !list.iter().any(|r| r.split('/').next() == kind) {
                list.push(resource.to_string());
            }
        }
    }
}

/// The key identity of the caller of a successful read, from its audit line's `who`.
fn reader_identity(line: &Map<String, Value>) -> Option<String> {
    let read = matches!(
        line.get("interaction").and_then(Value::as_str),
        Some("read" | "vread" | "search-type" | "search-system" | "history-instance")
    );
    if !read || line.get("outcome").and_then(Value::as_str) != Some("success") {
        return None;
    }
    let who = line.get("who")?.as_object()?;
    let text = |key: &str| who.get(key).and_then(Value::as_str).map(str::to_string);
    let mut claims = Map::new();
    claims.insert("iss".into(), Value::String(text("iss")?));
    let principal = Principal {
        subject: text("sub").unwrap_or_default(),
        fhir_user: text("fhir_user"),
        client_id: text("client_id"),
        scopes: Vec::new(),
        practitioner_roles: Vec::new(),
        claims,
    };
    key_identity(&principal).ok()
}

/// `Type/id` with a FHIR id: nothing else is read from the upstream.
fn is_reference(text: &str) -> bool {
    let Some((kind, id)) = text.split_once('/') else {
        return false;
    };
    kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric())
        && (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// Reads `resource` from the upstream and opens, into the header-key cache, the keys of the
/// headers it names that `grant` opens and that are not cached for it yet, and remembers there
/// those it does not open (as [`fhirseal_seal::Reader`] does): how many of each.
async fn header_keys(
    state: &AppState,
    grant: &KeyGrant,
    resource: &str,
    opened: &mut HashSet<(String, HeaderId)>,
) -> Result<(usize, usize), String> {
    let request = UpstreamRequest::new(Method::GET, resource.to_string()).with_header(
        header::ACCEPT,
        header::HeaderValue::from_static("application/fhir+json"),
    );
    let response = state
        .upstream
        .send(request)
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        // Deleted or moved since: nothing to warm.
        return Ok((0, 0));
    }
    let (_, _, body) = response.into_parts();
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return Ok((0, 0));
    };
    let ids: Vec<HeaderId> = shared_header_ids(&value)
        .into_iter()
        .filter(|id| opened.insert((grant.registration.clone(), *id)))
        .collect();
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let headers = state
        .headers
        .lookup(&ids)
        .await
        .map_err(|e| e.to_string())?;
    let cache = Arc::clone(&state.header_cache);
    let sealing = Arc::clone(&state.sealing);
    let grant = grant.clone();
    tokio::task::spawn_blocking(move || {
        let now = Instant::now();
        let (holder, period) = (grant.registration.as_str(), grant.key.period());
        let (mut opened, mut closed) = (0, 0);
        for header in ids.iter().filter_map(|id| headers.header(*id)) {
            if cache.knows(holder, header.id(), period, now) {
                continue;
            }
            // Opened and remembered as a read does: a header this caller's key does not open
            // stays closed and is remembered so, and the first read masks it without trying
            // again.
            match cache.open_header(holder, &header, &grant.key, sealing.key(), now) {
                Ok(_) => opened += 1,
                Err(fhirseal_envelope::Error::Scheme(_)) => closed += 1,
                Err(_) => {}
            }
        }
        (opened, closed)
    })
    .await
    .map_err(|_| "opening the headers did not complete".to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::state::Warmth;

    #[test]
    fn ready_waits_for_a_warm_up_once_one_began() {
        let warmth = Warmth::default();
        assert!(warmth.is_warm(), "nothing to wait for without a warm-up");
        warmth.begin();
        assert!(!warmth.is_warm());
        warmth.end();
        assert!(warmth.is_warm());
    }

    #[test]
    fn only_successful_reads_name_a_caller_to_warm() {
        let line = |interaction: &str, outcome: &str, who: Value| {
            let Value::Object(line) =
                json!({"interaction": interaction, "outcome": outcome, "who": who})
            else {
                unreachable!()
            };
            line
        };
        let doctor = json!({"sub": "u1", "fhir_user": "Practitioner/1", "client_id": "app", "iss": "https://idp"});
        assert_eq!(
            reader_identity(&line("read", "success", doctor.clone())).as_deref(),
            Some("Practitioner/1")
        );
        assert_eq!(
            reader_identity(&line("search-type", "success", doctor.clone())).as_deref(),
            Some("Practitioner/1")
        );
        let backend = json!({"sub": "svc", "client_id": "svc", "iss": "https://idp"});
        assert_eq!(
            reader_identity(&line("read", "success", backend)).as_deref(),
            Some("client:svc")
        );
        let user = json!({"sub": "u2", "client_id": "app", "iss": "https://idp"});
        assert_eq!(
            reader_identity(&line("read", "success", user)).as_deref(),
            Some("sub:https://idp u2")
        );
        assert_eq!(
            reader_identity(&line("read", "failure", doctor.clone())),
            None
        );
        assert_eq!(reader_identity(&line("create", "success", doctor)), None);
        assert_eq!(reader_identity(&line("read", "success", Value::Null)), None);
        let reserved = json!({"sub": "x", "fhir_user": "service:reindex", "iss": "https://idp"});
        assert_eq!(reader_identity(&line("read", "success", reserved)), None);
    }

    #[test]
    fn pages_add_one_resource_per_type_for_each_caller() {
        let read = |who: &str, resources: &[&str]| {
            let Value::Object(line) = json!({"interaction": "read", "outcome": "success",
                "who": {"sub": who, "fhir_user": who, "iss": "https://idp"},
                "resources": resources})
            else {
                unreachable!()
            };
            line
        };
        let mut callers = Vec::new();
        // The newest page: a burst of one Patient's reads; the next: the search before it.
        let page = vec![read("Practitioner/1", &["Patient/p1"]); 3];
        note_callers(&mut callers, page.into_iter(), 2);
        let page = vec![
            read("Practitioner/1", &["Patient/p1"]),
            read(
                "Practitioner/1",
                &["Observation/o1", "Observation/o2", "Patient/p2", "../x"],
            ),
        ];
        note_callers(&mut callers, page.into_iter(), 2);
        let one = |resources: &[&str]| {
            (
                "Practitioner/1".to_string(),
                resources
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(callers, vec![one(&["Patient/p1", "Observation/o1"])]);
        // Callers up to the limit; a failure is no read.
        let mut failed = read("Practitioner/1", &["Condition/c1"]);
        failed.insert("outcome".into(), json!("failure"));
        let page = vec![
            failed,
            read("Practitioner/2", &["Patient/p3"]),
            read("Practitioner/3", &["Patient/p4"]),
        ];
        note_callers(&mut callers, page.into_iter(), 2);
        assert_eq!(
            callers,
            vec![
                one(&["Patient/p1", "Observation/o1"]),
                ("Practitioner/2".to_string(), vec!["Patient/p3".to_string()]),
            ]
        );
        // At most RESOURCES_PER_CALLER types each.
        let many: Vec<String> = (0..RESOURCES_PER_CALLER + 2)
            .map(|i| format!("Type{i}/x"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        note_callers(
            &mut callers,
            std::iter::once(read("Practitioner/2", &many)),
            2,
        );
        assert_eq!(callers[1].1.len(), RESOURCES_PER_CALLER);
    }

    #[test]
    fn only_type_and_id_references_are_read() {
        for good in ["Patient/p1", "Observation/a.b-c", "Basic/x"] {
            assert!(is_reference(good), "{good}");
        }
        for bad in [
            "Patient",
            "Patient/",
            "patient/p1",
            "Patient/p1/_history/2",
            "../admin",
            "Patient/p 1",
            "Pat-ient/p1",
            "",
        ] {
            assert!(!is_reference(bad), "{bad}");
        }
    }
}
