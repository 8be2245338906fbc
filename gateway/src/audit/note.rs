//! What a handler did, for the audit line ([`AuditNote`]): its own module, below everything that
//! counts or logs requests (the metrics read notes too), so that it imports nothing of theirs.
//!
//! **Which patients a request concerns.** The authorize step knows the patient of every record
//! it decides on; it says so with [`concerns`], and [`concerning`] collects what a request (or a
//! Bundle entry) said while it ran, for its note's [`AuditNote::patients`]: the patient of every
//! record read, written or deleted (refused ones included: an attempt on a patient's record
//! concerns her), and of every entry a search, a history or `$everything` returned (entries left
//! out are not the caller's access).
//!
//! **Held once.** [`concerning`] and [`consenting`] (and `break_glass::during`) wrap the whole
//! request's future, nested. Written as `async fn`s, each kept the future it was handed beside
//! the one it awaited, so every layer doubled it: the FHIR handler's future came to 60 KB around
//! a 7 KB flow, and was copied whole each time a layer moved it (issue 18, BENCHMARKS.md). They
//! are combinators instead, each the size of what it wraps plus its collector.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt as _;

tokio::task_local! {
    /// The patients of the request being answered, while [`concerning`] collects them.
    static CONCERNS: Arc<Mutex<Vec<String>>>;
    /// The Consents the decisions of the request being answered were made under, while
    /// [`consenting`] collects them.
    static CONSENTED: Arc<Mutex<Vec<String>>>;
}

/// Says that a decision of the request being answered was made under `consents` (`Consent/k1`:
/// a patient's Consent in force changed the structures of the record's type); nothing when no
/// [`consenting`] is collecting.
pub fn consented<'a>(consents: impl IntoIterator<Item = &'a str>) {
    let _ = CONSENTED.try_with(|seen| {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        for consent in consents {
            if !seen.iter().any(|c| c == consent) {
                seen.push(consent.to_string());
            }
        }
    });
}

/// Runs `future` and returns its output with the Consents it said it was [`consented`] under
/// (a whole request's, Bundle entries included), in order.
pub fn consenting<F: Future>(future: F) -> impl Future<Output = (F::Output, Vec<String>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    CONSENTED.scope(Arc::clone(&seen), future).map(move |out| {
        let consents = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
        (out, consents)
    })
}

/// Says that the request being answered concerns `patient`'s record (`Patient/123`); nothing
/// when no [`concerning`] is collecting (a background job).
pub fn concerns(patient: Option<&str>) {
    let Some(patient) = patient else {
        return;
    };
    let _ = CONCERNS.try_with(|seen| {
        let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !seen.iter().any(|p| p == patient) {
            seen.push(patient.to_string());
        }
    });
}

/// Runs `future` and returns its output with the patients it said it [`concerns`], in order;
/// they also count for an enclosing [`concerning`] (a Bundle's, around its entries').
pub fn concerning<F: Future>(future: F) -> impl Future<Output = (F::Output, Vec<String>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    CONCERNS.scope(Arc::clone(&seen), future).map(move |out| {
        let patients = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
        for patient in &patients {
            concerns(Some(patient));
        }
        (out, patients)
    })
}

/// What a handler did, for the audit line: references and counts, never content.
#[derive(Clone, Debug, Default)]
pub struct AuditNote {
    /// The FHIR interaction (`read`, `search-type`, `create`, `transaction`…).
    pub interaction: &'static str,
    /// The resources touched, as `Type/id` references (ids are not protected values).
    pub resources: Vec<String>,
    /// The patients whose records it concerns, as `Patient/id` references (see the module
    /// documentation); a batch's or transaction's, those of all its entries.
    pub patients: Vec<String>,
    /// The Consents its decisions were made under (`Consent/k1`: docs/consent.md), a whole
    /// request's.
    pub consents: Vec<String>,
    /// Elements opened for the caller.
    pub opened: usize,
    /// Elements left masked for the caller.
    pub masked: usize,
    /// The distinct element paths opened (`Condition.code`; at most
    /// [`fhirseal_seal::MAX_PATHS_LISTED`]): what was read, never a value.
    pub opened_paths: Vec<String>,
    /// The distinct element paths left masked, likewise.
    pub masked_paths: Vec<String>,
    /// Elements masked and flagged because they are not what FHIRseal sealed there (forged,
    /// modified or moved upstream; `docs/authenticity.md`).
    pub forged: usize,
    /// Elements sealed before the write went upstream.
    pub sealed: usize,
    /// The status answered, where it is not the HTTP response's own (a Bundle entry's).
    pub status: Option<u16>,
    /// Why the compliance policy refused the request, in its words (rules, roles and
    /// attributes; never resource content). The client gets a fixed sentence; this is for the
    /// audit trail.
    pub reason: Option<String>,
    /// A batch's or transaction's entries, each with its own note, in order (for a transaction
    /// refused because of one entry, that entry's).
    pub entries: Vec<Self>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn patients_are_collected_per_scope_and_count_for_the_enclosing_one() {
        concerns(Some("Patient/none")); // nobody collecting: nothing happens
        let ((), outer) = concerning(async {
            concerns(Some("Patient/a"));
            let ((), inner) = concerning(async {
                concerns(Some("Patient/b"));
                concerns(None);
                concerns(Some("Patient/b"));
            })
            .await;
            assert_eq!(inner, ["Patient/b"]);
            concerns(Some("Patient/a"));
        })
        .await;
        assert_eq!(outer, ["Patient/a", "Patient/b"]);
    }
}

/// What break-glass did in a request, for the audit line's `break_glass` (`docs/break-glass.md`):
/// the outcome, the rules, the reason, the grant, the resources and element paths it opened;
/// never a value. A response extension of its own, beside the [`AuditNote`].
#[derive(Clone, Debug)]
pub struct BreakGlassNote(pub serde_json::Value);
