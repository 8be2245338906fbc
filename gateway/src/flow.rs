//! The request flow, one path for every FHIR interaction, alone or inside a Bundle:
//!
//! ```text
//! client ─► audit + request id ─► authenticate (auth) ─► parse: FhirRequest (request)
//!        ─► flow::run ─► authorize (scopes + compartment + policy) ─► seal (write)
//!        ─► upstream ─► open / mask (protect) ─► Answer (respond) ─► response, or Bundle entry
//! ```
//!
//! [`run`] takes a parsed [`FhirRequest`] and answers it, one module per step:
//!
//! - [`authorize`]: the one decision (scopes, compartment, policy) for every resource touched;
//! - [`stored`]: what the upstream holds (one read of a resource, status and shape checked);
//! - [`query`]: searches, histories and `$everything`, narrowed, decided, filtered entry by entry;
//! - [`change`]: the writes, each prepared (authorized, sealed) then finished (opened);
//! - [`protect`]: opening and masking what comes back;
//! - [`respond`]: the [`Answer`], which becomes an HTTP response alone and an entry in a Bundle;
//! - [`capabilities`]: the CapabilityStatement with the gateway's security section;
//! - [`bundle`]: batches and transactions, whose every entry is parsed by the same
//!   [`FhirRequest::from_entry`] and answered by this same [`run`] (a transaction's writes by the
//!   same [`change`] steps, in one upstream transaction).
//!
//! Alone or inside a Bundle, a request gets the same decision, the same filtering and the same
//! audit record.

use fhirseal_fhir::{FhirRequest, Interaction};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub mod authorize;
pub mod bundle;
pub mod capabilities;
pub mod change;
pub mod protect;
pub mod query;
pub mod respond;
pub mod stored;

pub use respond::{Answer, note};

/// Answers one FHIR interaction for `caller`; see the module documentation.
///
/// # Errors
/// [`ApiError`] for every refusal and failure; the caller turns it into a response or an entry.
pub async fn run(
    state: &AppState,
    caller: &Caller,
    request: FhirRequest,
) -> Result<Answer, ApiError> {
    use Interaction as I;
    // AuditEvents come from the gateway's own audit trail, never from the upstream.
    if crate::audit::search::serves(&request.interaction) {
        return crate::audit::search::run(state, caller, request).await;
    }
    // Writes: prepared, sent, finished by the steps a transaction uses too.
    let request = match change::prepare(state, caller, request, change::CreateId::default()).await?
    {
        change::Planned::Write(step) => return change::write(state, caller, step).await,
        change::Planned::Other(request) => request,
    };
    let FhirRequest {
        interaction,
        params,
        prefer,
        body,
        ..
    } = request;
    match interaction {
        I::Read(t, id) => stored::read(state, caller, &t, &id, None).await,
        I::Vread(t, id, version) => stored::read(state, caller, &t, &id, Some(&version)).await,
        I::Search(t) => query::search(state, caller, &t, params).await,
        I::HistoryInstance(t, id) => query::instance_history(state, caller, &t, &id, &params).await,
        I::HistoryType(t) => query::type_history(state, caller, &t, &params).await,
        I::Operation(t, id, name) if t.as_str() == "Patient" && name == "everything" => {
            query::everything(state, caller, &id).await
        }
        I::BatchOrTransaction => Box::pin(bundle::run(state, caller, body, prefer)).await,
        I::Capabilities => capabilities::capabilities(state).await,
        _ => Err(ApiError::UnknownPath),
    }
}

/// The audit name of an interaction (`read`, `search-type`, …), and the resource it names.
pub fn audit_name(interaction: &Interaction) -> &'static str {
    use Interaction as I;
    match interaction {
        I::Read(..) => "read",
        I::Vread(..) => "vread",
        I::Search(..) => "search-type",
        I::HistoryInstance(..) => "history-instance",
        I::HistoryType(..) => "history-type",
        I::Operation(..) => "operation",
        I::Create(..) => "create",
        I::Update(..) | I::ConditionalUpdate(..) => "update",
        I::Patch(..) => "patch",
        I::Delete(..) => "delete",
        I::BatchOrTransaction => "batch",
        I::Capabilities => "capabilities",
        _ => "unknown",
    }
}
