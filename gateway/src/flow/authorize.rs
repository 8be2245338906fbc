//! The "authorize" step of the request flow: one decision for every interaction, alone or inside
//! a Bundle. The token's scopes first (they only narrow: the interaction, and under a `patient/`
//! scope the patient's compartment), then the compliance policy on the record's type and patient.
//! A search is decided before it is sent ([`decide`], on the type and the compartment it is
//! narrowed to) and every resource it returns again like a read ([`authorize`]).

use std::collections::{HashMap, HashSet};

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
    let (resource_type, patient) = scoped(state, caller, interaction, resource)?;
    // An attempt on a patient's record concerns her, permitted or not.
    crate::audit::note::concerns(patient.as_deref());
    decide(state, caller, interaction, resource_type, patient)
}

/// The scope step of [`authorize`] on `resource`, then what the policy decides on: its type and
/// the patient whose record it is.
fn scoped<'r>(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource: &'r Value,
) -> Result<(&'r str, Option<String>), ApiError> {
    let bases = [state.config.fhir_base.as_str(), state.upstream.base()];
    caller
        .0
        .context
        .check_resource(interaction, resource, &bases)?;
    let resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok((resource_type, record_patient(resource, &bases)))
}

/// The decisions on the entries of one answer (a search, a history, `$everything`), each made as
/// [`authorize`] makes it, with the policy's permits remembered per interaction, type and
/// patient: a 100-entry search of one patient's records asks the policy once, not a hundred
/// times (a decision builds the caller's attributes and every element obligation). The scopes
/// are checked on every entry; a denial is never remembered, so each refused entry keeps its
/// own reason.
///
/// Most permits do not depend on the patient at all (a physician may read any patient's
/// Observations), yet in a search across patients (`Patient?family=…`) no two entries share one,
/// and a decision per entry cost 100 to 250 µs. So each interaction and type is first decided once
/// for a record of no patient: a permit there is a permit for every patient's record, because
/// access structures are monotone and `patient:self` then stands for `patient:none`, which nobody
/// holds. Only when that is a denial is each patient decided on its own.
#[derive(Debug, Default)]
pub struct EntryDecisions {
    permitted: HashSet<(Interaction, String, Option<String>)>,
    any_patient: HashMap<(Interaction, String), bool>,
}

impl EntryDecisions {
    /// Whether the caller may `interaction` on `resource`, exactly as [`authorize`] decides.
    ///
    /// # Errors
    /// [`ApiError::Denied`] or a scope refusal, as [`authorize`].
    pub fn authorize(
        &mut self,
        state: &AppState,
        caller: &Caller,
        interaction: Interaction,
        resource: &Value,
    ) -> Result<(), ApiError> {
        let (resource_type, patient) = scoped(state, caller, interaction, resource)?;
        // An entry the caller gets concerns its patient; one left out is not the caller's access.
        let permitted = self.permit(state, caller, interaction, resource_type, patient.clone());
        if permitted.is_ok() {
            crate::audit::note::concerns(patient.as_deref());
        }
        permitted
    }

    /// The decision of [`EntryDecisions::authorize`] once the scopes let the entry through.
    fn permit(
        &mut self,
        state: &AppState,
        caller: &Caller,
        interaction: Interaction,
        resource_type: &str,
        patient: Option<String>,
    ) -> Result<(), ApiError> {
        let any = *self
            .any_patient
            .entry((interaction, resource_type.to_string()))
            .or_insert_with(|| decide(state, caller, interaction, resource_type, None).is_ok());
        if any {
            return Ok(());
        }
        let key = (interaction, resource_type.to_string(), patient);
        if self.permitted.contains(&key) {
            return Ok(());
        }
        decide(state, caller, interaction, resource_type, key.2.clone())?;
        self.permitted.insert(key);
        Ok(())
    }
}

/// The policy's decision for `interaction` on `resource_type` records of `patient`.
pub fn decide(
    state: &AppState,
    caller: &Caller,
    interaction: Interaction,
    resource_type: &str,
    patient: Option<String>,
) -> Result<Obligations, ApiError> {
    let consent = state
        .consents
        .view(patient.as_deref(), fhirseal_authority::unix_now());
    // The audit trail's "why": the Consents that change this type's structures for the record.
    if !consent.patient.is_empty()
        && state.policy.protections().iter().any(|p| {
            p.resource_type == resource_type
                && state
                    .policy
                    .consent_rules()
                    .iter()
                    .any(|r| r.rules.contains(&p.name))
        })
    {
        crate::audit::note::consented(consent.patient.iter().map(|(id, _)| id.as_str()));
    }
    let decision = state.policy.decide(
        &caller.0.context.principal,
        &PolicyRequest {
            interaction,
            resource_type: resource_type.to_string(),
            consent,
            patient,
        },
    );
    match decision {
        Decision::Permit(obligations) => Ok(obligations),
        Decision::Deny(reason) => Err(ApiError::Denied { reason }),
    }
}
