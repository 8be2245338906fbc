//! Who is asking, as the SMART layer establishes it from a verified token, in the terms the
//! policy's roles are written in.

use serde_json::{Map, Value};

/// The facts about a caller that roles are defined over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// `fhirUser`: `Practitioner/123`, `Patient/456`, `RelatedPerson/7`, …
    pub fhir_user: Option<String>,
    /// The OAuth client.
    pub client_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The caller's PractitionerRoles.
    pub practitioner_roles: Vec<PractitionerRoleFacts>,
    /// Every claim of the token, for roles defined over custom claims.
    pub claims: Map<String, Value>,
}

/// What a PractitionerRole says about the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PractitionerRoleFacts {
    /// `PractitionerRole.code` codes.
    pub codes: Vec<String>,
    /// `PractitionerRole.specialty` codes.
    pub specialties: Vec<String>,
    /// `PractitionerRole.organization` reference.
    pub organization: Option<String>,
}

/// Why a claims document is not a principal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("claims: {0}")]
pub struct ClaimsError(String);

impl Principal {
    /// A principal from a token's claims (JSON): `sub` (required), `fhirUser`, `client_id` (or
    /// `azp`), `scope` (space-separated), and `practitioner_roles`, a list of `{code: [...],
    /// specialty: [...], organization: "Organization/…"}` that the SMART layer fills from the
    /// caller's PractitionerRoles. Every claim stays available to roles by name.
    pub fn from_claims(claims: &Value) -> Result<Self, ClaimsError> {
        let Some(object) = claims.as_object() else {
            return Err(ClaimsError("a JSON object is expected".into()));
        };
        let text = |key: &str| -> Result<Option<String>, ClaimsError> {
            match object.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ClaimsError(format!("`{key}` must be a string"))),
            }
        };
        let subject = text("sub")?.ok_or_else(|| ClaimsError("`sub` is required".into()))?;
        let fhir_user = text("fhirUser")?;
        if let Some(user) = &fhir_user
            && !user
                .split('/')
                .rev()
                .nth(1)
                .is_some_and(|t| t.chars().next().is_some_and(char::is_uppercase))
        {
            return Err(ClaimsError(format!(
                "`fhirUser` must be a reference like `Practitioner/123`, not `{user}`"
            )));
        }
        let client_id = match text("client_id")? {
            Some(id) => Some(id),
            None => text("azp")?,
        };
        let scopes = text("scope")?
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        let mut practitioner_roles = Vec::new();
        match object.get("practitioner_roles") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let codes = strings(item.get("code"), "practitioner_roles[].code")?;
                    let specialties =
                        strings(item.get("specialty"), "practitioner_roles[].specialty")?;
                    let organization = match item.get("organization") {
                        None | Some(Value::Null) => None,
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(_) => {
                            return Err(ClaimsError(
                                "`practitioner_roles[].organization` must be a string".into(),
                            ));
                        }
                    };
                    practitioner_roles.push(PractitionerRoleFacts {
                        codes,
                        specialties,
                        organization,
                    });
                }
            }
            Some(_) => return Err(ClaimsError("`practitioner_roles` must be a list".into())),
        }
        Ok(Self {
            subject,
            fhir_user,
            client_id,
            scopes,
            practitioner_roles,
            claims: object.clone(),
        })
    }

    /// The resource type of `fhirUser` (`Practitioner`), if any.
    pub fn fhir_user_type(&self) -> Option<&str> {
        let user = self.fhir_user.as_deref()?;
        user.split('/').rev().nth(1)
    }

    /// `Patient/456` when the caller is a patient: the record owner of its own compartment.
    pub fn patient(&self) -> Option<String> {
        let user = self.fhir_user.as_deref()?;
        let mut parts = user.rsplit('/');
        let id = parts.next()?;
        (parts.next()? == "Patient").then(|| format!("Patient/{id}"))
    }
}

fn strings(value: Option<&Value>, what: &str) -> Result<Vec<String>, ClaimsError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ClaimsError(format!("`{what}` must hold strings")))
            })
            .collect(),
        Some(_) => Err(ClaimsError(format!(
            "`{what}` must be a string or a list of strings"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_become_a_principal() {
        let p = Principal::from_claims(&json!({
            "sub": "u1", "fhirUser": "https://ehr.example.org/fhir/Practitioner/123", "azp": "app",
            "scope": "openid user/*.rs", "department": "research",
            "practitioner_roles": [{"code": ["doctor"], "specialty": "394579002", "organization": "Organization/st-mary"}]
        }))
        .unwrap();
        assert_eq!(p.fhir_user_type(), Some("Practitioner"));
        assert_eq!(p.client_id.as_deref(), Some("app"));
        assert_eq!(p.scopes, ["openid", "user/*.rs"]);
        assert_eq!(p.practitioner_roles[0].specialties, ["394579002"]);
        assert_eq!(p.patient(), None);
        let patient =
            Principal::from_claims(&json!({"sub": "p", "fhirUser": "Patient/456"})).unwrap();
        assert_eq!(patient.patient().as_deref(), Some("Patient/456"));
    }

    #[test]
    fn bad_claims_say_what_is_wrong() {
        let err = |v: Value| Principal::from_claims(&v).unwrap_err().to_string();
        assert_eq!(err(json!([])), "claims: a JSON object is expected");
        assert_eq!(err(json!({})), "claims: `sub` is required");
        assert_eq!(err(json!({"sub": 1})), "claims: `sub` must be a string");
        assert!(err(json!({"sub": "a", "fhirUser": "nobody"})).contains("must be a reference"));
        assert!(err(json!({"sub": "a", "practitioner_roles": {}})).contains("must be a list"));
        assert!(
            err(json!({"sub": "a", "practitioner_roles": [{"code": [1]}]}))
                .contains("must hold strings")
        );
    }
}
