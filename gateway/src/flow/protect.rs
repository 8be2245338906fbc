//! The "open / mask" step of the request flow: every resource and Bundle that comes back from the
//! upstream is opened for the caller (each sealed element whose access structure the caller's
//! attributes satisfy), masked elsewhere, and flagged where it is not what FHIRseal sealed.

use std::sync::Arc;

use fhirseal_seal::{NeededHeaders, OpenReport, Reader, needed_headers};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::keys::KeyGrant;
use crate::state::AppState;
use fhirseal_authority::unix_now as now;

/// Opens `value` (a resource or a Bundle) for the caller: its key for the current period, the
/// shared headers it names, then the reader off the async threads.
pub async fn open_for(
    state: &AppState,
    caller: &Caller,
    value: Value,
) -> Result<(Value, OpenReport), ApiError> {
    let grant = state
        .keyring
        .grant_for(&caller.0.context.principal, now())
        .await?;
    // Under break-glass (reads only), what the caller's own key leaves masked is tried again
    // with the emergency key.
    let Some(active) = crate::break_glass::active() else {
        return open_with(state, grant, value).await;
    };
    let stored = value.clone();
    let (own, report) = open_with(state, grant, value).await?;
    if report.masked == 0 {
        return Ok((own, report));
    }
    let (service, attributes) = active.emergency_identity();
    let emergency = state
        .keyring
        .grant_for_service(service, &attributes, now())
        .await?;
    let (opened, emergency_report) = open_with(state, Some(emergency), stored.clone()).await?;
    Ok(active.keep(&stored, (own, report), opened, emergency_report))
}

/// [`open_for`] with a key already granted (`None`: everything stays masked): the caller's, or
/// one of the gateway's own service identities' (the re-index job's).
pub async fn open_with(
    state: &AppState,
    grant: Option<KeyGrant>,
    value: Value,
) -> Result<(Value, OpenReport), ApiError> {
    let NeededHeaders { ids, carried } = needed_headers(&value);
    let headers = state.headers.lookup(&ids).await?;
    let cache = Arc::clone(&state.header_cache);
    let sealing = Arc::clone(&state.sealing);
    // With every header key already opened, opening is a few AES-GCM decryptions per element:
    // done here, on the thread that parsed the answer and will write it, whatever its size.
    // Parsing and writing it already cost about as much as this does. Sent to the blocking
    // pool, a 100-entry search answer cost a third more CPU under load (bench-ab, 16
    // connections: 5,238 µs against 3,864 µs per search, BENCHMARKS.md "The hot path, eighth
    // round"): the tree was opened on one thread and written and dropped on another, and as many
    // trees were open at once as requests were in flight, where the runtime's threads take one
    // per core. A header still to open (an RS-HABE decryption, milliseconds of pairings) goes to
    // the blocking pool, off the async threads. So does a header carried inside a resource,
    // whose key is not known before the walk finds it. A header this key was found unable to
    // open is as quick as an opened one: its elements are masked at once.
    let cached = !carried
        && grant.as_ref().is_some_and(|grant| {
            let now = std::time::Instant::now();
            ids.iter().all(|id| {
                state
                    .header_cache
                    .knows(&grant.registration, *id, grant.key.period(), now)
            })
        });
    let open = move |mut value: Value| {
        let (holder, key) = match &grant {
            Some(grant) => (grant.registration.as_str(), Some(&*grant.key)),
            None => ("", None),
        };
        let report = Reader::new(holder, key, &cache, &headers, sealing.key())
            .with_rules(&*sealing)
            .open(&mut value);
        (value, report)
    };
    let (value, report) = if cached {
        open(value)
    } else {
        tokio::task::spawn_blocking(move || open(value))
            .await
            .map_err(|e| ApiError::Task {
                panicked: e.is_panic(),
            })?
    };
    // Here, in the request's span (the blocking pool is outside it).
    warn_forged(&report);
    Ok((value, report))
}

/// One warning per response that held forged sealed content (`docs/authenticity.md`): where,
/// never what (no value, no envelope). The request span names the request.
fn warn_forged(report: &OpenReport) {
    if report.forged == 0 {
        return;
    }
    tracing::warn!(
        forged = report.forged,
        elements = %report.forged_elements.join(", "),
        "sealed content that FHIRseal did not seal there was withheld (forged, modified or moved upstream)"
    );
}
