//! The "parse" step of the request flow for HTTP: the axum extractor that turns a request under
//! the FHIR base into a [`FhirRequest`], with the same parser a Bundle entry goes through
//! ([`FhirRequest::from_http`]). It reads the body as the interaction takes it: a FHIR JSON
//! resource for creates, updates and Bundles, a JSON Patch for `PATCH`, a form for
//! `POST [type]/_search`; nothing for the others. A wrong media type is a 415, a body over the
//! limit a 413, malformed JSON a 400, each an `OperationOutcome`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::Method;
use fhirseal_fhir::FhirRequest;
use serde_json::Value;

use crate::error::ApiError;

/// The FHIR base path the router serves.
pub const BASE_PATH: &str = "/fhir";

/// A request under the FHIR base, parsed.
#[derive(Debug)]
pub struct Parsed(pub FhirRequest);

impl<S: Send + Sync> FromRequest<S> for Parsed {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let path = uri
            .path()
            .strip_prefix(BASE_PATH)
            .ok_or(ApiError::UnknownPath)?
            .to_string();
        let headers = request.headers().clone();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let content_type = header("content-type").unwrap_or_default().to_string();
        let mut query = uri.query().map(str::to_string);
        let body = match body_kind(&method, &path) {
            BodyKind::None => None,
            BodyKind::Resource => {
                if !is_json_media_type(&content_type) {
                    return Err(ApiError::UnsupportedMediaType);
                }
                Some(json_object(&read_body(request, state).await?)?)
            }
            BodyKind::Patch => {
                if essence(&content_type) != "application/json-patch+json" {
                    return Err(ApiError::UnsupportedPatchFormat);
                }
                let bytes = read_body(request, state).await?;
                Some(serde_json::from_slice(&bytes).map_err(|_| {
                    ApiError::InvalidRequest("the body is not a JSON Patch document")
                })?)
            }
            BodyKind::Form => {
                if essence(&content_type) != "application/x-www-form-urlencoded" {
                    return Err(ApiError::UnsupportedMediaType);
                }
                let bytes = read_body(request, state).await?;
                let form = std::str::from_utf8(&bytes)
                    .map_err(|_| ApiError::InvalidRequest("the form is not UTF-8"))?;
                query = Some(match query {
                    Some(q) if !q.is_empty() => format!("{q}&{form}"),
                    _ => form.to_string(),
                });
                None
            }
        };
        let parsed =
            FhirRequest::from_http(method.as_str(), &path, query.as_deref(), header, body)?;
        Ok(Self(parsed))
    }
}

/// What body an interaction takes.
enum BodyKind {
    None,
    Resource,
    Patch,
    Form,
}

fn body_kind(method: &Method, path: &str) -> BodyKind {
    match *method {
        Method::POST if path.trim_end_matches('/').ends_with("/_search") => BodyKind::Form,
        Method::POST | Method::PUT => BodyKind::Resource,
        Method::PATCH => BodyKind::Patch,
        _ => BodyKind::None,
    }
}

/// Media types a FHIR JSON body may come as.
fn is_json_media_type(value: &str) -> bool {
    matches!(
        essence(value).as_str(),
        "application/fhir+json" | "application/json" | "application/json+fhir"
    )
}

/// A media type without its parameters, lower case.
fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A JSON object from `bytes`, or a 400.
fn json_object(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::InvalidRequest("the body is not valid JSON"))?;
    if !value.is_object() {
        return Err(ApiError::InvalidRequest("the body is not a JSON object"));
    }
    Ok(value)
}

/// The body's bytes within the router's body limit: 413 when over, 400 when it breaks off.
pub async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::InvalidRequest("the body could not be read")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert!(is_json_media_type("application/fhir+json; charset=utf-8"));
        assert!(is_json_media_type("Application/JSON"));
        assert!(!is_json_media_type("text/plain"));
        assert_eq!(
            essence(" application/json-patch+json ; x=y"),
            "application/json-patch+json"
        );
    }

    #[test]
    fn each_interaction_reads_its_own_body() {
        assert!(matches!(
            body_kind(&Method::POST, "/Patient/_search"),
            BodyKind::Form
        ));
        assert!(matches!(
            body_kind(&Method::POST, "/Patient/_search/"),
            BodyKind::Form
        ));
        assert!(matches!(body_kind(&Method::POST, "/"), BodyKind::Resource));
        assert!(matches!(
            body_kind(&Method::PUT, "/Patient/1"),
            BodyKind::Resource
        ));
        assert!(matches!(
            body_kind(&Method::PATCH, "/Patient/1"),
            BodyKind::Patch
        ));
        assert!(matches!(
            body_kind(&Method::GET, "/Patient"),
            BodyKind::None
        ));
        assert!(matches!(
            body_kind(&Method::DELETE, "/Patient/1"),
            BodyKind::None
        ));
    }
}
