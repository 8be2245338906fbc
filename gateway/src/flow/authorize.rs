//! The "authorize" step of the request flow: one decision for every interaction, alone or inside
//! a Bundle. The token's scopes first (they only narrow: the interaction, and under a `patient/`
//! scope the patient's compartment), then the compliance policy on the record's type and patient.
//! A search is decided before it is sent ([`decide`], on the type and the compartment it is
//! narrowed to) and every resource it returns again like a read ([`authorize`]).

use fhirseal_fhir::rest::Interaction;
use fhirseal_policy::record_patient;
use fhirseal_policy::{Decision, Obligations, Request as PolicyRequest};
use serde_json::Value;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Scopes first (they only narrow), then the policy, on `resource` (the stored one for reads,
/// deletes and patches; the new content for creates and updates).
pub fn authorize(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource: &Value,
) -> Result<Obligations, ApiError> {
    let verified = &caller.0;
    let bases = [state.config.fhir_base.as_str(), state.upstream.base()];
    verified
        .context
        .check_resource(interaction, resource, &bases)?;
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    decide(
        state,
        caller,
        interaction,
        resource_type,
        record_patient(resource, &bases),
    )
}

/// The policy's decision for `interaction` on `resource_type` records of `patient`.
pub fn decide(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource_type: &str,
    patient: Option<String>,
) -> Result<Obligations, ApiError> {
    let decision = state.policy.decide(
        &caller.0.context.principal,
        &PolicyRequest {
            interaction,
            resource_type: resource_type.to_string(),
            patient,
        },
    );
    match decision {
        Decision::Permit(obligations) => Ok(obligations),
        Decision::Deny(reason) => Err(ApiError::Denied { reason }),
    }
}
