//! Warming up after a restart (`fhirseal::warm`, issue 18) against the run's sekmet-fhir: a
//! doctor reads a sealed Patient; the gateway restarts (its state built again on the same data
//! folder, every cache empty); the warm-up finds the doctor in the audit trail, derives the
//! doctor's key and opens the header keys of the Patient read, without opening any element.
//! The doctor's next read then needs no derivation and no header fetch; a nurse, who never read
//! anything, is not warmed.

use axum::http::StatusCode;
use fhirseal::warm::{WarmSettings, warm_up};
use fhirseal_authority::unix_now as now;
use fhirseal_seal::shared_header_ids;

use super::{PatientCanaries, assert_clinician_view, expect, patient};
use crate::support::Who;
use crate::support::sekmet::{gateway, unique};

/// The value of the metric sample starting with `prefix` in `text` (0 when absent).
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_warms_the_keys_of_the_last_readers() {
    let gw = gateway().await;
    let id = unique("warm");
    let c = PatientCanaries::new();
    let original = patient(&id, &c);
    expect(
        &gw.put(&original, &Who::FullAccess).await,
        StatusCode::CREATED,
    );
    let read = gw.get(&format!("/fhir/Patient/{id}"), &Who::Doctor).await;
    expect(&read, StatusCode::OK);
    assert_clinician_view(&read, &original, &c, &Who::Doctor);

    let restarted = gw.restarted().await;
    let stored = restarted.upstream_get(&format!("Patient/{id}")).await;
    let headers = shared_header_ids(&stored.json);
    assert!(!headers.is_empty());
    // How many of the Patient's headers hold a key opened for `holder` (the doctor's key opens
    // those of what a physician reads, not the SSN's).
    let cached = |holder: &str| {
        headers
            .iter()
            .filter(|h| {
                restarted
                    .state
                    .header_cache
                    .get(holder, **h, std::time::Instant::now())
                    .is_some()
            })
            .count()
    };
    assert_eq!(
        cached("Practitioner/e2e-dr"),
        0,
        "a restart empties the caches"
    );

    let report = warm_up(&restarted.state, now(), WarmSettings::default()).await;
    assert!(report.finished, "{report:?}");
    assert!(report.key_update, "{report:?}");
    // The test issuer's key set and the embedded authorization server's.
    assert_eq!(report.issuers, 2, "{report:?}");
    assert!(report.issuers_failed.is_empty(), "{report:?}");
    assert_eq!(
        report.callers_found, 1,
        "the doctor's read; the create is no read"
    );
    assert!(report.keys >= 1, "{report:?}");
    assert!(report.header_keys >= 1, "{report:?}");
    assert_eq!(report.failures, 0, "{report:?}");
    assert_eq!(
        cached("Practitioner/e2e-dr"),
        report.header_keys,
        "{report:?}"
    );
    assert!(
        report.header_keys < headers.len(),
        "the SSN's header stays closed"
    );
    // ... and is remembered closed to the doctor's key of this period, so that the first read
    // masks it at once: every header of the read is known, opened or closed.
    let period = restarted.state.authority.current_period(now()).unwrap();
    let closed = |holder: &str| {
        headers
            .iter()
            .filter(|h| {
                restarted.state.header_cache.is_unopenable(
                    holder,
                    **h,
                    period,
                    std::time::Instant::now(),
                )
            })
            .count()
    };
    assert!(report.closed_headers >= 1, "{report:?}");
    assert_eq!(closed("Practitioner/e2e-dr"), report.closed_headers);
    assert_eq!(
        report.header_keys + report.closed_headers,
        headers.len(),
        "{report:?}"
    );
    let cache = &restarted.state.header_cache;
    let ssn = headers
        .iter()
        .find(|h| {
            cache.is_unopenable(
                "Practitioner/e2e-dr",
                **h,
                period,
                std::time::Instant::now(),
            )
        })
        .unwrap();
    assert!(
        !cache.is_unopenable(
            "Practitioner/e2e-dr",
            *ssn,
            period + 1,
            std::time::Instant::now()
        ),
        "a key of a later period is asked again"
    );
    assert_eq!(
        cached("Practitioner/e2e-nurse") + closed("Practitioner/e2e-nurse"),
        0,
        "only recent readers are warmed"
    );

    // The doctor's next read: no key derived, no header fetched.
    let metrics = || restarted.state.metrics.render().unwrap();
    let before = metrics();
    let again = restarted
        .get(&format!("/fhir/Patient/{id}"), &Who::Doctor)
        .await;
    expect(&again, StatusCode::OK);
    assert_clinician_view(&again, &original, &c, &Who::Doctor);
    let after = metrics();
    for prefix in [
        "fhirseal_key_derivations_total{outcome=\"derived\"}",
        "fhirseal_header_cache_lookups_total{result=\"miss\"}",
    ] {
        assert!(
            sample(&before, prefix) >= 1.0,
            "the warm-up did it: {prefix}\n{before}"
        );
        assert_eq!(
            sample(&before, prefix),
            sample(&after, prefix),
            "{prefix}\n{after}"
        );
    }

    // Warming up with no callers asked for: only the issuers and the key update.
    let report = warm_up(
        &restarted.state,
        now(),
        WarmSettings {
            callers: 0,
            ..WarmSettings::default()
        },
    )
    .await;
    assert_eq!((report.callers_found, report.keys), (0, 0), "{report:?}");
    assert!(report.finished && report.key_update, "{report:?}");
}
