//! From a verified token's claims to who is calling, with which scopes, in which launch context.

use fhirseal_fhir::Principal;
use fhirseal_fhir::request::is_fhir_id;
use serde_json::{Map, Value};

use crate::scope::{ScopeError, Scopes};

/// Where an issuer puts things in its tokens: authorization servers differ (`patient` vs
/// `patient_id` vs `context.patient`; `scope` as a string vs `scp` as a list). Dotted names reach
/// into objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimNames {
    /// The patient in context, first found wins.
    pub patient: Vec<String>,
    /// The encounter in context.
    pub encounter: Vec<String>,
    /// The user's FHIR resource.
    pub fhir_user: Vec<String>,
    /// The scopes (a space-separated string or a list of strings).
    pub scope: Vec<String>,
}

impl Default for ClaimNames {
    fn default() -> Self {
        Self {
            patient: vec![
                "patient".into(),
                "context.patient".into(),
                "patient_id".into(),
            ],
            encounter: vec!["encounter".into(), "context.encounter".into()],
            fhir_user: vec!["fhirUser".into()],
            scope: vec!["scope".into(), "scp".into()],
        }
    }
}

/// A caller, as a verified token describes them.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenContext {
    /// Who, for the policy.
    pub principal: Principal,
    /// The granted scopes.
    pub scopes: Scopes,
    /// The patient in context (`Patient/123`).
    pub patient: Option<String>,
    /// The encounter in context (`Encounter/9`).
    pub encounter: Option<String>,
    /// `fhirContext` entries, as given.
    pub fhir_context: Vec<Value>,
}

/// Why a token's claims do not describe a caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContextError {
    /// The claims are not a JSON object, or a claim has the wrong type.
    #[error("token claims: {0}")]
    Claims(String),
    /// A scope is malformed.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// A `patient/` scope was granted without a patient in context (SMART: it SHALL establish one).
    #[error("a patient/ scope was granted without a patient in context")]
    NoPatient,
}

fn find<'v>(claims: &'v Map<String, Value>, names: &[String]) -> Option<&'v Value> {
    names.iter().find_map(|name| {
        let mut parts = name.split('.');
        let mut value = claims.get(parts.next()?)?;
        for part in parts {
            value = value.get(part)?;
        }
        (!value.is_null()).then_some(value)
    })
}

fn reference(
    value: Option<&Value>,
    resource_type: &str,
    what: &str,
) -> Result<Option<String>, ContextError> {
    match value {
        None => Ok(None),
        Some(Value::String(id)) if id.is_empty() => {
            Err(ContextError::Claims(format!("`{what}` is empty")))
        }
        Some(Value::String(id)) => {
            let last = match id.rsplit_once('/') {
                Some((_, last)) if id.contains(&format!("{resource_type}/")) => last,
                Some(_) => {
                    return Err(ContextError::Claims(format!(
                        "`{what}` is not a {resource_type} id or reference"
                    )));
                }
                None => id.as_str(),
            };
            // `.` and `..` match FHIR's id characters but would name the base, not a record.
            if !is_fhir_id(last) {
                return Err(ContextError::Claims(format!(
                    "`{what}` does not end in a FHIR id"
                )));
            }
            Ok(Some(format!("{resource_type}/{last}")))
        }
        Some(_) => Err(ContextError::Claims(format!("`{what}` must be a string"))),
    }
}

impl TokenContext {
    /// The caller described by `claims` (a verified token's payload, or an introspection
    /// response), reading claims where `names` says.
    pub fn from_claims(claims: &Value, names: &ClaimNames) -> Result<Self, ContextError> {
        let Some(object) = claims.as_object() else {
            return Err(ContextError::Claims("a JSON object is expected".into()));
        };
        let scope_text = match find(object, &names.scope) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .ok_or_else(|| ContextError::Claims("scopes must be strings".into()))
                })
                .collect::<Result<Vec<_>, _>>()?
                .join(" "),
            Some(_) => {
                return Err(ContextError::Claims(
                    "the scope claim must be a string or a list".into(),
                ));
            }
        };
        let scopes = Scopes::parse(&scope_text)?;
        let patient = reference(find(object, &names.patient), "Patient", "patient")?;
        let encounter = reference(find(object, &names.encounter), "Encounter", "encounter")?;
        if scopes.needs_patient() && patient.is_none() {
            return Err(ContextError::NoPatient);
        }
        let fhir_context = match object.get("fhirContext") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(_) => return Err(ContextError::Claims("`fhirContext` must be a list".into())),
        };
        // The policy reads `fhirUser` and `scope` by their standard names.
        let mut normalised = object.clone();
        match find(object, &names.fhir_user) {
            Some(Value::String(user)) => {
                normalised.insert("fhirUser".into(), Value::String(user.clone()));
            }
            Some(_) => return Err(ContextError::Claims("`fhirUser` must be a string".into())),
            None => {
                normalised.remove("fhirUser");
            }
        }
        normalised.insert("scope".into(), Value::String(scopes.to_string()));
        let principal = Principal::from_claims(&Value::Object(normalised))
            .map_err(|e| ContextError::Claims(e.to_string()))?;
        Ok(Self {
            principal,
            scopes,
            patient,
            encounter,
            fhir_context,
        })
    }
}
