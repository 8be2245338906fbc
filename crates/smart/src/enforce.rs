//! What a caller's scopes let through: the 403 side of SMART, before the policy and the keys
//! have their say. Scopes only delegate (SMART App Launch 2): they can take access away, never
//! add it, so every answer here narrows or refuses.

use fhirseal_fhir::compartment::{in_patient_compartment, patient_search_param};
use fhirseal_fhir::rest::Interaction;
use serde_json::Value;

use crate::context::TokenContext;
use crate::scope::{Allowance, Permission};

/// Why the scopes refuse a request (a 403, `insufficient_scope`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No granted scope covers this interaction on this resource type (`patient/Observation.r`
    /// and a create).
    #[error("no granted scope allows {interaction:?} on {resource_type}")]
    ScopeMissing {
        /// The interaction asked for.
        interaction: Interaction,
        /// The resource type asked about.
        resource_type: String,
    },
    /// Only `patient/` scopes cover it, and the resource is not in the compartment of the
    /// patient in context (another patient's record).
    #[error("the resource is outside the compartment of the patient in context")]
    OtherPatient,
    /// Only `patient/` scopes cover it, and resources of this type are in no patient's
    /// compartment, so the request cannot be narrowed to the patient in context.
    #[error("{resource_type} cannot be narrowed to the patient in context")]
    OutsideCompartment {
        /// The resource type asked about.
        resource_type: String,
    },
    /// Only granular scopes (`patient/Observation.rs?category=…`) cover a resource-level
    /// interaction; their restriction is a search, so the caller must search, not read.
    #[error("only granular scopes cover it; their restriction applies to searches")]
    GranularOnly,
}

/// One way to run a search within the scopes: the search parameters to add to the caller's.
/// A search may run narrowed by any one of them (scopes are a union).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narrowing {
    /// `(name, value)` pairs to add; empty: no narrowing.
    pub params: Vec<(String, String)>,
}

impl TokenContext {
    /// Whether the scopes let `interaction` touch `resource` (for reads, vreads and instance
    /// history: the stored resource; for creates and updates: the new content; for deletes and
    /// patches: the stored resource). Under a `patient/` scope the resource must be in the
    /// compartment of the patient in context; references count relative or under `bases`.
    pub fn check_resource(
        &self,
        interaction: Interaction,
        resource: &Value,
        bases: &[&str],
    ) -> Result<(), Refusal> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ways = self.ways(interaction, resource_type)?;
        let mut granular = false;
        for way in &ways {
            if !way.query.is_empty() {
                // A granular restriction is a search; it is not evaluated on a resource here.
                granular = true;
                continue;
            }
            if !way.patient_compartment {
                return Ok(());
            }
            if let Some(patient) = self.patient_id()
                && in_patient_compartment(resource, patient, bases)
            {
                return Ok(());
            }
        }
        if granular && ways.iter().all(|w| !w.query.is_empty()) {
            return Err(Refusal::GranularOnly);
        }
        Err(Refusal::OtherPatient)
    }

    /// How a search (or type history) on `resource_type` must be narrowed to stay within the
    /// scopes: one [`Narrowing`] per way the scopes allow it, the patient compartment's parameter
    /// (`subject=Patient/123`, `_id=123` for Patient) and the granular scope's query added. A
    /// single empty narrowing means the scopes put no limit on it.
    pub fn search_narrowing(&self, resource_type: &str) -> Result<Vec<Narrowing>, Refusal> {
        let ways = self.ways(Interaction::Search, resource_type)?;
        let mut narrowings = Vec::with_capacity(ways.len());
        for way in ways {
            let mut params = Vec::new();
            if way.patient_compartment {
                let (Some(param), Some(patient)) =
                    (patient_search_param(resource_type), self.patient_id())
                else {
                    return Err(Refusal::OutsideCompartment {
                        resource_type: resource_type.to_string(),
                    });
                };
                let value = if param == "_id" {
                    patient.to_string()
                } else {
                    format!("Patient/{patient}")
                };
                params.push((param.to_string(), value));
            }
            params.extend(way.query);
            narrowings.push(Narrowing { params });
        }
        Ok(narrowings)
    }

    /// The id of the patient in context (`123` of `Patient/123`).
    pub fn patient_id(&self) -> Option<&str> {
        self.patient
            .as_deref()
            .and_then(|p| p.strip_prefix("Patient/"))
            .filter(|id| !id.is_empty())
    }

    fn ways(
        &self,
        interaction: Interaction,
        resource_type: &str,
    ) -> Result<Vec<Allowance>, Refusal> {
        match self.scopes.permits(interaction, resource_type) {
            Permission::Allowed(ways) if !ways.is_empty() => Ok(ways),
            _ => Err(Refusal::ScopeMissing {
                interaction,
                resource_type: resource_type.to_string(),
            }),
        }
    }
}
