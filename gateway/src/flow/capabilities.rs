//! `GET [base]/metadata`: the upstream's CapabilityStatement, moved to the gateway's base, with
//! the gateway's security section (SMART on FHIR, the embedded server's OAuth endpoints), and
//! AuditEvent as the gateway serves it (read and search of its own audit trail,
//! [`crate::audit::search`]), not as the upstream would.

use axum::http::{HeaderValue, Method, StatusCode, header};
use fhirseal_upstream::{UpstreamRequest, rewrite_base};
use serde_json::{Value, json};

use crate::audit::AuditNote;
use crate::error::ApiError;
use crate::flow::respond::Answer;
use crate::state::AppState;

/// The upstream's CapabilityStatement with the gateway's base and security section.
///
/// # Errors
/// [`ApiError`] when the upstream does not answer with a CapabilityStatement.
pub async fn capabilities(state: &AppState) -> Result<Answer, ApiError> {
    let request = UpstreamRequest::new(Method::GET, "metadata").with_header(
        header::ACCEPT,
        HeaderValue::from_static("application/fhir+json"),
    );
    let response = state.upstream.send(request).await?;
    if !response.status().is_success() {
        return Err(ApiError::from_upstream_response(&response, None));
    }
    let text = std::str::from_utf8(response.body()).map_err(|_| ApiError::UpstreamMalformed)?;
    let text = rewrite_base(text, state.upstream.base(), &state.config.fhir_base);
    let mut statement: Value =
        serde_json::from_str(&text).map_err(|_| ApiError::UpstreamMalformed)?;
    if statement.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement") {
        return Err(ApiError::UpstreamMalformed);
    }
    secure(&mut statement, state);
    audit_events(&mut statement, state);
    let note = AuditNote {
        interaction: "capabilities",
        ..AuditNote::default()
    };
    Ok(Answer::new(StatusCode::OK, Some(statement), note))
}

/// AuditEvent in every server `rest`: the gateway's read and search of its audit trail when it
/// is chained, nothing when it is not (the upstream's AuditEvents are never served).
fn audit_events(statement: &mut Value, state: &AppState) {
    let ours = json!({
        "type": "AuditEvent",
        "documentation": "Served by the gateway from its tamper-evident audit trail, newest \
            first; never forwarded upstream. A patient sees the events concerning her own \
            record; the policy names who may search them all.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [
            {"name": "patient", "type": "reference"},
            {"name": "agent", "type": "reference"},
            {"name": "date", "type": "date"},
            {"name": "outcome", "type": "token"},
        ],
    });
    let chained = state.audit.chain().is_some();
    let Some(Value::Array(rest)) = statement.get_mut("rest") else {
        return;
    };
    for entry in rest
        .iter_mut()
        .filter(|r| r.get("mode").and_then(Value::as_str) == Some("server"))
    {
        let Value::Object(entry) = entry else {
            continue;
        };
        let resources = entry
            .entry("resource")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(resources) = resources {
            resources.retain(|r| r.get("type").and_then(Value::as_str) != Some("AuditEvent"));
            if chained {
                resources.push(ours.clone());
            }
        }
    }
}

fn secure(statement: &mut Value, state: &AppState) {
    // True exactly when `server.cors_origins` lets some browser origin in.
    let mut security = json!({
        "cors": state.config.cors.is_on(),
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"
        }]}],
        "description": "SMART App Launch 2 bearer tokens; protected elements are sealed by \
            FHIRseal and opened only for callers whose attributes satisfy them"
    });
    if let Some(server) = &state.auth_server {
        let discovery = server.smart_configuration();
        let uris: Vec<Value> = [
            ("authorize", "authorization_endpoint"),
            ("token", "token_endpoint"),
            ("introspect", "introspection_endpoint"),
        ]
        .iter()
        .filter_map(|(name, field)| {
            discovery
                .get(*field)
                .and_then(Value::as_str)
                .map(|uri| json!({"url": name, "valueUri": uri}))
        })
        .collect();
        security["extension"] = json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": uris
        }]);
    }
    if let Some(Value::Array(rest)) = statement.get_mut("rest") {
        for entry in rest
            .iter_mut()
            .filter(|r| r.get("mode").and_then(Value::as_str) == Some("server"))
        {
            if let Value::Object(entry) = entry {
                entry.insert("security".into(), security.clone());
            }
        }
    }
    if let Value::Object(object) = statement {
        object.insert(
            "implementation".into(),
            json!({
                "description": "FHIRseal gateway (sealing protected elements) in front of the FHIR server",
                "url": state.config.fhir_base
            }),
        );
    }
}
